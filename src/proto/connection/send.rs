//! The send path: every command ends in one frame encoder
//! (`Connection::encode_frame`) and one output queue, which alone decides
//! whether a payload is copied or shared (`Transmit::push_frame`,
//! `Transmit::push_prepared`).

use bytes::Bytes;

use super::lifecycle::Input;
use super::{Connection, OutgoingFragments, State};
use crate::proto::close::{CloseCode, MAX_CLOSE_REASON};
use crate::proto::error::SendError;
use crate::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::proto::mask::apply_mask;
use crate::proto::message::{Message, MessageKind};
use crate::proto::prepared::PreparedMessage;
use crate::proto::utf8::Utf8Validator;

/// RFC 7692 §6: RSV1 is the "Per-Message Compressed" bit.
#[cfg(feature = "deflate")]
const RSV1: u8 = 0b100;

/// A frame's payload as the encoder gets it.
enum Payload<'a> {
    /// Bytes the connection may keep: a server queues a large one as it is.
    Owned(Bytes),
    /// Bytes to copy (and, for a client, mask) into the output buffer.
    Borrowed(&'a [u8]),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Borrowed(slice) => slice,
        }
    }
}

impl Connection {
    // ----- commands --------------------------------------------------------

    /// Queues a whole message, split into frames of at most
    /// [`Config::max_send_frame_size`](crate::Config::max_send_frame_size)
    /// bytes if that is set; compressed if permessage-deflate was agreed
    /// and it is worth it.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.check_new_message()?;
        let opcode = message.kind().opcode();
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

    /// Queues a message framed once by [`PreparedMessage`] and returns how
    /// many bytes it queued (fewer than the plain frame when it went out
    /// compressed). A server queues the shared frame bytes as they are (RFC
    /// 6455 §5.1: server frames are unmasked): the compressed frame if the
    /// message was made with [`PreparedMessage::with_deflate`] and this
    /// connection agreed to permessage-deflate with
    /// `server_no_context_takeover`, else the plain one. A client re-encodes
    /// the payload, masked with a fresh key (§5.3), uncompressed. The
    /// message always goes out as one frame.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<usize, SendError> {
        self.check_new_message()?;
        let before = self.buffers.transmit.len();
        if self.masks.is_some() {
            self.encode_frame(true, 0, message.kind().opcode(), Payload::Borrowed(message.payload()));
        } else {
            #[cfg(feature = "deflate")]
            let frame = message.frame_for(self.deflate());
            #[cfg(not(feature = "deflate"))]
            let frame = message.frame();
            self.buffers.transmit.push_prepared(frame);
        }
        Ok(self.buffers.transmit.len() - before)
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
            None => (kind.opcode(), OutgoingFragments { kind, utf8: Utf8Validator::new() }),
            Some(outgoing) if outgoing.kind == kind => (OpCode::Continuation, outgoing),
            Some(_) => return Err(SendError::FragmentedMessageInProgress),
        };
        if kind == MessageKind::Text {
            // RFC 6455 §5.6: text is UTF-8, so refuse what the peer must reject.
            let checked = if fin { outgoing.utf8.finish(data) } else { outgoing.utf8.feed(data) };
            checked.map_err(|_| SendError::InvalidUtf8)?;
        }
        self.encode_frame(fin, 0, opcode, Payload::Borrowed(data));
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

    /// Starts the closing handshake (RFC 6455 §7.1.2): queues a Close frame;
    /// after it, nothing else is sent. The connection goes on reading until
    /// the peer's Close, for at most the close timeout.
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
        self.advance(Input::Close(code, reason));
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        // RFC 6455 §5.5: control frame payloads are at most 125 bytes.
        if payload.len() > 125 {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.encode_frame(true, 0, opcode, Payload::Borrowed(payload));
        Ok(())
    }

    /// The automatic reply to a Ping (RFC 6455 §5.5.2).
    pub(super) fn send_pong(&mut self, payload: &Bytes) {
        self.encode_frame(true, 0, OpCode::Pong, Payload::Owned(payload.clone()));
    }

    /// RFC 6455 §5.5.1: after sending a Close, an endpoint sends no more frames.
    fn check_open(&self) -> Result<(), SendError> {
        match self.state() {
            State::Open => Ok(()),
            _ => Err(SendError::Closed),
        }
    }

    /// A whole new message may start: open, and no fragmented message is
    /// being sent (RFC 6455 §5.4: another message's frames may not be
    /// interleaved with it).
    fn check_new_message(&self) -> Result<(), SendError> {
        self.check_open()?;
        match self.sending {
            None => Ok(()),
            Some(_) => Err(SendError::FragmentedMessageInProgress),
        }
    }

    // ----- the encoders --------------------------------------------------------

    /// A Close frame with a code and a reason that fits (checked by the
    /// caller).
    pub(super) fn encode_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.encode_frame(true, 0, OpCode::Close, Payload::Borrowed(&payload[..2 + reason.len()]));
    }

    /// A Close frame without a code: the echo of an empty Close.
    pub(super) fn encode_empty_close(&mut self) {
        self.encode_frame(true, 0, OpCode::Close, Payload::Borrowed(&[]));
    }

    /// Frames a message's payload, split at the configured frame size.
    /// `rsv` goes on the first frame only (RFC 7692 §6.1).
    fn encode_message(&mut self, opcode: OpCode, rsv: u8, data: Bytes) {
        let max = self.settings.max_send_frame_size;
        if data.len() <= max {
            self.encode_frame(true, rsv, opcode, Payload::Owned(data));
            return;
        }
        // RFC 6455 §5.4: the first fragment carries the opcode, the rest are
        // continuations, and only the last has FIN.
        let (mut start, mut frame_opcode, mut frame_rsv) = (0, opcode, rsv);
        while start < data.len() {
            let end = data.len().min(start + max);
            let fin = end == data.len();
            self.encode_frame(fin, frame_rsv, frame_opcode, Payload::Owned(data.slice(start..end)));
            (start, frame_opcode, frame_rsv) = (end, OpCode::Continuation, 0);
        }
    }

    /// The one frame encoder: the header, then the payload. RFC 6455 §5.3:
    /// a client masks every frame with a fresh key from a strong source of
    /// entropy (§10.3), into the output buffer; a server never masks, and
    /// its payload goes to the output queue as it is (copied or shared,
    /// which the queue decides).
    fn encode_frame(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: Payload<'_>) {
        let mask = self.masks.as_mut().map(|masks| masks.next_key());
        let len = payload.as_slice().len();
        let header = FrameHeader { fin, rsv, opcode, mask, len: len as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let transmit = &mut self.buffers.transmit;
        match (mask, payload) {
            (Some(key), payload) => {
                let out = transmit.tail(head_len + len);
                out.extend_from_slice(&head[..head_len]);
                let start = out.len();
                out.extend_from_slice(payload.as_slice());
                apply_mask(&mut out[start..], key);
            }
            (None, Payload::Owned(bytes)) => transmit.push_frame(&head[..head_len], bytes),
            (None, Payload::Borrowed(slice)) => {
                let out = transmit.tail(head_len + len);
                out.extend_from_slice(&head[..head_len]);
                out.extend_from_slice(slice);
            }
        }
    }
}
