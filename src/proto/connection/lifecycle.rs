//! The life of a connection, in one place: every state, every transition
//! ([`Connection::advance`], the only code that changes the state), the
//! close timer, and the steps of closing the transport that the connection
//! hands to its driver as [`Directive`]s.
//!
//! ```text
//!                 close(): our Close queued
//!   +------+ -----------------------------------> +-----------+
//!   | Open |                                      | CloseSent |  close timer runs
//!   +------+                                      +-----------+
//!      |  peer's Close: echo queued       Clean      |  peer's Close       Clean
//!      |  peer broke a rule: Close queued Failed     |  peer broke a rule Failed
//!      |  EOF, no Close (1006)           Abnormal    |  EOF, no Close     Abnormal
//!      |  abort()                        Aborted     |  close timer       TimedOut
//!      |                                             |  abort()           Aborted
//!      v                                             v
//!   +-------------------------------------------------------------+
//!   | Closing(ending): the transport is closed step by step,      |
//!   | each step a Directive, all bounded by the close timer        |
//!   |                                                             |
//!   | server, or a client that failed, timed out or aborted:      |
//!   |     Flush -> Shutdown -> AwaitEof -> Close                  |
//!   | client after the closing handshake or an EOF (§7.1.1):      |
//!   |     Flush -> AwaitEof -> Shutdown -> Close                  |
//!   +-------------------------------------------------------------+
//!      |  the driver did Close (directive_done)
//!      v
//!   +--------+
//!   | Closed |  Directive::Done
//!   +--------+
//! ```
//!
//! - A step already done is skipped: once the peer's EOF came, nothing
//!   waits for it again. A timed-out or aborted connection skips Flush.
//! - The close timer (`Settings::close_timeout`, from [`Config`]) starts
//!   when the connection leaves `Open`, at the first
//!   [`handle_timeout`](Connection::handle_timeout) after it, and covers
//!   everything until `Closed`: the wait for the peer's Close and every
//!   step. When it passes in `CloseSent`, the connection ends `TimedOut`.
//!   When it passes during the steps, our direction still gets one try at
//!   its FIN (`Shutdown`, without waiting: the next `handle_timeout` ends
//!   it), then `Close`.
//! - An abort (the transport failed) goes straight to `Close`, keeping the
//!   ending the connection already had.
//!
//! [`Config`]: crate::Config

use std::mem;
use std::time::Instant;

use super::Connection;
use crate::proto::close::{fit_reason, CloseCode, CloseFrame};
use crate::proto::error::ProtocolError;
use crate::proto::role::Role;

/// Where a connection is in its life (RFC 6455 §7), as its user sees it:
/// a summary of the connection's one state (see `lifecycle.rs`).
///
/// RFC 6455's CONNECTING is the opening handshake, before a [`Connection`]
/// exists; OPEN is `Open`; CLOSING (§7.1.3) is `CloseSent`; `Closed` and
/// `Failed` are reached as soon as the protocol is over. The transport is
/// then closed by the steps [`Connection::poll_directive`] gives, and is
/// closed, RFC 6455's CLOSED (§7.1.4), once that says [`Directive::Done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a Close (RFC 6455 §7.1.2); no more frames go out. Incoming
    /// messages are still delivered until the peer's Close arrives.
    CloseSent,
    /// The Close frames are exchanged, or the transport ended, or closing
    /// timed out or was aborted. Nothing more is read or sent.
    Closed,
    /// We failed the connection (§7.1.7): our Close is queued, input is
    /// discarded.
    Failed,
}

