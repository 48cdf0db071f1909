//! The receiving half of a connection: bytes in, frames checked, messages out.
//!
//! Work happens on demand, in [`Receiver::poll`]: every call parses as many
//! complete frames as it needs from the buffer. Payload that has arrived but
//! is not yet a whole frame is unmasked in place and, for text, validated
//! right away, so invalid UTF-8 fails the connection in the read where it
//! arrives (RFC 6455 §8.1, Autobahn 6.4.x). Results do not depend on how the
//! bytes were chunked.

use bytes::{Buf, Bytes, BytesMut};

use super::close::CloseCode;
use super::close::CloseFrame;
use super::config::Settings;
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask_at;
use super::message::{Message, MessageKind};
use super::role::Role;
use super::utf8::Utf8Validator;

// permessage-deflate's receiving side: compressed frames in, inflated
// messages out (RFC 7692 §6.2).
#[cfg(feature = "deflate")]
mod deflate;

/// A complete unit the connection must act on.
#[derive(Debug)]
pub(super) enum Incoming {
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's Close, read and checked (`None`: it carried no code).
    Close(Option<CloseFrame>),
}

/// A frame whose header has been parsed and whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct PartialFrame {
    header: FrameHeader,
    /// Payload bytes at the front of the buffer already unmasked (and validated).
    done: usize,
}

