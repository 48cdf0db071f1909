//! The sending side's output queue: encoded frames waiting for the transport.
//!
//! Small frames are copied into one growing buffer, so a burst of replies is
//! one contiguous write. A large payload that needs no masking (a server's)
//! is queued as it is, without a copy, and written with a vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this long are queued by reference rather than copied.
/// Below it, a copy is cheaper than an extra slice in the write.
const ZERO_COPY_MIN: usize = 8 * 1024;
/// Prepared frames at least this long are queued by reference: one frame
/// sent to many connections is then held once, however many of them have
/// not written it yet, and each holds a 32-byte handle instead of a copy.
const SHARE_PREPARED_MIN: usize = 512;
/// The first allocation of the output buffer (freed again when idle).
const TAIL_MIN: usize = 4 * 1024;

#[derive(Debug, Default)]
pub(super) struct Transmit {
    /// Segments that come before `tail`, oldest first. Boxed and only
    /// present while a large payload waits: one pointer in every connection
    /// instead of a `VecDeque`'s four words, so an idle connection stays small.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Bytes>>>,
    /// The newest bytes, where small frames are encoded.
    tail: BytesMut,
}

impl Transmit {
    /// Where the next frame is encoded, with room for `additional` bytes.
    /// An empty buffer starts at `TAIL_MIN`, so a burst of small frames
    /// does not grow it step by step.
    pub(super) fn tail(&mut self, additional: usize) -> &mut BytesMut {
        if self.tail.capacity() - self.tail.len() < additional {
            self.tail.reserve(additional.max(TAIL_MIN));
        }
        &mut self.tail
    }

    /// Queues a frame whose payload the connection may keep: its encoded
    /// header (possibly empty, for a frame encoded whole), then the
    /// payload. The one place that decides between copying and sharing: a
    /// large payload is queued as it is (shared with whoever else holds it,
    /// never copied); a small one is copied into the buffer with its
    /// header, cheaper than an extra slice in the write.
    pub(super) fn push_frame(&mut self, head: &[u8], payload: Bytes) {
        if payload.len() >= ZERO_COPY_MIN {
            self.tail(head.len()).extend_from_slice(head);
            self.push_shared(payload);
        } else {
            let out = self.tail(head.len() + payload.len());
            out.extend_from_slice(head);
            out.extend_from_slice(&payload);
        }
    }

    /// Queues a whole frame encoded once for many connections (a
    /// [`PreparedMessage`](crate::PreparedMessage)'s): shared unless it is
    /// so short that a copy costs less than a handle and a slice.
    pub(super) fn push_prepared(&mut self, frame: &Bytes) {
        if frame.len() >= SHARE_PREPARED_MIN {
            self.push_shared(frame.clone());
        } else {
            self.tail(frame.len()).extend_from_slice(frame);
        }
    }

    /// Queues `payload` after everything encoded so far, without copying it.
    fn push_shared(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        let queue = self.queue.get_or_insert_with(Default::default);
        if !self.tail.is_empty() {
            queue.push_back(self.tail.split().freeze());
        }
        queue.push_back(payload);
    }

    pub(super) fn len(&self) -> usize {
        self.queue.iter().flat_map(|q| q.iter()).map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_none() && self.tail.is_empty()
    }

    /// The oldest bytes, contiguous.
    pub(super) fn front(&self) -> &[u8] {
        match &self.queue {
            Some(queue) => queue.front().map_or(&[][..], |b| &b[..]),
            None => &self.tail,
        }
    }

    /// Fills `out` with slices of the waiting bytes, oldest first; returns
    /// how many it filled.
    pub(super) fn chunks<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let queued = self.queue.iter().flat_map(|q| q.iter()).map(|b| &b[..]);
        let all = queued.chain(std::iter::once(&self.tail[..])).filter(|c| !c.is_empty());
        let mut n = 0;
        for (slot, chunk) in out.iter_mut().zip(all) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Drops the first `n` waiting bytes (all of them if there are fewer).
    pub(super) fn advance(&mut self, mut n: usize) {
        if let Some(queue) = &mut self.queue {
            while n > 0 {
                let Some(front) = queue.front_mut() else { break };
                let step = n.min(front.len());
                front.advance(step);
                n -= step;
                if front.is_empty() {
                    queue.pop_front();
                }
            }
            if queue.is_empty() {
                self.queue = None;
            }
        }
        let step = n.min(self.tail.len());
        self.tail.advance(step);
    }

