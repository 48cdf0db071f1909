//! The sending half of permessage-deflate (RFC 7692 §7.2.1).
//!
//! Window bits: zlib (flate2's `zlib-rs` backend) compresses with a real
//! window of 2^w bytes for w = 9..15, so an agreed window in that range is
//! passed to it and context takeover keeps working. zlib cannot make raw
//! DEFLATE for w = 8 (flate2 panics outside 9..=15), so for 8 the message
//! is compressed with a 9-bit window in pieces of at most 256 bytes, each
//! ended by a full flush, which empties the compressor's window: no match
//! can then reach back further than 256 bytes, so 8 is honoured exactly,
//! at the cost of a 4-byte empty block per piece and no context takeover.
//!
//! Never larger: a message whose compressed form is not smaller than the
//! message itself is sent uncompressed (RFC 7692 §6 lets the sender choose
//! per message); see [`Compressor::compress`].

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress};

use super::{MIN_WINDOW_BITS, TAIL};

/// The smallest window zlib compresses raw DEFLATE with (flate2 panics
/// below it).
const ZLIB_MIN_WINDOW_BITS: u8 = 9;

#[derive(Debug)]
pub(crate) struct Compressor {
    /// Created on the first compressed message, so a connection that never
    /// compresses never pays for it.
    raw: Option<Box<Compress>>,
    level: u32,
    window_bits: u8,
    /// RFC 7692 §7.2.1: start every message with an empty window.
    no_context_takeover: bool,
    pub(crate) threshold: usize,
}

impl Compressor {
    pub(crate) fn new(level: u32, window_bits: u8, no_context_takeover: bool, threshold: usize) -> Self {
        Compressor { raw: None, level: level.min(9), window_bits, no_context_takeover, threshold }
    }

    /// Compresses one whole message into `out` (cleared first), without the
    /// final 0x00 0x00 0xff 0xff. Returns false if the message must be sent
    /// uncompressed instead: compression failed, or its result is not
    /// smaller than `data` (RFC 7692 §6: each message may be sent
    /// compressed or not; sabai never sends one that grew).
    ///
    /// A discarded result was still fed through the window. The peer never
    /// sees it (an uncompressed message does not go through its inflater,
    /// §7.2.2), so the compressor is reset: the next compressed message then
    /// refers to nothing the peer's window lacks (an empty window is always
    /// a valid start, §7.2.1).
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let (level, bits) = (self.level, self.window_bits);
        let raw = self.raw.get_or_insert_with(|| new_compress(level, bits));
        let keep = compress_message(raw, bits, data, out) && out.len() < data.len();
        if self.no_context_takeover || !keep {
            raw.reset();
        }
        keep
    }
}

/// A raw DEFLATE compressor for a window of 2^`window_bits` bytes: zlib's
/// own window where it has one (9..=15), else 9 bits, with 8 made up for by
/// [`compress_message`]. Never a peer's value straight through.
fn new_compress(level: u32, window_bits: u8) -> Box<Compress> {
    let bits = window_bits.clamp(ZLIB_MIN_WINDOW_BITS, super::MAX_WINDOW_BITS);
    Box::new(Compress::new_with_window_bits(Compression::new(level), false, bits))
}

/// A compressor for [`compress_alone`] with its (level, window bits).
type Alone = ((u32, u8), Box<Compress>);

thread_local! {
    /// The compressor behind [`compress_alone`], one per thread and level,
    /// kept between calls: making one costs about 15 times more than
    /// compressing a small message with a reset one. Keyed by level and
    /// window bits.
    static ALONE: RefCell<Option<Alone>> = const { RefCell::new(None) };
}

/// Compresses one whole message starting from an empty window, as the
/// first message of a fresh compressor would be, into `out` (cleared
/// first), without the final 0x00 0x00 0xff 0xff. The result refers to no
/// earlier message, so any receiver that agreed to a window of at least
/// 2^`window_bits` bytes can inflate it (RFC 7692 §7.1.2.1). Returns false
/// if compression failed. (Whether the result is worth sending is the
/// caller's choice.)
pub(crate) fn compress_alone(level: u32, window_bits: u8, data: &[u8], out: &mut Vec<u8>) -> bool {
    let key = (level.min(9), window_bits);
    ALONE.with(|cell| {
        // A reentrant call cannot happen (nothing here calls back), but
        // would get a compressor of its own rather than a panic.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return compress_message(&mut new_compress(key.0, window_bits), window_bits, data, out);
        };
        if slot.as_ref().is_none_or(|(k, _)| *k != key) {
            *slot = Some((key, new_compress(key.0, window_bits)));
        }
        let raw = &mut slot.as_mut().expect("set above").1;
        let ok = compress_message(raw, window_bits, data, out);
        // RFC 7692 §7.2.1: the next message starts from an empty window too.
        raw.reset();
        ok
    })
}

/// One message through `raw`, honouring a window of 2^`window_bits` bytes
/// (see the module comment), with the tail removed.
fn compress_message(raw: &mut Compress, window_bits: u8, data: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    // RFC 7692 §7.2.1: a window of 2^w bytes; see the module comment.
    let (piece, flush) = if window_bits <= MIN_WINDOW_BITS {
        (1usize << window_bits, FlushCompress::Full)
    } else {
        (usize::MAX, FlushCompress::Sync)
    };
    let mut ok = if data.is_empty() { run(raw, &[], out, flush) } else { true };
    for chunk in data.chunks(piece) {
        ok = ok && run(raw, chunk, out, flush);
    }
    // RFC 7692 §7.2.1 step 3: remove the empty block's 4 octets at the end.
    if ok && out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
        true
    } else {
        false
    }
}

