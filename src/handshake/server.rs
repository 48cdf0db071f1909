//! The server's side of the opening handshake (RFC 6455 §4.2).
//!
//! [`ServerHandshake::parse`] reads and checks the client's request; the
//! application looks at the [`Request`] (Origin, path, query, auth headers,
//! offered subprotocols) and answers with an [`Accept`] or a [`Reject`].

use std::borrow::Cow;

use super::error::{HandshakeError, Refusal};
use super::extensions::{parse_extensions, Extension};
use super::head::{
    any_has_token, check_header, is_token, list_items, own_headers, parse_error, single, values,
    write_header, HandshakeLimits, HeadScanner,
};
use super::{accept_key, decode_key};
#[cfg(feature = "deflate")]
use crate::{DeflateConfig, DeflateParams};

/// A checked WebSocket upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
}

impl Request {
    /// The request target as sent: path and query.
    pub fn uri(&self) -> &str {
        &self.target
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The first value of a header field (case-insensitive name), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        values(&self.headers, name).next().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header field, in order, as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The Origin field (RFC 6455 §4.2.1 item 7, §10.2), for an allow-list.
    pub fn origin(&self) -> Option<&str> {
        self.header("Origin")
    }

    /// The Host field.
    pub fn host(&self) -> Option<&str> {
        self.header("Host")
    }

    /// The subprotocols the client offered, in its order of preference
    /// (RFC 6455 §4.2.1 item 8).
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The client's Sec-WebSocket-Key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The extensions the client offered, in its order of preference
    /// (RFC 6455 §9.1).
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The permessage-deflate parameters to agree to, if the client offered
    /// one we accept (RFC 7692 §5); hand them to [`Accept::deflate`].
    #[cfg(feature = "deflate")]
    pub fn negotiate_deflate(&self, config: &DeflateConfig) -> Option<DeflateParams> {
        super::deflate::negotiate(&self.extensions, config)
    }

    /// The 101 response accepting this request (RFC 6455 §4.2.2 item 5).
    pub fn accept_response(&self, accept: &Accept) -> Result<Vec<u8>, HandshakeError> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in self.accept_headers(accept)? {
            write_header(&mut out, name, &value)?;
        }
        out.extend_from_slice(b"\r\n");
        Ok(out)
    }

    /// The header fields of the 101 accepting this request, in order, each
    /// checked (RFC 6455 §4.2.2 item 5).
    pub(crate) fn accept_headers<'a>(
        &'a self,
        accept: &'a Accept,
    ) -> Result<Vec<(&'a str, Cow<'a, str>)>, HandshakeError> {
        let mut headers = vec![
            ("Upgrade", Cow::Borrowed("websocket")),
            ("Connection", Cow::Borrowed("Upgrade")),
            ("Sec-WebSocket-Accept", Cow::Owned(accept_key(&self.key))),
        ];
        if let Some(protocol) = &accept.protocol {
            // RFC 6455 §4.2.2 item 5: the chosen subprotocol must be one the client offered.
            if !self.protocols.iter().any(|p| p == protocol) {
                return Err(HandshakeError::ProtocolNotOffered(protocol.clone()));
            }
            headers.push(("Sec-WebSocket-Protocol", Cow::Borrowed(protocol)));
        }
        #[cfg(feature = "deflate")]
        if let Some(params) = &accept.deflate {
            // RFC 7692 §5: the answer names the agreed parameters.
            headers.push(("Sec-WebSocket-Extensions", Cow::Owned(params.header_value())));
        }
        for (name, value) in &accept.headers {
            headers.push((name, Cow::Borrowed(value)));
        }
        for (name, value) in &headers {
            check_header(name, value)?;
        }
        Ok(headers)
    }
}

/// The application's yes to a request: the subprotocol it picked (if any)
/// and extra response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    protocol: Option<String>,
    headers: Vec<(String, String)>,
    #[cfg(feature = "deflate")]
    deflate: Option<DeflateParams>,
}

impl Accept {
    /// Accepts with no subprotocol, no extra headers and no extension.
    pub fn new() -> Self {
        Self::default()
    }

    /// Selects a subprotocol; it must be one of [`Request::protocols`].
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a response header (for example `Set-Cookie`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The chosen subprotocol.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Accepts permessage-deflate with these parameters (from
    /// [`Request::negotiate_deflate`]); the connection must then use them.
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, params: DeflateParams) -> Self {
        self.deflate = Some(params);
        self
    }

    /// The accepted permessage-deflate parameters.
    #[cfg(feature = "deflate")]
    pub fn selected_deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }
}

/// The application's no to a request: an HTTP status, a short body and
/// extra headers (for example `WWW-Authenticate` with a 401).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Reject {
    /// A rejection with this status (use 4xx or 5xx).
    pub fn new(status: u16) -> Self {
        Reject { status, body: String::new(), headers: Vec::new() }
    }

    /// 403: for example an Origin that is not on the allow-list (RFC 6455 §10.2).
    pub fn forbidden() -> Self {
        Self::new(403)
    }

    /// 401: missing or bad credentials.
    pub fn unauthorized() -> Self {
        Self::new(401)
    }

    /// The response body: a few words for the client to read.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header field to the response (`WWW-Authenticate` with a 401, for example).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body given with [`body`](Self::body) (empty if none).
    pub fn message(&self) -> &str {
        &self.body
    }

    /// The complete HTTP response. Headers that would break the head are
    /// left out.
    pub fn response(&self) -> Vec<u8> {
        self.refusal().to_bytes()
    }

    /// The response, before it is rendered.
    pub(crate) fn refusal(&self) -> Refusal<'_> {
        // A header that fails the check is dropped rather than sent broken.
        let headers = self
            .headers
            .iter()
            .filter(|(name, value)| check_header(name, value).is_ok())
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        // Only an error status can refuse a handshake (the same clamp as
        // `HandshakeError::status`).
        let status = if (400..=599).contains(&self.status) { self.status } else { 500 };
        Refusal { status, headers, body: Cow::Borrowed(&self.body) }
    }
}

