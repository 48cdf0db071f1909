//! The transport `connect` returns: TCP for `ws://`, TLS over TCP for
//! `wss://` (feature `rustls`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The transport of a WebSocket opened by [`connect`](crate::connect):
/// plain TCP for a `ws://` URL, TLS over TCP for `wss://` (with the
/// `rustls` feature). It reads and writes like the stream inside.
///
/// Other variants may come (another TLS library behind its own feature),
/// so a `match` on it needs a `_` arm; [`tcp`](Self::tcp) works for all.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// `ws://`: the TCP stream itself.
    Plain(TcpStream),
    /// `wss://`: rustls over the TCP stream, the TLS handshake done. Boxed:
    /// rustls' connection state is large, and a `Plain` stream should not
    /// carry its size.
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl MaybeTlsStream {
    /// The TCP stream underneath (for its addresses or socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether the stream is encrypted (a `wss://` connection).
    pub fn is_tls(&self) -> bool {
        !matches!(self, MaybeTlsStream::Plain(_))
    }
}

/// Forwards a call to the stream inside, whichever it is.
macro_rules! inner {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Plain($s) => $call,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls($s) => $call,
        }
    };
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        inner!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        inner!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => Pin::new(s).poll_flush(cx))
    }

    /// For TLS, sends close_notify before ending the TCP direction.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
