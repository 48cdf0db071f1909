//! The async layer (feature `tokio`): [`WebSocket`] moves a
//! [`Connection`](crate::Connection)'s bytes over any
//! `AsyncRead + AsyncWrite` transport. This is the only code that awaits.

mod connect;
mod core;
mod error;
mod handshake;
#[cfg(feature = "hyper")]
pub mod hyper;
mod split;
mod stream;
#[cfg(feature = "rustls")]
mod tls;
mod websocket;

use std::time::Duration;

use crate::handshake::HandshakeLimits;
use crate::proto::Config;

#[cfg(feature = "rustls")]
pub use connect::connect_tls;
pub use connect::{connect, connect_with};
pub use error::{Error, TimeoutKind};
pub use handshake::{accept, accept_with, client};
pub use split::{ReadHalf, WriteHalf};
pub use stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
pub use tls::TlsError;
pub use websocket::WebSocket;

/// Settings of the async layer: protocol limits, handshake limits and
/// time limits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Frame and message limits, auto-fragmentation.
    pub protocol: Config,
    /// Size and header-count limits of the opening handshake.
    pub handshake: HandshakeLimits,
    /// The whole opening handshake, from the first byte to the 101 (default
    /// 10 s); for `connect`, from the TCP connection through TLS to the 101.
    pub handshake_timeout: Duration,
    /// From our Close (or the peer's) to the transport being closed
    /// (default 5 s).
    pub close_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            protocol: Config::default(),
            handshake: HandshakeLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
        }
    }
}