/// Feeds `input` and flushes; the flush ends the output on a byte boundary
/// with an empty stored block (RFC 7692 §7.2.1 step 2).
fn run(raw: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> bool {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 2 + 1024);
        }
        let before = raw.total_in();
        if raw.compress_vec(input, out, flush).is_err() {
            return false;
        }
        let used = (raw.total_in() - before) as usize;
        input = input.get(used..).unwrap_or_default();
        // Room left over means the flush is complete.
        if input.is_empty() && out.len() < out.capacity() {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        Decompress::new(false).decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        out
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 7692 §7.2.3.1: "Hello" in one fixed-Huffman block.
        let mut raw = new_compress(6, 15);
        let mut out = Vec::new();
        assert!(compress_message(&mut raw, 15, b"Hello", &mut out));
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // RFC 7692 §7.2.3.2: with context takeover the second one is shorter.
        assert!(compress_message(&mut raw, 15, b"Hello", &mut out));
        assert_eq!(out, [0xf2, 0x00, 0x11, 0x00, 0x00]);
        // Neither is smaller than the 5 bytes of "Hello": a Compressor
        // sends both uncompressed (RFC 7692 §6).
        let mut c = Compressor::new(6, 15, false, 0);
        assert!(!c.compress(b"Hello", &mut out) && !c.compress(b"Hello", &mut out));
    }

    #[test]
    fn no_context_takeover_repeats_itself() {
        let mut c = Compressor::new(6, 15, true, 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let hello = b"Hello, Hello, Hello, Hello, Hello";
        assert!(c.compress(hello, &mut a) && c.compress(hello, &mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn a_result_that_is_not_smaller_is_discarded_and_the_window_reset() {
        let text: Vec<u8> = (0..2000u32).flat_map(|i| format!("{} ", i % 97).into_bytes()).collect();
        let mut noise = vec![0u8; 4096];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for byte in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        for bits in [8, 9, 12, 15] {
            let mut c = Compressor::new(6, bits, false, 0);
            let mut out = Vec::new();
            // Random bytes do not shrink: sent plain, so the peer never
            // inflates them and its window does not hold them.
            assert!(!c.compress(&noise, &mut out), "window bits {bits}");
            // The next message must not refer to them: it is exactly what a
            // fresh compressor makes.
            assert!(c.compress(&text, &mut out));
            let mut fresh = Vec::new();
            assert!(Compressor::new(6, bits, false, 0).compress(&text, &mut fresh));
            assert_eq!(out, fresh, "window bits {bits}");
        }
    }

    #[test]
    fn every_window_round_trips_within_its_window() {
        let text: Vec<u8> = (0..5000u32).flat_map(|i| format!("{} ", i % 97).into_bytes()).collect();
        for bits in 8..=15 {
            let mut c = Compressor::new(9, bits, false, 0);
            // An inflater with only the agreed window (9 for 8: zlib's
            // smallest) fails on any distance reaching further back, so
            // this also checks the window, across messages with context
            // takeover (RFC 7692 §7.2.2).
            let mut raw = Decompress::new_with_window_bits(false, bits.max(9));
            let mut out = Vec::new();
            for round in 0..4 {
                assert!(c.compress(&text, &mut out));
                out.extend_from_slice(&TAIL);
                let mut inflated = Vec::with_capacity(text.len() + 64);
                raw.decompress_vec(&out, &mut inflated, FlushDecompress::Sync).unwrap();
                assert_eq!(inflated, text, "window bits {bits}, message {round}");
            }
            // 8 bits: one full flush (4-byte empty block) per 256-byte piece.
            if bits == 8 {
                let pieces = text.len().div_ceil(256);
                assert!(out.windows(4).filter(|w| *w == TAIL).count() >= pieces);
            }
        }
        // An empty message compresses to one byte: not smaller, sent plain.
        let mut out = Vec::new();
        assert!(!Compressor::new(6, 8, false, 0).compress(b"", &mut out));
        assert!(compress_message(&mut new_compress(6, 8), 8, b"", &mut out));
        assert_eq!(out, [0x00]);
    }

    #[test]
    fn compress_alone_matches_a_fresh_compressor_every_time() {
        // RFC 7692 §7.2.3.1: "Hello" from an empty window, however often.
        let mut out = Vec::new();
        for level in [6, 6, 1, 6] {
            assert!(compress_alone(level, 15, b"Hello", &mut out));
            assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        }
        let text: Vec<u8> = (0..3000u32).flat_map(|i| format!("{} ", i % 89).into_bytes()).collect();
        for bits in [8, 9, 12, 15] {
            let mut fresh = Vec::new();
            assert!(Compressor::new(6, bits, true, 0).compress(&text, &mut fresh));
            assert!(compress_alone(6, bits, &text, &mut out));
            assert_eq!(out, fresh, "window bits {bits}");
            assert_eq!(inflate(&out), text);
        }
    }
}
