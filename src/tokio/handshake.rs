//! The opening handshake over an async transport: `accept` on the server,
//! `client` on the client (`connect`, in connect.rs, opens the transport
//! and calls it).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::config::WebSocketConfig;
use super::error::{Error, TimeoutKind};
use super::pump::poll_read_into;
use super::WebSocket;
use crate::handshake::{
    Accept, ClientHandshake, ClientRequest, HandshakeError, Reject, Request, Response, ServerHandshake,
};
use crate::Connection;

/// Accepts a WebSocket on `stream` with the default configuration, any
/// path, any Origin and no subprotocol.
///
/// Cancel safety: not cancel-safe (a half-done handshake is lost with the
/// stream); it has its own time limit.
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, &WebSocketConfig::default(), |_| Ok(Accept::new())).await
}

/// Accepts a WebSocket on `stream`, letting `hook` inspect the request
/// (path, query, Origin, headers) and accept it, with a subprotocol, or
/// reject it with an HTTP status.
///
/// ```no_run
/// use sabai::handshake::{Accept, Reject};
///
/// # async fn demo(stream: tokio::net::TcpStream) -> Result<(), sabai::Error> {
/// let config = sabai::WebSocketConfig::default();
/// let ws = sabai::accept_with(stream, &config, |request| {
///     if request.origin() != Some("https://example.com") {
///         return Err(Reject::forbidden().body("unknown origin"));
///     }
///     match request.protocols().iter().find(|p| *p == "chat.v1") {
///         Some(p) => Ok(Accept::new().protocol(p.as_str())),
///         None => Ok(Accept::new()),
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// A bad request gets its HTTP error (400, 405, 426, 431), a rejection the
/// hook's response, and both return [`Error::Handshake`]. The whole
/// handshake must finish within
/// [`WebSocketConfig::handshake_timeout`].
///
/// Cancel safety: not cancel-safe.
pub async fn accept_with<S, F>(stream: S, config: &WebSocketConfig, hook: F) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Accept, Reject>,
{
    // Boxed: the handshake's state (buffers, request, timer) lives on the heap
    // only while it runs, so the caller's task stays small for the whole
    // life of the connection.
    Box::pin(timeout(config.handshake_timeout, server_handshake(stream, config, hook)))
        .await
        .unwrap_or(Err(Error::Timeout(TimeoutKind::Handshake)))
}

