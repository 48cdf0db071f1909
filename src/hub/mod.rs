//! The room hub (feature `hub`): many WebSocket connections, rooms they
//! join, and messages fanned out to a room, a user, one connection or
//! everyone.
//!
//! A published message is framed once ([`PreparedMessage`]) and the same
//! bytes go into every recipient's bounded queue; a publish never waits on
//! a recipient. With [`HubConfig::deflate`] set, it is also compressed
//! once, when the first recipient's writer takes it, and that compressed
//! frame is shared by every recipient that agreed to permessage-deflate.
//! Each connection runs one task (see [`Hub::serve`]) that reads, writes
//! its queue, pings, and enforces the timeouts.
//!
//! Publications go through an [`Engine`]: the [`MemoryEngine`] (one node,
//! the default) or one shared by several nodes, such as the hub server's
//! Redis engine. Rooms can keep a history ([`HubConfig::history`]): each
//! publication then gets an offset in the room, and a connection that
//! [`subscribe`](Hub::subscribe)s with the last position it saw gets what
//! it missed, in order, before live publications, with no gap and no
//! duplicate; or learns that the history no longer reaches back that far.
//!
//! ```no_run
//! use sabai::hub::{Hub, HubConfig};
//! use tokio::net::TcpListener;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let hub = Hub::new(HubConfig::default());
//! let listener = TcpListener::bind("127.0.0.1:9002").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let hub = hub.clone();
//!     tokio::spawn(async move {
//!         // The hook authenticates: Ok(Some(user)), Ok(None) or a Reject.
//!         let Ok(accepted) = hub.accept(stream, |_request| Ok(None)).await else { return };
//!         accepted
//!             .serve(|hub, conn, message| async move {
//!                 // A toy protocol: every text joins that room and greets it.
//!                 if let Some(room) = message.as_text() {
//!                     let _ = hub.join(conn, room).await;
//!                     let _ = hub.publish(room, format!("{conn} joined")).await;
//!                 }
//!             })
//!             .await;
//!     });
//! }
//! # }
//! ```

mod attach;
mod config;
mod engine;
mod info;
mod limit;
mod outbox;
mod publish;
mod recovery;
mod registry;
mod session;
mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::handshake::Reject;
use crate::WebSocketConfig;
use crate::{CloseCode, Message, PreparedMessage};

pub use attach::{Attached, Taken};
pub use config::{codes, ConnId, HubConfig, HubError, HubEvent, Render, RoomValidator, SlowConsumer};
pub use engine::{
    BoxFuture, ClusterStats, Engine, EngineError, HistoryPolicy, HistoryRead, MemoryEngine, Node, Outgoing,
    Placement, Position, Publication,
};
pub use info::{ConnectionInfo, Transport};
pub use limit::RateLimit;
pub use outbox::Delivery;
pub use publish::{Publish, Publishing};
pub use recovery::{Subscribed, Subscription};
pub use session::{Accepted, Slot};
pub use stats::Stats;

use outbox::{Outbox, Pushed};
use registry::Registry;
use stats::Counters;

type EventHandler = Arc<dyn Fn(&Hub, &HubEvent) + Send + Sync>;

/// A handle to a hub. Cloning it is cheap (one `Arc`); every clone is the
/// same hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubState>,
}

pub(crate) struct HubState {
    config: HubConfig,
    engine: Arc<dyn Engine>,
    registry: Mutex<Registry>,
    reads: recovery::Reads,
    counters: Counters,
    next_id: AtomicU64,
    /// Connections admitted or being handshaken (for `max_connections`).
    slots: AtomicUsize,
    shutting_down: AtomicBool,
    /// The code and reason every connection is closed with in a shutdown.
    closing: Mutex<Option<(CloseCode, &'static str)>>,
    /// Woken whenever a connection goes away.
    gone: Notify,
    on_event: RwLock<Option<EventHandler>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub on the [`MemoryEngine`]: one node.
    pub fn new(config: HubConfig) -> Hub {
        Hub::with_engine(config, Arc::new(MemoryEngine::new()))
    }

    /// A hub whose publications, history and presence go through
    /// `engine` (for example one shared by several nodes).
    pub fn with_engine(config: HubConfig, engine: Arc<dyn Engine>) -> Hub {
        let hub = Hub {
            shared: Arc::new(HubState {
                config,
                engine,
                registry: Mutex::new(Registry::default()),
                reads: recovery::Reads::default(),
                counters: Counters::default(),
                next_id: AtomicU64::new(1),
                slots: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                closing: Mutex::new(None),
                gone: Notify::new(),
                on_event: RwLock::new(None),
            }),
        };
        hub.shared.engine.attach(Node { hub: Arc::downgrade(&hub.shared) });
        hub
    }

    /// The configuration the hub was made with.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The engine behind this hub.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.shared.engine
    }