/// What the transport should do now: read while the protocol runs, then
/// the steps that close it, in the order RFC 6455 §7.1.1 asks of the
/// connection's role. Asked for with [`Connection::poll_directive`]; it
/// changes only when an input moves the connection along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Directive {
    /// Read, and hand the bytes to [`Connection::receive`] (or append them
    /// to the read buffer), or report the end with
    /// [`Connection::receive_eof`]; write what is queued as the transport
    /// takes it.
    Read,
    /// Write everything queued and flush the transport, then
    /// [`Connection::directive_done`].
    Flush,
    /// End our sending direction (TCP FIN, TLS close_notify), then
    /// [`Connection::directive_done`].
    Shutdown,
    /// Read and discard until the peer ends its direction, then
    /// [`Connection::receive_eof`]. Closing now could turn the peer's
    /// unread bytes into a TCP reset that destroys our Close in flight
    /// (§1.4, §7.1.1).
    AwaitEof,
    /// Close the transport (drop it), then [`Connection::directive_done`]:
    /// [`Connection::ending`] says how the connection ended.
    Close,
    /// The transport is closed: nothing more to do.
    Done,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The closing handshake completed: both Close frames went across
    /// (RFC 6455 §7.1.4 calls this closing cleanly). The peer's Close,
    /// `None` when it carried no code (§7.1.5: 1005).
    Clean(Option<CloseFrame>),
    /// We failed the connection: the peer broke this rule (§7.1.7).
    Failed(ProtocolError),
    /// The transport ended before the peer's Close (§7.1.5: 1006, which is
    /// only reported, never sent). Not a rule broken: a lost connection.
    Abnormal,
    /// The peer did not answer our Close within the close timeout.
    TimedOut,
    /// The driver aborted the connection (its transport failed).
    Aborted,
}

impl Ending {
    fn state(&self) -> State {
        match self {
            Ending::Failed(_) => State::Failed,
            _ => State::Closed,
        }
    }
}

/// The one state of a connection. Only [`Connection::advance`] changes it.
#[derive(Debug)]
pub(super) enum Lifecycle {
    /// Data flows both ways; Pings are answered.
    Open,
    /// Our Close is queued; incoming messages are still delivered until
    /// the peer's Close. The close timer runs.
    CloseSent { timer: Timer },
    /// The protocol is over; the transport is being closed, step by step.
    /// Input is discarded.
    Closing(Box<Teardown>),
    /// The transport is closed.
    Closed(Box<Ending>),
}

/// How the transport is being closed.
#[derive(Debug)]
pub(super) struct Teardown {
    ending: Ending,
    /// The step under way: `Flush`, `Shutdown`, `AwaitEof` or `Close`.
    step: Directive,
    timer: Timer,
}

/// The close timer: from leaving `Open` to `Closed`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Timer {
    /// Starts at the next `handle_timeout`.
    Unarmed,
    /// Passes at this instant.
    Armed(Instant),
    /// It passed: the steps left get one try each, without waiting.
    Passed,
}

/// What moves a connection along its life: the inputs of
/// [`Connection::advance`].
#[derive(Debug)]
pub(super) enum Input<'a> {
    /// The application closes: our Close, its code and reason checked.
    Close(CloseCode, &'a str),
    /// The peer's Close arrived (`None`: it carried no code).
    PeerClose(Option<CloseFrame>),
    /// The peer broke a rule.
    Fail(ProtocolError),
    /// The peer ended its direction of the transport.
    Eof,
    /// The time, from the driver.
    Clock(Instant),
    /// The driver did what this directive asked.
    Done(Directive),
    /// The driver stops the connection now.
    Abort,
}

