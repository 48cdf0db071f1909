//! The client's side of the opening handshake (RFC 6455 §4.1).

use super::error::HandshakeError;
use super::extensions::parse_extensions;
use super::head::{
    any_has_token, is_token, list_items, own_headers, parse_error, single, values, write_header,
    HandshakeLimits, HeadScanner,
};
use super::{accept_key, encode_key};
#[cfg(feature = "deflate")]
use crate::{DeflateConfig, DeflateParams};

/// What the client asks for: where, and with which subprotocols and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    host: String,
    target: String,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    #[cfg(feature = "deflate")]
    deflate: Option<DeflateConfig>,
}

impl ClientRequest {
    /// A request for `target` (path and query, e.g. `/chat?room=1`) on
    /// `host` (the Host field: `example.com` or `example.com:8080`).
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Self {
        ClientRequest {
            host: host.into(),
            target: target.into(),
            protocols: Vec::new(),
            headers: Vec::new(),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    /// Offers permessage-deflate (RFC 7692) with these parameters.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// The permessage-deflate offer, if any.
    #[cfg(feature = "deflate")]
    pub fn deflate_offer(&self) -> Option<&DeflateConfig> {
        self.deflate.as_ref()
    }

    /// Offers a subprotocol (RFC 6455 §4.1 item 10), most preferred first.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Adds a header field, such as `Origin`, `Authorization` or `Cookie`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The server's accepted answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    headers: Vec<(String, Vec<u8>)>,
    protocol: Option<String>,
    #[cfg(feature = "deflate")]
    deflate: Option<DeflateParams>,
}

impl Response {
    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The first value of a header field (case-insensitive name), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        values(&self.headers, name).next().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The permessage-deflate parameters the server agreed to, if any:
    /// hand them to [`Connection::with_deflate`](crate::Connection::with_deflate).
    #[cfg(feature = "deflate")]
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }
}

/// Writes the client's request and checks the server's response.
///
/// ```
/// use sabai::handshake::{ClientHandshake, ClientRequest};
///
/// let key = [0x42; 16]; // use rand::random() for real
/// let mut handshake = ClientHandshake::new(ClientRequest::new("example.com", "/chat"), key);
/// let request = handshake.request_bytes().unwrap();
/// assert!(request.starts_with(b"GET /chat HTTP/1.1\r\n"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    request: ClientRequest,
    key: String,
    limits: HandshakeLimits,
    scanner: HeadScanner,
}

impl ClientHandshake {
    /// `key` is the 16-byte nonce of Sec-WebSocket-Key; RFC 6455 §4.1 item 7
    /// requires it to be randomly selected, so take it from a CSPRNG.
    pub fn new(request: ClientRequest, key: [u8; 16]) -> Self {
        ClientHandshake {
            request,
            key: encode_key(key),
            limits: HandshakeLimits::default(),
            scanner: HeadScanner::default(),
        }
    }

