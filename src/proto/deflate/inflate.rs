//! The receiving half of permessage-deflate (RFC 7692 §7.2.2), with the
//! message size limit enforced while inflating: output is produced in steps
//! of [`STEP`] bytes and checked after each, so a small "bomb" that would
//! inflate to gigabytes is refused once it passes the limit, and the buffer
//! never holds more than the limit.

use std::cell::RefCell;

use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};

use super::TAIL;
use crate::proto::error::ProtocolError;

/// Output produced per call into the decompressor.
const STEP: usize = 8 * 1024;

/// The largest window a peer can refer back into, 32 KiB (RFC 7692 §7.2.1).
const WINDOW: usize = 1 << super::MAX_WINDOW_BITS;

/// How many idle decompressors a thread keeps for the next message.
const SPARES: usize = 4;

thread_local! {
    /// Decompressors (about 54 KiB each, with their output step) freed by
    /// connections whose peer resets each message, kept for the next one
    /// on this thread. Allocating and freeing one per message costs time,
    /// and, with many connections, leaves the heap fragmented: small
    /// allocations land between the freed blocks (measured on the hub
    /// server: about 4.5 KB of RSS per idle connection; BENCHMARKS.md). At
    /// most [`SPARES`] are kept, each reset, so nothing of one peer's data
    /// reaches another.
    static SPARE: RefCell<Vec<Live>> = const { RefCell::new(Vec::new()) };
}

/// A decompressor and its output step, made or taken together.
#[derive(Debug)]
struct Live {
    raw: Box<Decompress>,
    scratch: Vec<u8>,
}

/// A spare decompressor if this thread has one, else a new one.
fn take_spare() -> Live {
    // `try_with`: a thread being torn down has no spares, and no panic.
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Live { raw: Box::new(Decompress::new(false)), scratch: vec![0; STEP] })
}

/// Keeps a decompressor for the next message on this thread, reset, or
/// frees it when enough are kept.
fn give_back(mut live: Live) {
    live.raw.reset(false);
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARES {
            spare.push(live);
        }
    });
}

#[derive(Debug)]
pub(crate) struct Inflater {
    /// Taken on the first compressed message, from this thread's spares or
    /// new (about 54 KiB with its 32 KiB window: RFC 7692 §7.2.2 lets us
    /// always use the full window).
    live: Option<Live>,
    /// RFC 7692 §7.2.2: the peer starts each message with an empty window,
    /// so ours may start empty too.
    reset_each_message: bool,
    max_message_size: usize,
    /// Bytes inflated in earlier messages, since the last reset (so: none,
    /// or some, the window holds more than this message).
    earlier: bool,
    /// A copy of the last [`WINDOW`] bytes inflated, kept only once the
    /// peer has ended a DEFLATE stream with BFINAL while taking its window
    /// over (see [`Inflater::restart`]); `None` for every other peer.
    history: Option<Vec<u8>>,
}

impl Inflater {
    pub(crate) fn new(reset_each_message: bool, max_message_size: usize) -> Self {
        Inflater { live: None, reset_each_message, max_message_size, earlier: false, history: None }
    }

    /// Inflates the next piece of a compressed message, appending to `out`,
    /// which holds the message inflated so far.
    pub(crate) fn inflate(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        self.run(input, out)
    }

    /// Ends the message: RFC 7692 §7.2.2 step 1, the 0x00 0x00 0xff 0xff the
    /// sender removed is appended.
    pub(crate) fn finish(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        self.run(&TAIL, out)?;
        if self.reset_each_message {
            // The peer's next message starts with an empty window, so there
            // is nothing to keep: the state (about 54 KiB) is given back
            // until the next compressed message, and an idle connection
            // holds none.
            self.release();
        } else {
            self.earlier |= !out.is_empty();
        }
        Ok(())
    }

