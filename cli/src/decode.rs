//! A byte stream cut into frames, for display: the core's own header
//! parser does the cutting; the payload is kept only up to a preview size,
//! so a frame that declares 2^62 bytes costs nothing.

use crate::adapter::{parse_header, FrameHeader, ProtocolError};

/// Payload bytes kept per frame for display.
pub const PREVIEW: usize = 64;

/// One frame as it went by.
#[derive(Debug)]
pub struct Frame {
    pub header: FrameHeader,
    /// The header's bytes on the wire (2 to 14).
    pub head: Vec<u8>,
    /// The first `PREVIEW` payload bytes, as on the wire (still masked).
    pub payload: Vec<u8>,
}

/// What the decoder found.
#[derive(Debug)]
pub enum Item {
    Frame(Frame),
    /// The header broke a §5.2 rule; nothing after it is a frame.
    Error {
        head: Vec<u8>,
        error: ProtocolError,
    },
}

#[derive(Debug, Default)]
pub struct Decoder {
    /// Header bytes not yet complete, or the current frame's header.
    head: Vec<u8>,
    current: Option<(FrameHeader, Vec<u8>, u64)>,
    failed: bool,
}

impl Decoder {
    /// Feeds bytes; finished frames (and a header error) go to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Item>) {
        while !data.is_empty() && !self.failed {
            if let Some((_, payload, remaining)) = self.current.as_mut() {
                let take = (*remaining).min(data.len() as u64) as usize;
                let keep = take.min(PREVIEW.saturating_sub(payload.len()));
                payload.extend_from_slice(&data[..keep]);
                *remaining -= take as u64;
                data = &data[take..];
                self.finish_if_done(out);
                continue;
            }
            // A header is at most 14 bytes: take one byte at a time until
            // the core's parser has all it needs, so no byte is read twice.
            self.head.push(data[0]);
            data = &data[1..];
            match parse_header(&self.head) {
                Ok(None) => {}
                Ok(Some((header, _))) => {
                    self.current = Some((header, Vec::new(), header.len));
                    self.finish_if_done(out);
                }
                Err(error) => {
                    self.failed = true;
                    out.push(Item::Error { head: std::mem::take(&mut self.head), error });
                }
            }
        }
    }

    fn finish_if_done(&mut self, out: &mut Vec<Item>) {
        if let Some((header, payload, 0)) = self.current.take_if(|c| c.2 == 0) {
            out.push(Item::Frame(Frame { header, head: std::mem::take(&mut self.head), payload }));
        }
    }

    /// At the end of the stream: what is left half-read, in words.
    pub fn leftover(&self) -> Option<String> {
        if self.failed {
            return None;
        }
        match &self.current {
            Some((header, _, remaining)) => Some(format!(
                "truncated frame: its header ({}, {}-bit length form) declares {} payload bytes and only {} \
                 arrived ({} missing)",
                crate::hex::format(&self.head),
                match self.head[1] & 0x7f {
                    126 => 16,
                    127 => 64,
                    _ => 7,
                },
                header.len,
                header.len - remaining,
                remaining
            )),
            None if !self.head.is_empty() => Some(format!(
                "truncated header: {} byte{} ({}), and a header needs at least {}",
                self.head.len(),
                if self.head.len() == 1 { "" } else { "s" },
                crate::hex::format(&self.head),
                needed(&self.head)
            )),
            None => None,
        }
    }
}

/// How long the header that starts with `head` is (§5.2): 2, plus 2 or 8
/// for the extended length, plus 4 for the masking key. Only for the
/// message: the core's parser decides what is complete.
fn needed(head: &[u8]) -> usize {
    let Some(&b1) = head.get(1) else { return 2 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}