async fn server_handshake<S, F>(
    mut stream: S,
    config: &WebSocketConfig,
    hook: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Accept, Reject>,
{
    let mut handshake = ServerHandshake::new(config.handshake.clone());
    let mut buf = BytesMut::new();
    let parsed = loop {
        match handshake.parse(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(error) => return Err(refuse(&mut stream, error.response(), error).await),
        }
        read_head(&mut stream, &mut buf).await?;
    };
    let (request, head_len) = parsed;
    let accept = match hook(&request) {
        Ok(accept) => negotiate(&request, accept, config),
        Err(reject) => {
            let error = HandshakeError::Rejected(reject.status());
            return Err(refuse(&mut stream, reject.response(), error).await);
        }
    };
    let response = match request.accept_response(&accept) {
        Ok(response) => response,
        Err(error) => return Err(refuse(&mut stream, error.response(), error).await),
    };
    stream.write_all(&response).await?;
    // Bytes after the request's blank line are the client's first frames.
    Ok(Agreed::by_server(&accept).open(stream, None, config, &buf[head_len..]))
}

/// What the server agrees to beyond the hook's answer: permessage-deflate,
/// when configured, offered, and not already chosen by the hook.
pub(super) fn negotiate(request: &Request, accept: Accept, config: &WebSocketConfig) -> Accept {
    // RFC 7692 §5: accept one permessage-deflate offer if configured to.
    #[cfg(feature = "deflate")]
    if accept.selected_deflate().is_none() {
        if let Some(params) = config.protocol.deflate.as_ref().and_then(|c| request.negotiate_deflate(c)) {
            return accept.deflate(params);
        }
    }
    #[cfg(not(feature = "deflate"))]
    let _ = (request, config);
    accept
}

/// What the opening handshake agreed: the subprotocol and, with
/// permessage-deflate, its parameters.
#[derive(Debug)]
pub(super) struct Agreed {
    protocol: Option<String>,
    #[cfg(feature = "deflate")]
    deflate: Option<crate::DeflateParams>,
}

impl Agreed {
    /// What a server's `accept` agreed to.
    pub(super) fn by_server(accept: &Accept) -> Agreed {
        Agreed {
            protocol: accept.selected_protocol().map(str::to_owned),
            #[cfg(feature = "deflate")]
            deflate: accept.selected_deflate(),
        }
    }

    /// What the server's response agreed to.
    fn by_client(response: &Response) -> Agreed {
        Agreed {
            protocol: response.protocol().map(str::to_owned),
            #[cfg(feature = "deflate")]
            deflate: response.deflate(),
        }
    }

    /// The WebSocket over `stream` once the handshake is done, for either
    /// side (`mask_seed` for a client): its connection set up for what was
    /// agreed, and `early`, the bytes that came after the head (the peer's
    /// first frames), already in it.
    pub(super) fn open<S>(
        self,
        stream: S,
        mask_seed: Option<[u8; 32]>,
        config: &WebSocketConfig,
        early: &[u8],
    ) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let protocol = config.protocol.clone();
        #[allow(unused_mut)]
        let mut conn = match mask_seed {
            None => Connection::server(protocol),
            Some(seed) => Connection::client(protocol, seed),
        };
        // RFC 7692 §5: once agreed in the handshake, the extension is on.
        #[cfg(feature = "deflate")]
        if let Some(params) = self.deflate {
            conn = conn.with_deflate(params);
        }
        conn.receive(early);
        WebSocket::from_connection(stream, conn).with_protocol(self.protocol.as_deref())
    }
}

/// Reads more of an HTTP head into `buf`; the transport ending first is
/// an error.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<(), Error> {
    reserve_for_head(buf);
    if std::future::poll_fn(|cx| poll_read_into(stream, cx, buf)).await? == 0 {
        return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Room for the next read of an HTTP head: a browser's request is well under
/// 2 KiB, so start there and grow (the head's size limit still applies).
fn reserve_for_head(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(2048);
    }
}

/// Sends an HTTP error response and closes; the error is what we report.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, response: Vec<u8>, error: HandshakeError) -> Error {
    // Best effort: the peer may already be gone, and the error says why we stopped.
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
    Error::Handshake(error)
}

/// Performs the client handshake over any transport (for example a TLS
/// stream), returning the WebSocket and the server's response.
///
/// Cancel safety: not cancel-safe; bounded by the handshake timeout.
pub async fn client<S>(
    stream: S,
    request: ClientRequest,
    config: &WebSocketConfig,
) -> Result<(WebSocket<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Boxed, as in `accept_with`.
    Box::pin(timeout(config.handshake_timeout, client_handshake(stream, request, config)))
        .await
        .unwrap_or(Err(Error::Timeout(TimeoutKind::Handshake)))
}

pub(super) async fn client_handshake<S>(
    mut stream: S,
    request: ClientRequest,
    config: &WebSocketConfig,
) -> Result<(WebSocket<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    #[cfg(feature = "deflate")]
    let request = match &config.protocol.deflate {
        Some(deflate) if request.deflate_offer().is_none() => request.permessage_deflate(deflate.clone()),
        _ => request,
    };
    // RFC 6455 §4.1 item 7: the key is a random nonce; §10.3: mask keys from
    // a strong source too. Both come from the OS-seeded thread CSPRNG.
    let mut handshake = ClientHandshake::new(request, rand::random()).with_limits(config.handshake.clone());
    stream.write_all(&handshake.request_bytes()?).await?;
    let mut buf = BytesMut::new();
    let (response, head_len) = loop {
        if let Some(parsed) = handshake.parse_response(&buf)? {
            break parsed;
        }
        read_head(&mut stream, &mut buf).await?;
    };
    let ws = Agreed::by_client(&response).open(stream, Some(rand::random()), config, &buf[head_len..]);
    Ok((ws, response))
}
