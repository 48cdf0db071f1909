//! permessage-deflate for a prepared message: a message compressed once
//! and shared by every recipient of a fan-out.
//!
//! A connection's own compressor keeps its history between messages
//! (context takeover) unless told not to, so a frame it did not compress
//! would desynchronise its window from the receiver's. A frame compressed
//! here starts from an empty window and refers to nothing before it; it
//! is only sent where the connection agreed `server_no_context_takeover`
//! (RFC 7692 §7.1.1.1), so that the connection's own compressor also
//! starts every message empty and no message ever refers to another.
//!
//! The compressed frame depends on the window size the receiver agreed to
//! (RFC 7692 §7.1.2.1), so one is made per window size actually needed,
//! on first use, and kept for as long as the message is.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::proto::deflate::{compress_alone, DeflateConfig, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::proto::frame::{FrameHeader, OpCode};

/// RFC 7692 §6: RSV1 is the "Per-Message Compressed" bit.
const RSV1: u8 = 0b100;

/// The compressed frames of one prepared message, shared by its clones.
#[derive(Debug)]
pub(super) struct Compressed {
    level: u32,
    /// Index `w - 8`: the frame for a window of 2^w bytes, made on first
    /// use; `None` inside when compressing did not make it smaller.
    frames: [OnceLock<Option<Bytes>>; (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize],
}

impl Compressed {
    /// Compression for a payload of `len` bytes, or `None` when it is
    /// under the threshold and always goes out plain (RFC 7692 §6: each
    /// message may be sent compressed or not).
    pub(super) fn new(len: usize, config: &DeflateConfig) -> Option<Arc<Compressed>> {
        (len >= config.threshold)
            .then(|| Arc::new(Compressed { level: config.level, frames: Default::default() }))
    }

    /// The frame of `payload` compressed for a window of 2^`window_bits`
    /// bytes, made on the first call for that size; `None` when compressing
    /// does not make it smaller.
    pub(super) fn frame(&self, payload: &[u8], opcode: OpCode, window_bits: u8) -> Option<&Bytes> {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let slot = &self.frames[usize::from(bits - MIN_WINDOW_BITS)];
        slot.get_or_init(|| compress(self.level, bits, opcode, payload)).as_ref()
    }
}

fn compress(level: u32, window_bits: u8, opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
    let mut compressed = Vec::new();
    // RFC 7692 §7.2.1: DEFLATE, flushed, the 00 00 ff ff tail removed.
    if !compress_alone(level, window_bits, payload, &mut compressed) {
        return None;
    }
    // Not worth it: the plain frame is sent instead (RFC 7692 §6).
    if compressed.len() >= payload.len() {
        return None;
    }
    // RFC 7692 §6.1: RSV1 on the first frame of a compressed message
    // (here the only one); RFC 6455 §5.1: a server's frame is unmasked.
    Some(FrameHeader::server_frame(RSV1, opcode, &compressed).0)
}

#[cfg(test)]
mod tests {
    use crate::proto::deflate::{Compressor, MAX_WINDOW_BITS};
    use crate::proto::frame::FrameHeader;
    use crate::{Config, Connection, DeflateConfig, DeflateParams, Event, Message, PreparedMessage};

    /// Compressible JSON-like text of about `len` bytes, with changing numbers.
    fn json(len: usize, seed: u64) -> String {
        let mut x = seed | 1;
        let mut out = String::new();
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push_str(&format!("{{\"device\":\"d{}\",\"value\":{}}},", x % 7, x % 1000));
        }
        out
    }

    /// The agreement a hub connection makes: no context takeover on our side.
    fn params(bits: Option<u8>) -> DeflateParams {
        DeflateParams { server_no_context_takeover: true, server_max_window_bits: bits, ..Default::default() }
    }

    fn pair(params: DeflateParams) -> (Connection, Connection) {
        let server = Connection::server(Config::default()).with_deflate(params);
        let client = Connection::client(Config::default(), [5; 32]).with_deflate(params);
        (server, client)
    }

    fn deliver(from: &mut Connection, to: &mut Connection) -> Vec<Message> {
        while let Some(bytes) = from.poll_transmit() {
            to.receive(&bytes);
        }
        let mut got = Vec::new();
        while let Some(event) = to.poll_event().unwrap() {
            if let Event::Message(message) = event {
                got.push(message);
            }
        }
        got
    }

    #[test]
    fn compressed_frame_inflates_back_at_every_window_size() {
        let message = Message::text(json(20_000, 7));
        let prepared = PreparedMessage::with_deflate(&message, &DeflateConfig::default());
        for bits in [None, Some(15), Some(12), Some(9), Some(8)] {
            let window_bits = bits.unwrap_or(MAX_WINDOW_BITS);
            let frame = prepared.compressed_frame(window_bits).unwrap();
            // RFC 7692 §6.1: FIN, RSV1, text; unmasked; smaller than plain.
            assert_eq!(frame[0], 0xc1);
            assert!(frame.len() < prepared.frame().len() / 2, "{} bytes", frame.len());
            // The same bytes a connection's own compressor makes without
            // context takeover, whose window sizes are tested in compress.rs.
            let (header, header_len) = FrameHeader::parse(frame).unwrap().unwrap();
            let mut own = Vec::new();
            assert!(Compressor::new(6, window_bits, true, 0).compress(message.as_bytes(), &mut own));
            assert_eq!((&frame[header_len..], header.len), (&own[..], own.len() as u64));

            let (mut server, mut client) = pair(params(bits));
            server.send_prepared(&prepared).unwrap();
            let wire = server.poll_transmit().unwrap();
            assert_eq!(&wire, frame, "window bits {window_bits}");
            client.receive(&wire);
            assert_eq!(client.poll_event(), Ok(Some(Event::Message(message.clone()))));
        }
        // A smaller window compresses worse: it is a different frame.
        assert_ne!(prepared.compressed_frame(8), prepared.compressed_frame(15));
    }

