//! [`Pump`]: moves a [`Connection`]'s bytes over an async transport and
//! does to the transport what the connection's [`Directive`]s say. It makes
//! no protocol decision: when to close, in which order, for how long, and
//! what `recv` reports at the end all come from the connection.
//!
//! Everything is a `poll_*` function whose state lives in the struct and
//! never in a future, so every public async method built on it is
//! cancel-safe: dropping one loses no bytes and no events. The whole
//! [`WebSocket`](super::WebSocket) and the read half of a split one both
//! drive a `Pump`.
//!
//! What the pump does decide is how to use the transport well: writes are
//! batched (receiving never waits on a write; before it waits for input,
//! `poll_recv_event` pushes out what is queued as far as the socket takes
//! it, and waits for the socket only when more than [`FLUSH_THRESHOLD`]
//! bytes are stuck), and reads are sized by the frame arriving.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{sleep_until, Instant, Sleep};

use super::error::{Error, TimeoutKind};
use crate::{Connection, Directive, Ending, Event, State};

/// Output held back while more input is buffered, before `send` writes.
pub(crate) const FLUSH_THRESHOLD: usize = 64 * 1024;
/// Smallest free space worth a read syscall, and how much to add below it.
/// A read buffer is freed whenever a read would wait, so this is what a busy
/// connection holds, not an idle one.
const READ_MIN: usize = 4 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// How far ahead of the data a frame in progress may have room reserved:
/// a large frame is read in few system calls into one buffer that does not
/// move, while a declared length that never arrives costs at most this.
const READ_AHEAD_MAX: usize = 1024 * 1024;
/// Room asked for beyond the bytes a read is sized for (a frame header).
/// A read that fills its buffer exactly leaves tokio unsure the socket is
/// drained, so the next poll costs a system call that only says
/// WouldBlock; a short read marks the socket not ready without one.
const READ_SLACK: usize = crate::proto::MAX_HEADER_LEN;
/// Slices per vectored write: enough for a hub's batch of 64 shared frames
/// in one system call.
const WRITE_SLICES: usize = 64;

/// Reading side of a transport.
pub(crate) trait ReadIo {
    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;
}