impl Connection {
    /// The transition function: the only code that changes the state.
    pub(super) fn advance(&mut self, input: Input<'_>) {
        use Lifecycle::{CloseSent, Closed, Closing, Open};
        let timeout = self.settings.close_timeout;
        self.lifecycle = match (mem::replace(&mut self.lifecycle, Open), input) {
            // ----- the application closes (RFC 6455 §7.1.2) -----------------
            (Open, Input::Close(code, reason)) => {
                self.encode_close(code, reason);
                // §5.4: an unfinished message is abandoned.
                self.sending = None;
                CloseSent { timer: Timer::Unarmed }
            }

            // ----- the protocol ends ------------------------------------------
            (Open, Input::PeerClose(frame)) => {
                // §5.5.1: reply with a Close, echoing the status code
                // without the reason.
                let code = frame.as_ref().map(|f| f.code);
                match code {
                    Some(code) => self.encode_close(code, ""),
                    None => self.encode_empty_close(),
                }
                self.stop_reading();
                self.teardown(Ending::Clean(frame), Timer::Unarmed)
            }
            (CloseSent { timer }, Input::PeerClose(frame)) => {
                // Our Close went out first: nothing more to send.
                self.stop_reading();
                self.teardown(Ending::Clean(frame), timer)
            }
            (Open, Input::Fail(error)) => {
                // §7.1.7: Fail the WebSocket Connection: a Close with the
                // error's code and a readable reason (§7.1.7, §10.7).
                let reason = error.to_string();
                self.encode_close(error.close_code(), fit_reason(&reason));
                self.stop_reading();
                self.teardown(Ending::Failed(error), Timer::Unarmed)
            }
            (CloseSent { timer }, Input::Fail(error)) => {
                // Our Close is out already: nothing more is queued.
                self.stop_reading();
                self.teardown(Ending::Failed(error), timer)
            }
            (Open, Input::Eof) => {
                // §7.1.5: the transport ended without a Close: 1006.
                self.stop_reading();
                self.teardown(Ending::Abnormal, Timer::Unarmed)
            }
            (CloseSent { timer }, Input::Eof) => {
                self.stop_reading();
                self.teardown(Ending::Abnormal, timer)
            }

            // ----- the clock --------------------------------------------------
            (CloseSent { timer: Timer::Unarmed }, Input::Clock(now)) => {
                CloseSent { timer: Timer::Armed(now + timeout) }
            }
            (CloseSent { timer: Timer::Armed(deadline) }, Input::Clock(now)) if now >= deadline => {
                // §7.1.1: the peer never answered our Close. Our direction
                // still gets its FIN, one try.
                self.stop_reading();
                Closing(Box::new(Teardown {
                    ending: Ending::TimedOut,
                    step: Directive::Shutdown,
                    timer: Timer::Passed,
                }))
            }
            (Closing(mut teardown), Input::Clock(now)) => {
                match teardown.timer {
                    Timer::Unarmed => teardown.timer = Timer::Armed(now + timeout),
                    Timer::Armed(deadline) if now >= deadline => {
                        teardown.timer = Timer::Passed;
                        teardown.step = match self.shut_down(&teardown) {
                            true => Directive::Close,
                            false => Directive::Shutdown,
                        };
                    }
                    Timer::Armed(_) => {}
                    // The one try did not finish before the driver would
                    // wait: give up on it.
                    Timer::Passed => teardown.step = Directive::Close,
                }
                Closing(teardown)
            }

            // ----- the transport's steps (§7.1.1) -------------------------------
            (Closing(mut teardown), Input::Done(done))
                if done == teardown.step && done != Directive::AwaitEof =>
            {
                match self.next_step(&teardown) {
                    Some(step) => {
                        teardown.step = step;
                        Closing(teardown)
                    }
                    None => {
                        self.release_everything();
                        Closed(Box::new(teardown.ending))
                    }
                }
            }
            (Closing(mut teardown), Input::Eof) if teardown.step == Directive::AwaitEof => {
                // `next_step` after AwaitEof is never None.
                teardown.step = self.next_step(&teardown).unwrap_or(Directive::Close);
                Closing(teardown)
            }

            // ----- the driver gives up (the transport failed) -------------------
            (Open | CloseSent { .. }, Input::Abort) => {
                self.stop_reading();
                self.buffers.transmit.advance(usize::MAX);
                Closing(Box::new(Teardown {
                    ending: Ending::Aborted,
                    step: Directive::Close,
                    timer: Timer::Passed,
                }))
            }
            (Closing(mut teardown), Input::Abort) => {
                // Nothing more can be written; the ending stays.
                self.buffers.transmit.advance(usize::MAX);
                teardown.step = Directive::Close;
                Closing(teardown)
            }

            // Everything else changes nothing: the clock while open or
            // before its deadline, an EOF or a step reported while another
            // is under way, anything once closed. (`close` refuses unless
            // open, so `Input::Close` never arrives elsewhere.)
            (state, _) => state,
        };
    }

    /// Entering `Closing`: every ending starts by flushing what is queued
    /// (our Close, or the echo).
    fn teardown(&mut self, ending: Ending, timer: Timer) -> Lifecycle {
        Lifecycle::Closing(Box::new(Teardown { ending, step: Directive::Flush, timer }))
    }

    /// The step after `teardown.step`, or `None` once `Close` is done.
    /// RFC 6455 §7.1.1: the server closes the TCP connection first; the
    /// client waits for the server's FIN (after a failure it need not).
    fn next_step(&self, teardown: &Teardown) -> Option<Directive> {
        let eof = self.buffers.receiver.eof;
        let client_waits = self.client_waits(teardown);
        let passed = matches!(teardown.timer, Timer::Passed);
        Some(match teardown.step {
            Directive::Flush if client_waits && !eof => Directive::AwaitEof,
            Directive::Flush => Directive::Shutdown,
            Directive::Shutdown if client_waits || eof || passed => Directive::Close,
            Directive::Shutdown => Directive::AwaitEof,
            Directive::AwaitEof if client_waits => Directive::Shutdown,
            Directive::AwaitEof => Directive::Close,
            Directive::Close | Directive::Read | Directive::Done => return None,
        })
    }

