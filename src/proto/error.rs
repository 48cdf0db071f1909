//! Errors of the protocol layer.
//!
//! [`ProtocolError`]: the peer broke a rule. One variant per rule, each naming
//! its RFC 6455 section; [`ProtocolError::close_code`] is the one place that
//! maps them to close codes. When a connection reports one, it has already
//! queued its Close frame and stopped reading (§7.1.7).
//!
//! [`SendError`]: the local application asked for something the protocol does
//! not allow. Nothing was queued.
//!
//! A transport that ends without a Close frame is neither: it is how the
//! connection ended ([`Ending::Abnormal`](super::Ending::Abnormal), close
//! code 1006), not a rule anyone broke.

use std::fmt;

use super::close::CloseCode;

/// The peer violated RFC 6455. New rules may be added: a `match` needs a
/// `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// §5.2: an RSV bit is set but no extension defines it.
    ReservedBits(u8),
    /// §5.2: an opcode in 0x3–0x7 or 0xB–0xF.
    ReservedOpcode(u8),
    /// §5.5: a control frame without FIN.
    FragmentedControlFrame,
    /// §5.5: a control frame with more than 125 bytes of payload.
    ControlFrameTooLong(u64),
    /// §5.1: a client sent an unmasked frame.
    UnmaskedFrame,
    /// §5.1: a server sent a masked frame.
    MaskedFrame,
    /// §5.2: a 64-bit payload length with its most significant bit set.
    LengthMsbSet,
    /// §5.2: a payload length not in its shortest encoding.
    NonMinimalLength,
    /// §5.4: a continuation frame with no message to continue.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is open.
    ExpectedContinuation,
    /// §8.1: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// §5.5.1: a Close body of one byte (a code needs two).
    CloseBodyTooShort,
    /// §7.4: a Close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// §10.4: a frame longer than the configured maximum.
    FrameTooLarge {
        /// The length the frame's header declared.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// §10.4: a message longer than the configured maximum.
    MessageTooLarge {
        /// The length the message reached, or would reach with the frame
        /// that broke the limit.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// RFC 7692 §6.1: RSV1 (compressed) on a control frame.
    CompressedControlFrame,
    /// RFC 7692 §6.1: RSV1 (compressed) on a continuation frame; only a
    /// message's first frame carries it.
    CompressedContinuation,
    /// RFC 7692 §7.2.2: a compressed message that is not valid DEFLATE data.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this error sends (RFC 6455 §7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits(bits) => {
                write!(f, "RSV bits {bits:#05b} set without a negotiated extension (RFC 6455 §5.2)")
            }
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x} (RFC 6455 §5.2)"),
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame (RFC 6455 §5.5)"),
            ProtocolError::ControlFrameTooLong(len) => {
                write!(f, "control frame payload of {len} bytes, over 125 (RFC 6455 §5.5)")
            }
            ProtocolError::UnmaskedFrame => f.write_str("client frame not masked (RFC 6455 §5.1)"),
            ProtocolError::MaskedFrame => f.write_str("server frame masked (RFC 6455 §5.1)"),
            ProtocolError::LengthMsbSet => {
                f.write_str("64-bit payload length with the top bit set (RFC 6455 §5.2)")
            }
            ProtocolError::NonMinimalLength => {
                f.write_str("payload length not minimally encoded (RFC 6455 §5.2)")
            }
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message to continue (RFC 6455 §5.4)")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message (RFC 6455 §5.4)")
            }
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8 in text (RFC 6455 §8.1)"),
            ProtocolError::CloseBodyTooShort => f.write_str("close frame body of 1 byte (RFC 6455 §5.5.1)"),
            ProtocolError::InvalidCloseCode(code) => {
                write!(f, "close code {code} not allowed (RFC 6455 §7.4)")
            }
            ProtocolError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            ProtocolError::MessageTooLarge { len, max } => {
                write!(f, "message of at least {len} bytes exceeds the {max}-byte limit")
            }
            ProtocolError::CompressedControlFrame => {
                f.write_str("RSV1 set on a control frame (RFC 7692 §6.1)")
            }
            ProtocolError::CompressedContinuation => {
                f.write_str("RSV1 set on a continuation frame (RFC 7692 §6.1)")
            }
            ProtocolError::InvalidCompressedData => {
                f.write_str("compressed message is not valid DEFLATE data (RFC 7692 §7.2.2)")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The application asked for something RFC 6455 forbids; nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// §5.5.1: a Close frame was already sent (or the connection failed), so
    /// no more frames may follow.
    Closed,
    /// §5.5: control frame payloads are at most 125 bytes.
    ControlPayloadTooLong(usize),
    /// §7.4: this code may not be sent in a Close frame.
    InvalidCloseCode(u16),
    /// §5.5.1: the reason makes the Close payload longer than 125 bytes.
    CloseReasonTooLong(usize),
    /// §5.4: a fragmented message is being sent; finish it before starting
    /// another message.
    FragmentedMessageInProgress,
    /// §5.6: a text fragment that is not (a piece of) valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("the connection is closing or closed"),
            SendError::ControlPayloadTooLong(len) => {
                write!(f, "control frame payload of {len} bytes, over 125 (RFC 6455 §5.5)")
            }
            SendError::InvalidCloseCode(code) => {
                write!(f, "close code {code} may not be sent (RFC 6455 §7.4)")
            }
            SendError::CloseReasonTooLong(len) => {
                write!(f, "close reason of {len} bytes, over 123 (RFC 6455 §5.5.1)")
            }
            SendError::FragmentedMessageInProgress => {
                f.write_str("a fragmented message is still being sent (RFC 6455 §5.4)")
            }
            SendError::InvalidUtf8 => f.write_str("text fragment is not UTF-8 (RFC 6455 §5.6)"),
        }
    }
}

impl std::error::Error for SendError {}
