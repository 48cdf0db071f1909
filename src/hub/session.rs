//! One hub connection's life: admission, the read and write loops, the
//! heartbeat and idle timers, and the cleanup of every index at the end.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant, Sleep};

use super::config::{codes, ConnId, HubEvent};
use super::info::Transport;
use super::limit::Limiter;
use super::outbox::{Delivery, Next, Outbox};
use super::stats::Counters;
use super::Hub;
use crate::handshake::{Accept, HandshakeError, Reject, Request};
use crate::tokio::{ReadHalf, WriteHalf};
use crate::{CloseCode, Event, Message};
use crate::{Error, WebSocket};

/// Frames, and bytes, moved from the queue into the socket per write: the
/// socket's own buffer stays bounded.
const BATCH: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

/// A place in the hub for one connection, from before its handshake to its
/// end. Dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    hub: Hub,
    id: ConnId,
}

impl Slot {
    pub(super) fn new(hub: Hub, id: ConnId) -> Slot {
        Slot { hub, id }
    }

    /// The id the connection served in this place will have: known before
    /// its handshake, for the application's own bookkeeping.
    pub fn id(&self) -> ConnId {
        self.id
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.release_slot();
    }
}

/// A connection accepted by [`Hub::accept`], ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct Accepted<S> {
    /// Its place among the hub's connections, released when it is dropped.
    pub slot: Slot,
    /// The WebSocket, after the handshake.
    pub ws: WebSocket<S>,
    /// The user the handshake hook authenticated, if any.
    pub user: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Accepted<S> {
    /// Runs the connection until it ends; see [`Hub::serve`] (and its
    /// cancel safety).
    pub async fn serve<H, F>(self, handler: H) -> Option<CloseCode>
    where
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let hub = self.slot.hub.clone();
        hub.serve(self.slot, self.ws, self.user, handler).await
    }
}

impl Hub {
    /// Reserves a place, runs the opening handshake with the hub's
    /// WebSocket settings, and lets `hook` authenticate the request:
    /// `Ok(Some(user))`, `Ok(None)` for an anonymous connection, or a
    /// [`Reject`]. A full or closing hub answers 503 before the hook runs.
    ///
    /// For TCP, call `set_nodelay(true)` on the stream first: the hub
    /// gathers its writes itself, and Nagle's algorithm would hold a small
    /// message back until the peer's delayed ACK.
    ///
    /// Cancel safety: not cancel-safe, like [`accept_with`](crate::accept_with);
    /// dropping it frees the reserved place.
    pub async fn accept<S, F>(&self, stream: S, hook: F) -> Result<Accepted<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(&Request) -> Result<Option<String>, Reject>,
    {
        let (mut slot, mut refusal) = match self.reserve() {
            Ok(slot) => (Some(slot), None),
            Err(reject) => (None, Some(reject)),
        };
        let mut user = None;
        let ws = crate::accept_with(stream, &self.websocket_config(), |request| {
            if let Some(reject) = refusal.take() {
                return Err(reject);
            }
            user = hook(request)?;
            Ok(Accept::new())
        })
        .await?;
        let slot = slot.take().ok_or(Error::Handshake(HandshakeError::Rejected(503)))?;
        Ok(Accepted { slot, ws, user })
    }

