//! Adding sabai to a hyper server: hyper reads the HTTP request, sabai
//! checks it as a WebSocket handshake (RFC 6455 §4.2.1) and writes the 101,
//! and hyper's upgrade hands over the raw connection.
//!
//! This is the whole recipe for a hyper (or axum) application:
//!
//! 1. Render the request's head back to HTTP/1.1 text and give it to
//!    `sabai::handshake::ServerHandshake::parse`: every rule of the
//!    handshake is then checked by sabai, not re-implemented here.
//! 2. Let the application look at the `sabai::Request` (token, Origin) and
//!    build the response bytes: `Request::accept_response` or
//!    `Reject::response`; turn them into a hyper `Response`. The `Accept`
//!    carries the permessage-deflate parameters agreed, if any.
//! 3. After the 101, `hyper::upgrade::on(req)` yields the connection;
//!    wrapped in `TokioIo` it is an `AsyncRead + AsyncWrite`, and
//!    `WebSocket::from_connection` makes it a sabai WebSocket, with
//!    `Connection::with_deflate` when compression was agreed.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use sabai::handshake::{Accept, HandshakeError, Reject, ServerHandshake};
use sabai::{Connection, DeflateParams, WebSocket, WebSocketConfig};

pub type Body = Full<Bytes>;
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Step 1: sabai's view of the request, or the HTTP error response (as
/// bytes, for [`from_bytes`]) to answer with.
pub fn check<B>(req: &Request<B>, config: &WebSocketConfig) -> Result<sabai::Request, Vec<u8>> {
    if req.version() != Version::HTTP_11 {
        // RFC 6455 §4.2.1 item 1: HTTP/1.1 or higher; the upgrade is HTTP/1.1's.
        return Err(HandshakeError::HttpVersion.response());
    }
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri()).into_bytes();
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    match ServerHandshake::new(config.handshake.clone()).parse(&head) {
        Ok(Some((request, _))) => Ok(request),
        // The head is complete by construction; a parser wanting more is a bad request.
        Ok(None) => Err(HandshakeError::MalformedHttp(httparse::Error::NewLine).response()),
        Err(error) => Err(error.response()),
    }
}

/// Step 2, what to agree to: permessage-deflate if the configuration has
/// it and the client offered it (RFC 7692 §5: the server accepts at most
/// one offer; browsers make one).
pub fn negotiate(request: &sabai::Request, config: &WebSocketConfig) -> Accept {
    let agreed = config.protocol.deflate.as_ref().and_then(|deflate| request.negotiate_deflate(deflate));
    match agreed {
        Some(params) => Accept::new().deflate(params),
        None => Accept::new(),
    }
}

/// Step 2, yes: the 101 response.
pub fn accept(request: &sabai::Request, accept: &Accept) -> Response<Body> {
    match request.accept_response(accept) {
        Ok(bytes) => from_bytes(&bytes),
        Err(error) => from_bytes(&error.response()),
    }
}

/// Step 2, no.
pub fn reject(reject: &Reject) -> Response<Body> {
    from_bytes(&reject.response())
}

/// Step 3: the WebSocket, once hyper has sent the 101. Spawn this. Any
/// body type works, so an axum `Request<axum::body::Body>` does too.
/// `deflate`: what the 101 agreed to (`Accept::selected_deflate`).
pub async fn websocket<B>(
    req: Request<B>,
    config: &WebSocketConfig,
    deflate: Option<DeflateParams>,
) -> Option<WebSocket<Upgraded>> {
    let upgraded = hyper::upgrade::on(req).await.ok()?;
    let mut conn = Connection::server(config.protocol.clone());
    if let Some(params) = deflate {
        // RFC 7692 §5: once agreed in the handshake, the extension is on.
        conn = conn.with_deflate(params);
    }
    Some(WebSocket::from_connection(TokioIo::new(upgraded), conn, config))
}

/// A hyper response from the HTTP/1.1 response bytes sabai wrote. Framing
/// headers are left to hyper.
pub fn from_bytes(bytes: &[u8]) -> Response<Body> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(bytes) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "bad handshake response");
    };
    let status =
        parsed.code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status);
    for header in parsed.headers.iter() {
        if !header.name.eq_ignore_ascii_case("content-length") {
            response = response.header(header.name, header.value);
        }
    }
    let body = Full::new(Bytes::copy_from_slice(&bytes[head_len..]));
    response.body(body).unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad handshake response"))
}

pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
