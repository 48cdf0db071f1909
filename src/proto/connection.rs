//! [`Connection`]: the whole RFC 6455 protocol after the handshake, as a
//! state machine with no I/O.
//!
//! Feed it what the transport delivered ([`Connection::receive`],
//! [`Connection::receive_eof`]), ask it for events
//! ([`Connection::poll_event`]), give it commands ([`Connection::send`],
//! [`Connection::ping`], [`Connection::close`]) and write out what it wants
//! to send ([`Connection::poll_transmit`]). Replies the protocol requires,
//! Pongs and the Close echo, are queued by the connection itself.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::close::{CloseCode, CloseFrame, MAX_CLOSE_REASON};
use super::config::{Config, Role};
#[cfg(feature = "deflate")]
use super::deflate::{Compressor, DeflateParams, Inflater};
use super::error::{ProtocolError, SendError};
use super::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::message::{Event, Message, MessageKind};
use super::prepared::PreparedMessage;
use super::receive::{Incoming, Receiver};
use super::transmit::{Transmit, ZERO_COPY_MIN};
use super::utf8::Utf8Validator;

/// RFC 7692 §6: RSV1 is the "Per-Message Compressed" bit.
#[cfg(feature = "deflate")]
const RSV1: u8 = 0b100;

/// Where a connection is in its life (RFC 6455 §7).
///
/// ```text
///            close() sent                      peer's Close received
///   Open ──────────────────────▶ CloseSent ───────────────────────────▶ Closed
///    │  peer's Close received (echo queued)                               ▲
///    ├────────────────────────────────────────────────────────────────────┤
///    │  transport ended without a Close (1006)                            │
///    ├────────────────────────────────────────────────────────────────────┘
///    │  the peer broke a rule: Close with its code queued (§7.1.7)
///    └──────────────────────────────────────────────────────────▶ Failed
///    (CloseSent moves to Failed or Closed on the same inputs)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a Close (RFC 6455 §7.1.2); no more frames go out. Incoming
    /// messages are still delivered until the peer's Close arrives.
    CloseSent,
    /// Both Close frames are exchanged, or the transport ended. Nothing more
    /// is read or sent. The server closes the transport first (§7.1.1); a
    /// client waits a while for the server to do so.
    Closed,
    /// We failed the connection (§7.1.7): our Close is queued, input is
    /// discarded, and the transport should be closed once the Close is out.
    Failed,
}

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
/// use sabai::handshake::{ClientHandshake, ClientRequest, HandshakeLimits, ServerHandshake};
/// use sabai::{Accept, CloseCode, CloseFrame, Config, Connection, Event, Message, State};
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
    config: Config,
    state: State,
    /// Boxed, like the connection itself in the tokio layer: pieces under
    /// 128 bytes fit the alignment gaps that tokio's 128-byte aligned task
    /// and I/O allocations leave in glibc's heap: measured, an idle server
    /// connection is under 1 KiB this way and over it in one piece (see
    /// BENCHMARKS.md, idle memory).
    receiver: Box<Receiver>,
    /// Encoded frames waiting for the transport. Boxed for the same reason
    /// as `receiver`.
    transmit: Box<Transmit>,
    sending: Option<OutgoingFragments>,
    /// Mask key source for a client (RFC 6455 §10.3); `None` for a server.
    masks: Option<Box<Masks>>,
    /// Boxed: set once per connection, so idle connections stay small.
    peer_close: Option<Box<CloseFrame>>,
    /// permessage-deflate, once agreed: the parameters and our compressor.
    #[cfg(feature = "deflate")]
    /// Boxed as one piece: idle connections stay small either way.
    deflate: Option<Box<(DeflateParams, Compressor)>>,
}