    /// Runs one connection until it ends and returns the close code that
    /// ended it (ours or the peer's, whichever came first). `handler` gets
    /// every data message within the size limit and returns a future,
    /// awaited before the next message is read, so a connection's messages
    /// are handled in order (while its queue keeps being written). It runs
    /// on this task, so it should not block.
    ///
    /// ```no_run
    /// # async fn demo(hub: sabai::hub::Hub, accepted: sabai::hub::Accepted<tokio::net::TcpStream>) {
    /// accepted
    ///     .serve(|hub, conn, message| async move {
    ///         if let Some(room) = message.as_text() {
    ///             let _ = hub.join(conn, room).await;
    ///         }
    ///     })
    ///     .await;
    /// # }
    /// ```
    ///
    /// A user over `max_connections_per_user` is closed at once with 4029.
    ///
    /// Cancel safety: dropping the future drops the connection without a
    /// Close frame; it still leaves every room and index, is reported as
    /// [`HubEvent::Disconnected`] (counted under 1006), and frees its place.
    pub async fn serve<S, H, F>(
        &self,
        slot: Slot,
        ws: WebSocket<S>,
        user: Option<String>,
        handler: H,
    ) -> Option<CloseCode>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let admitted = self.admit(&slot, user.as_deref(), Transport::WebSocket);
        let Some((id, outbox)) = admitted else {
            let mut ws = ws;
            let code = codes::TOO_MANY_CONNECTIONS;
            // Bounded by the connection's close timeout.
            let _ = ws.close(code, "Too many connections").await;
            self.shared.counters.close_code(code.0);
            drop(slot);
            return Some(code);
        };
        Counters::add(&self.shared.counters.connections_total, 1);
        // Cleans the indexes even if this future is dropped midway.
        let mut registered = Registered { hub: self, id, code: None, _slot: slot };
        self.emit(HubEvent::Connected { conn: id, user });
        if self.is_shutting_down() {
            let (code, reason) = self.closing_code();
            outbox.close(code, reason);
        }
        registered.code = self.run(id, ws, &outbox, handler).await;
        registered.code
    }

    /// Registers a connection unless its user is at the per-user limit.
    pub(super) fn admit(
        &self,
        slot: &Slot,
        user: Option<&str>,
        transport: Transport,
    ) -> Option<(ConnId, Arc<Outbox>)> {
        let config = &self.shared.config;
        let mut registry = self.registry();
        let full = user
            .zip(config.max_connections_per_user)
            .is_some_and(|(u, max)| registry.user_connections(u) >= max);
        if full {
            return None;
        }
        let id = slot.id;
        let outbox = Arc::new(Outbox::new(config.queue_capacity, config.slow_consumer));
        registry.insert(id, user.map(str::to_owned), outbox.clone());
        if let Some(member) = registry.conns.get_mut(&id) {
            member.transport = transport;
        }
        Some((id, outbox))
    }

    pub(super) fn cleanup(&self, id: ConnId, code: Option<CloseCode>) {
        self.shared.counters.close_code(code.map_or(CloseCode::ABNORMAL.0, |c| c.0));
        let Some(member) = self.remove(id) else { return };
        member.outbox.close(CloseCode::NORMAL, "");
        for room in member.rooms.into_keys() {
            self.emit(HubEvent::Left { conn: id, user: member.user.clone(), room });
        }
        self.emit(HubEvent::Disconnected { conn: id, user: member.user, code });
    }

    /// The read and write loops of one connection, on this task.
    async fn run<S, H, F>(
        &self,
        id: ConnId,
        ws: WebSocket<S>,
        outbox: &Outbox,
        handler: H,
    ) -> Option<CloseCode>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let (read, write) = ws.split();
        let timers = Timers {
            seen: SyncCell::new(Instant::now()),
            spoke: SyncCell::new(Instant::now()),
            code: SyncCell::new(None),
        };
        tokio::select! {
            () = self.read_loop(id, read, outbox, &timers, handler) => {}
            () = self.write_loop(write, outbox, &timers) => {}
        }
        timers.code.get()
    }

    async fn read_loop<S, H, F>(
        &self,
        id: ConnId,
        mut read: ReadHalf<S>,
        outbox: &Outbox,
        timers: &Timers,
        mut handler: H,
    ) where
        S: AsyncRead + AsyncWrite,
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let counters = &self.shared.counters;
        let config = &self.shared.config;
        let mut limiter =
            config.rate_limit.map(|l| Limiter::new(&l, config.max_message_size, Instant::now()));
        loop {
            let event = read.recv_event().await;
            let now = Instant::now();
            timers.seen.set(now);
            match event {
                Ok(Some(Event::Message(message))) => {
                    timers.spoke.set(now);
                    Counters::add(&counters.messages_in, 1);
                    Counters::add(&counters.bytes_in, message.len() as u64);
                    outbox.traffic.received(message.len());
                    // The protocol limit normally catches this first (see
                    // Hub::websocket_config); a WebSocket built with other
                    // settings is held to the hub's limit here.
                    if message.len() > config.max_message_size {
                        outbox.close(CloseCode::MESSAGE_TOO_BIG, "Message too big");
                        continue;
                    }
                    if outbox.is_closing() {
                        continue;
                    }
                    if limiter.as_mut().is_some_and(|l| !l.admit(message.len(), now)) {
                        // At once: what is queued for a flooder is dropped,
                        // and what it sends after this is read and ignored.
                        if outbox.abort(CloseCode::POLICY_VIOLATION, "Rate limit") {
                            Counters::add(&counters.rate_limited, 1);
                            self.emit(HubEvent::RateLimited { conn: id, user: self.user_of(id) });
                        }
                        continue;
                    }
                    // Boxed: the handler's future (the server's can hold
                    // a whole request) would otherwise be part of every
                    // connection's task, idle or not.
                    Box::pin(handler(self.clone(), id, message)).await;
                }
                Ok(Some(Event::Close(frame))) => {
                    timers.first_code(frame.map_or(CloseCode::NO_STATUS, |f| f.code));
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(Error::AbnormalClosure) | Err(Error::Io(_)) => return,
                Err(Error::Protocol(error)) => {
                    timers.first_code(error.close_code());
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Writes queued frames, pings, and turns close requests and expired
    /// timers into a Close frame. Returns only when the connection must be
    /// dropped: its Close went unanswered, or the transport failed.
    async fn write_loop<S: AsyncRead + AsyncWrite>(
        &self,
        mut write: WriteHalf<S>,
        outbox: &Outbox,
        timers: &Timers,
    ) {
        let config = &self.shared.config;
        let counters = &self.shared.counters;
        // One timer for the connection's life, at the next ping or the
        // heartbeat or idle deadline, whichever comes first: a timer
        // registered per batch was a large part of a delivery's cost, and
        // a second one (an interval for pings) costs every connection.
        let mut next_ping = Instant::now() + config.ping_interval;
        let mut timer = pin!(sleep_until(next_ping.min(deadline(config, timers))));
        let mut expired = false;
        loop {
            // Moving a registered timer later is cheap in tokio (no new
            // registration); the deadlines only move later, except that a
            // ping skipped while a write was stuck is due at once.
            let due = next_ping.min(deadline(config, timers));
            if !expired && timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                // The timer first: a queue that is never empty must not
                // keep the heartbeat from being checked.
                biased;
                () = timer.as_mut(), if !expired => {
                    let now = Instant::now();
                    expired = overdue(config, timers, outbox, now);
                    if !expired && now >= next_ping {
                        next_ping = now + config.ping_interval;
                        timer.as_mut().reset(next_ping.min(deadline(config, timers)));
                        if give_way(pin!(write.ping(b"")), outbox, config, timers, timer.as_mut(), &mut expired).await.is_err() {
                            return wind_down(&mut write).await;
                        }
                    }
                }
                next = outbox.next(BATCH, BATCH_BYTES) => match next {
                    Next::Frames(frames) => {
                        // Compressed here, once for all recipients, if it is
                        // the first writer to take it.
                        let Ok(bytes) = write.feed_prepared_all(frames.iter().map(Delivery::message)) else {
                            return wind_down(&mut write).await;
                        };
                        if give_way(pin!(write.flush()), outbox, config, timers, timer.as_mut(), &mut expired).await.is_err() {
                            return wind_down(&mut write).await;
                        }
                        Counters::add(&counters.messages_out, frames.len() as u64);
                        Counters::add(&counters.bytes_out, bytes as u64);
                        outbox.traffic.sent(frames.len(), bytes as u64);
                    }
                    Next::Close(code, reason) => {
                        timers.first_code(code);
                        let _ = write.start_close(code, &reason);
                        return write.closed().await;
                    }
                },
            }
        }
    }
}

/// Waits for a write (a flush, a ping), but gives way to an abort or an
/// expired heartbeat: a peer that does not read must not keep them from
/// being seen. Given way, the write's bytes stay buffered and go out with
/// the next one. A ping that falls due meanwhile waits for the write.
async fn give_way(
    mut write: Pin<&mut impl Future<Output = Result<(), Error>>>,
    outbox: &Outbox,
    config: &super::HubConfig,
    timers: &Timers,
    mut timer: Pin<&mut Sleep>,
    expired: &mut bool,
) -> Result<(), Error> {
    while !*expired {
        tokio::select! {
            biased;
            written = write.as_mut() => return written,
            () = outbox.aborted() => break,
            () = timer.as_mut() => {
                *expired = overdue(config, timers, outbox, Instant::now());
                timer.as_mut().reset(deadline(config, timers));
            }
        }
    }
    Ok(())
}

/// Aborts the connection and returns `true` if the peer went silent for
/// too long (no frame within `pong_timeout`, or no message within
/// `idle_timeout`).
fn overdue(config: &super::HubConfig, timers: &Timers, outbox: &Outbox, now: Instant) -> bool {
    if now >= timers.seen.get() + config.pong_timeout {
        outbox.abort(codes::HEARTBEAT_TIMEOUT, "Heartbeat timeout");
    } else if config.idle_timeout.is_some_and(|idle| now >= timers.spoke.get() + idle) {
        outbox.abort(codes::IDLE_TIMEOUT, "Idle timeout");
    } else {
        return false;
    }
    true
}

/// The earliest the heartbeat or the idle timeout can expire.
fn deadline(config: &super::HubConfig, timers: &Timers) -> Instant {
    let mut deadline = timers.seen.get() + config.pong_timeout;
    if let Some(idle) = config.idle_timeout {
        deadline = deadline.min(timers.spoke.get() + idle);
    }
    deadline
}

/// After a failed write: the transport failed (the connection is aborted,
/// and `closed` returns at once), or the connection is closing already
/// (the read loop finishes it, within its close timeout). A connection
/// still open here met an error the hub never causes; it is closed as
/// an internal error rather than left without a writer.
async fn wind_down<S: AsyncRead + AsyncWrite>(write: &mut WriteHalf<S>) {
    let _ = write.start_close(CloseCode::INTERNAL_ERROR, "");
    write.closed().await
}

/// A registered connection; dropping it removes it from every index,
/// reports it gone, and then frees its slot.
struct Registered<'a> {
    hub: &'a Hub,
    id: ConnId,
    code: Option<CloseCode>,
    _slot: Slot,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.hub.cleanup(self.id, self.code);
    }
}

/// Times and the closing code, shared by the two loops of one task. A
/// plain `Cell` would do, but the task must stay `Send`.
struct Timers {
    /// Last frame of any kind from the peer (heartbeat).
    seen: SyncCell<Instant>,
    /// Last data message from the peer (idle timeout).
    spoke: SyncCell<Instant>,
    code: SyncCell<Option<CloseCode>>,
}

impl Timers {
    fn first_code(&self, code: CloseCode) {
        let mut slot = self.code.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(code);
    }
}

/// A `Copy` value behind a lock that is never held across an await: a
/// `Cell` the task can share between its two loops and still be `Send`.
struct SyncCell<T>(Mutex<T>);

impl<T: Copy> SyncCell<T> {
    fn new(value: T) -> Self {
        SyncCell(Mutex::new(value))
    }
    fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }
}
