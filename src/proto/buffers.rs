//! [`Buffers`]: a connection's input and output bytes, for drivers that
//! read and write without a copy.
//!
//! [`Connection::receive`](crate::Connection::receive) and
//! [`Connection::poll_transmit`](crate::Connection::poll_transmit) are
//! all most drivers need. A driver tuned for a socket reads straight into
//! the connection's input buffer, sizes its reads by the frame arriving,
//! writes the queued output in place with a vectored write, and frees both
//! buffers while the connection is idle: that is what this type is for,
//! reached through [`Connection::buffers`](crate::Connection::buffers) and
//! [`Connection::buffers_mut`](crate::Connection::buffers_mut).

use std::io::IoSlice;

use bytes::BytesMut;

use super::receive::Receiver;
use super::transmit::Transmit;

/// A connection's input and output bytes (see the module docs).
#[derive(Debug, Default)]
pub struct Buffers {
    /// Boxed, like the connection itself in the tokio layer: pieces under
    /// 128 bytes fit the alignment gaps that tokio's 128-byte aligned task
    /// and I/O allocations leave in glibc's heap: measured, an idle server
    /// connection is under 1 KiB this way and over it in one piece (see
    /// BENCHMARKS.md, idle memory).
    pub(super) receiver: Box<Receiver>,
    /// Encoded frames waiting for the transport. Boxed for the same reason
    /// as `receiver`.
    pub(super) transmit: Box<Transmit>,
}

impl Buffers {
    // ----- input -----------------------------------------------------------

    /// The buffer [`Connection::receive`](crate::Connection::receive)
    /// appends to, for reading from the transport without a copy. Only
    /// append to it; input that arrives once the connection stopped reading
    /// is discarded by the next
    /// [`poll_event`](crate::Connection::poll_event).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.receiver.buf
    }

    /// Bytes received but not yet turned into events.
    pub fn buffered_input(&self) -> usize {
        self.receiver.buf.len()
    }

    /// How many more bytes the frame now arriving needs, 0 when none is
    /// in progress: a hint for sizing the next read. Its declared length
    /// passed [`Config::max_frame_size`](crate::Config::max_frame_size)
    /// already; bound the hint further before allocating on it, since a
    /// peer may declare and not send.
    pub fn input_needed(&self) -> usize {
        self.receiver.input_needed()
    }

    /// How many bytes the next read could usefully take: the rest of the
    /// frame in progress, or, between frames, the size of the last data
    /// frame received plus a header, so a stream of large frames is read in
    /// few system calls without growing the buffer midway (control frames
    /// do not count). 0 before the first frame. Bound it before allocating
    /// on it, like [`input_needed`](Self::input_needed).
    pub fn read_hint(&self) -> usize {
        self.receiver.read_hint()
    }

    // ----- output ----------------------------------------------------------

    /// How many bytes wait to be written.
    pub fn pending_transmit(&self) -> usize {
        self.transmit.len()
    }

    /// The oldest bytes waiting to be written, left in place: write a
    /// prefix of them, then call [`advance_transmit`](Self::advance_transmit)
    /// with its length. Empty when nothing waits. An alternative to
    /// [`Connection::poll_transmit`](crate::Connection::poll_transmit) for
    /// transports that copy what they are given (a socket): no reference
    /// counting, and the buffer is reused.
    pub fn transmit_front(&self) -> &[u8] {
        self.transmit.front()
    }

    /// Like [`transmit_front`](Self::transmit_front), for a vectored write:
    /// fills `out` with slices of the waiting bytes, oldest first, and
    /// returns how many it filled. Large payloads are queued without a copy,
    /// so the waiting bytes may be in several pieces.
    pub fn transmit_chunks<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.transmit.chunks(out)
    }

    /// Marks the first `n` waiting bytes as written (at most all of them).
    pub fn advance_transmit(&mut self, n: usize) {
        self.transmit.advance(n);
    }

    // ----- both ------------------------------------------------------------

    /// Frees the input and output buffers if they hold no bytes, so an idle
    /// connection costs almost no memory. Call it when the transport has
    /// nothing to read; the next read or send allocates afresh.
    pub fn release_idle(&mut self) {
        self.receiver.release_if_empty();
        self.transmit.release_if_empty();
    }

    /// Frees the output buffer if it holds no bytes: for a writer that
    /// does not read (the write half of a split connection).
    pub(crate) fn release_transmit(&mut self) {
        self.transmit.release_if_empty();
    }
}