impl Connection {
    /// A server-side connection: it expects masked frames and sends unmasked ones.
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config, None)
    }

    /// A client-side connection. RFC 6455 §10.3 requires unpredictable mask
    /// keys: `mask_seed` seeds a ChaCha CSPRNG and must itself come from a
    /// cryptographic source (for example `rand::random()`). A fixed seed is
    /// only for tests.
    pub fn client(config: Config, mask_seed: [u8; 32]) -> Self {
        Self::new(Role::Client, config, Some(Box::new(Masks::Random(StdRng::from_seed(mask_seed)))))
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

    fn new(role: Role, config: Config, masks: Option<Box<Masks>>) -> Self {
        Connection {
            role,
            config,
            state: State::Open,
            receiver: Box::default(),
            transmit: Box::default(),
            sending: None,
            masks,
            peer_close: None,
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
        let config = self.config.deflate.clone().unwrap_or_default();
        let (no_takeover, window_bits) = params.sending(self.role);
        let compressor = Compressor::new(config.level, window_bits, no_takeover, config.threshold);
        self.deflate = Some(Box::new((params, compressor)));
        let inflater = Inflater::new(params.peer_resets(self.role), self.config.max_message_size);
        self.receiver.inflater = Some(Box::new(inflater));
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

    /// The configuration it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where it is in its life (open, closing, closed).
    pub fn state(&self) -> State {
        self.state
    }

    /// The Close frame the peer sent, once it has arrived.
    pub fn peer_close(&self) -> Option<&CloseFrame> {
        self.peer_close.as_deref()
    }

    // ----- input -----------------------------------------------------------

    /// Hands the connection bytes read from the transport. Call
    /// [`poll_event`](Self::poll_event) until it returns `Ok(None)` before
    /// receiving more, so the buffer holds at most one frame.
    pub fn receive(&mut self, data: &[u8]) {
        if self.is_reading() {
            self.receiver.buf.extend_from_slice(data);
        }
    }

    /// The buffer [`receive`](Self::receive) appends to, for reading from the
    /// transport without a copy. Only append to it.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.receiver.buf
    }

    /// Tells the connection the transport has no more bytes to give.
    pub fn receive_eof(&mut self) {
        self.receiver.eof = true;
    }

    /// Frees the input and output buffers if they hold no bytes, so an idle
    /// connection costs almost no memory. Call it when the transport has
    /// nothing to read; the next `read_buffer` or `send` allocates afresh.
    pub fn release_idle_buffers(&mut self) {
        self.receiver.release_if_empty();
        self.transmit.release_if_empty();
    }

    /// How many more bytes the frame now arriving needs, 0 when none is
    /// in progress: a hint for sizing the next read. Its declared length
    /// passed [`Config::max_frame_size`] already; bound the hint further
    /// before allocating on it, since a peer may declare and not send.
    pub fn input_needed(&self) -> usize {
        self.receiver.input_needed()
    }

    /// How many bytes the next read could usefully take: the rest of the
    /// frame in progress, or, between frames, the size of the last data
    /// frame received plus a header, so a stream of large frames is read in
    /// few system calls without growing the buffer midway (control frames
    /// do not count). 0 before the first frame. Bound it before allocating
    /// on it, like [`input_needed`](Self::input_needed).
    pub fn read_hint(&self) -> usize {
        self.receiver.read_hint()
    }

    /// Bytes received but not yet turned into events.
    pub fn buffered_input(&self) -> usize {
        self.receiver.buf.len()
    }

    /// The next event, or `Ok(None)` when more input is needed (or none will
    /// be read any more: see [`state`](Self::state)).
    ///
    /// On `Err`, the connection has failed (RFC 6455 §7.1.7): the Close
    /// frame with [`ProtocolError::close_code`] is queued for transmission
    /// and further input is discarded. The exception is
    /// [`ProtocolError::AbnormalClosure`]: the transport ended first, so
    /// nothing is queued.
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if !self.is_reading() {
            // Input after Closed/Failed is discarded (RFC 6455 §7.1.7), also
            // what a caller appended through `read_buffer` since then.
            self.receiver.discard();
            return Ok(None);
        }
        let incoming = match self.receiver.poll(self.role, &self.config) {
            Ok(Some(incoming)) => incoming,
            Ok(None) if self.receiver.eof => {
                // RFC 6455 §7.1.5: the transport closed without a Close frame: 1006.
                self.state = State::Closed;
                self.receiver.discard();
                return Err(ProtocolError::AbnormalClosure);
            }
            Ok(None) => return Ok(None),
            Err(error) => return Err(self.fail(error)),
        };
        let event = match incoming {
            Incoming::Message(message) => Event::Message(message),
            Incoming::Control(OpCode::Ping, payload) => {
                // RFC 6455 §5.5.2: answer a Ping with a Pong of the same
                // payload, unless our Close went out already (§5.5.1).
                if self.state == State::Open {
                    self.encode_frame(true, OpCode::Pong, &payload);
                }
                Event::Ping(payload)
            }
            // RFC 6455 §5.5.3: an unsolicited Pong needs no response.
            Incoming::Control(OpCode::Pong, payload) => Event::Pong(payload),
            Incoming::Control(_, payload) => match CloseFrame::parse(&payload) {
                Ok(frame) => self.on_peer_close(frame),
                Err(error) => return Err(self.fail(error)),
            },
        };
        Ok(Some(event))
    }

    fn on_peer_close(&mut self, frame: Option<CloseFrame>) -> Event {
        if self.state == State::Open {
            // RFC 6455 §5.5.1: reply with a Close, echoing the status code.
            let payload = frame.as_ref().map(|f| f.code.0.to_be_bytes());
            self.encode_frame(true, OpCode::Close, payload.as_ref().map_or(&[][..], |p| &p[..]));
        }
        // RFC 6455 §1.4: after the Close handshake, further data is discarded.
        self.state = State::Closed;
        self.receiver.discard();
        self.sending = None;
        self.peer_close = frame.clone().map(Box::new);
        Event::Close(frame)
    }

    /// RFC 6455 §7.1.7: _Fail the WebSocket Connection_: send a Close with
    /// the error's code (unless ours already went out) and stop reading.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let reason = error.to_string();
            self.encode_close(error.close_code(), truncate_utf8(&reason, MAX_CLOSE_REASON));
        }
        self.state = State::Failed;
        self.receiver.discard();
        self.sending = None;
        error
    }

    fn is_reading(&self) -> bool {
        matches!(self.state, State::Open | State::CloseSent)
    }

    // ----- commands --------------------------------------------------------

    /// Queues a whole message, split into frames of at most
    /// [`Config::max_send_frame_size`] bytes if that is set.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.check_open()?;
        if self.sending.is_some() {
            // RFC 6455 §5.4: another message's frames may not be interleaved.
            return Err(SendError::FragmentedMessageInProgress);
        }
        let opcode = match message.kind() {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        #[cfg(feature = "deflate")]
        if let Some(compressor) = self.deflate.as_mut().map(|d| &mut d.1) {
            // RFC 7692 §6: each message may be sent compressed or not.
            let data = message.as_bytes();
            let mut compressed = Vec::new();
            if data.len() >= compressor.threshold && compressor.compress(data, &mut compressed) {
                self.encode_message(opcode, RSV1, Bytes::from(compressed));
                return Ok(());
            }
        }
        // No copy: a large payload may be queued as it is.
        self.encode_message(opcode, 0, message.into_bytes());
        Ok(())
    }

    /// Frames a message's payload, split at [`Config::max_send_frame_size`].
    /// `rsv` goes on the first frame only (RFC 7692 §6.1).
    fn encode_message(&mut self, opcode: OpCode, rsv: u8, data: Bytes) {
        let max = self.config.max_send_frame_size.unwrap_or(usize::MAX).max(1);
        if data.len() <= max {
            self.encode_data(true, rsv, opcode, data);
            return;
        }
        // RFC 6455 §5.4: the first fragment carries the opcode, the rest are
        // continuations, and only the last has FIN.
        let (mut start, mut frame_opcode, mut frame_rsv) = (0, opcode, rsv);
        while start < data.len() {
            let end = data.len().min(start + max);
            self.encode_data(end == data.len(), frame_rsv, frame_opcode, data.slice(start..end));
            (start, frame_opcode, frame_rsv) = (end, OpCode::Continuation, 0);
        }
    }

    /// Queues a message framed once by [`PreparedMessage`]. A server queues
    /// the shared frame bytes as they are (RFC 6455 §5.1: server frames are
    /// unmasked): the compressed frame if the message was made with
    /// [`PreparedMessage::with_deflate`] and this connection agreed to
    /// permessage-deflate with `server_no_context_takeover`, else the plain
    /// one. A client re-encodes the payload, masked with a fresh key
    /// (§5.3), uncompressed. The message always goes out as one frame.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), SendError> {
        self.send_prepared_len(message).map(drop)
    }

    /// [`send_prepared`](Self::send_prepared), returning how many bytes it
    /// queued.
    pub(crate) fn send_prepared_len(&mut self, message: &PreparedMessage) -> Result<usize, SendError> {
        self.check_open()?;
        if self.sending.is_some() {
            // RFC 6455 §5.4: another message's frames may not be interleaved.
            return Err(SendError::FragmentedMessageInProgress);
        }
        let before = self.transmit.len();
        if self.masks.is_some() {
            self.encode_frame(true, message.opcode(), message.payload());
            return Ok(self.transmit.len() - before);
        }
        #[cfg(feature = "deflate")]
        let frame = message.frame_for(self.deflate());
        #[cfg(not(feature = "deflate"))]
        let frame = message.frame();
        if frame.len() >= ZERO_COPY_MIN {
            // Shared by every recipient, and never copied.
            self.transmit.push_shared(frame.clone());
        } else {
            self.transmit.tail(frame.len()).extend_from_slice(frame);
        }
        Ok(frame.len())
    }

    /// Queues one fragment of a message (RFC 6455 §5.4). The first call
    /// starts a message of type `kind`; later calls continue it; `fin` ends
    /// it. Text fragments may split a character, but the whole must be UTF-8.
    /// Control frames may be sent between fragments; other messages may not.
    /// Fragments go out uncompressed even with permessage-deflate on (RFC
    /// 7692 §6 lets each message choose); use [`send`](Self::send) to compress.
    pub fn send_fragment(&mut self, kind: MessageKind, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.check_open()?;
        let (opcode, mut outgoing) = match self.sending {
            None => {
                let opcode = if kind == MessageKind::Text { OpCode::Text } else { OpCode::Binary };
                (opcode, OutgoingFragments { kind, utf8: Utf8Validator::new() })
            }
            Some(outgoing) if outgoing.kind == kind => (OpCode::Continuation, outgoing),
            Some(_) => return Err(SendError::FragmentedMessageInProgress),
        };
        if kind == MessageKind::Text {
            // RFC 6455 §5.6: text is UTF-8, so refuse what the peer must reject.
            let checked = if fin { outgoing.utf8.finish(data) } else { outgoing.utf8.feed(data) };
            checked.map_err(|_| SendError::InvalidUtf8)?;
        }
        self.encode_frame(fin, opcode, data);
        self.sending = if fin { None } else { Some(outgoing) };
        Ok(())
    }

    /// Queues a Ping (RFC 6455 §5.5.2); the payload is at most 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited Pong, a one-way heartbeat (RFC 6455 §5.5.3).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        // RFC 6455 §5.5: control frame payloads are at most 125 bytes.
        if payload.len() > 125 {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.encode_frame(true, opcode, payload);
        Ok(())
    }

    /// Starts the closing handshake (RFC 6455 §7.1.2): queues a Close frame;
    /// after it, nothing else is sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        // RFC 6455 §7.4: only codes valid on the wire may be sent.
        if !code.is_valid() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        // RFC 6455 §5.5: the 2-byte code plus the reason fit in 125 bytes.
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::CloseReasonTooLong(reason.len()));
        }
        self.encode_close(code, reason);
        self.state = State::CloseSent;
        self.sending = None;
        Ok(())
    }

    /// RFC 6455 §5.5.1: after sending a Close, an endpoint sends no more frames.
    fn check_open(&self) -> Result<(), SendError> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    // ----- output ----------------------------------------------------------

    /// Takes the bytes waiting to be written to the transport, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop()
    }

    /// How many bytes wait to be written.
    pub fn pending_transmit(&self) -> usize {
        self.transmit.len()
    }

    /// The oldest bytes waiting to be written, left in place: write a
    /// prefix of them, then call [`advance_transmit`](Self::advance_transmit)
    /// with its length. Empty when nothing waits. An alternative to
    /// [`poll_transmit`](Self::poll_transmit) for transports that copy what
    /// they are given (a socket): no reference counting, and the buffer is
    /// reused.
    pub fn transmit_buffer(&self) -> &[u8] {
        self.transmit.front()
    }

    /// Like [`transmit_buffer`](Self::transmit_buffer), for a vectored write:
    /// fills `out` with slices of the waiting bytes, oldest first, and
    /// returns how many it filled. Large payloads are queued without a copy,
    /// so the waiting bytes may be in several pieces.
    pub fn transmit_chunks<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.transmit.chunks(out)
    }

    /// Marks the first `n` waiting bytes as written (at most all of them).
    pub fn advance_transmit(&mut self, n: usize) {
        self.transmit.advance(n);
    }

    fn encode_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.encode_frame(true, OpCode::Close, &payload[..2 + reason.len()]);
    }

    /// Encodes a data frame whose payload the connection may keep: a large
    /// one that needs no mask is queued without a copy.
    fn encode_data(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: Bytes) {
        if self.masks.is_none() && payload.len() >= ZERO_COPY_MIN {
            let header = FrameHeader { fin, rsv, opcode, mask: None, len: payload.len() as u64 };
            let mut head = [0u8; MAX_HEADER_LEN];
            let head_len = header.encode(&mut head);
            self.transmit.tail(head_len).extend_from_slice(&head[..head_len]);
            self.transmit.push_shared(payload);
        } else {
            self.encode_frame_rsv(fin, rsv, opcode, &payload);
        }
    }

    fn encode_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.encode_frame_rsv(fin, 0, opcode, payload);
    }

    fn encode_frame_rsv(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
        // RFC 6455 §5.3: a client masks every frame with a fresh key from a
        // strong source of entropy (§10.3); a server never masks.
        let mask = self.masks.as_mut().map(|masks| masks.next_key());
        let header = FrameHeader { fin, rsv, opcode, mask, len: payload.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let out = self.transmit.tail(head_len + payload.len());
        out.extend_from_slice(&head[..head_len]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key);
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
