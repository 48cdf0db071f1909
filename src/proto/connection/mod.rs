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
use rand::{Rng, SeedableRng};

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

/// Where a client's mask keys come from. Already boxed in the connection,
/// so the size difference between the variants costs nothing more.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Masks {
    /// A fresh key per frame from a CSPRNG (RFC 6455 §10.3).
    Random(StdRng),
    /// The same key on every frame: reproducible traces only.
    Fixed([u8; 4]),
}

impl Masks {
    fn next_key(&mut self) -> [u8; 4] {
        match self {
            Masks::Random(rng) => rng.next_u32().to_ne_bytes(),
            Masks::Fixed(key) => *key,
        }
    }
}

/// One WebSocket connection's protocol state, without I/O.
///
/// A `Connection` never reads or writes a socket. You hand it the bytes
/// that arrived ([`receive`](Self::receive), [`receive_eof`](Self::receive_eof)),
/// ask it what they meant ([`poll_event`](Self::poll_event)), give it
/// commands ([`send`](Self::send), [`ping`](Self::ping), [`close`](Self::close)),
/// and write out what it queued ([`poll_transmit`](Self::poll_transmit)).
/// Replies the RFC requires (the Pong to a Ping, the echo of a Close) are
/// queued by the connection itself. A protocol error queues the Close frame
/// with its code and moves to [`State::Failed`]. The tokio layer
/// ([`WebSocket`](crate::WebSocket)) is a loop around exactly these calls.
///
/// A complete exchange, both ends in one test, every byte checked: the
/// opening handshake of RFC 6455 §1.3, the masked "Hello" of §5.7, a Ping
/// and its automatic Pong, and the closing handshake of §7.
///
/// ```
/// use sabai::handshake::{Accept, ClientHandshake, ClientRequest, HandshakeLimits, ServerHandshake};
/// use sabai::{CloseCode, CloseFrame, Config, Connection, Event, Message, State};
///
/// // 1. The opening handshake (§4), sans-IO as well. The key is §1.3's
/// //    sample nonce; a real client draws 16 bytes from a CSPRNG.
/// let mut asking = ClientHandshake::new(ClientRequest::new("server.example.com", "/chat"), *b"the sample nonce");
/// let request = asking.request_bytes().unwrap();
/// assert!(request.starts_with(b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\n"));
///
/// let mut answering = ServerHandshake::new(HandshakeLimits::default());
/// let (parsed, used) = answering.parse(&request).unwrap().expect("the whole head");
/// assert_eq!(used, request.len()); // bytes after the head would be frames
/// let response = parsed.accept_response(&Accept::new()).unwrap();
/// let text = String::from_utf8(response.clone()).unwrap();
/// assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
/// // base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), §1.3:
/// assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
/// let (_accepted, used) = asking.parse_response(&response).unwrap().expect("the whole head");
/// assert_eq!(used, response.len());
///
/// // 2. One connection per end. The client's mask seed comes from a CSPRNG
/// //    in real code; the fixed key here reproduces §5.7's bytes.
/// let mut client = Connection::client(Config::default(), [7; 32]).with_fixed_mask_key([0x37, 0xfa, 0x21, 0x3d]);
/// let mut server = Connection::server(Config::default());
///
/// // 3. A client masks every frame (§5.3): FIN + Text, MASK + length 5,
/// //    the key, then "Hello" XORed with it.
/// client.send(Message::text("Hello")).unwrap();
/// let wire = client.poll_transmit().unwrap();
/// assert_eq!(wire[..], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
///
/// // Bytes arrive in any pieces; half a frame is not an error, just no event yet.
/// server.receive(&wire[..4]);
/// assert_eq!(server.poll_event(), Ok(None));
/// server.receive(&wire[4..]);
/// assert_eq!(server.poll_event(), Ok(Some(Event::Message(Message::text("Hello")))));
///
/// // 4. A server never masks (§5.1).
/// server.send(Message::text("Hello")).unwrap();
/// let wire = server.poll_transmit().unwrap();
/// assert_eq!(wire[..], [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
/// client.receive(&wire);
/// assert_eq!(client.poll_event(), Ok(Some(Event::Message(Message::text("Hello")))));
///
/// // 5. A Ping: the server's Pong is queued by the server itself (§5.5.2).
/// client.ping(b"hi").unwrap();
/// server.receive(&client.poll_transmit().unwrap());
/// assert!(matches!(server.poll_event(), Ok(Some(Event::Ping(p))) if p == "hi"));
/// let pong = server.poll_transmit().unwrap();
/// assert_eq!(pong[..], [0x8a, 0x02, b'h', b'i']);
/// client.receive(&pong);
/// assert!(matches!(client.poll_event(), Ok(Some(Event::Pong(p))) if p == "hi"));
///
/// // 6. The closing handshake (§7): the client's Close, the server's echo.
/// client.close(CloseCode::NORMAL, "bye").unwrap();
/// assert_eq!(client.state(), State::CloseSent);
/// let close = client.poll_transmit().unwrap();
/// assert_eq!(close[..2], [0x88, 0x85]); // FIN + Close, masked, 2-byte code + "bye"
/// server.receive(&close);
/// assert_eq!(server.poll_event(), Ok(Some(Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))))));
/// let echo = server.poll_transmit().unwrap();
/// assert_eq!(echo[..], [0x88, 0x02, 0x03, 0xe8]); // 1000, big-endian
/// assert_eq!(server.state(), State::Closed); // the server now closes TCP first (§7.1.1)
/// client.receive(&echo);
/// assert_eq!(client.poll_event(), Ok(Some(Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))));
/// assert_eq!(client.state(), State::Closed);
/// assert_eq!(client.send(Message::text("too late")), Err(sabai::SendError::Closed));
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
    masks: Option<Box<Masks>>,
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
        Self::new(Role::Client, &config, Some(Box::new(Masks::Random(StdRng::from_seed(mask_seed)))))
    }

    /// Masks every frame this client sends with the same `key`, so that its
    /// bytes are the same on every run: for traces and teaching (the
    /// `sabai` tool's `--mask-key`) and tests. Never on a real connection:
    /// RFC 6455 §10.3 requires an unpredictable key per frame, so that a
    /// script cannot choose the bytes an intermediary sees. A server does
    /// not mask (§5.1), so on a server this changes nothing.
    ///
    /// ```
    /// use sabai::{Config, Connection, Message};
    ///
    /// // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
    /// let mut client = Connection::client(Config::default(), [0; 32]).with_fixed_mask_key([0x37, 0xfa, 0x21, 0x3d]);
    /// client.send(Message::text("Hello")).unwrap();
    /// let wire = client.poll_transmit().unwrap();
    /// assert_eq!(&wire[..], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    /// ```
    pub fn with_fixed_mask_key(mut self, key: [u8; 4]) -> Self {
        if let Some(masks) = self.masks.as_mut() {
            **masks = Masks::Fixed(key);
        }
        self
    }

    fn new(role: Role, config: &Config, masks: Option<Box<Masks>>) -> Self {
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
    /// Memory: the compressor (about 375 KiB with a 15-bit window) and the
    /// inflater (about 54 KiB) are allocated on the first compressed
    /// message each way and kept until the connection is dropped.
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

    /// Which end this connection is.
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