    /// RFC 7692 §7.2.3.4: a block with BFINAL set ended the DEFLATE stream;
    /// what follows is a new stream, which still refers back into the same
    /// window (§7.2.2: the next message is inflated with the window of the
    /// last one). The decompressor cannot go on past the end of a stream
    /// and has no way to hand its window over, so a fresh one is given the
    /// last [`WINDOW`] bytes inflated as its dictionary.
    ///
    /// Those bytes are this message's so far (`out`), plus, with context
    /// takeover, earlier messages'. Keeping a copy of the earlier ones for
    /// every connection would double the inflater's memory for the sake of
    /// peers that never send BFINAL (sabai, zlib-based and browser peers
    /// don't), so the copy ([`history`](Self::history)) is started at a
    /// peer's first BFINAL and kept from then on. At that first one the
    /// dictionary is exact when this is the peer's first message with any
    /// bytes, or this message alone fills the window; otherwise it lacks
    /// the earlier messages' bytes, and a reference into them fails as
    /// invalid data (1002), never reading the wrong bytes.
    fn restart(&mut self, out: &[u8]) -> Result<(), ProtocolError> {
        let tail = |bytes: &[u8]| bytes.len().saturating_sub(WINDOW);
        let dictionary = if self.reset_each_message {
            // The peer's window starts empty at each message.
            &out[tail(out)..]
        } else {
            // Exact unless `self.earlier` and this message is shorter than
            // the window: then the earlier bytes are missing (see above).
            let history = self.history.get_or_insert_with(|| out[tail(out)..].to_vec());
            &history[tail(history)..]
        };
        if let Some(Live { raw, .. }) = self.live.as_mut() {
            raw.reset(false);
            if !dictionary.is_empty() {
                raw.set_dictionary(dictionary).map_err(|_| ProtocolError::InvalidCompressedData)?;
            }
        }
        Ok(())
    }

    /// Gives the decompressor back to this thread's spares.
    fn release(&mut self) {
        if let Some(live) = self.live.take() {
            give_back(live);
        }
    }

