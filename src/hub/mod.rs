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
//!             .serve(|hub, conn, message| {
//!                 // A toy protocol: every text joins that room and greets it.
//!                 if let Some(room) = message.as_text() {
//!                     let _ = hub.join(conn, room);
//!                     hub.publish(room, format!("{conn} joined"));
//!                 }
//!             })
//!             .await;
//!     });
//! }
//! # }
//! ```

mod config;
mod outbox;
mod registry;
mod session;
mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::handshake::Reject;
use crate::proto::{CloseCode, Message, PreparedMessage};
use crate::WebSocketConfig;

pub use config::{codes, ConnId, HubConfig, HubError, HubEvent, RoomValidator, SlowConsumer};
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
    shared: Arc<Shared>,
}

struct Shared {
    config: HubConfig,
    registry: Mutex<Registry>,
    counters: Counters,
    next_id: AtomicU64,
    /// Connections admitted or being handshaken (for `max_connections`).
    slots: AtomicUsize,
    shutting_down: AtomicBool,
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
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            shared: Arc::new(Shared {
                config,
                registry: Mutex::new(Registry::default()),
                counters: Counters::default(),
                next_id: AtomicU64::new(1),
                slots: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                gone: Notify::new(),
                on_event: RwLock::new(None),
            }),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The WebSocket settings for hub connections: the hub's inbound
    /// message limit becomes the protocol's (over it: close 1009), and
    /// [`HubConfig::deflate`], if set, is what the handshake accepts.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let mut config = WebSocketConfig::default();
        config.protocol.max_message_size = self.shared.config.max_message_size;
        config.protocol.max_frame_size = self.shared.config.max_message_size;
        config.close_timeout = self.shared.config.close_timeout;
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
    /// permessage-deflate; the others get the plain frame. Use it for
    /// [`publish_prepared`](Self::publish_prepared) and
    /// [`publish_except`](Self::publish_except).
    pub fn prepare(&self, message: impl Into<Message>) -> PreparedMessage {
        let message = message.into();
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &self.shared.config.deflate {
            return PreparedMessage::with_deflate(&message, deflate);
        }
        PreparedMessage::new(&message)
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
        Ok(Slot::new(self.clone()))
    }

    // ----- rooms ------------------------------------------------------------

    /// Adds a connection to a room. `Ok(false)`: it was already there.
    pub fn join(&self, conn: ConnId, room: &str) -> Result<bool, HubError> {
        (self.shared.config.room_validator)(room).map_err(HubError::InvalidRoom)?;
        let (joined, user) = {
            let mut registry = self.registry();
            let joined = registry.join(conn, room).ok_or(HubError::UnknownConnection)?;
            (joined, registry.conns.get(&conn).and_then(|m| m.user.clone()))
        };
        if joined {
            self.emit(HubEvent::Joined { conn, user, room: room.to_owned() });
        }
        Ok(joined)
    }

    /// Removes a connection from a room. `Ok(false)`: it was not there.
    pub fn leave(&self, conn: ConnId, room: &str) -> Result<bool, HubError> {
        let (left, user) = {
            let mut registry = self.registry();
            let left = registry.leave(conn, room).ok_or(HubError::UnknownConnection)?;
            (left, registry.conns.get(&conn).and_then(|m| m.user.clone()))
        };
        if left {
            self.emit(HubEvent::Left { conn, user, room: room.to_owned() });
        }
        Ok(left)
    }

    /// The rooms a connection is in, sorted; `None` if it is gone.
    pub fn rooms_of(&self, conn: ConnId) -> Option<Vec<String>> {
        self.registry().conns.get(&conn).map(|m| m.rooms.iter().cloned().collect())
    }

    /// The user a connection was authenticated as.
    pub fn user_of(&self, conn: ConnId) -> Option<String> {
        self.registry().conns.get(&conn).and_then(|m| m.user.clone())
    }

    /// Every room with its member count, sorted by name.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let mut rooms: Vec<_> = self.registry().rooms.iter().map(|(r, m)| (r.clone(), m.len())).collect();
        rooms.sort();
        rooms
    }

    /// Presence: the connections in a room and their users.
    pub fn members(&self, room: &str) -> Vec<(ConnId, Option<String>)> {
        self.registry().room_members(room).map(|(id, m)| (id, m.user.clone())).collect()
    }

    /// Presence: the distinct users in a room, sorted.
    pub fn users_in(&self, room: &str) -> Vec<String> {
        let registry = self.registry();
        let users: std::collections::BTreeSet<String> =
            registry.room_members(room).filter_map(|(_, m)| m.user.clone()).collect();
        users.into_iter().collect()
    }

    pub fn connection_count(&self) -> usize {
        self.registry().conns.len()
    }

    // ----- sending ----------------------------------------------------------

    /// Sends a message to every member of a room; returns how many it was
    /// queued for. Encoded (and compressed) once; never waits.
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> usize {
        self.publish_prepared(room, &self.prepare(message))
    }

    /// [`publish`](Self::publish) of an already prepared message.
    pub fn publish_prepared(&self, room: &str, message: &PreparedMessage) -> usize {
        self.publish_except(room, None, message)
    }

    /// Publishes to a room except one connection (for example the sender
    /// of a typing notice).
    pub fn publish_except(&self, room: &str, except: Option<ConnId>, message: &PreparedMessage) -> usize {
        let registry = self.registry();
        let members = registry.room_members(room).filter(|(id, _)| Some(*id) != except);
        members.filter(|(_, m)| self.deliver(&m.outbox, message)).count()
    }

    /// Sends to one connection; `false` if it is gone or closing.
    pub fn send_to(&self, conn: ConnId, message: impl Into<Message>) -> bool {
        let message = self.prepare(message);
        let registry = self.registry();
        registry.conns.get(&conn).is_some_and(|m| self.deliver(&m.outbox, &message))
    }

    /// Sends to every connection of a user.
    pub fn send_to_user(&self, user: &str, message: impl Into<Message>) -> usize {
        let message = self.prepare(message);
        let registry = self.registry();
        let ids = registry.users.get(user).into_iter().flatten();
        ids.filter_map(|id| registry.conns.get(id)).filter(|m| self.deliver(&m.outbox, &message)).count()
    }

    /// Sends to every connection.
    pub fn broadcast(&self, message: impl Into<Message>) -> usize {
        let message = self.prepare(message);
        let registry = self.registry();
        registry.conns.values().filter(|m| self.deliver(&m.outbox, &message)).count()
    }

    fn deliver(&self, outbox: &Outbox, message: &PreparedMessage) -> bool {
        let counters = &self.shared.counters;
        match outbox.push(message.clone()) {
            Pushed::Queued => true,
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

    /// Closes one connection with this code and reason (the reason is cut
    /// to fit a Close frame), after the messages already queued for it.
    /// `false` if it is gone or already closing.
    pub fn close(&self, conn: ConnId, code: CloseCode, reason: &str) -> bool {
        let registry = self.registry();
        registry.conns.get(&conn).is_some_and(|m| m.outbox.close(code, reason))
    }

    // ----- stats and shutdown ----------------------------------------------

    pub fn stats(&self) -> Stats {
        let (connections, rooms) = {
            let registry = self.registry();
            (registry.conns.len() as u64, registry.rooms.len() as u64)
        };
        self.shared.counters.snapshot(connections, rooms)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(SeqCst)
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
        self.shared.shutting_down.store(true, SeqCst);
        for member in self.registry().conns.values() {
            member.outbox.close(CloseCode::GOING_AWAY, "Server shutting down");
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