    /// Whether this connection waits for the peer's FIN before its own: a
    /// client whose closing handshake completed, or whose transport ended.
    fn client_waits(&self, teardown: &Teardown) -> bool {
        self.role == Role::Client && matches!(teardown.ending, Ending::Clean(_) | Ending::Abnormal)
    }

    /// Whether our direction is shut down already, given the step under way.
    fn shut_down(&self, teardown: &Teardown) -> bool {
        match teardown.step {
            Directive::AwaitEof => !self.client_waits(teardown),
            Directive::Close | Directive::Done => true,
            _ => false,
        }
    }

    /// The protocol is over: input is discarded from now on (§1.4, §7.1.7)
    /// and an unfinished outgoing message is abandoned.
    fn stop_reading(&mut self) {
        self.buffers.receiver.discard();
        self.sending = None;
    }

    /// The transport is closed: nothing queued can go out any more, and
    /// the buffers are freed.
    fn release_everything(&mut self) {
        self.buffers.transmit.advance(usize::MAX);
        self.buffers.release_idle();
    }

    pub(super) fn is_reading(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Open | Lifecycle::CloseSent { .. })
    }

    // ----- the public face of the lifecycle -----------------------------------

    /// Where the connection is in its life (see [`State`]).
    pub fn state(&self) -> State {
        match &self.lifecycle {
            Lifecycle::Open => State::Open,
            Lifecycle::CloseSent { .. } => State::CloseSent,
            Lifecycle::Closing(teardown) => teardown.ending.state(),
            Lifecycle::Closed(ending) => ending.state(),
        }
    }

    /// How the connection ended, once the protocol is over (set before the
    /// transport is closed).
    pub fn ending(&self) -> Option<&Ending> {
        match &self.lifecycle {
            Lifecycle::Open | Lifecycle::CloseSent { .. } => None,
            Lifecycle::Closing(teardown) => Some(&teardown.ending),
            Lifecycle::Closed(ending) => Some(ending),
        }
    }

    /// What the transport should do now (see [`Directive`]).
    pub fn poll_directive(&self) -> Directive {
        match &self.lifecycle {
            Lifecycle::Open | Lifecycle::CloseSent { .. } => Directive::Read,
            Lifecycle::Closing(teardown) => teardown.step,
            Lifecycle::Closed(_) => Directive::Done,
        }
    }

    /// Reports that the transport did what `directive` asked
    /// ([`Directive::Flush`], [`Directive::Shutdown`] or
    /// [`Directive::Close`]); ignored if it is not the step under way.
    pub fn directive_done(&mut self, directive: Directive) {
        self.advance(Input::Done(directive));
    }

    /// Stops the connection now: the transport failed, or the driver gives
    /// up on it. Nothing more is sent (what was queued is dropped) and the
    /// next directive is [`Directive::Close`]. A connection that had already
    /// ended keeps its [`Ending`]; one still open ends
    /// [`Aborted`](Ending::Aborted).
    pub fn abort(&mut self) {
        self.advance(Input::Abort);
    }

    /// When the connection next needs the time: call
    /// [`handle_timeout`](Self::handle_timeout) at that instant at the
    /// latest. `None`: no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = match &self.lifecycle {
            Lifecycle::CloseSent { timer } => timer,
            Lifecycle::Closing(teardown) => &teardown.timer,
            _ => return None,
        };
        match timer {
            Timer::Armed(deadline) => Some(*deadline),
            _ => None,
        }
    }

    /// Tells the connection the time: time is an input, the connection reads
    /// no clock. Call it before the driver waits (for the transport, or
    /// until [`poll_timeout`](Self::poll_timeout)), and when that instant
    /// has come: it starts the close timer once the connection has left
    /// `Open`, and acts when it has passed. While the state is
    /// [`State::Open`] there is no timer, and a driver may skip the call.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(Input::Clock(now));
    }
}
