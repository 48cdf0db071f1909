//! [`Connection`]: the whole RFC 6455 protocol after the handshake, as a
//! state machine with no I/O and no clock.
//!
//! Feed it what the transport delivered ([`Connection::receive`],
//! [`Connection::receive_eof`]) and the time ([`Connection::handle_timeout`]),
//! ask it for events ([`Connection::poll_event`]), give it commands
//! ([`Connection::send`], [`Connection::ping`], [`Connection::close`]),
//! write out what it wants to send ([`Connection::poll_transmit`]), and do
//! to the transport what it says ([`Connection::poll_directive`]). Replies
//! the protocol requires, Pongs and the Close echo, are queued by the
//! connection itself; so is every step of closing.
//!
//! The files of this module:
//! - `lifecycle.rs`: every state of a connection and every transition, the
//!   close timer, and the transport steps it hands out (the diagram is
//!   there, and in SPEC_NOTES.md section 2);
//! - `send.rs`: the send path, from a command to bytes in the output queue;
//! - this file: the connection, its input side and its output queue.

mod lifecycle;
mod send;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::buffers::Buffers;
use super::close::CloseFrame;
use super::config::{Config, Settings};
#[cfg(feature = "deflate")]
use super::deflate::{Compressor, DeflateParams, Inflater};
use super::error::ProtocolError;
use super::message::Event;
use super::message::MessageKind;
use super::receive::Incoming;
use super::role::Role;
use super::utf8::Utf8Validator;

pub use lifecycle::{Directive, Ending, State};
use lifecycle::{Input, Lifecycle};

/// An outgoing message being sent in fragments.
#[derive(Clone, Copy, Debug)]
struct OutgoingFragments {
    kind: MessageKind,
    utf8: Utf8Validator,
}

/// One WebSocket connection's protocol state, without I/O.
///
/// ```
/// use sabai::{Config, Connection, Event, Message};
///
/// let mut client = Connection::client(Config::default(), [7; 32]);
/// let mut server = Connection::server(Config::default());
///
/// client.send(Message::text("hello")).unwrap();
/// while let Some(bytes) = client.poll_transmit() {
///     server.receive(&bytes);
/// }
/// assert_eq!(server.poll_event(), Ok(Some(Event::Message(Message::text("hello")))));
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// What it keeps of its [`Config`]: not the whole of it, so an idle
    /// connection stays small (see BENCHMARKS.md, idle memory).
    settings: Settings,
    /// Where it is in its life: the one state of the connection (see
    /// `lifecycle.rs`).
    lifecycle: Lifecycle,
    buffers: Buffers,
    sending: Option<OutgoingFragments>,
    /// Mask key source for a client (RFC 6455 §10.3); `None` for a server.
    masks: Option<Box<StdRng>>,
    /// permessage-deflate, once agreed: the parameters and our compressor.
    /// Boxed as one piece: idle connections stay small either way.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<(DeflateParams, Compressor)>>,
}