    /// The WebSocket settings for hub connections: the hub's inbound
    /// message limit becomes the protocol's (over it: close 1009), and
    /// [`HubConfig::deflate`], if set, is what the handshake accepts.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let mut config = WebSocketConfig::default();
        config.protocol.max_message_size = self.shared.config.max_message_size;
        config.protocol.max_frame_size = self.shared.config.max_message_size;
        config.protocol.close_timeout = self.shared.config.close_timeout;
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &self.shared.config.deflate {
            let mut deflate = deflate.clone();
            // RFC 7692 §7.1.1.1: a server may answer with
            // server_no_context_takeover even if the client did not ask.
            // Every hub connection does, so a message compressed once on
            // its own is valid on every one of them (see Hub::prepare).
            deflate.server_no_context_takeover = true;
            config.protocol.deflate = Some(deflate);
        }
        config
    }

    /// Frames a message once for sending to many connections. With
    /// [`HubConfig::deflate`] set it may also go out compressed
    /// ([`PreparedMessage::with_deflate`]): compressed once, when first
    /// sent, and shared by every connection that agreed to
    /// permessage-deflate; the others get the plain frame.
    pub fn prepare(&self, message: impl Into<Message>) -> PreparedMessage {
        let message = message.into();
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &self.shared.config.deflate {
            return PreparedMessage::with_deflate(&message, deflate);
        }
        PreparedMessage::new(&message)
    }

    /// A publication as its recipients get it: rendered and framed once.
    fn delivery(&self, publication: &Publication) -> Delivery {
        let message = match &self.shared.config.render {
            Some(render) => render(publication),
            None => publication.message.clone(),
        };
        let placed = publication.rooms.iter().any(|p| p.position.is_some());
        Delivery::new(self.prepare(message), placed.then(|| publication.rooms.clone().into()))
            .coalescing(publication.coalesce.clone())
    }

    /// Sets the handler of [`HubEvent`]s (presence). It runs on the task
    /// that caused the event, outside the hub's lock, so it may call the hub.
    pub fn on_event(&self, handler: impl Fn(&Hub, &HubEvent) + Send + Sync + 'static) {
        *self.shared.on_event.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    fn emit(&self, event: HubEvent) {
        let handler = self.shared.on_event.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(handler) = handler {
            handler(self, &event);
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Never held across an await; a poisoned lock still holds
        // consistent indexes (every change is a few map operations).
        self.shared.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves room for one more connection, before its handshake. `Err`
    /// is the 503 to answer when the hub is full or shutting down.
    pub fn reserve(&self) -> Result<Slot, Reject> {
        let refuse = |why: &str| {
            Counters::add(&self.shared.counters.connections_refused, 1);
            Err(Reject::new(503).body(why))
        };
        if self.is_shutting_down() {
            return refuse("Shutting down");
        }
        if self.shared.slots.fetch_add(1, SeqCst) >= self.shared.config.max_connections {
            self.shared.slots.fetch_sub(1, SeqCst);
            return refuse("Too many connections");
        }
        let id = ConnId(self.shared.next_id.fetch_add(1, SeqCst));
        Ok(Slot::new(self.clone(), id))
    }

    /// Gives back the room [`reserve`](Self::reserve) took: its [`Slot`]
    /// was dropped.
    fn release_slot(&self) {
        self.shared.slots.fetch_sub(1, SeqCst);
        self.shared.gone.notify_waiters();
    }

    // ----- rooms ------------------------------------------------------------

    /// Adds a connection to a room: [`subscribe`](Self::subscribe) to one
    /// room, without recovery. `Ok(false)`: it was already there.
    ///
    /// Cancel safety: if dropped while the engine subscribes, the
    /// connection stays a member and gets publications once they arrive.
    pub async fn join(&self, conn: ConnId, room: &str) -> Result<bool, HubError> {
        let joined = self.subscribe(conn, &[Subscription::new(room)], |_, _| None).await?;
        Ok(joined.first().is_some_and(|s| s.joined))
    }

    /// Removes a connection from a room. `Ok(false)`: it was not there.
    pub fn leave(&self, conn: ConnId, room: &str) -> Result<bool, HubError> {
        let user = {
            let mut registry = self.registry();
            let left = registry.leave(conn, room).ok_or(HubError::UnknownConnection)?;
            let Some(emptied) = left else { return Ok(false) };
            if emptied {
                self.shared.engine.unsubscribe(room);
            }
            registry.conns.get(&conn).and_then(|m| m.user.clone())
        };
        self.shared.engine.presence_leave(room, user.as_deref());
        self.emit(HubEvent::Left { conn, user, room: room.to_owned() });
        Ok(true)
    }

    /// Removes a connection from every index, the engine's included.
    fn remove(&self, conn: ConnId) -> Option<registry::Member> {
        let member = {
            let mut registry = self.registry();
            let (member, emptied) = registry.remove(conn)?;
            for room in &emptied {
                self.shared.engine.unsubscribe(room);
            }
            member
        };
        for room in member.rooms.keys() {
            self.shared.engine.presence_leave(room, member.user.as_deref());
        }
        Some(member)
    }

    /// The rooms a connection is in, sorted; `None` if it is gone.
    pub fn rooms_of(&self, conn: ConnId) -> Option<Vec<String>> {
        self.registry().conns.get(&conn).map(|m| m.rooms.keys().map(str::to_owned).collect())
    }

    /// The user a connection was authenticated as.
    pub fn user_of(&self, conn: ConnId) -> Option<String> {
        self.registry().conns.get(&conn).and_then(|m| m.user.clone())
    }

    /// Every room with members on this node, with their number, sorted by name.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let mut rooms: Vec<_> = self.registry().rooms.iter().map(|(r, m)| (r.to_string(), m.len())).collect();
        rooms.sort();
        rooms
    }

    /// This node's connections in a room and their users.
    pub fn members(&self, room: &str) -> Vec<(ConnId, Option<String>)> {
        self.registry().room_members(room).map(|(id, m)| (id, m.user.clone())).collect()
    }

    /// The distinct users in a room on this node, sorted.
    pub fn users_in(&self, room: &str) -> Vec<String> {
        let registry = self.registry();
        let users: std::collections::BTreeSet<String> =
            registry.room_members(room).filter_map(|(_, m)| m.user.clone()).collect();
        users.into_iter().collect()
    }

    /// Presence on every node of the engine: each user in the room with
    /// its number of connections, sorted by user.
    pub async fn presence(&self, room: &str) -> Result<Vec<(String, u64)>, HubError> {
        Ok(self.shared.engine.presence(room).await?)
    }

    /// Connections open on this node.
    pub fn connection_count(&self) -> usize {
        self.registry().conns.len()
    }

    // ----- sending ----------------------------------------------------------

    /// Publishes a message to a room (see [`publish_with`](Self::publish_with)).
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> Publishing {
        self.publish_with(Publish::new(message).to(room))
    }

    /// Publishes through the engine to every member of the rooms, on
    /// every node: once per connection, however many of the rooms it is
    /// in; with an offset in each room that keeps history (unless
    /// [`Publish::ephemeral`]). Never waits on a recipient. Its place in
    /// each room is fixed when this returns; await the [`Publishing`] for
    /// the offsets, or drop it.
    pub fn publish_with(&self, publish: Publish) -> Publishing {
        let config = &self.shared.config;
        let rooms = publish
            .rooms
            .into_iter()
            .map(|room| {
                let policy = if publish.ephemeral { None } else { config.history_for(&room).cloned() };
                (room, policy)
            })
            .collect();
        let outgoing =
            Outgoing { message: publish.message, rooms, except: publish.except, coalesce: publish.coalesce };
        Counters::add(&self.shared.counters.publications, 1);
        Publishing::new(self.shared.engine.publish(outgoing))
    }

    /// Queues a publication the engine hands to this node (see [`Node::deliver`]).
    fn deliver(&self, publication: &Publication) -> usize {
        let delivery = self.delivery(publication);
        let capacity = self.shared.config.queue_capacity;
        let mut guard = self.registry();
        let registry = &mut *guard;
        let mut queued = 0;
        for (i, placement) in publication.rooms.iter().enumerate() {
            let Some(ids) = registry.rooms.get(placement.room.as_str()) else { continue };
            let earlier = &publication.rooms[..i];
            for id in ids {
                let Some(member) = registry.conns.get_mut(id) else { continue };
                // Once per connection, through the first of its rooms.
                if publication.except == Some(*id)
                    || earlier.iter().any(|p| member.rooms.contains_key(&p.room))
                {
                    continue;
                }
                if member.is_recovering_any(&publication.rooms) {
                    if member.held.len() >= capacity {
                        member.held.clear();
                        self.overflow(&member.outbox);
                    } else {
                        member.held.push(delivery.clone());
                    }
                    continue;
                }
                if delivery.is_recoverable() {
                    if member.has_seen(&publication.rooms) {
                        continue;
                    }
                    member.advance(&publication.rooms);
                }
                queued += usize::from(self.queue(&member.outbox, delivery.clone(), false));
            }
        }
        queued
    }

    /// The room's history was lost: its members here continue from `position`.
    fn reset(&self, room: &str, position: Position) {
        {
            let mut guard = self.registry();
            let registry = &mut *guard;
            for id in registry.rooms.get(room).into_iter().flatten() {
                let membership = registry.conns.get_mut(id).and_then(|m| m.rooms.get_mut(room));
                if let Some(membership) = membership {
                    // A member already past `position` in the same epoch
                    // has what follows it: moving it back would deliver
                    // those publications twice.
                    let ahead = membership
                        .last
                        .as_ref()
                        .is_some_and(|last| last.epoch == position.epoch && last.offset >= position.offset);
                    if membership.recovering {
                        membership.reset = true;
                    } else if !ahead {
                        membership.last = Some(position.clone());
                    }
                }
            }
        }
        self.emit(HubEvent::RoomReset { room: room.to_owned(), position });
    }

    /// Sends to this node's members of a room, not through the engine:
    /// no offset, and other nodes do not see it (for example to tell them
    /// about a [`HubEvent::RoomReset`]).
    pub fn send_local(&self, room: &str, message: impl Into<Message>) -> usize {
        let delivery = Delivery::new(self.prepare(message), None);
        let registry = self.registry();
        let members = registry.room_members(room);
        members.filter(|(_, m)| self.queue(&m.outbox, delivery.clone(), false)).count()
    }

    /// Sends to one connection; `false` if it is gone or closing.
    pub fn send_to(&self, conn: ConnId, message: impl Into<Message>) -> bool {
        let delivery = Delivery::new(self.prepare(message), None);
        let registry = self.registry();
        registry.conns.get(&conn).is_some_and(|m| self.queue(&m.outbox, delivery, false))
    }

    /// Sends to every connection of a user on this node.
    pub fn send_to_user(&self, user: &str, message: impl Into<Message>) -> usize {
        let delivery = Delivery::new(self.prepare(message), None);
        let registry = self.registry();
        let ids = registry.users.get(user).into_iter().flatten();
        let members = ids.filter_map(|id| registry.conns.get(id));
        members.filter(|m| self.queue(&m.outbox, delivery.clone(), false)).count()
    }

    /// Sends to every connection on this node.
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        let delivery = Delivery::new(self.prepare(message), None);
        let registry = self.registry();
        registry.conns.values().filter(|m| self.queue(&m.outbox, delivery.clone(), false)).count()
    }

    /// Queues one delivery; `false` if it was not (closing, or the queue
    /// overflowed and the connection is being closed).
    fn queue(&self, outbox: &Outbox, delivery: Delivery, replay: bool) -> bool {
        let counters = &self.shared.counters;
        let pushed = if replay { outbox.push_replay(delivery) } else { outbox.push(delivery) };
        match pushed {
            Pushed::Queued => true,
            Pushed::Replaced => {
                Counters::add(&counters.coalesced, 1);
                true
            }
            Pushed::DroppedOldest => {
                Counters::add(&counters.dropped_messages, 1);
                true
            }
            Pushed::Overflow => {
                Counters::add(&counters.slow_consumer_closes, 1);
                false
            }
            Pushed::Closing => false,
        }
    }

    /// Closes a connection that fell too far behind.
    fn overflow(&self, outbox: &Outbox) {
        if outbox.abort(codes::SLOW_CONSUMER, "Slow consumer") {
            Counters::add(&self.shared.counters.slow_consumer_closes, 1);
        }
    }

    /// Closes one connection with this code and reason (the reason is cut
    /// to fit a Close frame), after the messages already queued for it.
    /// `false` if it is gone or already closing.
    pub fn close(&self, conn: ConnId, code: CloseCode, reason: &str) -> bool {
        let registry = self.registry();
        registry.conns.get(&conn).is_some_and(|m| m.outbox.close(code, reason))
    }

    /// Closes one connection now: what is queued for it is dropped and the
    /// Close goes out next (for an operator, or a peer that does not
    /// read). A connection already closing gracefully is hurried along
    /// with its first code. `false` if it is gone or already closing.
    pub fn disconnect(&self, conn: ConnId, code: CloseCode, reason: &str) -> bool {
        let registry = self.registry();
        registry.conns.get(&conn).is_some_and(|m| m.outbox.abort(code, reason))
    }

    // ----- stats and shutdown ----------------------------------------------

    /// This node's counters.
    pub fn stats(&self) -> Stats {
        let (connections, rooms) = {
            let registry = self.registry();
            (registry.conns.len() as u64, registry.rooms.len() as u64)
        };
        self.shared.counters.snapshot(connections, rooms)
    }

    /// Counts across every node of the engine.
    pub async fn cluster(&self) -> Result<ClusterStats, HubError> {
        Ok(self.shared.engine.cluster().await?)
    }

    /// Whether [`Hub::shutdown`] has begun: new connections are refused from then on.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(SeqCst)
    }

    /// The close code of the shutdown under way (the first one asked for).
    fn closing_code(&self) -> (CloseCode, &'static str) {
        let closing = self.shared.closing.lock().unwrap_or_else(|p| p.into_inner());
        closing.unwrap_or((CloseCode::GOING_AWAY, "Server shutting down"))
    }

    /// Graceful shutdown: refuses new connections (503), sends Close 1001
    /// to every connection after the messages already queued for it, and
    /// waits up to `wait` for them to end. Returns
    /// whether all did. Connections still open after that are cut when
    /// their tasks are dropped (for example when the runtime stops).
    ///
    /// Cancel safety: cancel-safe; the hub stays in shutdown and the Close
    /// frames are already queued.
    pub async fn shutdown(&self, wait: Duration) -> bool {
        self.shutdown_with(CloseCode::GOING_AWAY, "Server shutting down", wait).await
    }

    /// [`shutdown`](Self::shutdown) with another close code: for example
    /// 1012 (service restart) when a node drains so that its clients
    /// reconnect to another node and recover there.
    pub async fn shutdown_with(&self, code: CloseCode, reason: &'static str, wait: Duration) -> bool {
        {
            let mut closing = self.shared.closing.lock().unwrap_or_else(|p| p.into_inner());
            closing.get_or_insert((code, reason));
        }
        self.shared.shutting_down.store(true, SeqCst);
        let (code, reason) = self.closing_code();
        for member in self.registry().conns.values() {
            member.outbox.close(code, reason);
        }
        let all_gone = async {
            loop {
                let gone = self.shared.gone.notified();
                tokio::pin!(gone);
                gone.as_mut().enable();
                if self.shared.slots.load(SeqCst) == 0 {
                    return;
                }
                gone.await;
            }
        };
        tokio::time::timeout(wait, all_gone).await.is_ok()
    }
}

#[cfg(test)]
mod tests;
