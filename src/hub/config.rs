//! Hub settings, the close codes the hub sends, and its events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{EngineError, HistoryPolicy, Position, Publication};
use super::limit::RateLimit;
#[cfg(feature = "deflate")]
use crate::DeflateConfig;
use crate::{CloseCode, Message};

/// Close codes the hub sends besides the RFC's (RFC 6455 §7.4.2 leaves
/// 4000–4999 to applications).
pub mod codes {
    use crate::CloseCode;

    /// No message from the client within the idle timeout.
    pub const IDLE_TIMEOUT: CloseCode = CloseCode(4000);
    /// The application refused the client's credentials after the
    /// handshake: a token that expired while connected, or a refused
    /// refresh (the hub itself never sends it; the realtime services of
    /// our design documents use 4001 for this).
    pub const AUTHENTICATION_FAILED: CloseCode = CloseCode(4001);
    /// No Pong (or any frame) within the pong timeout.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4002);
    /// The outbound queue overflowed under [`SlowConsumer::Close`](super::SlowConsumer::Close).
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    /// The user already has the maximum number of connections.
    pub const TOO_MANY_CONNECTIONS: CloseCode = CloseCode(4029);
}

/// What to do when a connection's outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close the connection with [`codes::SLOW_CONSUMER`] (the default): a
    /// client that cannot keep up gets a clean restart instead of gaps.
    Close,
    /// Drop the oldest queued message to make room (for telemetry, where
    /// only the latest value matters).
    DropOldest,
}

/// Decides whether a room name is acceptable; `Err` carries the reason.
pub type RoomValidator = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Turns a publication into the message its recipients get, once per
/// publication on each node (for example to add its offsets to a JSON
/// envelope). It runs under the hub's locks: it must not call the hub.
pub type Render = Arc<dyn Fn(&Publication) -> Message + Send + Sync>;

/// Limits and timers of a [`Hub`](super::Hub).
#[derive(Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Messages queued per connection before the slow-consumer policy acts (256).
    pub queue_capacity: usize,
    /// What happens when a queue is full (see [`SlowConsumer`]).
    pub slow_consumer: SlowConsumer,
    /// How often the server pings each connection (54 s).
    pub ping_interval: Duration,
    /// A connection from which nothing (no Pong, no message) arrived for
    /// this long is closed with [`codes::HEARTBEAT_TIMEOUT`] (60 s).
    pub pong_timeout: Duration,
    /// A connection that sent no message for this long is closed with
    /// [`codes::IDLE_TIMEOUT`]. Pongs do not count. Off by default.
    pub idle_timeout: Option<Duration>,
    /// Connections at once; the next handshake is refused with 503 (10 000).
    pub max_connections: usize,
    /// Connections of one user at once; the next is closed with
    /// [`codes::TOO_MANY_CONNECTIONS`] (unlimited by default).
    pub max_connections_per_user: Option<usize>,
    /// Largest inbound message, in bytes; over it: close 1009 (8 KiB).
    pub max_message_size: usize,
    /// How long the hub waits for a Close it sent to be answered (5 s).
    pub close_timeout: Duration,
    /// Room names the application accepts (by default: 1 to 128 bytes, no
    /// control characters).
    pub room_validator: RoomValidator,
    /// permessage-deflate (RFC 7692) for hub connections; off (`None`) by
    /// default. When set, the hub accepts a client's offer, always with
    /// `server_no_context_takeover` (whatever this says), and compresses a
    /// fanned-out message once for all its recipients (see
    /// [`Hub::prepare`](super::Hub::prepare)). `threshold` and `level`
    /// apply to those messages.
    #[cfg(feature = "deflate")]
    pub deflate: Option<DeflateConfig>,
    /// Which rooms keep a history, by name prefix (the longest matching
    /// prefix wins; `""` matches every room). None by default.
    pub history: Vec<(String, HistoryPolicy)>,
    /// What a publication looks like on the wire; by default its message
    /// as published.
    pub render: Option<Render>,
    /// How fast one connection may send data messages (see
    /// [`RateLimit`]); a connection over it is closed with 1008
    /// (policy violation, reason "Rate limit"). Off (`None`) by default.
    pub rate_limit: Option<RateLimit>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 256,
            slow_consumer: SlowConsumer::Close,
            ping_interval: Duration::from_secs(54),
            pong_timeout: Duration::from_secs(60),
            idle_timeout: None,
            max_connections: 10_000,
            max_connections_per_user: None,
            max_message_size: 8 * 1024,
            close_timeout: Duration::from_secs(5),
            room_validator: Arc::new(default_room_name),
            #[cfg(feature = "deflate")]
            deflate: None,
            history: Vec::new(),
            render: None,
            rate_limit: None,
        }
    }
}

