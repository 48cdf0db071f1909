//! One hub connection's life: admission, the read and write loops, the
//! heartbeat and idle timers, and the cleanup of every index at the end.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

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
    pub fn serve<H, F>(self, handler: H) -> impl Future<Output = Option<CloseCode>>
    where
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let Accepted { slot, ws, user } = self;
        let hub = slot.hub.clone();
        hub.serve(slot, ws, user, handler)
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
    //
    // The connection's task is mostly this future, so it and its pieces
    // are functions returning `async move` blocks rather than `async fn`s:
    // an `async fn` keeps its arguments twice for as long as it runs (once
    // as passed, once bound), and these run for the connection's life.
    #[allow(clippy::manual_async_fn)]
    pub fn serve<S, H, F>(
        &self,
        slot: Slot,
        ws: WebSocket<S>,
        user: Option<String>,
        handler: H,
    ) -> impl Future<Output = Option<CloseCode>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        H: FnMut(Hub, ConnId, Message) -> F,
        F: Future<Output = ()>,
    {
        let hub = self.clone();
        // Split now: the future holds the two halves (24 bytes), not the
        // WebSocket (64) beside them.
        let (mut read, mut write) = ws.split();
        async move {
            let admitted = hub.admit(&slot, user.as_deref(), Transport::WebSocket);
            let Some((id, outbox)) = admitted else {
                let code = codes::TOO_MANY_CONNECTIONS;
                let _ = write.start_close(code, "Too many connections");
                // The read half answers the peer's Close and closes the
                // transport; `closed` bounds the wait by the close timeout.
                tokio::select! {
                    () = async { while let Ok(Some(_)) = read.recv_event().await {} } => {}
                    () = write.closed() => {}
                }
                hub.shared.counters.close_code(code.0);
                drop(slot);
                return Some(code);
            };
            Counters::add(&hub.shared.counters.connections_total, 1);
            // Cleans the indexes even if this future is dropped midway.
            let mut registered = Registered { hub: &hub, id, code: None, _slot: slot };
            hub.emit(HubEvent::Connected { conn: id, user });
            if hub.is_shutting_down() {
                let (code, reason) = hub.closing_code();
                outbox.close(code, reason);
            }
            let timers = Timers::new(Instant::now());
            tokio::select! {
                () = read_loop(&hub, id, read, &outbox, &timers, handler) => {}
                () = write_loop(&hub, write, &outbox, &timers) => {}
            }
            registered.code = timers.code();
            registered.code
        }
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
}

/// Reads the peer's frames: hands data messages to `handler`, in order,
/// and notes the times the heartbeat and idle timers look at.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn read_loop<'a, S, H, F>(
    hub: &'a Hub,
    id: ConnId,
    mut read: ReadHalf<S>,
    outbox: &'a Outbox,
    timers: &'a Timers,
    mut handler: H,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + 'a,
    H: FnMut(Hub, ConnId, Message) -> F + 'a,
    F: Future<Output = ()>,
{
    async move {
        let counters = &hub.shared.counters;
        let config = &hub.shared.config;
        let mut limiter =
            config.rate_limit.map(|l| Limiter::new(&l, config.max_message_size, Instant::now()));
        loop {
            let event = read.recv_event().await;
            let now = Instant::now();
            timers.saw(now);
            match event {
                Ok(Some(Event::Message(message))) => {
                    timers.heard(now);
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
                            hub.emit(HubEvent::RateLimited { conn: id, user: hub.user_of(id) });
                        }
                        continue;
                    }
                    // Boxed: the handler's future (the server's can hold
                    // a whole request) would otherwise be part of every
                    // connection's task, idle or not.
                    Box::pin(handler(hub.clone(), id, message)).await;
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
}

/// Writes queued frames, pings, and turns close requests and expired
/// timers into a Close frame. Returns only when the connection must be
/// dropped: its Close went unanswered, or the transport failed.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn write_loop<'a, S: AsyncRead + AsyncWrite + 'a>(
    hub: &'a Hub,
    mut write: WriteHalf<S>,
    outbox: &'a Outbox,
    timers: &'a Timers,
) -> impl Future<Output = ()> + 'a {
    async move {
        let config = &hub.shared.config;
        let counters = &hub.shared.counters;
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
///
/// A plain future (48 bytes) rather than an `async` select, which took 112
/// of every connection's task.
fn give_way<'a, W: Future<Output = Result<(), Error>>>(
    write: Pin<&'a mut W>,
    outbox: &'a Outbox,
    config: &'a super::HubConfig,
    timers: &'a Timers,
    timer: Pin<&'a mut Sleep>,
    expired: &'a mut bool,
) -> GiveWay<'a, W> {
    GiveWay { write, outbox, config, timers, timer, expired }
}

