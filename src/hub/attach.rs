//! Members that are not WebSockets: a Server-Sent Events stream, a long
//! poll. They join rooms, recover and get their bounded queue like any
//! connection; the application writes what [`Attached::next`] gives.

use std::sync::Arc;

use super::config::{codes, ConnId, HubError, HubEvent};
use super::info::Transport;
use super::outbox::{Delivery, Next, Outbox};
use super::session::Slot;
use super::stats::Counters;
use super::Hub;
use crate::CloseCode;

/// What an attached member gets next.
#[derive(Debug)]
#[non_exhaustive]
pub enum Taken {
    /// Deliveries, oldest first.
    Deliveries(Vec<Delivery>),
    /// The hub ended it (slow consumer, shutdown, [`Hub::close`]): write
    /// nothing more.
    Closed(CloseCode, String),
}

/// A member registered with [`Hub::attach`]. Dropping it removes it from
/// every room and index and frees its place.
#[derive(Debug)]
pub struct Attached {
    hub: Hub,
    id: ConnId,
    outbox: Arc<Outbox>,
    code: Option<CloseCode>,
    _slot: Slot,
}

impl Hub {
    /// Registers a member that is not a WebSocket, in the place `slot`
    /// reserved. Refused when its user is at `max_connections_per_user`.
    pub fn attach(&self, slot: Slot, user: Option<String>) -> Result<Attached, HubError> {
        let Some((id, outbox)) = self.admit(&slot, user.as_deref(), Transport::Attached) else {
            self.shared.counters.close_code(codes::TOO_MANY_CONNECTIONS.0);
            return Err(HubError::TooManyConnections);
        };
        Counters::add(&self.shared.counters.connections_total, 1);
        let attached = Attached { hub: self.clone(), id, outbox, code: None, _slot: slot };
        self.emit(HubEvent::Connected { conn: id, user });
        if self.is_shutting_down() {
            let (code, reason) = self.closing_code();
            attached.outbox.close(code, reason);
        }
        Ok(attached)
    }
}

impl Attached {
    /// The member's id: the same kind of id a WebSocket connection gets.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Waits for what is queued (up to `max` deliveries) or the end.
    ///
    /// Cancel safety: cancel-safe; nothing is taken until it returns.
    pub async fn next(&mut self, max: usize) -> Taken {
        match self.outbox.next(max, usize::MAX).await {
            Next::Frames(deliveries) => {
                let counters = &self.hub.shared.counters;
                Counters::add(&counters.messages_out, deliveries.len() as u64);
                self.outbox.traffic.sent(deliveries.len(), 0);
                Taken::Deliveries(deliveries)
            }
            Next::Close(code, reason) => {
                self.code.get_or_insert(code);
                Taken::Closed(code, reason)
            }
        }
    }

    /// Resolves once the hub ends it at once (a slow consumer): stop
    /// writing; [`next`](Self::next) then says [`Taken::Closed`].
    ///
    /// Cancel safety: cancel-safe.
    pub async fn aborted(&self) {
        self.outbox.aborted().await
    }

    /// Counts bytes written, for the hub's statistics.
    pub fn wrote(&self, bytes: usize) {
        Counters::add(&self.hub.shared.counters.bytes_out, bytes as u64);
        self.outbox.traffic.sent(0, bytes as u64);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.hub.cleanup(self.id, self.code);
    }
}