/// A fragmented message being put together (RFC 6455 §5.4).
#[derive(Debug)]
struct Assembly {
    kind: MessageKind,
    /// The payload so far; for a compressed message, inflated.
    data: BytesMut,
    /// RFC 7692 §6: the first frame had RSV1 set.
    compressed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Receiver {
    /// Received bytes not yet consumed. While `frame` is set, it starts with
    /// that frame's payload.
    pub(super) buf: BytesMut,
    frame: Option<PartialFrame>,
    /// Boxed: most messages are one frame, and idle connections stay small.
    assembly: Option<Box<Assembly>>,
    /// Validates the text message currently arriving.
    utf8: Utf8Validator,
    /// The transport has ended: no more bytes will come.
    pub(super) eof: bool,
    /// Length of the last data frame whose header was accepted: between
    /// frames, a guess at the size of the next one (a hint for sizing reads).
    /// Control frames leave it: a Ping between large frames says nothing
    /// about the next data frame.
    last_len: u32,
    /// Set once permessage-deflate is agreed (RFC 7692).
    #[cfg(feature = "deflate")]
    pub(super) inflater: Option<Box<super::deflate::Inflater>>,
}

impl Receiver {
    /// Produces the next complete message or control frame, `None` when more
    /// input is needed.
    pub(super) fn poll(&mut self, role: Role, limits: &Settings) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let frame = match self.frame {
                Some(frame) => frame,
                None => {
                    let Some((header, header_len)) = FrameHeader::parse(&self.buf)? else {
                        return Ok(None);
                    };
                    self.check_header(&header, role, limits)?;
                    if !header.opcode.is_control() {
                        self.last_len = header.len.min(u32::MAX as u64) as u32;
                    }
                    self.buf.advance(header_len);
                    if header.opcode == OpCode::Text {
                        self.utf8.reset();
                    }
                    let frame = PartialFrame { header, done: 0 };
                    self.frame = Some(frame);
                    frame
                }
            };
            // `check_header` bounded the length by `max_frame_size`, a usize.
            let len = frame.header.len as usize;
            if self.buf.len() < len {
                self.process_partial(frame)?;
                return Ok(None);
            }
            self.frame = None;
            let mut payload = self.buf.split_to(len);
            if let Some(key) = frame.header.mask {
                apply_mask_at(&mut payload[frame.done..], key, frame.done);
            }
            if let Some(incoming) = self.complete_frame(frame, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// The per-frame rules that do not need the payload. Checked before any
    /// payload is buffered, so an oversized frame is refused on its header.
    fn check_header(&self, h: &FrameHeader, role: Role, limits: &Settings) -> Result<(), ProtocolError> {
        // RFC 6455 §5.2: RSV bits MUST be 0 unless an extension defines them.
        if h.rsv != 0 {
            self.check_rsv(h)?;
        }
        if h.opcode.is_control() {
            // RFC 6455 §5.5: control frames MUST NOT be fragmented.
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            // RFC 6455 §5.5: control frame payloads are at most 125 bytes.
            if h.len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(h.len));
            }
        }
        // RFC 6455 §5.1: clients MUST mask, servers MUST NOT; the receiver
        // MUST close the connection otherwise.
        match (role, h.mask) {
            (Role::Server, None) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // RFC 6455 §10.4: limits on frame and message size.
        if h.len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge { len: h.len, max: limits.max_frame_size });
        }
        let so_far = match (h.opcode, &self.assembly) {
            // RFC 6455 §5.4: a continuation frame needs a message to continue.
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            // A compressed message's limit applies to its inflated size,
            // checked while inflating (RFC 7692 §8.1 also warns of this).
            (OpCode::Continuation, Some(assembly)) if assembly.compressed => return Ok(()),
            (OpCode::Text | OpCode::Binary, None) if h.rsv != 0 => return Ok(()),
            (OpCode::Continuation, Some(assembly)) => assembly.data.len() as u64,
            // RFC 6455 §5.4: fragments of one message MUST NOT be interleaved
            // with another message's data frames.
            (OpCode::Text | OpCode::Binary, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Text | OpCode::Binary, None) => 0,
            _ => return Ok(()),
        };
        if so_far + h.len > limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge { len: so_far + h.len, max: limits.max_message_size });
        }
        Ok(())
    }

    /// RSV bits are allowed only as permessage-deflate's RSV1.
    fn check_rsv(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        #[cfg(feature = "deflate")]
        if h.rsv == 0b100 && self.inflater.is_some() {
            // RFC 7692 §6.1: RSV1 marks a compressed message on its first
            // frame only; on a control or continuation frame it fails.
            return match h.opcode {
                OpCode::Text | OpCode::Binary => Ok(()),
                OpCode::Continuation => Err(ProtocolError::CompressedContinuation),
                _ => Err(ProtocolError::CompressedControlFrame),
            };
        }
        Err(ProtocolError::ReservedBits(h.rsv))
    }

    /// Whether this frame's payload is (uncompressed) text to validate as it
    /// arrives.
    fn is_text(&self, header: &FrameHeader) -> bool {
        match header.opcode {
            OpCode::Text => header.rsv == 0,
            OpCode::Continuation => {
                matches!(&self.assembly, Some(a) if a.kind == MessageKind::Text && !a.compressed)
            }
            _ => false,
        }
    }

    /// Unmasks and validates the part of an incomplete payload that has
    /// arrived, so bad UTF-8 fails now rather than when the frame ends.
    fn process_partial(&mut self, frame: PartialFrame) -> Result<(), ProtocolError> {
        let arrived = self.buf.len();
        if arrived == frame.done {
            return Ok(());
        }
        let new = &mut self.buf[frame.done..arrived];
        if let Some(key) = frame.header.mask {
            apply_mask_at(new, key, frame.done);
        }
        if self.is_text(&frame.header) {
            // RFC 6455 §8.1: invalid UTF-8 fails the connection (1007).
            self.utf8.feed(&self.buf[frame.done..arrived]).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.frame = Some(PartialFrame { done: arrived, ..frame });
        Ok(())
    }

    /// Acts on a whole, unmasked frame: returns a message or control frame,
    /// or `None` for a fragment that does not end its message.
    fn complete_frame(
        &mut self,
        frame: PartialFrame,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ProtocolError> {
        let FrameHeader { fin, opcode, .. } = frame.header;
        match opcode {
            OpCode::Ping => return Ok(Some(Incoming::Ping(payload.freeze()))),
            OpCode::Pong => return Ok(Some(Incoming::Pong(payload.freeze()))),
            OpCode::Close => return read_close(&payload).map(|frame| Some(Incoming::Close(frame))),
            _ => {}
        }
        #[cfg(feature = "deflate")]
        if frame.header.rsv != 0 || matches!(&self.assembly, Some(a) if a.compressed) {
            return self.complete_compressed(frame.header, payload);
        }
        let is_text = self.is_text(&frame.header);
        if opcode == OpCode::Text && fin && frame.done == 0 {
            // A whole text message in one go: the String conversion is its
            // only validation pass.
            return text_message(payload).map(Some);
        }
        if is_text {
            let rest = &payload[frame.done..];
            let checked = if fin { self.utf8.finish(rest) } else { self.utf8.feed(rest) };
            checked.map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let data = match (opcode, self.assembly.take()) {
            (OpCode::Continuation, Some(mut assembly)) => {
                assembly.data.extend_from_slice(&payload);
                if !fin {
                    self.assembly = Some(assembly);
                    return Ok(None);
                }
                assembly.data
            }
            _ if !fin => {
                // `check_header` let only a text or binary frame start it.
                let kind = MessageKind::of(opcode).unwrap_or(MessageKind::Binary);
                self.assembly = Some(Box::new(Assembly { kind, data: payload, compressed: false }));
                return Ok(None);
            }
            _ => payload,
        };
        if is_text {
            text_message(data).map(Some)
        } else {
            Ok(Some(Incoming::Message(Message::Binary(data.freeze()))))
        }
    }

    /// Bytes still to come before the frame in progress is complete (0 when
    /// no frame is in progress). Its length passed the limits already.
    pub(super) fn input_needed(&self) -> usize {
        match self.frame {
            Some(frame) => (frame.header.len as usize).saturating_sub(self.buf.len()),
            None => 0,
        }
    }

    /// Bytes worth reading next: the rest of the frame in progress, or
    /// between frames the size of the last one plus a header, since peers
    /// tend to send frames of one size. 0 before any frame.
    pub(super) fn read_hint(&self) -> usize {
        match self.frame {
            Some(_) => self.input_needed(),
            None if self.last_len == 0 => 0,
            None => (self.last_len as usize).saturating_add(MAX_HEADER_LEN).saturating_sub(self.buf.len()),
        }
    }

    /// Frees the buffer when it holds no bytes. A partly received frame
    /// keeps it (its parsed header lives in `frame`, so even then the bytes
    /// already handled are gone from `buf`).
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Drops everything buffered: after a Close or a failure, further input
    /// is discarded (RFC 6455 §1.4, §7.1.7).
    pub(super) fn discard(&mut self) {
        *self = Receiver { eof: self.eof, ..Receiver::default() };
    }
}

fn text_message(data: BytesMut) -> Result<Incoming, ProtocolError> {
    String::from_utf8(Vec::from(data))
        .map(|text| Incoming::Message(Message::Text(text)))
        .map_err(|_| ProtocolError::InvalidUtf8)
}

/// Reads a received Close payload (RFC 6455 §5.5.1): empty, or a 2-byte
/// code followed by a UTF-8 reason.
fn read_close(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        // RFC 6455 §5.5.1: if there is a body, its first two bytes are a code.
        [_] => Err(ProtocolError::CloseBodyTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            // RFC 6455 §7.4: codes not allowed on the wire fail the connection.
            if !code.is_valid() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            // RFC 6455 §5.5.1, §8.1: the reason is UTF-8.
            Utf8Validator::new().finish(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            let reason = String::from_utf8_lossy(reason).into_owned();
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_empty_close_and_a_code_with_a_reason() {
        assert_eq!(read_close(b""), Ok(None));
        assert_eq!(read_close(&[0x03, 0xE8]), Ok(Some(CloseFrame::new(1000, ""))));
        let mut p = vec![0x0F, 0xA0]; // 4000
        p.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(read_close(&p), Ok(Some(CloseFrame::new(4000, "bye ✓"))));
    }

    #[test]
    fn refuses_a_one_byte_close_body() {
        assert_eq!(read_close(&[0x03]), Err(ProtocolError::CloseBodyTooShort));
    }

    #[test]
    fn refuses_codes_not_allowed_on_the_wire() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = code.to_be_bytes();
            assert_eq!(read_close(&p), Err(ProtocolError::InvalidCloseCode(code)));
        }
    }

    #[test]
    fn refuses_a_reason_that_is_not_utf8() {
        assert_eq!(read_close(&[0x03, 0xE8, 0xCE, 0xBA, 0xFF]), Err(ProtocolError::InvalidUtf8));
        assert_eq!(read_close(&[0x03, 0xE8, 0xCE]), Err(ProtocolError::InvalidUtf8));
    }
}