    /// Takes the oldest segment.
    pub(super) fn pop(&mut self) -> Option<Bytes> {
        if let Some(queue) = &mut self.queue {
            let front = queue.pop_front();
            if queue.is_empty() {
                self.queue = None;
            }
            if front.is_some() {
                return front;
            }
        }
        (!self.tail.is_empty()).then(|| self.tail.split().freeze())
    }

    /// Frees the buffer if nothing waits in it.
    pub(super) fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_by_chunks(t: &mut Transmit, max_write: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !t.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = t.chunks(&mut slices);
            let mut budget = max_write;
            let mut wrote = 0;
            for s in &slices[..n] {
                let take = s.len().min(budget);
                out.extend_from_slice(&s[..take]);
                budget -= take;
                wrote += take;
            }
            t.advance(wrote);
        }
        out
    }

    #[test]
    fn keeps_order_across_copied_and_shared_segments() {
        for max_write in [1, 3, 7, 1000] {
            let mut t = Transmit::default();
            t.tail(2).extend_from_slice(b"ab");
            t.push_shared(Bytes::from_static(b"CDE"));
            t.tail(1).extend_from_slice(b"f");
            t.push_shared(Bytes::from_static(b"GH"));
            t.push_shared(Bytes::from_static(b"IJ"));
            assert_eq!(t.len(), 10);
            assert_eq!(drain_by_chunks(&mut t, max_write), b"abCDEfGHIJ", "max_write {max_write}");
            assert!(t.is_empty() && t.queue.is_none());
        }
    }

    #[test]
    fn pop_and_front_follow_the_same_order() {
        let mut t = Transmit::default();
        t.tail(2).extend_from_slice(b"ab");
        t.push_shared(Bytes::from_static(b"CDE"));
        t.tail(1).extend_from_slice(b"f");
        assert_eq!(t.front(), b"ab");
        t.advance(1);
        assert_eq!(t.front(), b"b");
        assert_eq!(t.pop().unwrap(), &b"b"[..]);
        assert_eq!(t.pop().unwrap(), &b"CDE"[..]);
        assert_eq!(t.front(), b"f");
        assert_eq!(t.pop().unwrap(), &b"f"[..]);
        assert!(t.pop().is_none() && t.is_empty());
    }

    #[test]
    fn a_prepared_frame_is_shared_unless_it_is_short() {
        let long = Bytes::from(vec![1u8; SHARE_PREPARED_MIN]);
        let short = Bytes::from(vec![2u8; SHARE_PREPARED_MIN - 1]);
        let mut t = Transmit::default();
        t.push_prepared(&short);
        t.push_prepared(&long);
        t.push_prepared(&short);
        // The long one is the caller's bytes, not a copy; the short ones
        // sit in the buffer around it.
        let queue = t.queue.as_ref().unwrap();
        assert_eq!(queue.len(), 2);
        assert_eq!(queue[1].as_ptr(), long.as_ptr());
        assert_eq!(t.tail.len(), short.len());
        let mut wire = drain_by_chunks(&mut t, 100);
        assert_eq!(wire.len(), 2 * short.len() + long.len());
        assert!(wire.drain(..short.len()).all(|b| b == 2));
        assert!(wire.drain(..long.len()).all(|b| b == 1));
        assert!(wire.iter().all(|&b| b == 2));
    }

    #[test]
    fn advancing_past_the_end_empties_it() {
        let mut t = Transmit::default();
        t.push_shared(Bytes::from_static(b"xyz"));
        t.tail(1).extend_from_slice(b"w");
        t.advance(usize::MAX);
        assert!(t.is_empty());
        t.release_if_empty();
        assert_eq!(t.tail.capacity(), 0);
    }
}
