//! The engine behind a hub: how a publication reaches the members of a
//! room on every node, where a room's history lives, and who is online.
//!
//! A [`Hub`](super::Hub) on one node uses the [`MemoryEngine`] (the
//! default). Several nodes share a room when they share an engine that
//! carries publications between them (the hub server's Redis engine).
//! The contract every engine keeps:
//!
//! - **One order per room.** Every node delivers the publications of a
//!   room in the same order, its own included: a node does not deliver its
//!   own publication directly but when the engine hands it back, so two
//!   publishers on two nodes cannot be seen in two orders. A node's own
//!   publications are handed back once, never twice.
//! - **Offsets.** In a room with history ([`HistoryPolicy`]), each
//!   publication gets the room's previous offset + 1, assigned together
//!   with the history write, and the room has an epoch that changes when
//!   its history is lost. A publication to several rooms is one
//!   publication: it gets an offset in each room with history, in one
//!   atomic step, and is handed to the node once.
//! - **Ordered at the call.** [`Engine::publish`] fixes the publication's
//!   place before it returns (the future only reports the outcome), so one
//!   caller's publications keep their order without awaiting each.
//! - **Gaps filled or reported.** If a node may have missed publications
//!   (a lost link to the broker), the engine fills them from the history
//!   before handing on the next one, or, if the history no longer has
//!   them or its epoch changed, calls [`Node::reset`] for the room.

mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::Message;

use super::config::ConnId;

pub use memory::MemoryEngine;

/// A boxed future, as engines return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How much history a room keeps: the last `size` publications, for `ttl`
/// after the last publication (the whole history expires together, as
/// Centrifugo's does). A room's offset and epoch are kept longer
/// (`meta_ttl`), so a client that missed nothing can still be told so.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPolicy {
    /// Publications kept (at least 1).
    pub size: usize,
    /// The history is dropped this long after the room's last publication.
    pub ttl: Duration,
    /// The room's offset and epoch are dropped this long after its last
    /// publication; a later publication starts a new epoch at offset 1.
    pub meta_ttl: Duration,
}

impl HistoryPolicy {
    /// The last `size` publications, kept for `ttl` after the last one.
    pub fn new(size: usize, ttl: Duration) -> HistoryPolicy {
        let meta_ttl = ttl.max(Duration::from_secs(7 * 24 * 3600));
        HistoryPolicy { size: size.max(1), ttl, meta_ttl }
    }

    /// Sets how long the offset and epoch outlive the last publication.
    pub fn meta_ttl(mut self, meta_ttl: Duration) -> HistoryPolicy {
        self.meta_ttl = meta_ttl.max(self.ttl);
        self
    }
}

/// Where a room's stream stands: the offset of its last publication (0
/// before the first) in the history identified by `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The offset of the room's last publication (0 before the first).
    pub offset: u64,
    /// Which history the offset counts in; a new epoch means the old history is gone.
    pub epoch: Arc<str>,
}

impl Position {
    /// The position `offset` in the history `epoch`.
    pub fn new(offset: u64, epoch: impl Into<Arc<str>>) -> Position {
        Position { offset, epoch: epoch.into() }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.offset, self.epoch)
    }
}

/// A room a publication went to, and its place in that room's history
/// (`None` for a room without history, an ephemeral publication, or one
/// delivered locally while the engine could not be reached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The room.
    pub room: String,
    /// The publication's position in that room's history, if it has one.
    pub position: Option<Position>,
}

/// A publication as the engine hands it to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// What was published, as the publisher gave it.
    pub message: Message,
    /// Every room it went to, in the order the publisher named them.
    pub rooms: Vec<Placement>,
    /// A connection of this node not to deliver it to (the sender of a
    /// typing notice); engines clear it on other nodes.
    pub except: Option<ConnId>,
    /// Its coalescing key ([`Publish::coalesce`](crate::hub::Publish::coalesce)):
    /// it replaces a queued publication with the same key. Engines carry
    /// it to every node.
    pub coalesce: Option<Arc<str>>,
}

impl Publication {
    /// Its offset in `room`, if it has one there.
    pub fn offset(&self, room: &str) -> Option<u64> {
        self.rooms.iter().find(|p| p.room == room)?.position.as_ref().map(|p| p.offset)
    }
}

/// A publication handed to [`Engine::publish`].
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// What is published.
    pub message: Message,
    /// The rooms, each with its history policy (`None`: no history for
    /// this publication in that room).
    pub rooms: Vec<(String, Option<HistoryPolicy>)>,
    /// A connection of this node not to deliver it to (the sender of a typing notice).
    pub except: Option<ConnId>,
    /// The coalescing key, to hand on in the [`Publication`].
    pub coalesce: Option<Arc<str>>,
}

/// What a history read found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryRead {
    /// The room's position when it was read (offset 0 before the first
    /// publication; reading creates the epoch if the room had none).
    pub position: Option<Position>,
    /// The publications after the offset asked for, oldest first, at most
    /// the policy's size.
    pub publications: Vec<Arc<Publication>>,
    /// The oldest offset the history still holds (`None`: it holds none).
    pub earliest: Option<u64>,
}

