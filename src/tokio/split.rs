//! Splitting a [`WebSocket`](super::WebSocket) into halves for two tasks.
//!
//! The halves share the connection behind a mutex that is only held
//! inside a poll, never across an await. Only the read half reads the
//! transport and drives the connection's lifecycle (its directives and its
//! close timer). Both halves write it: the write half its messages, the
//! read half the Pongs, the Close echo and the closing steps the protocol
//! requires. A write that fails, in either half, aborts the connection and
//! wakes the other half. [`WriteHalf::closed`] also passes the time in, to
//! bound a close whose read half is not being polled.
//!
//! The pitfall (tokio-websockets #92, #106): a socket keeps one waker per
//! direction, so when both halves wait to write, the second registration
//! replaces the first and that task is never woken. Here every write-side
//! poll goes through one waker that wakes both halves; a half woken for
//! nothing just polls again.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Wake, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant, Sleep};

use super::error::Error;
use super::pump::{poll_read_into, Pump, ReadIo, WriteIo};
use crate::{
    CloseCode, Connection, Directive, Event, Message, MessageKind, PreparedMessage, SendError, State,
};

/// The wakers of the two halves, woken together on write readiness.
#[derive(Debug, Default)]
struct HalfWakers {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl Wake for HalfWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.reader, &self.writer] {
            if let Some(waker) = lock(slot).take() {
                waker.wake();
            }
        }
    }
}

/// What the two halves share.
#[derive(Debug)]
struct Halves<S> {
    locked: Mutex<Locked<S>>,
    wakers: Arc<HalfWakers>,
    /// Wakes both halves: the context of every write-side poll.
    wake_both: Waker,
}

/// The connection and the transport's write side, used under one lock.
#[derive(Debug)]
struct Locked<S> {
    pump: Pump,
    write: tokio::io::WriteHalf<S>,
}

/// A poisoned lock only means another thread panicked mid-poll; the state
/// is still consistent at poll boundaries, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) fn split<S: AsyncRead + AsyncWrite + Unpin>(io: S, pump: Pump) -> (ReadHalf<S>, WriteHalf<S>) {
    let (read, write) = tokio::io::split(io);
    let wakers = Arc::new(HalfWakers::default());
    let wake_both = Waker::from(wakers.clone());
    let halves = Arc::new(Halves { locked: Mutex::new(Locked { pump, write }), wakers, wake_both });
    (ReadHalf { halves: halves.clone(), read }, WriteHalf { halves })
}

/// Writes through the waker of both halves after recording the caller's.
struct SharedWriter<'a, S> {
    write: &'a mut tokio::io::WriteHalf<S>,
    wake_both: &'a Waker,
}

impl<S: AsyncWrite> WriteIo for SharedWriter<'_, S> {
    fn poll_write_vectored(&mut self, _: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let cx = &mut Context::from_waker(self.wake_both);
        std::pin::Pin::new(&mut *self.write).poll_write_vectored(cx, data)
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.write).poll_flush(&mut Context::from_waker(self.wake_both))
    }
    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.write).poll_shutdown(&mut Context::from_waker(self.wake_both))
    }
}

/// The read half's transport: its own reading side and the shared writer.
struct ReaderIo<'a, S> {
    read: &'a mut tokio::io::ReadHalf<S>,
    writer: SharedWriter<'a, S>,
}

impl<S: AsyncRead> ReadIo for ReaderIo<'_, S> {
    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        poll_read_into(self.read, cx, buf)
    }
}

impl<S: AsyncWrite> WriteIo for ReaderIo<'_, S> {
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.writer.poll_write_vectored(cx, data)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_shutdown(cx)
    }
}

/// The receiving half of a split [`WebSocket`](super::WebSocket). It also
/// answers Pings, echoes the Close, and closes the transport at the end as
/// the connection directs: keep calling [`recv`](Self::recv) until
/// `Ok(None)`.
#[derive(Debug)]
pub struct ReadHalf<S> {
    halves: Arc<Halves<S>>,
    read: tokio::io::ReadHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> ReadHalf<S> {
    /// As [`WebSocket::recv`](super::WebSocket::recv). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match self.recv_event().await? {
                Some(Event::Message(message)) => return Ok(Some(message)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// As [`WebSocket::recv_event`](super::WebSocket::recv_event). Cancel-safe.
    pub async fn recv_event(&mut self) -> Result<Option<Event>, Error> {
        poll_fn(|cx| self.poll_recv_event(cx)).await
    }

    /// The poll form of [`recv_event`](Self::recv_event), for hand-written futures. Cancel-safe.
    pub fn poll_recv_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        *lock(&self.halves.wakers.reader) = Some(cx.waker().clone());
        let mut locked = lock(&self.halves.locked);
        let Locked { pump, write } = &mut *locked;
        let writer = SharedWriter { write, wake_both: &self.halves.wake_both };
        let polled = pump.poll_recv_event(cx, &mut ReaderIo { read: &mut self.read, writer });
        if polled.is_ready() && pump.conn.state() != State::Open {
            // A write half waiting in `closed` learns that the connection
            // left `Open`, or ended.
            if let Some(waker) = lock(&self.halves.wakers.writer).take() {
                waker.wake();
            }
        }
        polled
    }
}

/// The sending half of a split [`WebSocket`](super::WebSocket), with the
/// same sending verbs. Its sends write at once (no batching: the write
/// half cannot know when the read half will next wait); `feed` only
/// queues, and `flush` writes what was fed.
#[derive(Debug)]
pub struct WriteHalf<S> {
    halves: Arc<Halves<S>>,
}

impl<S: AsyncRead + AsyncWrite> WriteHalf<S> {
    /// Sends a message. Cancel safety: if cancelled, the message may still
    /// be sent, in full, by a later call; never partly.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message)?;
        self.flush().await
    }