    fn run(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        let max = self.max_message_size;
        loop {
            let Live { raw, scratch } = self.live.get_or_insert_with(take_spare);
            let (in_before, out_before) = (raw.total_in(), raw.total_out());
            let result = raw.decompress(input, scratch, FlushDecompress::Sync);
            let used = (raw.total_in() - in_before) as usize;
            let made = (raw.total_out() - out_before) as usize;
            // RFC 7692 §7.2.2 step 2: what is not DEFLATE fails the
            // connection; unless what came before the bad data is already
            // over the limit, which is then the answer (as it would be with
            // the output made in smaller steps).
            let Ok(status) = result else {
                let len = out.len() + made;
                return Err(if len > max {
                    ProtocolError::MessageTooLarge { len: len as u64, max }
                } else {
                    ProtocolError::InvalidCompressedData
                });
            };
            input = input.get(used..).unwrap_or_default();
            if made > 0 {
                // RFC 6455 §10.4: the limit is on the inflated message.
                let len = out.len() + made;
                if len > max {
                    return Err(ProtocolError::MessageTooLarge { len: len as u64, max });
                }
                grow_capped(out, made, max);
                out.extend_from_slice(&scratch[..made]);
                if let Some(history) = self.history.as_mut() {
                    history.extend_from_slice(&scratch[..made]);
                    if history.len() > 2 * WINDOW {
                        history.drain(..history.len() - WINDOW);
                    }
                }
            }
            if status == Status::StreamEnd {
                // RFC 7692 §7.2.3.4: a block with BFINAL set ends the DEFLATE
                // stream; what follows starts a new one, with the same window.
                self.restart(out)?;
                if input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            // Done only when a call makes nothing more: the decompressor may
            // hold output back even when it had room (its window wraps).
            if made == 0 {
                if input.is_empty() {
                    return Ok(());
                }
                if used == 0 {
                    return Err(ProtocolError::InvalidCompressedData);
                }
            }
        }
    }
}

impl Drop for Inflater {
    /// A closing connection gives its decompressor back too.
    fn drop(&mut self) {
        self.release();
    }
}

/// Reserves room for `additional` more bytes, doubling as usual but never
/// past `max` bytes of capacity.
fn grow_capped(out: &mut BytesMut, additional: usize, max: usize) {
    let needed = out.len() + additional;
    if out.capacity() >= needed {
        return;
    }
    let target = needed.max(out.capacity() * 2).max(STEP).min(max.max(needed));
    // `reserve` may round up past `max`; a new buffer of exactly `target` does not.
    let mut grown = BytesMut::with_capacity(target);
    grown.extend_from_slice(out);
    *out = grown;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn inflate_all(inflater: &mut Inflater, data: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let mut out = BytesMut::new();
        inflater.inflate(data, &mut out)?;
        inflater.finish(&mut out)?;
        Ok(out.to_vec())
    }

    #[test]
    fn rfc_examples() {
        let mut i = Inflater::new(false, 1 << 20);
        // RFC 7692 §7.2.3.1, then §7.2.3.2 with the window taken over.
        assert_eq!(inflate_all(&mut i, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut i, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(), b"Hello");
        // §7.2.3.3: a stored block.
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate_all(&mut i, &stored).unwrap(), b"Hello");
        // §7.2.3.4: a block with BFINAL set.
        assert_eq!(inflate_all(&mut i, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]).unwrap(), b"Hello");
        // §7.2.3.5: two blocks.
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut Inflater::new(false, 100), &two).unwrap(), b"Hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 1 MiB of zeros compresses to about 1 KiB.
        let mut compressor = super::super::Compressor::new(9, 15, false, 0);
        let mut bomb = Vec::new();
        assert!(compressor.compress(&vec![0u8; 1 << 20], &mut bomb));
        assert!(bomb.len() < 2048, "{}", bomb.len());
        let mut out = BytesMut::new();
        let error = Inflater::new(false, 100_000).inflate(&bomb, &mut out).unwrap_err();
        assert!(matches!(error, ProtocolError::MessageTooLarge { max: 100_000, .. }), "{error:?}");
        assert!(out.len() <= 100_000 && out.capacity() <= 100_000, "{} {}", out.len(), out.capacity());
    }

    #[test]
    fn output_held_back_by_the_decompressor_is_not_lost() {
        // Found by fuzz/fuzz_targets/inflate.rs: this stream inflates to
        // 65698 bytes, but the decompressor returns after 65536 of them with
        // room to spare and all input consumed; the rest comes on the next call.
        let mut data =
            vec![0xec, 0xc1, 0x31, 0x01, 0x00, 0x00, 0x00, 0xc2, 0xa0, 0xf5, 0x4f, 0x6d, 0x0d, 0x0f, 0xa0];
        data.extend_from_slice(&[0; 15]);
        data.push(0x09);
        data.extend_from_slice(&[0; 12]);
        data.push(0x25);
        data.extend_from_slice(&[0; 33]);
        assert_eq!(data.len(), 77);
        let out = inflate_all(&mut Inflater::new(false, 1 << 20), &data).unwrap();
        assert_eq!(out.len(), 65698);
        let mut i = Inflater::new(false, 65536);
        let mut out = BytesMut::new();
        let finished = i.inflate(&data, &mut out).and_then(|()| i.finish(&mut out));
        assert_eq!(finished, Err(ProtocolError::MessageTooLarge { len: 65698, max: 65536 }));
    }

    #[test]
    fn a_peer_that_resets_each_message_leaves_nothing_held_between_messages() {
        let mut i = Inflater::new(true, 1 << 20);
        for _ in 0..2 {
            assert_eq!(inflate_all(&mut i, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
            assert!(i.live.is_none());
        }
        // With context takeover the window is the next message's dictionary.
        let mut i = Inflater::new(false, 1 << 20);
        assert_eq!(inflate_all(&mut i, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
        assert!(i.live.is_some());
    }

    #[test]
    fn a_spare_decompressor_is_reused_and_carries_nothing_over() {
        let spares = || SPARE.with(|spare| spare.borrow().len());
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        // RFC 7692 §7.2.3.2: "Hello" again, as a reference into the window.
        let again = [0xf2, 0x00, 0x11, 0x00, 0x00];
        for reset_each_message in [true, false] {
            let mut first = Inflater::new(reset_each_message, 1 << 20);
            assert_eq!(inflate_all(&mut first, &hello).unwrap(), b"Hello");
            // Given back after the message, or when the connection goes.
            drop(first);
            let kept = spares();
            assert!(kept >= 1);
            let mut next = Inflater::new(true, 1 << 20);
            // Another peer's first message cannot reach the first's window.
            assert_eq!(inflate_all(&mut next, &again), Err(ProtocolError::InvalidCompressedData));
            assert_eq!(spares(), kept - 1, "the spare was taken");
            drop(next);
        }
        assert!(spares() <= SPARES);
    }

    #[test]
    fn garbage_is_refused() {
        let mut i = Inflater::new(false, 1 << 20);
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        assert_eq!(inflate_all(&mut i, &[0xff, 0xff, 0xff]), Err(ProtocolError::InvalidCompressedData));
    }
}