/// Reads the client's opening handshake.
///
/// ```
/// use sabai::handshake::{Accept, ServerHandshake};
///
/// let bytes = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// let mut handshake = ServerHandshake::default();
/// let (request, used) = handshake.parse(bytes).unwrap().unwrap();
/// assert_eq!((request.path(), used), ("/chat", bytes.len()));
/// let response = request.accept_response(&Accept::new()).unwrap();
/// assert!(response.starts_with(b"HTTP/1.1 101"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerHandshake {
    limits: HandshakeLimits,
    scanner: HeadScanner,
}

impl ServerHandshake {
    /// A server handshake bounded by `limits` (head size, header count: RFC 6455 §10.4).
    pub fn new(limits: HandshakeLimits) -> Self {
        ServerHandshake { limits, scanner: HeadScanner::default() }
    }

    /// Looks at everything received so far. `Ok(None)`: the request is not
    /// complete yet; call again with the grown buffer. `Ok(Some((request,
    /// n)))`: the request took the first `n` bytes; the rest are the first
    /// WebSocket bytes and belong to the connection. `Err`: answer with
    /// [`HandshakeError::response`] and close.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
        // RFC 9112 §2.2, §3: a request starts with empty lines or a method,
        // a token. Anything else (a TLS ClientHello from a wss:// client,
        // 0x16) is refused on its first byte rather than after the head
        // limit or the timeout; httparse would refuse the whole head alike.
        // Nothing to judge yet: no limit can be over, no byte be wrong
        // (and the answer must not depend on how the bytes are chunked).
        let Some(&first) = buf.first() else { return Ok(None) };
        if !(is_token(&[first]) || first == b'\r' || first == b'\n') {
            return Err(HandshakeError::MalformedHttp(httparse::Error::Token));
        }
        let Some(end) = self.scanner.find_end(buf, &self.limits)? else {
            return Ok(None);
        };
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(&buf[..end]).map_err(parse_error)? {
            httparse::Status::Complete(_) => {}
            // The scanner found the blank line, so httparse has it all.
            httparse::Status::Partial => return Err(HandshakeError::MalformedHttp(httparse::Error::NewLine)),
        }
        let method = parsed.method.unwrap_or_default();
        let target = parsed.path.unwrap_or("/").to_owned();
        let request = check_head(method, parsed.version == Some(1), target, own_headers(parsed.headers))?;
        Ok(Some((request, end)))
    }
}

/// Every check on a request head once it is parsed, whoever parsed it:
/// [`ServerHandshake::parse`] here, or an HTTP library (feature `hyper`).
/// `http11`: the request line says HTTP/1.1.
pub(crate) fn check_head(
    method: &str,
    http11: bool,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<Request, HandshakeError> {
    // RFC 6455 §4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if !http11 {
        return Err(HandshakeError::HttpVersion);
    }
    check_request(target, headers)
}

fn check_request(target: String, headers: Vec<(String, Vec<u8>)>) -> Result<Request, HandshakeError> {
    // RFC 6455 §4.2.1 item 2 (and RFC 9112 §3.2: exactly one Host).
    if single(&headers, "Host")?.is_none() {
        return Err(HandshakeError::MissingHost);
    }
    // RFC 6455 §4.2.1 item 3: Upgrade lists "websocket", case-insensitively.
    if !any_has_token(&headers, "Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    // RFC 6455 §4.2.1 item 4: Connection lists the "Upgrade" token.
    if !any_has_token(&headers, "Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // RFC 6455 §4.2.1 item 6, §4.4: version 13, else 426 naming it.
    if single(&headers, "Sec-WebSocket-Version")?.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    // RFC 6455 §4.2.1 item 5, §11.3.1: one key, base64 of 16 bytes.
    let key = single(&headers, "Sec-WebSocket-Key")?.ok_or(HandshakeError::MissingKey)?.trim_ascii();
    decode_key(key).ok_or(HandshakeError::InvalidKey)?;
    let key = String::from_utf8_lossy(key).into_owned();
    // RFC 6455 §4.2.1 item 8, §11.3.4: a list of tokens, possibly over several fields.
    let mut protocols = Vec::new();
    for value in values(&headers, "Sec-WebSocket-Protocol") {
        for item in list_items(value) {
            if !is_token(item) {
                return Err(HandshakeError::InvalidProtocolHeader);
            }
            protocols.push(String::from_utf8_lossy(item).into_owned());
        }
    }
    // RFC 6455 §9.1: the offered extensions, possibly over several fields.
    let mut extensions = Vec::new();
    for value in values(&headers, "Sec-WebSocket-Extensions") {
        parse_extensions(value, &mut extensions).map_err(HandshakeError::InvalidExtension)?;
    }
    Ok(Request { target, headers, key, protocols, extensions })
}
