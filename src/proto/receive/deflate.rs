//! The receiving side of permessage-deflate (RFC 7692 §6.2): each frame of
//! a compressed message is inflated as soon as it is complete, and inflated
//! text is validated right away, so bad UTF-8 still fails in the frame where
//! it appears.

use bytes::BytesMut;

use super::{text_message, Assembly, Incoming, Receiver};
use crate::proto::error::ProtocolError;
use crate::proto::frame::FrameHeader;
use crate::proto::message::{Message, MessageKind};

impl Receiver {
    /// Acts on a whole frame of a compressed message (the first one has
    /// RSV1; `check_header` made sure the rest are its continuations).
    pub(super) fn complete_compressed(
        &mut self,
        header: FrameHeader,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ProtocolError> {
        let mut assembly = match self.assembly.take() {
            Some(assembly) => assembly,
            None => {
                // `check_header` let only a text or binary frame start it.
                let kind = MessageKind::of(header.opcode).unwrap_or(MessageKind::Binary);
                Box::new(Assembly { kind, data: BytesMut::new(), compressed: true })
            }
        };
        // Only set up when deflate was agreed, which `check_rsv` required.
        let inflater = self.inflater.as_mut().ok_or(ProtocolError::ReservedBits(header.rsv))?;
        let before = assembly.data.len();
        // RFC 7692 §6.2: the frames' payloads are one DEFLATE stream.
        inflater.inflate(&payload, &mut assembly.data)?;
        if header.fin {
            inflater.finish(&mut assembly.data)?;
        }
        if assembly.kind == MessageKind::Text {
            // RFC 7692 §6.1: the inflated payload must be UTF-8 (RFC 6455 §8.1).
            let new = &assembly.data[before..];
            let checked = if header.fin { self.utf8.finish(new) } else { self.utf8.feed(new) };
            checked.map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !header.fin {
            self.assembly = Some(assembly);
            return Ok(None);
        }
        let data = fit(assembly.data);
        match assembly.kind {
            MessageKind::Text => text_message(data).map(Some),
            MessageKind::Binary => Ok(Some(Incoming::Message(Message::Binary(data.freeze())))),
        }
    }
}

/// The inflated message in a buffer of its own size when the inflate
/// buffer grew well past it (it starts at 8 KiB and doubles): the
/// application may hold messages long after, and should not pay for that
/// slack. The copy is small beside the inflating.
fn fit(data: BytesMut) -> BytesMut {
    if data.capacity() - data.len() <= data.len() / 4 {
        return data;
    }
    BytesMut::from(&data[..])
}