impl HubConfig {
    /// Sets the room-name check.
    pub fn room_validator(
        mut self,
        check: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.room_validator = Arc::new(check);
        self
    }

    /// Rooms whose name starts with `prefix` keep this history.
    pub fn history(mut self, prefix: impl Into<String>, policy: HistoryPolicy) -> Self {
        let prefix = prefix.into();
        self.history.retain(|(p, _)| *p != prefix);
        self.history.push((prefix, policy));
        self
    }

    /// Sets how publications are rendered (see [`Render`]).
    pub fn render(mut self, render: impl Fn(&Publication) -> Message + Send + Sync + 'static) -> Self {
        self.render = Some(Arc::new(render));
        self
    }

    /// Limits how fast each connection may send (see [`RateLimit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The history policy of a room, if it keeps one.
    pub fn history_for(&self, room: &str) -> Option<&HistoryPolicy> {
        let matching = self.history.iter().filter(|(prefix, _)| room.starts_with(prefix.as_str()));
        matching.max_by_key(|(prefix, _)| prefix.len()).map(|(_, policy)| policy)
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("HubConfig");
        f.field("queue_capacity", &self.queue_capacity)
            .field("slow_consumer", &self.slow_consumer)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_message_size", &self.max_message_size)
            .field("close_timeout", &self.close_timeout)
            .field("history", &self.history)
            .field("render", &self.render.as_ref().map(|_| "custom"))
            .field("rate_limit", &self.rate_limit);
        #[cfg(feature = "deflate")]
        f.field("deflate", &self.deflate);
        f.finish_non_exhaustive()
    }
}

fn default_room_name(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > 128 {
        return Err("room names are 1 to 128 bytes".into());
    }
    if room.chars().any(char::is_control) {
        return Err("room names may not contain control characters".into());
    }
    Ok(())
}

/// A connection's id, unique for the life of the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What happened in the hub, for the application to forward (presence).
/// Delivered to the handler set with
/// [`Hub::on_event`](super::Hub::on_event), outside the hub's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// A connection was admitted.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The user its handshake hook authenticated, if any.
        user: Option<String>,
    },
    /// A connection joined `room`.
    Joined {
        /// The connection.
        conn: ConnId,
        /// Its user, if any.
        user: Option<String>,
        /// The room it joined.
        room: String,
    },
    /// Also sent for each room when a connection goes away.
    Left {
        /// The connection.
        conn: ConnId,
        /// Its user, if any.
        user: Option<String>,
        /// The room it left.
        room: String,
    },
    /// `code`: the close code sent or received, if any.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Its user, if any.
        user: Option<String>,
        /// The close code sent or received, if any.
        code: Option<CloseCode>,
    },
    /// The room's history was lost (its epoch changed) or could not fill
    /// a gap: its members on this node continue from `position` and
    /// should be told that they missed publications. Reported once per
    /// room, before any publication of the new position is delivered.
    RoomReset {
        /// The room.
        room: String,
        /// Where its members continue from.
        position: Position,
    },
    /// The connection sent faster than [`HubConfig::rate_limit`] allows
    /// and is being closed with 1008 (a [`Disconnected`](Self::Disconnected)
    /// follows).
    RateLimited {
        /// The connection.
        conn: ConnId,
        /// Its user, if any.
        user: Option<String>,
    },
}

/// A refused hub request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The room-name check said no.
    InvalidRoom(String),
    /// No such connection (it is gone).
    UnknownConnection,
    /// The engine could not do it (see [`EngineError`]).
    Engine(EngineError),
    /// The user already has `max_connections_per_user` connections.
    TooManyConnections,
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::InvalidRoom(why) => write!(f, "invalid room: {why}"),
            HubError::UnknownConnection => f.write_str("unknown connection"),
            HubError::Engine(error) => error.fmt(f),
            HubError::TooManyConnections => f.write_str("too many connections for this user"),
        }
    }
}

impl std::error::Error for HubError {}

impl From<EngineError> for HubError {
    fn from(error: EngineError) -> HubError {
        HubError::Engine(error)
    }
}
