//! The async layer (feature `tokio`): [`WebSocket`] moves a
//! [`Connection`](crate::Connection)'s bytes over any
//! `AsyncRead + AsyncWrite` transport and does to it what the connection
//! directs. This is the only code that awaits; it makes no protocol
//! decision of its own (see `pump.rs`).

mod config;
mod connect;
mod error;
mod handshake;
#[cfg(feature = "hyper")]
pub mod hyper;
mod pump;
mod split;
mod stream;
#[cfg(feature = "rustls")]
mod tls;
mod websocket;

pub use config::WebSocketConfig;
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