    #[test]
    fn compressed_once_and_shared_by_every_recipient() {
        // Compressed size over ZERO_COPY_MIN, so connections queue it by reference.
        let message = Message::text(json(200_000, 3));
        let prepared = PreparedMessage::with_deflate(&message, &DeflateConfig::default());
        let copies: Vec<PreparedMessage> = (0..3).map(|_| prepared.clone()).collect();
        let mut sent = Vec::new();
        for copy in &copies {
            let (mut server, mut client) = pair(params(None));
            server.send_prepared(copy).unwrap();
            let wire = server.poll_transmit().unwrap();
            assert!(server.poll_transmit().is_none());
            client.receive(&wire);
            assert_eq!(client.poll_event(), Ok(Some(Event::Message(message.clone()))));
            sent.push(wire);
        }
        // One compression: every connection sent the very same bytes.
        let first = prepared.compressed_frame(15).unwrap();
        assert!(first.len() > 8 * 1024 && first.len() < message.len() / 2);
        assert!(sent.iter().all(|wire| wire.as_ptr() == first.as_ptr() && wire.len() == first.len()));
        // Another window size is a second (and last) compression for it.
        let small = prepared.compressed_frame(9).unwrap().as_ptr();
        assert_eq!(copies[2].compressed_frame(9).unwrap().as_ptr(), small);
        assert_ne!(small, first.as_ptr());
    }

    #[test]
    fn plain_where_compression_does_not_apply() {
        let text = json(1000, 9);
        let mut config = DeflateConfig::default();
        // Made with `new`: never compressed.
        let plain = PreparedMessage::new(&Message::text(text.clone()));
        assert!(plain.compressed_frame(15).is_none());
        // Under the threshold.
        config.threshold = text.len() + 1;
        assert!(PreparedMessage::with_deflate(&Message::text(text.clone()), &config)
            .compressed_frame(15)
            .is_none());
        // Incompressible: compressing would not make it smaller.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let random = PreparedMessage::with_deflate(&Message::binary(random), &DeflateConfig::default());
        assert!(random.compressed_frame(15).is_none());

        let prepared = PreparedMessage::with_deflate(&Message::text(text.clone()), &DeflateConfig::default());
        // RFC 7692 §6: a connection that did not agree to deflate, or keeps
        // its context between messages, gets the plain frame.
        let takeover = DeflateParams::default();
        for agreed in [None, Some(takeover)] {
            let mut server = Connection::server(Config::default());
            if let Some(params) = agreed {
                server = server.with_deflate(params);
            }
            server.send_prepared(&prepared).unwrap();
            assert_eq!(&server.poll_transmit().unwrap(), prepared.frame());
        }
        // RFC 6455 §5.3: a client masks, so it re-encodes the payload, plain.
        let (_, mut client) = pair(params(None));
        let mut server = Connection::server(Config::default()).with_deflate(params(None));
        client.send_prepared(&prepared).unwrap();
        let wire = client.poll_transmit().unwrap();
        let (header, _) = FrameHeader::parse(&wire).unwrap().unwrap();
        assert!(header.mask.is_some() && header.rsv == 0);
        server.receive(&wire);
        assert_eq!(server.poll_event(), Ok(Some(Event::Message(Message::text(text)))));
    }

    #[test]
    fn own_and_prepared_compressed_messages_interleave() {
        // The takeover hazard: the connection's own compressed messages and
        // shared ones, mixed, over many messages that repeat each other (so
        // a compressor keeping history would refer back across them).
        for bits in [None, Some(9)] {
            let (mut server, mut client) = pair(params(bits));
            let mut expected = Vec::new();
            for i in 0..400u64 {
                let message = Message::text(json(100 + (i as usize % 7) * 300, i % 5));
                if (i * 7919) % 3 == 0 {
                    server.send(message.clone()).unwrap();
                } else {
                    let prepared = PreparedMessage::with_deflate(&message, &DeflateConfig::default());
                    server.send_prepared(&prepared).unwrap();
                }
                expected.push(message);
                if i % 10 == 9 {
                    let got = deliver(&mut server, &mut client);
                    assert_eq!(got, std::mem::take(&mut expected), "window bits {bits:?}");
                }
            }
        }
    }

    #[test]
    fn a_shared_frame_would_break_context_takeover() {
        // Why a connection with context takeover gets the plain frame: its
        // peer's window would hold the shared message, its own would not
        // (RFC 7692 §7.2.1), so its next back-reference reads wrong bytes.
        let (own, other) = (Message::text(json(300, 1)), Message::text(json(300, 2)));
        let (mut server, mut client) = pair(DeflateParams::default());
        server.send(own.clone()).unwrap();
        assert_eq!(deliver(&mut server, &mut client), std::slice::from_ref(&own));
        let shared = PreparedMessage::with_deflate(&other, &DeflateConfig::default());
        client.receive(shared.compressed_frame(15).unwrap());
        assert_eq!(client.poll_event(), Ok(Some(Event::Message(other))));
        // Sent again, it is one back-reference to the first copy.
        server.send(own.clone()).unwrap();
        while let Some(bytes) = server.poll_transmit() {
            client.receive(&bytes);
        }
        assert_ne!(client.poll_event(), Ok(Some(Event::Message(own))));
    }
}
