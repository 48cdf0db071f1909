//! What an operator sees of each connection on this node.
//!
//! Each connection keeps four counters (atomics in its queue, added to by
//! its own read and write loops: 32 bytes), when it was admitted and how it
//! is served (24 bytes in its registry entry): about 56 bytes a
//! connection. The fan-out path does not touch them; the writer adds what
//! it wrote with one atomic add per batch.

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use super::config::ConnId;
use super::Hub;

/// How a connection is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A WebSocket served by [`Hub::serve`].
    WebSocket,
    /// A member registered with [`Hub::attach`] (an SSE stream).
    Attached,
}

/// One connection on this node, as [`Hub::connections`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The user its handshake hook authenticated, if any.
    pub user: Option<String>,
    /// Its rooms, sorted.
    pub rooms: Vec<String>,
    /// Deliveries in its queue now (replays included).
    pub queued: usize,
    /// Data messages received from it, and their payload bytes.
    pub messages_in: u64,
    /// The payload bytes of those messages.
    pub bytes_in: u64,
    /// Messages written to it, and their bytes as sent (WebSocket frames,
    /// compressed where they were; for an attached member, what it
    /// reported with [`Attached::wrote`](super::Attached::wrote)).
    pub messages_out: u64,
    /// The bytes of those messages as sent.
    pub bytes_out: u64,
    /// When it was admitted.
    pub connected_at: SystemTime,
    /// A WebSocket or an attached member (SSE).
    pub transport: Transport,
}

impl Hub {
    /// Every connection on this node, by id: its user, rooms, queue depth,
    /// traffic and age. Takes the hub's lock once, and each connection's
    /// queue lock briefly (as a publication does).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let registry = self.registry();
        let mut all: Vec<ConnectionInfo> =
            registry.conns.iter().map(|(id, member)| info(*id, member)).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// One connection on this node, if it is there.
    pub fn connection(&self, conn: ConnId) -> Option<ConnectionInfo> {
        self.registry().conns.get(&conn).map(|member| info(conn, member))
    }
}

fn info(id: ConnId, member: &super::registry::Member) -> ConnectionInfo {
    let traffic = &member.outbox.traffic;
    ConnectionInfo {
        id,
        user: member.user.clone(),
        rooms: member.rooms.keys().map(str::to_owned).collect(),
        queued: member.outbox.len(),
        messages_in: traffic.messages_in.load(Relaxed),
        bytes_in: traffic.bytes_in.load(Relaxed),
        messages_out: traffic.messages_out.load(Relaxed),
        bytes_out: traffic.bytes_out.load(Relaxed),
        connected_at: member.connected_at,
        transport: member.transport,
    }
}
