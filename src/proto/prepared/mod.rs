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
//! `deflate.rs` beside this file).

#[cfg(feature = "deflate")]
mod deflate;

#[cfg(feature = "deflate")]
use std::sync::Arc;

use bytes::Bytes;

#[cfg(feature = "deflate")]
use self::deflate::Compressed;
#[cfg(feature = "deflate")]
use super::deflate::{DeflateConfig, DeflateParams, MAX_WINDOW_BITS};
use super::frame::FrameHeader;
use super::message::{Message, MessageKind};

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
    compressed: Option<Arc<Compressed>>,
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
    /// [`Config::max_send_frame_size`](crate::Config::max_send_frame_size).
    pub fn new(message: &Message) -> Self {
        let kind = message.kind();
        let (frame, header_len) = FrameHeader::server_frame(0, kind.opcode(), message.as_bytes());
        PreparedMessage {
            frame,
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

    /// The frame to send on a server connection that agreed to `params`
    /// (`None`: no permessage-deflate): the shared compressed frame where
    /// that is valid, else the plain one.
    #[cfg(feature = "deflate")]
    pub(crate) fn frame_for(&self, params: Option<&DeflateParams>) -> &Bytes {
        match params {
            // RFC 7692 §7.1.1.1: with server_no_context_takeover the
            // server's compressor starts every message with an empty
            // window, so a message compressed alone fits in between. With
            // context takeover it does not (see deflate.rs): plain.
            Some(params) if params.server_no_context_takeover => {
                // RFC 7692 §7.1.2.1: absent means a 32 KiB window (15 bits).
                let bits = params.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
                self.compressed_frame(bits).unwrap_or(self.frame())
            }
            _ => self.frame(),
        }
    }

    /// The whole frame compressed for a receiver that agreed to a window
    /// of 2^`window_bits` bytes (8–15): RSV1 set, the payload compressed
    /// from an empty window. Made on the first call for that size (the
    /// calls for one size made at once wait for the first), then shared by
    /// every clone of this message. `None` if this message is not to be
    /// compressed (made with [`new`](Self::new), under the threshold, or
    /// compressing did not make it smaller).
    #[cfg(feature = "deflate")]
    pub fn compressed_frame(&self, window_bits: u8) -> Option<&Bytes> {
        self.compressed.as_deref()?.frame(self.payload(), self.kind.opcode(), window_bits)
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
    use crate::proto::OpCode;
    use crate::{CloseCode, Config, Connection, Event, SendError, State};

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
