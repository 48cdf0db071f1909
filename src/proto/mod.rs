//! The WebSocket protocol after the handshake (RFC 6455 §5–§8), sans-IO:
//! bytes in, events out, bytes to send out. No I/O, clock or OS randomness.

mod close;
mod config;
mod connection;
#[cfg(feature = "deflate")]
mod deflate;
mod error;
mod frame;
mod mask;
mod message;
mod prepared;
#[cfg(feature = "deflate")]
mod prepared_deflate;
mod receive;
mod transmit;
mod utf8;

pub use close::{CloseCode, CloseFrame, MAX_CLOSE_REASON};
pub use config::{Config, Role, DEFAULT_MAX_MESSAGE_SIZE};
pub use connection::{Connection, State};
#[cfg(feature = "deflate")]
pub use deflate::{DeflateConfig, DeflateParams, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
pub use error::{ProtocolError, SendError};
pub use frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_at};
pub use message::{Event, Message, MessageKind};
pub use prepared::PreparedMessage;
pub use utf8::{Utf8Error, Utf8Validator};
