//! The error type of the tokio layer.

use std::{fmt, io};

use crate::handshake::HandshakeError;
use crate::{ProtocolError, SendError};

/// Everything that can go wrong on a [`WebSocket`](super::WebSocket).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke RFC 6455. Our Close frame with the matching code was
    /// sent (or at least attempted) and the transport closed.
    Protocol(ProtocolError),
    /// The transport ended before the peer's Close frame (RFC 6455 §7.1.5:
    /// close code 1006, which is only reported). Not a rule the peer broke:
    /// the connection was lost, or the peer went away without closing.
    AbnormalClosure,
    /// The application asked for something the protocol forbids, or sent
    /// after the connection closed. Nothing was sent.
    Send(SendError),
    /// The opening handshake failed; on the server the HTTP error response
    /// was sent.
    Handshake(HandshakeError),
    /// The transport failed.
    Io(io::Error),
    /// A time limit passed: the opening handshake, or the peer's answer to
    /// our Close.
    Timeout(TimeoutKind),
    /// `connect` was given a URL it cannot use (or `wss://` without the
    /// `rustls` feature).
    Url(String),
    /// TLS failed on a `wss://` connection, before the opening handshake:
    /// the server's certificate was refused (unknown issuer, another host
    /// name, expired), the server does not speak TLS, or the TLS handshake
    /// broke (feature `rustls`).
    #[cfg(feature = "rustls")]
    Tls(super::tls::TlsError),
}

/// Which time limit passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The opening handshake (TLS included) took longer than its timeout.
    Handshake,
    /// The peer did not answer our Close in time.
    Close,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::AbnormalClosure => {
                f.write_str("connection closed without a close frame (RFC 6455 §7.1.5)")
            }
            Error::Send(e) => write!(f, "cannot send: {e}"),
            Error::Handshake(e) => write!(f, "handshake failed: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Timeout(TimeoutKind::Handshake) => f.write_str("opening handshake timed out"),
            Error::Timeout(TimeoutKind::Close) => f.write_str("peer did not answer our Close in time"),
            Error::Url(why) => write!(f, "invalid WebSocket URL: {why}"),
            #[cfg(feature = "rustls")]
            Error::Tls(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Protocol(e) => Some(e),
            Error::Send(e) => Some(e),
            Error::Handshake(e) => Some(e),
            Error::Io(e) => Some(e),
            #[cfg(feature = "rustls")]
            Error::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
