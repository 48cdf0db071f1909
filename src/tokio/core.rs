//! The engine that moves a [`Connection`]'s bytes over an async transport.
//!
//! Everything is a `poll_*` function on [`Core`], whose state lives in the
//! struct and never in a future, so every public async method built on it
//! is cancel-safe: dropping one loses no bytes and no events. The whole
//! [`WebSocket`](super::WebSocket) and the split halves both drive a `Core`.
//!
//! Writes are batched: receiving never waits on a write. Before it waits for
//! input, `poll_recv_event` pushes out what is queued (Pongs, deferred
//! sends) as far as the socket takes it, and waits for the socket only when
//! more than [`FLUSH_THRESHOLD`] bytes are stuck (backpressure).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{sleep, Sleep};

use super::error::{Error, TimeoutKind};
use crate::proto::{Connection, Event, Role, SendError, State};

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
/// Slices per vectored write.
const WRITE_SLICES: usize = 16;

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

/// Makes room in the connection's read buffer: the rest of a frame in
/// progress, or room for a frame like the last one (up to a bound), or at
/// least a chunk.
fn reserve_for_read(conn: &mut Connection) {
    let want = conn.read_hint().clamp(READ_MIN, READ_AHEAD_MAX);
    let buf = conn.read_buffer();
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(READ_CHUNK));
    }
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

/// The transport's life, beside the protocol state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Frames flow (the protocol may be `Open` or `CloseSent`).
    Open,
    /// The protocol is done; the transport is being closed, step by step.
    Closing(Step),
    /// Nothing more will happen.
    Done,
}

/// Closing the transport (RFC 6455 §7.1.1): the server closes TCP first; a
/// client waits for the server to do it. Every step is bounded by the close
/// deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Write out what is queued (our Close frame).
    Flush,
    /// Shut down our sending direction (TCP FIN).
    Shutdown,
    /// Read and discard until the peer closes its direction, so closing the
    /// socket does not turn into a reset that could destroy our Close frame
    /// in flight.
    AwaitEof,
}

#[derive(Debug)]
pub(crate) struct Core {
    /// Boxed: a `Core` lives inside every connection's task, whose memory
    /// tokio rounds up to 128-byte steps. Boxing the connection keeps the
    /// task in a smaller step (see BENCHMARKS.md, idle memory). The extra
    /// pointer costs nothing measurable.
    pub(crate) conn: Box<Connection>,
    phase: Phase,
    /// The peer ended its direction of the transport.
    eof: bool,
    /// We ended ours (sent FIN).
    shut_down: bool,
    timer: CloseTimer,
}

/// Bounds the closing handshake (RFC 6455 §7.1.1 leaves the time to us).
/// Until it starts, only its length is kept: an open connection stays small.
#[derive(Debug)]
enum CloseTimer {
    Unarmed(Duration),
    Armed(Box<Closing>),
}

#[derive(Debug)]
struct Closing {
    deadline: Pin<Box<Sleep>>,
    /// What `recv` reports once the transport is closed.
    outcome: Option<Error>,
}

impl Core {
    pub(crate) fn new(conn: Connection, close_timeout: Duration) -> Self {
        Core {
            conn: Box::new(conn),
            phase: Phase::Open,
            eof: false,
            shut_down: false,
            timer: CloseTimer::Unarmed(close_timeout),
        }
    }

    /// Bytes queued for the transport.
    pub(crate) fn pending_output(&self) -> usize {
        self.conn.pending_transmit()
    }

    /// Sending on a transport that is gone fails like sending after Close.
    pub(crate) fn check_sendable(&self) -> Result<(), Error> {
        match self.phase {
            Phase::Open => Ok(()),
            _ => Err(Error::Send(SendError::Closed)),
        }
    }