struct GiveWay<'a, W> {
    write: Pin<&'a mut W>,
    outbox: &'a Outbox,
    config: &'a super::HubConfig,
    timers: &'a Timers,
    timer: Pin<&'a mut Sleep>,
    expired: &'a mut bool,
}

impl<W: Future<Output = Result<(), Error>>> Future for GiveWay<'_, W> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is a reference or a `Pin` of one: moving them is fine.
        let this = self.get_mut();
        // In this order: the write, then an abort, then the heartbeat.
        while !*this.expired {
            if let Poll::Ready(written) = this.write.as_mut().poll(cx) {
                return Poll::Ready(written);
            }
            if this.outbox.poll_aborted(cx).is_ready() {
                break;
            }
            ready!(this.timer.as_mut().poll(cx));
            *this.expired = overdue(this.config, this.timers, this.outbox, Instant::now());
            this.timer.as_mut().reset(deadline(this.config, this.timers));
        }
        Poll::Ready(Ok(()))
    }
}

/// Aborts the connection and returns `true` if the peer went silent for
/// too long (no frame within `pong_timeout`, or no message within
/// `idle_timeout`).
fn overdue(config: &super::HubConfig, timers: &Timers, outbox: &Outbox, now: Instant) -> bool {
    if now >= timers.seen() + config.pong_timeout {
        outbox.abort(codes::HEARTBEAT_TIMEOUT, "Heartbeat timeout");
    } else if config.idle_timeout.is_some_and(|idle| now >= timers.spoke() + idle) {
        outbox.abort(codes::IDLE_TIMEOUT, "Idle timeout");
    } else {
        return false;
    }
    true
}

/// The earliest the heartbeat or the idle timeout can expire.
fn deadline(config: &super::HubConfig, timers: &Timers) -> Instant {
    let mut deadline = timers.seen() + config.pong_timeout;
    if let Some(idle) = config.idle_timeout {
        deadline = deadline.min(timers.spoke() + idle);
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

/// Times and the closing code, shared by the two loops of one task:
/// atomics, where a `Cell` would do, because the task must be `Send`.
/// The times count from the connection's start, in nanoseconds.
struct Timers {
    start: Instant,
    /// Last frame of any kind from the peer (heartbeat).
    seen: AtomicU64,
    /// Last data message from the peer (idle timeout).
    spoke: AtomicU64,
    /// The first close code, 0 until there is one (no close code is 0:
    /// RFC 6455 §7.4.2 leaves 0-999 unused).
    code: AtomicU16,
}

impl Timers {
    fn new(start: Instant) -> Timers {
        Timers { start, seen: AtomicU64::new(0), spoke: AtomicU64::new(0), code: AtomicU16::new(0) }
    }

    fn since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn saw(&self, now: Instant) {
        self.seen.store(self.since_start(now), Relaxed);
    }

    fn heard(&self, now: Instant) {
        self.spoke.store(self.since_start(now), Relaxed);
    }

    fn seen(&self) -> Instant {
        self.start + Duration::from_nanos(self.seen.load(Relaxed))
    }

    fn spoke(&self) -> Instant {
        self.start + Duration::from_nanos(self.spoke.load(Relaxed))
    }

    fn first_code(&self, code: CloseCode) {
        let _ = self.code.compare_exchange(0, code.0, Relaxed, Relaxed);
    }

    fn code(&self) -> Option<CloseCode> {
        Some(self.code.load(Relaxed)).filter(|&c| c != 0).map(CloseCode)
    }
}