    /// Replaces the default bounds on the response head (RFC 6455 §10.4).
    pub fn with_limits(mut self, limits: HandshakeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The request to write (RFC 6455 §4.1 items 1–12).
    pub fn request_bytes(&self) -> Result<Vec<u8>, HandshakeError> {
        let r = &self.request;
        let mut out = Vec::with_capacity(256);
        if r.target.bytes().any(|b| b <= b' ' || b == 0x7F) || !r.target.starts_with('/') {
            return Err(HandshakeError::InvalidHeaderToSend("request target".into()));
        }
        out.extend_from_slice(format!("GET {} HTTP/1.1\r\n", r.target).as_bytes());
        write_header(&mut out, "Host", &r.host)?;
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        write_header(&mut out, "Sec-WebSocket-Key", &self.key)?;
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        if !r.protocols.is_empty() {
            if let Some(bad) = r.protocols.iter().find(|p| !is_token(p.as_bytes())) {
                return Err(HandshakeError::InvalidHeaderToSend(format!("Sec-WebSocket-Protocol {bad}")));
            }
            // RFC 6455 §4.1 item 10: the offered values MUST all be unique.
            let mut seen = r.protocols.iter().enumerate();
            if let Some(dup) = seen.find_map(|(i, p)| r.protocols[..i].contains(p).then_some(p)) {
                return Err(HandshakeError::InvalidHeaderToSend(format!(
                    "Sec-WebSocket-Protocol {dup} (offered twice)"
                )));
            }
            write_header(&mut out, "Sec-WebSocket-Protocol", &r.protocols.join(", "))?;
        }
        #[cfg(feature = "deflate")]
        if let Some(config) = &r.deflate {
            // RFC 7692 §5: one offer; §7.1 parameters.
            write_header(&mut out, "Sec-WebSocket-Extensions", &super::deflate::offer(config))?;
        }
        for (name, value) in &r.headers {
            write_header(&mut out, name, value)?;
        }
        out.extend_from_slice(b"\r\n");
        Ok(out)
    }

    /// Looks at everything received so far. `Ok(None)`: not complete yet.
    /// `Ok(Some((response, n)))`: the response took the first `n` bytes; the
    /// rest are the first WebSocket bytes.
    pub fn parse_response(&mut self, buf: &[u8]) -> Result<Option<(Response, usize)>, HandshakeError> {
        let Some(end) = self.scanner.find_end(buf, &self.limits)? else {
            return Ok(None);
        };
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut parsed = httparse::Response::new(&mut slots);
        if parsed.parse(&buf[..end]).map_err(parse_error)?.is_partial() {
            return Err(HandshakeError::MalformedHttp(httparse::Error::NewLine));
        }
        // RFC 6455 §4.1: anything but 101 ends the handshake.
        let status = parsed.code.unwrap_or(0);
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus(status));
        }
        // RFC 6455 §4.1: any departure from §4.2.2 fails the handshake, and
        // §4.2.2 step 5 item 1 wants the status line of an HTTP/1.1 101 (RFC 2616
        // §10.1.2, §14.42: Upgrade and 101 are HTTP/1.1's). httparse reads
        // `HTTP/1.0` as version 0 and refuses every other version.
        if parsed.version != Some(1) {
            return Err(HandshakeError::HttpVersion);
        }
        let headers = own_headers(parsed.headers);
        let protocol = self.check_response(&headers)?;
        #[cfg(feature = "deflate")]
        let deflate = self.check_extensions(&headers)?;
        #[cfg(not(feature = "deflate"))]
        self.check_extensions(&headers)?;
        Ok(Some((
            Response {
                headers,
                protocol,
                #[cfg(feature = "deflate")]
                deflate,
            },
            end,
        )))
    }

    /// RFC 6455 §4.1 response item 5, §9.1: every extension in the answer
    /// must be one we offered; RFC 7692 §5: permessage-deflate at most once,
    /// with parameters we can honour.
    #[cfg(feature = "deflate")]
    fn check_extensions(
        &self,
        headers: &[(String, Vec<u8>)],
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        use super::deflate::{check_answer, PERMESSAGE_DEFLATE};
        use super::ExtensionError;
        let mut answer = None;
        for extension in parse_answer(headers)? {
            let offered = self.request.deflate.as_ref();
            let config = match offered {
                Some(config) if extension.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) => config,
                _ => return Err(HandshakeError::UnofferedExtension(extension.name)),
            };
            if answer.is_some() {
                return Err(HandshakeError::InvalidExtension(ExtensionError::Duplicate));
            }
            answer = Some(check_answer(&extension, config).map_err(HandshakeError::InvalidExtension)?);
        }
        Ok(answer)
    }

    /// Without the `deflate` feature nothing is offered, so any extension
    /// in the answer fails the handshake (RFC 6455 §4.1 response item 5).
    #[cfg(not(feature = "deflate"))]
    fn check_extensions(&self, headers: &[(String, Vec<u8>)]) -> Result<(), HandshakeError> {
        match parse_answer(headers)?.into_iter().next() {
            Some(extension) => Err(HandshakeError::UnofferedExtension(extension.name)),
            None => Ok(()),
        }
    }

    fn check_response(&self, headers: &[(String, Vec<u8>)]) -> Result<Option<String>, HandshakeError> {
        // RFC 6455 §4.1 response item 2: Upgrade is "websocket", case-insensitively.
        if !any_has_token(headers, "Upgrade", "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        // RFC 6455 §4.1 response item 3: Connection lists "Upgrade".
        if !any_has_token(headers, "Connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // RFC 6455 §4.1 response item 4: the accept value matches our key.
        let accept = single(headers, "Sec-WebSocket-Accept").map_err(|_| HandshakeError::InvalidAccept)?;
        if accept.map(<[u8]>::trim_ascii) != Some(accept_key(&self.key).as_bytes()) {
            return Err(HandshakeError::InvalidAccept);
        }
        // RFC 6455 §4.1 response item 6: at most one subprotocol, one we offered.
        let mut fields = values(headers, "Sec-WebSocket-Protocol").peekable();
        if fields.peek().is_none() {
            return Ok(None);
        }
        // §4.2.2 step 5 item 5: the field, when sent, names one token; an empty
        // one is a departure from §4.2.2, which §4.1 fails.
        let mut chosen = fields.flat_map(list_items);
        let Some(protocol) = chosen.next() else {
            return Err(HandshakeError::InvalidProtocolHeader);
        };
        let protocol = String::from_utf8_lossy(protocol).into_owned();
        if chosen.next().is_some() || !self.request.protocols.contains(&protocol) {
            return Err(HandshakeError::UnofferedProtocol(protocol));
        }
        Ok(Some(protocol))
    }
}

/// Every element of the answer's Sec-WebSocket-Extensions fields.
fn parse_answer(headers: &[(String, Vec<u8>)]) -> Result<Vec<super::Extension>, HandshakeError> {
    let mut extensions = Vec::new();
    for value in values(headers, "Sec-WebSocket-Extensions") {
        parse_extensions(value, &mut extensions).map_err(HandshakeError::InvalidExtension)?;
    }
    Ok(extensions)
}