/// Writing side of a transport.
pub(crate) trait WriteIo {
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Reads into the spare capacity of `buf` without zero-filling it. The
/// caller sizes the buffer; with no room at all, a little is added.
pub(crate) fn poll_read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == buf.len() {
        buf.reserve(READ_MIN);
    }
    // tokio's read_buf future does the uninitialised-memory bookkeeping; one
    // poll of it is one poll_read, and dropping it after Pending loses nothing.
    pin!(io.read_buf(buf)).poll(cx)
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadIo for S {
    fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        poll_read_into(self, cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteIo for S {
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        // A transport without vectored writes takes the first slice.
        Pin::new(self).poll_write_vectored(cx, data)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_flush(cx)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// A connection and the timer that wakes its task at the connection's
/// deadline.
#[derive(Debug)]
pub(crate) struct Pump {
    /// Boxed: a `Pump` lives inside every connection's task, whose memory
    /// tokio rounds up to 128-byte steps. Boxing the connection keeps the
    /// task in a smaller step (see BENCHMARKS.md, idle memory). The extra
    /// pointer costs nothing measurable.
    pub(crate) conn: Box<Connection>,
    /// Wakes the task at [`Connection::poll_timeout`]; made when first
    /// needed (an open connection has no timer).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pump {
    pub(crate) fn new(conn: Connection) -> Self {
        Pump { conn: Box::new(conn), timer: None }
    }

    /// Writes everything queued and flushes the transport. A transport that
    /// fails aborts the connection: what was queued can no longer arrive
    /// whole, and whichever half reads next learns that it ended.
    pub(crate) fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut impl WriteIo,
    ) -> Poll<io::Result<()>> {
        let result = ready!(self.poll_write_queued(cx, io));
        if result.is_err() {
            self.conn.abort();
        }
        Poll::Ready(result)
    }

    fn poll_write_queued(&mut self, cx: &mut Context<'_>, io: &mut impl WriteIo) -> Poll<io::Result<()>> {
        // Written straight from the connection's buffer, which is then
        // reused: no copy, no reference count.
        let buffers = self.conn.buffers_mut();
        while buffers.pending_transmit() > 0 {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let count = buffers.transmit_chunks(&mut slices);
            let n = ready!(io.poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            buffers.advance_transmit(n);
        }
        io.poll_flush(cx)
    }

    /// The next event from the peer; at the end, how the connection ended
    /// (`Ok(None)` after a clean close, once), then `Ok(None)`.
    pub(crate) fn poll_recv_event(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut (impl ReadIo + WriteIo),
    ) -> Poll<Result<Option<Event>, Error>> {
        loop {
            // A protocol error is not returned here: the connection keeps
            // it as its ending, reported once the transport is closed.
            if let Ok(Some(event)) = self.conn.poll_event() {
                return Poll::Ready(Ok(Some(event)));
            }
            let directive = self.conn.poll_directive();
            let step = match directive {
                Directive::Read | Directive::AwaitEof => self.poll_read(cx, io),
                Directive::Flush => self.poll_write_out(cx, io),
                Directive::Shutdown => io.poll_shutdown(cx),
                Directive::Close => {
                    // The transport itself goes when its owner drops it.
                    self.conn.directive_done(Directive::Close);
                    self.timer = None;
                    return Poll::Ready(outcome(self.conn.ending()));
                }
                _ => return Poll::Ready(Ok(None)),
            };
            match step {
                Poll::Ready(Ok(())) => {
                    if matches!(directive, Directive::Flush | Directive::Shutdown) {
                        self.conn.directive_done(directive);
                    }
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    self.conn.abort();
                    // Report the failure unless the connection had already
                    // ended otherwise: then that ending is what it reports.
                    // Reported here, it is not reported again as the
                    // ending: the transport is done with, and the next
                    // call returns `Ok(None)`.
                    if self.conn.ending() == Some(&Ending::Aborted) {
                        self.conn.directive_done(Directive::Close);
                        self.timer = None;
                        return Poll::Ready(Err(Error::Io(error)));
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            // About to wait: time is an input. An open connection has no
            // timer (see `Connection::handle_timeout`).
            if self.conn.state() != State::Open {
                self.conn.handle_timeout(Instant::now().into_std());
                if self.conn.poll_directive() != directive {
                    continue;
                }
            }
            if self.poll_timer(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Waits for the connection's deadline, if it has one.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.conn.poll_timeout() else {
            self.timer = None;
            return Poll::Pending;
        };
        let deadline = Instant::from_std(deadline);
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// Writes out what is queued (waiting only when a lot is stuck), then
    /// reads into the connection's buffer. `Ready(Ok)`: something was read,
    /// or the peer's EOF, already handed to the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>, io: &mut (impl ReadIo + WriteIo)) -> Poll<io::Result<()>> {
        match self.poll_write_out(cx, io) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if self.conn.buffers().pending_transmit() > FLUSH_THRESHOLD => {
                return Poll::Pending
            }
            _ => {}
        }
        let buffers = self.conn.buffers_mut();
        reserve_for_read(buffers);
        let Poll::Ready(read) = io.poll_read_buf(cx, buffers.read_buffer()) else {
            // Nothing to read: an idle connection keeps no buffers.
            buffers.release_idle();
            return Poll::Pending;
        };
        if read? == 0 {
            self.conn.receive_eof();
        }
        Poll::Ready(Ok(()))
    }
}

/// Makes room in the connection's read buffer: the rest of a frame in
/// progress, or room for a frame like the last one (up to a bound), or at
/// least a chunk; and always [`READ_SLACK`] more, so a read that gets the
/// whole frame still comes back short of its buffer.
fn reserve_for_read(buffers: &mut crate::Buffers) {
    let want = buffers.read_hint().clamp(READ_MIN, READ_AHEAD_MAX) + READ_SLACK;
    let buf = buffers.read_buffer();
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(READ_CHUNK));
    }
}

/// What `recv` reports for how the connection ended.
fn outcome(ending: Option<&Ending>) -> Result<Option<Event>, Error> {
    match ending {
        Some(Ending::Failed(error)) => Err(Error::Protocol(*error)),
        Some(Ending::Abnormal) => Err(Error::AbnormalClosure),
        Some(Ending::TimedOut) => Err(Error::Timeout(TimeoutKind::Close)),
        // The transport failed under the other half (a split write half),
        // or under a send: no closing handshake, as after an EOF (§7.1.5).
        Some(Ending::Aborted) => Err(Error::AbnormalClosure),
        _ => Ok(None),
    }
}
