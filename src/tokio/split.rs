//! Splitting a [`WebSocket`](super::WebSocket) into halves for two tasks.
//!
//! The halves share the protocol state behind a mutex that is only held
//! inside a poll, never across an await. Only the read half reads the
//! transport. Both halves write it: the write half its messages, the read
//! half the Pongs and Close echo the protocol requires.
//!
//! The pitfall (tokio-websockets #92, #106): a socket keeps one waker per
//! direction, so when both halves wait to write, the second registration
//! replaces the first and that task is never woken. Here every write-side
//! poll goes through one shared waker that wakes both halves; a half woken
//! for nothing just polls again.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::core::{poll_read_into, Core, ReadIo, WriteIo};
use super::error::Error;
use crate::proto::{CloseCode, Event, Message, MessageKind, PreparedMessage};

/// The wakers of the two halves, woken together on write readiness.
#[derive(Debug, Default)]
struct Wakers {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl Wake for Wakers {
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

#[derive(Debug)]
struct Shared<S> {
    inner: Mutex<Inner<S>>,
    wakers: Arc<Wakers>,
    /// Wakes both halves; the context for every write-side poll.
    fanout: Waker,
}

#[derive(Debug)]
struct Inner<S> {
    core: Core,
    write: tokio::io::WriteHalf<S>,
}

/// A poisoned lock only means another thread panicked mid-poll; the state
/// is still consistent at poll boundaries, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) fn split<S: AsyncRead + AsyncWrite + Unpin>(io: S, core: Core) -> (ReadHalf<S>, WriteHalf<S>) {
    let (read, write) = tokio::io::split(io);
    let wakers = Arc::new(Wakers::default());
    let fanout = Waker::from(wakers.clone());
    let shared = Arc::new(Shared { inner: Mutex::new(Inner { core, write }), wakers, fanout });
    (ReadHalf { shared: shared.clone(), read }, WriteHalf { shared })
}

/// Writes through the shared waker after recording the caller's.
struct SharedWriter<'a, S> {
    write: &'a mut tokio::io::WriteHalf<S>,
    fanout: &'a Waker,
}

impl<S: AsyncWrite> WriteIo for SharedWriter<'_, S> {
    fn poll_write_vectored(&mut self, _: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let cx = &mut Context::from_waker(self.fanout);
        std::pin::Pin::new(&mut *self.write).poll_write_vectored(cx, data)
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.write).poll_flush(&mut Context::from_waker(self.fanout))
    }
    fn poll_shutdown(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.write).poll_shutdown(&mut Context::from_waker(self.fanout))
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
/// answers Pings and echoes the Close, and closes the transport at the end:
/// keep calling [`recv`](Self::recv) until `Ok(None)`.
#[derive(Debug)]
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
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
        *lock(&self.shared.wakers.reader) = Some(cx.waker().clone());
        let mut inner = lock(&self.shared.inner);
        let Inner { core, write } = &mut *inner;
        let mut io =
            ReaderIo { read: &mut self.read, writer: SharedWriter { write, fanout: &self.shared.fanout } };
        core.poll_recv_event(cx, &mut io)
    }
}

/// The sending half of a split [`WebSocket`](super::WebSocket). Every send
/// writes at once (no batching: the write half cannot know when the read
/// half will next wait).
#[derive(Debug)]
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite> WriteHalf<S> {
    /// Sends a message. Cancel safety: if cancelled, the message may still
    /// be sent, in full, by a later call; never partly.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.queue(|core| Ok(core.conn.send(message)?))?;
        self.flush().await
    }

    /// Sends a message framed once for many connections (see
    /// [`PreparedMessage`]). Cancel safety: as [`send`](Self::send).
    pub async fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        self.feed_prepared(message)?;
        self.flush().await
    }

    /// Queues a prepared message without writing; [`flush`](Self::flush)
    /// sends it. Queue a batch, then flush once.
    pub fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        self.feed_prepared_len(message).map(drop)
    }

    /// [`feed_prepared`](Self::feed_prepared), returning how many bytes it
    /// queued (fewer than the plain frame when it went out compressed).
    pub(crate) fn feed_prepared_len(&mut self, message: &PreparedMessage) -> Result<usize, Error> {
        let mut len = 0;
        self.queue(|core| {
            len = core.conn.send_prepared_len(message)?;
            Ok(())
        })?;
        Ok(len)
    }

    /// Sends one fragment of a message (see
    /// [`Connection::send_fragment`](crate::Connection::send_fragment)).
    pub async fn send_fragment(&mut self, kind: MessageKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.queue(|core| Ok(core.conn.send_fragment(kind, data, fin)?))?;
        self.flush().await
    }

    /// Sends a Ping; its Pong arrives at the read half as [`Event::Pong`].
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue(|core| Ok(core.conn.ping(payload)?))?;
        self.flush().await
    }

    /// Sends a Close frame. The read half then receives the peer's Close,
    /// closes the transport, and returns `Ok(None)`.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.queue(|core| {
            core.conn.close(code, reason)?;
            core.after_protocol_step();
            Ok(())
        })?;
        // Wake the reader so it arms the close deadline even if idle.
        self.shared.wakers.wake_by_ref();
        self.flush().await
    }

    /// Writes everything queued. Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| {
            *lock(&self.shared.wakers.writer) = Some(cx.waker().clone());
            let mut inner = lock(&self.shared.inner);
            let Inner { core, write } = &mut *inner;
            core.poll_write_out(cx, &mut SharedWriter { write, fanout: &self.shared.fanout })
        })
        .await
        .map_err(Error::Io)
    }

    fn queue(&self, f: impl FnOnce(&mut Core) -> Result<(), Error>) -> Result<(), Error> {
        let mut inner = lock(&self.shared.inner);
        inner.core.check_sendable()?;
        f(&mut inner.core)
    }
}
