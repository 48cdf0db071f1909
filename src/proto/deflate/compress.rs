//! The sending half of permessage-deflate (RFC 7692 §7.2.1).
//!
//! Window bits: the pure-Rust backend always searches a 32 KiB window and
//! has no window-bits setting. To honour an agreed window of 2^w bytes
//! (w = 8..14), the message is compressed in pieces of at most 2^w bytes,
//! each ended by a full flush, which empties the compressor's window. No
//! match can then reach back further than 2^w bytes, so the output is
//! valid for the agreed window, 8 included (which zlib cannot produce for
//! raw DEFLATE). The cost is a 4-byte empty block per piece.

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress};

use super::{MAX_WINDOW_BITS, TAIL};

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
    /// final 0x00 0x00 0xff 0xff. Returns false if compression failed; the
    /// message must then be sent uncompressed.
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let level = Compression::new(self.level);
        let raw = self.raw.get_or_insert_with(|| Box::new(Compress::new(level, false)));
        let ok = compress_message(raw, self.window_bits, data, out);
        if self.no_context_takeover || !ok {
            raw.reset();
        }
        ok
    }
}

thread_local! {
    /// The compressor behind [`compress_alone`], one per thread and level,
    /// kept between calls: making one costs about 15 times more than
    /// compressing a small message with a reset one.
    static ALONE: RefCell<Option<(u32, Box<Compress>)>> = const { RefCell::new(None) };
}

/// Compresses one whole message starting from an empty window, as the
/// first message of a fresh compressor would be, into `out` (cleared
/// first), without the final 0x00 0x00 0xff 0xff. The result refers to no
/// earlier message, so any receiver that agreed to a window of at least
/// 2^`window_bits` bytes can inflate it (RFC 7692 §7.1.2.1). Returns false
/// if compression failed.
pub(crate) fn compress_alone(level: u32, window_bits: u8, data: &[u8], out: &mut Vec<u8>) -> bool {
    let level = level.min(9);
    ALONE.with(|cell| {
        // A reentrant call cannot happen (nothing here calls back), but
        // would get a compressor of its own rather than a panic.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return compress_message(
                &mut Compress::new(Compression::new(level), false),
                window_bits,
                data,
                out,
            );
        };
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Box::new(Compress::new(Compression::new(level), false))));
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
    let (piece, flush) = if window_bits < MAX_WINDOW_BITS {
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
        let mut c = Compressor::new(6, 15, false, 0);
        let mut out = Vec::new();
        assert!(c.compress(b"Hello", &mut out));
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // RFC 7692 §7.2.3.2: with context takeover the second one is shorter.
        assert!(c.compress(b"Hello", &mut out));
        assert_eq!(out, [0xf2, 0x00, 0x11, 0x00, 0x00]);
    }

    #[test]
    fn no_context_takeover_repeats_itself() {
        let mut c = Compressor::new(6, 15, true, 0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(c.compress(b"Hello", &mut a) && c.compress(b"Hello", &mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn small_windows_round_trip_with_a_flush_per_piece() {
        let text: Vec<u8> = (0..5000u32).flat_map(|i| format!("{} ", i % 97).into_bytes()).collect();
        for bits in 8..=15 {
            let mut out = Vec::new();
            assert!(Compressor::new(9, bits, false, 0).compress(&text, &mut out));
            assert_eq!(inflate(&out), text, "window bits {bits}");
            // One full flush (4-byte empty block) per piece, then the tail removed.
            let pieces = text.len().div_ceil(1 << bits);
            assert!(bits == 15 || out.windows(4).filter(|w| *w == TAIL).count() >= pieces - 1);
        }
        let mut out = Vec::new();
        assert!(Compressor::new(6, 8, false, 0).compress(b"", &mut out));
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