    /// Queues a message without writing; [`flush`](Self::flush) sends it.
    /// Queue a batch, then flush once.
    pub fn feed(&mut self, message: Message) -> Result<(), Error> {
        self.queue(|conn| conn.send(message))
    }

    /// Sends a message framed once for many connections (see
    /// [`PreparedMessage`]); returns the bytes queued. Cancel safety: as
    /// [`send`](Self::send).
    pub async fn send_prepared(&mut self, message: &PreparedMessage) -> Result<usize, Error> {
        let queued = self.feed_prepared(message)?;
        self.flush().await?;
        Ok(queued)
    }

    /// Queues a prepared message without writing, like [`feed`](Self::feed);
    /// returns the bytes queued (fewer than the plain frame when it goes
    /// out compressed).
    pub fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<usize, Error> {
        self.queue(|conn| conn.send_prepared(message))
    }

    /// Queues prepared messages without writing, under one lock (a batch
    /// taken from a queue, say); returns the bytes queued. Stops at the
    /// first that cannot be sent; those before it stay queued.
    pub fn feed_prepared_all<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a PreparedMessage>,
    ) -> Result<usize, Error> {
        self.queue(|conn| {
            messages.into_iter().try_fold(0, |queued, message| Ok(queued + conn.send_prepared(message)?))
        })
    }

    /// Sends one fragment of a message (see
    /// [`Connection::send_fragment`](crate::Connection::send_fragment)).
    /// Cancel safety: as [`send`](Self::send).
    pub async fn send_fragment(&mut self, kind: MessageKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.queue(|conn| conn.send_fragment(kind, data, fin))?;
        self.flush().await
    }

    /// Sends a Ping; its Pong arrives at the read half as [`Event::Pong`].
    /// Cancel safety: as [`send`](Self::send).
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue(|conn| conn.ping(payload))?;
        self.flush().await
    }

    /// Sends an unsolicited Pong, a one-way heartbeat (RFC 6455 §5.5.3).
    /// Cancel safety: as [`send`](Self::send).
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue(|conn| conn.pong(payload))?;
        self.flush().await
    }

    /// Sends a Close frame. The read half then receives the peer's Close,
    /// closes the transport, and returns `Ok(None)`. Cancel safety: the
    /// first poll queues the Close; if cancelled after that, it goes out
    /// with the next write of either half.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.start_close(code, reason)?;
        self.flush().await
    }

    /// Queues a Close frame without writing it: it goes out with the next
    /// write of either half, or with [`closed`](Self::closed).
    pub fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.queue(|conn| conn.close(code, reason))?;
        // Wake the reader: the connection's close timer starts at its next
        // poll, even if it is idle.
        self.halves.wakers.wake_by_ref();
        Ok(())
    }

    /// Writes what is queued (a Close, say) until the connection is over
    /// or its close timer has passed, and returns then: the moment to drop
    /// both halves. The read half does the closing handshake and closes the
    /// transport; this only bounds the wait by the connection's own close
    /// timeout, for a driver that might stop polling the read half (a
    /// handler that hangs). A failed transport returns at once. While the
    /// connection is open, it waits for it to leave `Open`. Cancel-safe.
    pub async fn closed(&mut self) {
        // The writer's own wake-up at the deadline, made only if it must
        // wait for one.
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| loop {
            *lock(&self.halves.wakers.writer) = Some(cx.waker().clone());
            let mut locked = lock(&self.halves.locked);
            let Locked { pump, write } = &mut *locked;
            if let Poll::Ready(Err(_)) =
                pump.poll_write_out(cx, &mut SharedWriter { write, wake_both: &self.halves.wake_both })
            {
                self.halves.wakers.wake_by_ref();
            }
            let conn = &mut pump.conn;
            if conn.state() == State::Open {
                return Poll::Pending;
            }
            // Arms the timer once the connection has left `Open`, or
            // notes that it passed.
            conn.handle_timeout(Instant::now().into_std());
            if matches!(conn.poll_directive(), Directive::Close | Directive::Done) {
                return Poll::Ready(());
            }
            let Some(deadline) = conn.poll_timeout() else {
                // Not open and no timer running: it has passed.
                return Poll::Ready(());
            };
            drop(locked);
            let deadline = Instant::from_std(deadline);
            let timer = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }

    /// Writes everything queued. Cancel-safe. A transport that fails ends
    /// the connection: the read half then returns [`Error::AbnormalClosure`].
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| {
            *lock(&self.halves.wakers.writer) = Some(cx.waker().clone());
            let mut locked = lock(&self.halves.locked);
            let Locked { pump, write } = &mut *locked;
            let result = ready!(
                pump.poll_write_out(cx, &mut SharedWriter { write, wake_both: &self.halves.wake_both })
            );
            match result {
                // All written: the output buffer is freed, as the unsplit
                // connection frees its buffers when a read would wait, so
                // a connection between bursts holds none (the next send
                // allocates afresh).
                Ok(()) => pump.conn.buffers_mut().release_transmit(),
                // The reader may be waiting for input that will not come.
                Err(_) => self.halves.wakers.wake_by_ref(),
            }
            Poll::Ready(result)
        })
        .await
        .map_err(Error::Io)
    }

    fn queue<T>(&self, queue: impl FnOnce(&mut Connection) -> Result<T, SendError>) -> Result<T, Error> {
        Ok(queue(&mut lock(&self.halves.locked).pump.conn)?)
    }
}
