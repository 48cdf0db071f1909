//! Shared harness for the integration tests: a raw peer that can send any
//! bytes, including malformed frames, to a sabai endpoint, over the
//! in-memory core or over loopback TCP, and read back the frames it sends.
//!
//! Frames are built and parsed here by independent code, not by sabai's
//! own codec, so the tests do not check sabai against itself.
#![allow(dead_code)]

pub mod frames;
pub mod peers;

// Not every test file uses both.
#[allow(unused_imports)]
pub use frames::*;
#[allow(unused_imports)]
pub use peers::*;

/// Bytes that do not compress (xorshift from `seed`): a message that is as
/// large on the wire as in memory.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs one scenario against every kind of peer: generates
/// `mod $name { fn memory(); fn tcp(); }`.
#[macro_export]
macro_rules! conformance {
    ($(#[$meta:meta])* $name:ident, |$peer:ident| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn scenario($peer: &mut dyn $crate::support::Peer) $body
            #[test]
            fn memory() {
                scenario(&mut $crate::support::MemoryPeer::server());
            }
            #[test]
            fn tcp() {
                scenario(&mut $crate::support::TcpPeer::server());
            }
        }
    };
}