impl Connection {
    /// A server-side connection: it expects masked frames and sends unmasked ones.
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, &config, None)
    }

    /// A client-side connection. RFC 6455 §10.3 requires unpredictable mask
    /// keys: `mask_seed` seeds a ChaCha CSPRNG and must itself come from a
    /// cryptographic source (for example `rand::random()`). A fixed seed is
    /// only for tests.
    pub fn client(config: Config, mask_seed: [u8; 32]) -> Self {
        Self::new(Role::Client, &config, Some(Box::new(StdRng::from_seed(mask_seed))))
    }

    fn new(role: Role, config: &Config, masks: Option<Box<StdRng>>) -> Self {
        Connection {
            role,
            settings: Settings::from(config),
            lifecycle: Lifecycle::Open,
            buffers: Buffers::default(),
            sending: None,
            masks,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    /// Turns on permessage-deflate with the parameters the handshake agreed
    /// (RFC 7692 §5). Compression level and threshold come from
    /// [`Config::deflate`] (defaults if unset). Call before any bytes pass.
    ///
    /// Memory: the compressor (about 320 KiB) and the inflater (about
    /// 50 KiB) are allocated on the first compressed message each way and
    /// kept until the connection is dropped.
    #[cfg(feature = "deflate")]
    pub fn with_deflate(mut self, params: DeflateParams) -> Self {
        let (no_takeover, window_bits) = params.sending(self.role);
        let settings = &self.settings;
        let compressor = Compressor::new(
            settings.deflate_level,
            window_bits,
            no_takeover,
            settings.deflate_threshold as usize,
        );
        self.deflate = Some(Box::new((params, compressor)));
        let inflater = Inflater::new(params.peer_resets(self.role), self.settings.max_message_size);
        self.buffers.receiver.inflater = Some(Box::new(inflater));
        self
    }

    /// The agreed permessage-deflate parameters, if it is on.
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref().map(|d| &d.0)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The Close frame the peer sent, once it has arrived (`None` inside
    /// when it carried no code).
    pub fn peer_close(&self) -> Option<&CloseFrame> {
        match self.ending()? {
            Ending::Clean(frame) => frame.as_ref(),
            _ => None,
        }
    }

    /// Input and output bytes, for drivers that read and write in place
    /// (see [`Buffers`]).
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// Input and output bytes, mutably (see [`Buffers`]).
    pub fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }

    // ----- input -----------------------------------------------------------

    /// Hands the connection bytes read from the transport. Call
    /// [`poll_event`](Self::poll_event) until it returns `Ok(None)` before
    /// receiving more, so the buffer holds at most one frame. Once the
    /// connection stopped reading (its Close exchanged, or failed), input
    /// is discarded (RFC 6455 §1.4, §7.1.7).
    pub fn receive(&mut self, data: &[u8]) {
        if self.is_reading() {
            self.buffers.receiver.buf.extend_from_slice(data);
        }
    }

    /// Tells the connection the transport has no more bytes to give: the
    /// peer ended its direction (TCP FIN). While it still reads, what is
    /// buffered is delivered first; then, without the peer's Close, the
    /// connection ends abnormally ([`Ending::Abnormal`], RFC 6455 §7.1.5).
    /// While it closes, this is the EOF [`Directive::AwaitEof`] waits for.
    pub fn receive_eof(&mut self) {
        self.buffers.receiver.eof = true;
        if !self.is_reading() {
            self.advance(Input::Eof);
        }
    }

    /// The next event, or `Ok(None)` when more input is needed (or none will
    /// be read any more: see [`state`](Self::state) and
    /// [`ending`](Self::ending)).
    ///
    /// On `Err`, the peer broke a rule and the connection has failed (RFC
    /// 6455 §7.1.7): the Close frame with [`ProtocolError::close_code`] is
    /// queued, further input is discarded, and the transport is to be
    /// closed ([`poll_directive`](Self::poll_directive)).
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if !self.is_reading() {
            // Input after the Close or a failure is discarded (RFC 6455
            // §7.1.7), also what a driver appended through the read buffer
            // (kept allocated for the next read: the transport is being
            // drained until its EOF).
            self.buffers.receiver.buf.clear();
            return Ok(None);
        }
        let incoming = match self.buffers.receiver.poll(self.role, &self.settings) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => {
                if self.buffers.receiver.eof {
                    // RFC 6455 §7.1.5: the transport ended without a Close.
                    self.advance(Input::Eof);
                }
                return Ok(None);
            }
            Err(error) => {
                self.advance(Input::Fail(error));
                return Err(error);
            }
        };
        let event = match incoming {
            Incoming::Message(message) => Event::Message(message),
            Incoming::Ping(payload) => {
                // RFC 6455 §5.5.2: answer a Ping with a Pong of the same
                // payload, unless our Close went out already (§5.5.1).
                if self.state() == State::Open {
                    self.send_pong(&payload);
                }
                Event::Ping(payload)
            }
            // RFC 6455 §5.5.3: an unsolicited Pong needs no response.
            Incoming::Pong(payload) => Event::Pong(payload),
            Incoming::Close(frame) => {
                self.advance(Input::PeerClose(frame.clone()));
                Event::Close(frame)
            }
        };
        Ok(Some(event))
    }

    // ----- output ----------------------------------------------------------

    /// Takes the bytes waiting to be written to the transport, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.buffers.transmit.pop()
    }
}
