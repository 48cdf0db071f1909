//! Hub counters: atomics updated on the hot paths, read as a snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A snapshot of the hub's counters (see [`Hub::stats`](super::Hub::stats)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open connections now.
    pub connections: u64,
    /// Connections served since the start.
    pub connections_total: u64,
    /// Handshakes refused because the hub was full or shutting down.
    pub connections_refused: u64,
    /// Rooms with at least one member now.
    pub rooms: u64,
    /// Data messages received from clients, and their payload bytes.
    pub messages_in: u64,
    /// The payload bytes of those messages.
    pub bytes_in: u64,
    /// Data messages written to clients, and their frame bytes (as sent:
    /// compressed ones count their compressed size).
    pub messages_out: u64,
    /// The frame bytes of those messages, as sent.
    pub bytes_out: u64,
    /// Messages dropped under [`SlowConsumer::DropOldest`](super::SlowConsumer::DropOldest).
    pub dropped_messages: u64,
    /// Connections closed under [`SlowConsumer::Close`](super::SlowConsumer::Close).
    pub slow_consumer_closes: u64,
    /// Publications handed to the engine by this node.
    pub publications: u64,
    /// History reads asked of the engine (one serves every connection
    /// that waited for the same room).
    pub history_reads: u64,
    /// Connections closed for sending faster than
    /// [`HubConfig::rate_limit`](super::HubConfig::rate_limit) allows (1008).
    pub rate_limited: u64,
    /// Deliveries that replaced a queued one with the same coalescing key
    /// ([`Publish::coalesce`](super::Publish::coalesce)) instead of queueing.
    pub coalesced: u64,
    /// How many connections ended with each close code (ours or the
    /// peer's, whichever came first); connections that ended without one
    /// are counted under 1006.
    pub close_codes: BTreeMap<u16, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) publications: AtomicU64,
    pub(crate) history_reads: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    close_codes: Mutex<BTreeMap<u16, u64>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn close_code(&self, code: u16) {
        let mut codes = self.close_codes.lock().unwrap_or_else(|p| p.into_inner());
        *codes.entry(code).or_default() += 1;
    }

    pub(crate) fn snapshot(&self, connections: u64, rooms: u64) -> Stats {
        Stats {
            connections,
            connections_total: self.connections_total.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            rooms,
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            dropped_messages: self.dropped_messages.load(Relaxed),
            slow_consumer_closes: self.slow_consumer_closes.load(Relaxed),
            publications: self.publications.load(Relaxed),
            history_reads: self.history_reads.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            close_codes: self.close_codes.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}
