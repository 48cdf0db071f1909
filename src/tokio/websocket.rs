//! [`WebSocket`]: a [`Connection`] on an async transport.

use std::future::{poll_fn, Future};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::Error;
use super::pump::{Pump, FLUSH_THRESHOLD};
use super::split::{self, ReadHalf, WriteHalf};
use crate::{CloseCode, CloseFrame, Connection, Event, Message, MessageKind, PreparedMessage, Role, State};

/// A WebSocket over any `AsyncRead + AsyncWrite` transport, after the
/// opening handshake. Get one from [`accept`](super::accept),
/// [`connect`](super::connect), or [`WebSocket::from_connection`].
///
/// ```no_run
/// # async fn demo(mut ws: sabai::WebSocket<tokio::net::TcpStream>) -> Result<(), sabai::Error> {
/// // An echo loop: `recv` returns `Ok(None)` once the peer closed normally.
/// while let Some(message) = ws.recv().await? {
///     ws.send(message).await?;
/// }
/// # Ok(()) }
/// ```
///
/// Pings are answered and Close frames echoed by the connection itself,
/// which also decides every step of closing; writes are batched (see
/// [`send`](Self::send)). The sending verbs are the same here and on a
/// [`WriteHalf`]: `send`, `feed`, `flush`, `ping`, `pong`, `close` (and
/// `send_prepared`, `feed_prepared`, `send_fragment`).
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    pump: Pump,
    protocol: Option<Box<str>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a transport whose handshake is done. Bytes that arrived after
    /// the handshake must already be in the connection
    /// ([`Connection::receive`]).
    pub fn from_connection(io: S, conn: Connection) -> Self {
        WebSocket { io, pump: Pump::new(conn), protocol: None }
    }

    pub(crate) fn with_protocol(mut self, protocol: Option<&str>) -> Self {
        self.protocol = protocol.map(Box::from);
        self
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The permessage-deflate parameters agreed in the handshake, if any.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&crate::DeflateParams> {
        self.pump.conn.deflate()
    }

    /// Which end this connection is.
    pub fn role(&self) -> Role {
        self.pump.conn.role()
    }

    /// The protocol state (see [`State`]).
    pub fn state(&self) -> State {
        self.pump.conn.state()
    }

    /// The peer's Close frame, once it arrived.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.pump.conn.peer_close()
    }

    /// The transport, for socket options or addresses.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    // ----- receiving ----------------------------------------------------------

    /// The next message. Pings and Pongs are handled on the way (use
    /// [`recv_event`](Self::recv_event) to see them). Returns `Ok(None)`
    /// once the closing handshake completed and the transport is closed,
    /// and on every call after that.
    ///
    /// On `Err(Error::Protocol(_))` the peer broke a rule: the Close frame
    /// with the matching code was sent and the transport closed. The
    /// other endings are [`Error::AbnormalClosure`] (no Close before the
    /// transport ended) and [`Error::Timeout`] (our Close unanswered); each
    /// is returned once, then `Ok(None)`.
    ///
    /// Cancel safety: cancel-safe. It can be a `select!` branch: if another
    /// branch wins, no data is lost.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        // One poll_fn, no nested futures: this state lives in every
        // connection's task, so it is kept small.
        poll_fn(|cx| loop {
            match ready!(self.poll_recv_event(cx))? {
                Some(Event::Message(message)) => return Poll::Ready(Ok(Some(message))),
                Some(_) => continue,
                None => return Poll::Ready(Ok(None)),
            }
        })
        .await
    }

    /// The next event: a message, a Ping (already answered), a Pong, or the
    /// peer's Close (already echoed). After `Close`, call again to finish
    /// closing the transport: that call returns `Ok(None)`.
    ///
    /// Cancel safety: cancel-safe.
    pub async fn recv_event(&mut self) -> Result<Option<Event>, Error> {
        poll_fn(|cx| self.poll_recv_event(cx)).await
    }

    /// Poll form of [`recv_event`](Self::recv_event).
    pub fn poll_recv_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        self.pump.poll_recv_event(cx, &mut self.io)
    }

    // ----- sending --------------------------------------------------------------

    /// Sends a message, split into frames if
    /// [`Config::max_send_frame_size`](crate::Config::max_send_frame_size) is set.
    ///
    /// Writes are batched: while received bytes are still waiting in the
    /// buffer (so the caller is in the middle of a burst and will call
    /// `recv` again), the frame is queued and goes out with the next write,
    /// at the latest when `recv` is about to wait for input or 64 KiB are
    /// queued. A burst of replies leaves in one system call. If you stop
    /// calling `recv` after a `send`, call [`flush`](Self::flush).
    ///
    /// Cancel safety: if cancelled, the message may still be sent, in full,
    /// by a later call; never partly.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.pump.conn.send(message)?;
        self.flush_unless_batching().await
    }

    /// Queues a message without writing; it goes out with the next write.
    pub fn feed(&mut self, message: Message) -> Result<(), Error> {
        Ok(self.pump.conn.send(message)?)
    }

    /// Sends a message framed once for many connections (see
    /// [`PreparedMessage`]): on a server the shared frame bytes are queued
    /// without re-encoding. Returns the bytes queued. Batched like
    /// [`send`](Self::send).
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn send_prepared(&mut self, message: &PreparedMessage) -> Result<usize, Error> {
        let queued = self.pump.conn.send_prepared(message)?;
        self.flush_unless_batching().await?;
        Ok(queued)
    }

    /// Queues a prepared message without writing, like [`feed`](Self::feed);
    /// returns the bytes queued.
    pub fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<usize, Error> {
        Ok(self.pump.conn.send_prepared(message)?)
    }

    /// Sends one fragment of a message (RFC 6455 §5.4): the first call
    /// starts a message of type `kind`, `fin` ends it. See
    /// [`Connection::send_fragment`].
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn send_fragment(&mut self, kind: MessageKind, data: &[u8], fin: bool) -> Result<(), Error> {
        self.pump.conn.send_fragment(kind, data, fin)?;
        self.flush_unless_batching().await
    }

    /// Sends a Ping (at most 125 bytes of payload). Its Pong arrives as
    /// [`Event::Pong`] from [`recv_event`](Self::recv_event). Batched like
    /// [`send`](Self::send).
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.pump.conn.ping(payload)?;
        self.flush_unless_batching().await
    }

    /// Sends an unsolicited Pong, a one-way heartbeat (RFC 6455 §5.5.3).
    /// Batched like [`send`](Self::send).
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.pump.conn.pong(payload)?;
        self.flush_unless_batching().await
    }

    /// Writes everything queued.
    ///
    /// Cancel safety: cancel-safe; what was not written stays queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.pump.poll_write_out(cx, &mut self.io).map_err(Error::Io)
    }

    /// Queues with `queue`, then writes unless batching (see
    /// [`send`](Self::send)): the one path of every sending verb.
    /// What every sending verb does after queuing: flush, unless
    /// [`batching`](Self::batching). A plain future over `&mut self`, not an
    /// `async fn` taking the queuing step as a closure: an `async fn` keeps
    /// its arguments for its whole life, so the message would be held twice
    /// in every connection's task (measured: 32 bytes more, and tokio's
    /// task a 128-byte step larger; BENCHMARKS.md, idle memory).
    fn flush_unless_batching(&mut self) -> impl Future<Output = Result<(), Error>> + '_ {
        let batching = self.batching();
        poll_fn(move |cx| if batching { Poll::Ready(Ok(())) } else { self.poll_flush(cx) })
    }

    /// Whether a send may leave its frame queued: more input is buffered,
    /// so the caller will call `recv` again, and that flushes.
    fn batching(&self) -> bool {
        let buffers = self.pump.conn.buffers();
        buffers.buffered_input() > 0 && buffers.pending_transmit() < FLUSH_THRESHOLD
    }

    // ----- closing ----------------------------------------------------------------

    /// Closes the connection: sends a Close frame, waits (up to the close
    /// timeout) for the peer's Close, discarding data messages that arrive
    /// meanwhile, and closes the transport. To read the messages that
    /// arrive after your Close, use [`start_close`](Self::start_close) and
    /// keep calling `recv`.
    ///
    /// Cancel safety: cancel-safe; calling `recv` or `close` again resumes.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.state() == State::Open {
            self.start_close(code, reason)?;
        }
        while self.recv_event().await?.is_some() {}
        Ok(())
    }

    /// Queues a Close frame without waiting: keep calling `recv` to read
    /// what the peer still sends, until it returns `Ok(None)`.
    pub fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        Ok(self.pump.conn.close(code, reason)?)
    }

    /// Splits into a read half and a write half that can be moved to two
    /// tasks. See [`ReadHalf`] and [`WriteHalf`].
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        split::split(self.io, self.pump)
    }
}
