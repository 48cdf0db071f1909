//! [`PreparedMessage`]: a data message framed once, for sending the same
//! message to many connections (a room's fan-out).
//!
//! RFC 6455 §5.1: a server never masks its frames, so one encoded frame is
//! byte-for-byte the same on every server connection and can be shared as
//! one [`Bytes`]. A client must mask every frame with a fresh key (§5.3,
//! §10.3), so a client connection re-encodes the payload instead.
//!
//! With permessage-deflate, [`PreparedMessage::with_deflate`] also
//! compresses the message once per window size its recipients need (see
//! `prepared_deflate.rs`).

#[cfg(feature = "deflate")]
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::message::{Message, MessageKind};
#[cfg(feature = "deflate")]
use super::{deflate::DeflateConfig, prepared_deflate::Compressed};

/// One unmasked, unfragmented data frame (FIN set, RSV bits clear), encoded
/// once. Cloning it clones a [`Bytes`] handle, not the frame.
///
/// ```
/// use sabai::{Config, Connection, Message, PreparedMessage};
///
/// let prepared = PreparedMessage::new(&Message::text("hi"));
/// assert_eq!(prepared.frame(), &b"\x81\x02hi"[..]);
/// let mut server = Connection::server(Config::default());
/// server.send_prepared(&prepared).unwrap();
/// assert_eq!(server.poll_transmit().unwrap(), prepared.frame());
/// ```
#[derive(Clone, Debug)]
pub struct PreparedMessage {
    frame: Bytes,
    header_len: usize,
    kind: MessageKind,
    /// The compressed frames, made on demand and shared by every clone;
    /// `None` when this message always goes out plain.
    #[cfg(feature = "deflate")]
    pub(super) compressed: Option<Arc<Compressed>>,
}

/// Equal when the messages are: same kind, same payload.
impl PartialEq for PreparedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.frame == other.frame
    }
}

impl Eq for PreparedMessage {}

impl PreparedMessage {
    /// Frames `message` as a single final frame (RFC 6455 §5.2), ignoring
    /// [`Config::max_send_frame_size`](super::Config::max_send_frame_size).
    pub fn new(message: &Message) -> Self {
        let kind = message.kind();
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let payload = message.as_bytes();
        // RFC 6455 §5.1: server-to-client frames are not masked.
        let header = FrameHeader { fin: true, rsv: 0, opcode, mask: None, len: payload.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let header_len = header.encode(&mut head);
        let mut frame = BytesMut::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&head[..header_len]);
        frame.extend_from_slice(payload);
        PreparedMessage {
            frame: frame.freeze(),
            header_len,
            kind,
            #[cfg(feature = "deflate")]
            compressed: None,
        }
    }

    /// Like [`new`](Self::new), and the message may also go out compressed
    /// (RFC 7692) to server connections that agreed to permessage-deflate
    /// with `server_no_context_takeover`: it is compressed at most once per
    /// window size they agreed to, when first sent, and the compressed
    /// frame is shared like the plain one. `config` gives the level and the
    /// threshold (shorter messages always go out plain). Other connections
    /// get the plain frame.
    ///
    /// ```
    /// use sabai::{DeflateConfig, Message, PreparedMessage};
    ///
    /// let json = r#"{"type":"telemetry","values":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}"#;
    /// let prepared = PreparedMessage::with_deflate(&Message::text(json), &DeflateConfig::default());
    /// let compressed = prepared.compressed_frame(15).unwrap();
    /// assert_eq!(compressed[0], 0xc1); // FIN, RSV1, text
    /// assert!(compressed.len() < prepared.frame().len());
    /// // Made once: the same bytes every time.
    /// assert_eq!(prepared.compressed_frame(15).unwrap().as_ptr(), compressed.as_ptr());
    /// ```
    #[cfg(feature = "deflate")]
    pub fn with_deflate(message: &Message, config: &DeflateConfig) -> Self {
        let mut prepared = PreparedMessage::new(message);
        prepared.compressed = Compressed::new(prepared.payload().len(), config);
        prepared
    }

    /// The whole frame as a server sends it: header and payload.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The message payload (the frame without its header).
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.header_len..]
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    pub(crate) fn opcode(&self) -> OpCode {
        match self.kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

impl From<Message> for PreparedMessage {
    fn from(message: Message) -> Self {
        PreparedMessage::new(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Config, Connection, Event, SendError, State};
    use crate::CloseCode;

    #[test]
    fn frame_uses_minimal_length_encoding() {
        // RFC 6455 §5.2: 7-bit, 16-bit and 64-bit lengths.
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let prepared = PreparedMessage::new(&Message::binary(vec![7u8; len]));
            let (header, used) = FrameHeader::parse(prepared.frame()).unwrap().unwrap();
            assert_eq!(used, header_len);
            assert_eq!(header.len, len as u64);
            assert!(header.fin && header.mask.is_none() && header.rsv == 0);
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(prepared.payload().len(), len);
        }
    }

    #[test]
    fn server_sends_the_shared_bytes_unchanged() {
        let prepared = PreparedMessage::new(&Message::text("room update"));
        let mut server = Connection::server(Config::default());
        server.send(Message::text("room update")).unwrap();
        let normal = server.poll_transmit().unwrap();
        server.send_prepared(&prepared).unwrap();
        assert_eq!(server.poll_transmit().unwrap(), normal);
    }

    #[test]
    fn client_masks_a_prepared_message_with_a_fresh_key() {
        // RFC 6455 §5.3: a client masks every frame, so the shared unmasked
        // bytes cannot be used as they are.
        let prepared = PreparedMessage::new(&Message::text("hello"));
        let mut client = Connection::client(Config::default(), [3; 32]);
        let mut server = Connection::server(Config::default());
        client.send_prepared(&prepared).unwrap();
        client.send_prepared(&prepared).unwrap();
        let wire = client.poll_transmit().unwrap();
        let (first, used) = FrameHeader::parse(&wire).unwrap().unwrap();
        let (second, _) = FrameHeader::parse(&wire[used + 5..]).unwrap().unwrap();
        assert!(first.mask.is_some() && first.mask != second.mask);
        server.receive(&wire);
        for _ in 0..2 {
            assert_eq!(server.poll_event(), Ok(Some(Event::Message(Message::text("hello")))));
        }
    }

    #[test]
    fn refused_after_close_and_inside_a_fragmented_message() {
        let prepared = PreparedMessage::new(&Message::binary(&b"x"[..]));
        let mut server = Connection::server(Config::default());
        // RFC 6455 §5.4: frames of another message may not be interleaved.
        server.send_fragment(MessageKind::Text, b"par", false).unwrap();
        assert_eq!(server.send_prepared(&prepared), Err(SendError::FragmentedMessageInProgress));
        server.send_fragment(MessageKind::Text, b"t", true).unwrap();
        server.send_prepared(&prepared).unwrap();
        // RFC 6455 §5.5.1: nothing after our Close.
        server.close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(server.state(), State::CloseSent);
        assert_eq!(server.send_prepared(&prepared), Err(SendError::Closed));
    }
}
