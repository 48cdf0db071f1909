//! What a publisher hands the hub, and what it gets back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::config::{ConnId, HubError};
use super::engine::{BoxFuture, EngineError, Placement};
use crate::Message;

/// A publication to one or more rooms, for [`Hub::publish_with`](super::Hub::publish_with).
///
/// ```
/// use sabai::hub::Publish;
///
/// // A reading for its device, its group and the global room: one
/// // publication, delivered once to a connection in several of them.
/// let reading = Publish::new(r#"{"t":21.5}"#).to("device:7").to("group:lab").to("global");
/// # let _ = reading;
/// ```
#[derive(Clone, Debug)]
pub struct Publish {
    pub(crate) message: Message,
    pub(crate) rooms: Vec<String>,
    pub(crate) ephemeral: bool,
    pub(crate) except: Option<ConnId>,
    pub(crate) coalesce: Option<Arc<str>>,
}

impl Publish {
    /// A publication of `message`, to no room yet.
    pub fn new(message: impl Into<Message>) -> Publish {
        Publish { message: message.into(), rooms: Vec::new(), ephemeral: false, except: None, coalesce: None }
    }

    /// Adds a room (a room named twice counts once).
    pub fn to(mut self, room: impl Into<String>) -> Publish {
        let room = room.into();
        if !self.rooms.contains(&room) {
            self.rooms.push(room);
        }
        self
    }

    /// Adds rooms.
    pub fn rooms(self, rooms: impl IntoIterator<Item = impl Into<String>>) -> Publish {
        rooms.into_iter().fold(self, Publish::to)
    }

    /// No offset and no history, even in rooms that keep one: for events
    /// that mean nothing later (typing, presence). Never replayed.
    pub fn ephemeral(mut self) -> Publish {
        self.ephemeral = true;
        self
    }

    /// Not delivered to this connection (for example its sender).
    pub fn except(mut self, conn: ConnId) -> Publish {
        self.except = Some(conn);
        self
    }

    /// The latest state wins: a recipient whose queue still holds a
    /// publication with this key (not yet taken by its writer) gets this
    /// one in its place instead of both, so its queue holds at most one
    /// per key however fast they come. For states that supersede each
    /// other (typing, presence, a gauge), on every node of the engine.
    ///
    /// Meant for [`ephemeral`](Self::ephemeral) publications: one with an
    /// offset that replaces another leaves a gap in the offsets that
    /// recipient sees.
    ///
    /// ```
    /// use sabai::hub::Publish;
    ///
    /// let typing = Publish::new(r#"{"user":"ann","typing":true}"#)
    ///     .to("chat:lobby")
    ///     .ephemeral()
    ///     .coalesce("typing|chat:lobby|ann");
    /// # let _ = typing;
    /// ```
    pub fn coalesce(mut self, key: impl Into<Arc<str>>) -> Publish {
        self.coalesce = Some(key.into());
        self
    }
}

/// A publication under way. Its order is already fixed; awaiting it gives
/// the offsets it got (one [`Placement`] per room, `position` set where
/// the room keeps history), dropping it changes nothing.
pub struct Publishing {
    outcome: BoxFuture<Result<Vec<Placement>, EngineError>>,
}

impl Publishing {
    pub(crate) fn new(outcome: BoxFuture<Result<Vec<Placement>, EngineError>>) -> Publishing {
        Publishing { outcome }
    }
}

impl std::fmt::Debug for Publishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publishing")
    }
}

impl Future for Publishing {
    type Output = Result<Vec<Placement>, HubError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.outcome.as_mut().poll(cx).map_err(HubError::Engine)
    }
}
