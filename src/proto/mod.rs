//! The wire-level pieces of the protocol core (RFC 6455 §5): frame
//! headers, masking, incremental UTF-8 validation and the protocol's
//! constants, for tests, fuzzers and other implementations.
//!
//! The connection itself and every type its user names ([`Connection`],
//! [`Message`], [`Event`], [`Config`], [`CloseCode`], ...) are at the crate
//! root. All of it is sans-IO: bytes in, events out, bytes to send out; no
//! I/O, clock or OS randomness.
//!
//! [`Connection`]: crate::Connection
//! [`Message`]: crate::Message
//! [`Event`]: crate::Event
//! [`Config`]: crate::Config
//! [`CloseCode`]: crate::CloseCode

pub(crate) mod buffers;
pub(crate) mod close;
pub(crate) mod config;
pub(crate) mod connection;
#[cfg(feature = "deflate")]
pub(crate) mod deflate;
pub(crate) mod error;
mod frame;
mod mask;
pub(crate) mod message;
pub(crate) mod prepared;
mod receive;
pub(crate) mod role;
mod transmit;
mod utf8;

pub use close::MAX_CLOSE_REASON;
pub use config::DEFAULT_MAX_MESSAGE_SIZE;
#[cfg(feature = "deflate")]
pub use deflate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};
pub use frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_at};
pub use utf8::{Utf8Error, Utf8Validator};
