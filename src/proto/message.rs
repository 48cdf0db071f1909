//! What a connection hands to the application: messages and events.

use bytes::Bytes;

use super::close::CloseFrame;
use super::frame::OpCode;

/// A complete data message (RFC 6455 §5.6): text or binary, however many
/// frames it arrived in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// UTF-8 text, validated on receipt (RFC 6455 §8.1).
    Text(String),
    /// Arbitrary bytes.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// The text, or `None` for a binary message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(text) => Bytes::from(text),
            Message::Binary(data) => data,
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message::Text(text.to_owned())
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Message {
        Message::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Message {
        Message::Binary(data.into())
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(data))
    }
}

/// Text or binary: the type of a data message (RFC 6455 §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Opcode 0x1: UTF-8 text.
    Text,
    /// Opcode 0x2: arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of a message's first frame (RFC 6455 §5.6): the one
    /// mapping from kind to opcode, for sending.
    pub(crate) fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }

    /// The kind a first frame's opcode starts, for receiving; `None` for a
    /// continuation or control frame.
    pub(crate) fn of(opcode: OpCode) -> Option<MessageKind> {
        match opcode {
            OpCode::Text => Some(MessageKind::Text),
            OpCode::Binary => Some(MessageKind::Binary),
            _ => None,
        }
    }
}

/// Something the peer sent, as reported by
/// [`Connection::poll_event`](crate::Connection::poll_event). New kinds may
/// be added: a `match` needs a `_` arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A Ping. The Pong reply is already queued (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A Pong, solicited or not (RFC 6455 §5.5.3).
    Pong(Bytes),
    /// The peer's Close frame (`None` when it carried no code). If we had not
    /// sent a Close yet, the echo is already queued (RFC 6455 §5.5.1).
    Close(Option<CloseFrame>),
}
