//! The engine's counters, for a server's /metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`RedisEngine`](crate::RedisEngine)'s counters, since it
/// connected. All count events on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Whether the engine can reach Redis now (see
    /// [`Engine::is_ready`](sabai::hub::Engine::is_ready)).
    pub ready: bool,
    /// Publications Redis took (offsets given, history written, published).
    pub publications: u64,
    /// Publications that failed: Redis unreachable or answering an error.
    pub publish_errors: u64,
    /// Of those, the ones delivered on this node only, without offsets,
    /// because Redis could not be reached.
    pub delivered_locally: u64,
    /// Times the pub/sub connection came back after it was lost.
    pub reconnects: u64,
    /// Gaps in a room's offsets (lost pub/sub messages, a reconnect)
    /// filled from the room's history.
    pub gaps_filled: u64,
    /// Rooms reset ([`Node::reset`](sabai::hub::Node::reset)): their
    /// history was lost, or could not fill a gap.
    pub resets: u64,
    /// Messages received on the pub/sub connection (every copy of a
    /// publication to several rooms counts).
    pub pubsub_messages: u64,
    /// Pub/sub messages that were not publications of this format.
    pub decode_errors: u64,
    /// History reads asked of Redis (each one a script call, whatever the
    /// number of connections it serves).
    pub history_reads: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) publications: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) delivered_locally: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) gaps_filled: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) pubsub_messages: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) history_reads: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, ready: bool) -> RedisStats {
        RedisStats {
            ready,
            publications: self.publications.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            delivered_locally: self.delivered_locally.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            gaps_filled: self.gaps_filled.load(Relaxed),
            resets: self.resets.load(Relaxed),
            pubsub_messages: self.pubsub_messages.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            history_reads: self.history_reads.load(Relaxed),
        }
    }
}