impl HistoryRead {
    /// Whether a client at `since` can be brought up to `position` from
    /// this read: same epoch, not ahead of the room, and nothing between
    /// `since` and the oldest publication kept is missing.
    pub fn recovers(&self, since: &Position) -> bool {
        let Some(now) = &self.position else { return false };
        if since.epoch != now.epoch || since.offset > now.offset {
            return false;
        }
        since.offset == now.offset || self.earliest.is_some_and(|e| e <= since.offset + 1)
    }
}

/// Counts across every node of an engine (the memory engine: this node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Nodes the engine knows of.
    pub nodes: u64,
    /// Connections on those nodes.
    pub connections: u64,
}

/// Why an engine could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The broker cannot be reached; `delivered_locally` tells whether the
    /// publication still went to this node's members (without offsets).
    Unavailable {
        /// What went wrong, in words.
        reason: String,
        /// Whether this node's members still got the publication.
        delivered_locally: bool,
    },
    /// The broker answered with an error.
    Broker(String),
    /// The hub this engine served is gone.
    Closed,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unavailable { reason, delivered_locally: true } => {
                write!(f, "engine unavailable ({reason}): delivered on this node only")
            }
            EngineError::Unavailable { reason, .. } => write!(f, "engine unavailable: {reason}"),
            EngineError::Broker(why) => write!(f, "broker error: {why}"),
            EngineError::Closed => f.write_str("the hub is gone"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Carries a hub's publications, history and presence (see the module
/// docs for the contract). Methods that return futures do their
/// ordering-relevant work before returning; the future reports the result.
/// None of them may call back into the hub before returning, except
/// [`publish`](Engine::publish), which may deliver through [`Node`].
pub trait Engine: Send + Sync + 'static {
    /// Gives the engine the node it delivers to. Called once, by
    /// [`Hub::with_engine`](super::Hub::with_engine), before anything else.
    fn attach(&self, node: Node);

    /// Publishes to every node that has members in any of the rooms, this
    /// one included (through [`Node::deliver`]). Returns the publication's
    /// position in each room with history.
    fn publish(&self, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>>;

    /// This node has members in `room` (the first joined): publications
    /// to it must now reach this node. The future resolves once they do.
    /// Called under the hub's lock, so it must not block.
    fn subscribe(&self, room: &str) -> BoxFuture<Result<(), EngineError>>;

    /// This node's last member of `room` left. Called under the hub's lock.
    fn unsubscribe(&self, room: &str);

    /// The room's position and the publications after `since` (none when
    /// `since` is `None`), at most `policy.size`.
    fn history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> BoxFuture<Result<HistoryRead, EngineError>>;

    /// A connection of `user` (or an anonymous one, `None`) joined `room` on this node.
    fn presence_join(&self, room: &str, user: Option<&str>);

    /// ... and left it.
    fn presence_leave(&self, room: &str, user: Option<&str>);

    /// Who is in `room` on every node: each user with its number of
    /// connections, sorted by user (anonymous connections are not listed).
    fn presence(&self, room: &str) -> BoxFuture<Result<Vec<(String, u64)>, EngineError>>;

    /// Counts across every node.
    fn cluster(&self) -> BoxFuture<Result<ClusterStats, EngineError>>;

    /// Whether the engine can reach its broker now (the memory engine
    /// always can).
    fn is_ready(&self) -> bool {
        true
    }
}

/// The engine's way back into its hub. Holds the hub weakly: an engine
/// does not keep a dropped hub alive.
#[derive(Clone)]
pub struct Node {
    pub(crate) hub: Weak<super::HubState>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("attached", &(self.hub.strong_count() > 0)).finish()
    }
}

impl Node {
    fn hub(&self) -> Option<super::Hub> {
        self.hub.upgrade().map(|shared| super::Hub { shared })
    }

    /// Delivers a publication to this node's members of its rooms: once
    /// per connection, in the order of the calls. Returns how many
    /// connections it was queued for (0 once the hub is gone).
    pub fn deliver(&self, publication: Arc<Publication>) -> usize {
        self.hub().map_or(0, |hub| hub.deliver(&publication))
    }

    /// The room's history was lost or cannot fill a gap: its members on
    /// this node continue from `position` (one already past it in the same
    /// epoch keeps its place) and are told (see
    /// [`HubEvent::RoomReset`](super::HubEvent::RoomReset)).
    pub fn reset(&self, room: &str, position: Position) {
        if let Some(hub) = self.hub() {
            hub.reset(room, position);
        }
    }

    /// The rooms this node has members in, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.hub().map(|hub| hub.rooms().into_iter().map(|(room, _)| room).collect()).unwrap_or_default()
    }

    /// Connections open on this node.
    pub fn connections(&self) -> u64 {
        self.hub().map_or(0, |hub| hub.connection_count() as u64)
    }

    /// Whether the hub is still there.
    pub fn is_attached(&self) -> bool {
        self.hub.strong_count() > 0
    }
}