    /// Writes everything queued and flushes the transport.
    pub(crate) fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut impl WriteIo,
    ) -> Poll<io::Result<()>> {
        // Written straight from the connection's buffer, which is then
        // reused: no copy, no reference count.
        while !self.conn.transmit_buffer().is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let count = self.conn.transmit_chunks(&mut slices);
            let n = ready!(io.poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.advance_transmit(n);
        }
        io.poll_flush(cx)
    }

    /// The next event from the peer; `Ok(None)` once the connection is over
    /// and the transport closed (with the close timeout as the bound).
    pub(crate) fn poll_recv_event(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut (impl ReadIo + WriteIo),
    ) -> Poll<Result<Option<Event>, Error>> {
        loop {
            match self.phase {
                Phase::Open => {}
                Phase::Closing(_) => {
                    ready!(self.poll_close_transport(cx, io));
                    self.phase = Phase::Done;
                    return Poll::Ready(self.take_outcome().map_or(Ok(None), Err));
                }
                Phase::Done => return Poll::Ready(Ok(None)),
            }
            match self.conn.poll_event() {
                Ok(Some(event)) => {
                    self.after_protocol_step();
                    return Poll::Ready(Ok(Some(event)));
                }
                Ok(None) => {}
                Err(error) => {
                    // A failed connection is no longer Open: the timer is armed.
                    self.after_protocol_step();
                    self.set_outcome(Error::Protocol(error));
                    continue;
                }
            }
            // Waiting for the peer's Close is bounded (RFC 6455 §7.1.1 leaves
            // the time to us).
            self.after_protocol_step();
            if self.deadline_passed(cx) {
                self.set_outcome(Error::Timeout(TimeoutKind::Close));
                self.phase = Phase::Closing(Step::Shutdown);
                continue;
            }
            // About to wait for input: push out what is queued first.
            match self.poll_write_out(cx, io) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_failed(e))),
                Poll::Pending if self.pending_output() > FLUSH_THRESHOLD => return Poll::Pending,
                _ => {}
            }
            reserve_for_read(&mut self.conn);
            let Poll::Ready(read) = io.poll_read_buf(cx, self.conn.read_buffer()) else {
                // Nothing to read: an idle connection keeps no buffers.
                self.conn.release_idle_buffers();
                return Poll::Pending;
            };
            match read {
                Ok(0) => {
                    self.eof = true;
                    self.conn.receive_eof();
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(self.io_failed(e))),
            }
        }
    }

    /// Moves the transport along after the protocol state may have changed:
    /// arms the close deadline, and starts closing once the protocol is done.
    pub(crate) fn after_protocol_step(&mut self) {
        let state = self.conn.state();
        if let (false, CloseTimer::Unarmed(timeout)) = (state == State::Open, &self.timer) {
            let deadline = Box::pin(sleep(*timeout));
            self.timer = CloseTimer::Armed(Box::new(Closing { deadline, outcome: None }));
        }
        if self.phase == Phase::Open && matches!(state, State::Closed | State::Failed) {
            self.phase = Phase::Closing(Step::Flush);
        }
    }

    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.timer {
            CloseTimer::Armed(closing) => closing.deadline.as_mut().poll(cx).is_ready(),
            CloseTimer::Unarmed(_) => false,
        }
    }

    /// Records what `recv` reports at the end; only once the timer is armed,
    /// which every path that ends the connection has done.
    fn set_outcome(&mut self, error: Error) {
        debug_assert!(matches!(self.timer, CloseTimer::Armed(_)), "outcome before the close timer");
        if let CloseTimer::Armed(closing) = &mut self.timer {
            closing.outcome = Some(error);
        }
    }

    fn take_outcome(&mut self) -> Option<Error> {
        match &mut self.timer {
            CloseTimer::Armed(closing) => closing.outcome.take(),
            CloseTimer::Unarmed(_) => None,
        }
    }

    fn io_failed(&mut self, error: io::Error) -> Error {
        self.phase = Phase::Done;
        // Nothing more can be written: free what was queued.
        self.conn.advance_transmit(usize::MAX);
        Error::Io(error)
    }

    /// Runs the closing steps; errors only end them early (the connection is
    /// over either way).
    fn poll_close_transport(&mut self, cx: &mut Context<'_>, io: &mut (impl ReadIo + WriteIo)) -> Poll<()> {
        let client_waits = self.conn.role() == Role::Client && self.conn.state() == State::Closed;
        while let Phase::Closing(step) = self.phase {
            if self.deadline_passed(cx) {
                // Time is up, but our direction still gets its FIN (RFC 6455
                // §7.1.1): one try, without waiting on a transport that stalls.
                if !self.shut_down {
                    let _ = io.poll_shutdown(cx);
                    self.shut_down = true;
                }
                break;
            }
            let next = match step {
                Step::Flush => match ready!(self.poll_write_out(cx, io)) {
                    Ok(()) if client_waits && !self.eof => Some(Step::AwaitEof),
                    Ok(()) => Some(Step::Shutdown),
                    Err(_) => None,
                },
                Step::Shutdown => {
                    let result = ready!(io.poll_shutdown(cx));
                    self.shut_down = true;
                    match result {
                        Ok(()) if !self.eof => Some(Step::AwaitEof),
                        _ => None,
                    }
                }
                Step::AwaitEof => {
                    let buf = self.conn.read_buffer();
                    let read = ready!(io.poll_read_buf(cx, buf));
                    buf.clear();
                    match read {
                        Ok(0) => {
                            self.eof = true;
                            // The client shuts down after the server's EOF.
                            if client_waits {
                                Some(Step::Shutdown)
                            } else {
                                None
                            }
                        }
                        Ok(_) => Some(Step::AwaitEof),
                        Err(_) => None,
                    }
                }
            };
            match next {
                Some(step) => self.phase = Phase::Closing(step),
                None => break,
            }
        }
        self.phase = Phase::Done;
        self.conn.advance_transmit(usize::MAX);
        self.conn.release_idle_buffers();
        Poll::Ready(())
    }
}
