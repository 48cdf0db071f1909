//! Errors of the opening handshake, and the HTTP responses they render.

use std::borrow::Cow;
use std::fmt;

/// Why an opening handshake failed (RFC 6455 §4).
///
/// On the server, [`status`](Self::status) is the HTTP status to answer with
/// and [`response`](Self::response) renders the whole rejection. On the
/// client, the error says what was wrong with the server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// RFC 6455 §10.4: the head is longer than the configured limit (431).
    HeadTooLarge,
    /// RFC 6455 §10.4: more header fields than the configured limit (431).
    TooManyHeaders,
    /// The head is not valid HTTP/1.1 (400).
    MalformedHttp(httparse::Error),
    /// RFC 6455 §4.2.1 item 1: the method must be GET (405).
    MethodNotGet,
    /// RFC 6455 §4.2.1 item 1: HTTP/1.1 or higher (400). On the client:
    /// a 101 whose status line is not HTTP/1.1 (RFC 6455 §4.1, §4.2.2).
    HttpVersion,
    /// RFC 6455 §4.2.1 item 2: no Host field (400).
    MissingHost,
    /// A field that may appear once appeared more than once (400).
    DuplicateHeader(&'static str),
    /// RFC 6455 §4.2.1 item 3, §4.1: no `Upgrade: websocket` (400).
    MissingUpgrade,
    /// RFC 6455 §4.2.1 item 4, §4.1: no `Upgrade` token in Connection (400).
    MissingConnectionUpgrade,
    /// RFC 6455 §4.2.1 item 5: no Sec-WebSocket-Key (400).
    MissingKey,
    /// RFC 6455 §4.2.1 item 5: the key is not base64 of 16 bytes (400).
    InvalidKey,
    /// RFC 6455 §4.2.1 item 6, §4.4: the version is missing or not 13
    /// (426, with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// RFC 6455 §4.1: a Sec-WebSocket-Protocol value that is not a list of
    /// tokens (400). On the client: an empty one in the 101 (§4.2.2).
    InvalidProtocolHeader,
    /// The application refused the request with this status (its hook
    /// returned a [`Reject`](super::Reject)).
    Rejected(u16),
    /// The application chose a subprotocol the client did not offer
    /// (RFC 6455 §4.2.2 item 5): a server-side bug (500).
    ProtocolNotOffered(String),
    /// A header the application added would break the response head (500).
    InvalidHeaderToSend(String),
    /// RFC 6455 §4.1: the server answered with a status other than 101.
    UnexpectedStatus(u16),
    /// RFC 6455 §4.1: Sec-WebSocket-Accept is missing or wrong.
    InvalidAccept,
    /// RFC 6455 §4.1: the server chose a subprotocol we did not offer.
    UnofferedProtocol(String),
    /// RFC 6455 §4.1: the server named extensions we did not offer.
    UnofferedExtension(String),
    /// RFC 6455 §9.1, RFC 7692 §5: a Sec-WebSocket-Extensions header that
    /// does not parse (400), or an answer accepting an extension in a way
    /// we cannot use (the client fails the connection).
    InvalidExtension(super::ExtensionError),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::MethodNotGet => 405,
            HandshakeError::UnsupportedVersion => 426,
            // Only an error status can refuse a handshake; anything else
            // would read as success (the same clamp as `Reject::response`).
            HandshakeError::Rejected(status) if (400..=599).contains(status) => *status,
            HandshakeError::Rejected(_) => 500,
            HandshakeError::ProtocolNotOffered(_) | HandshakeError::InvalidHeaderToSend(_) => 500,
            _ => 400,
        }
    }

    /// The complete HTTP response refusing the handshake; the connection is
    /// closed after it.
    pub fn response(&self) -> Vec<u8> {
        self.refusal().to_bytes()
    }

    /// The response refusing the handshake, before it is rendered.
    pub(crate) fn refusal(&self) -> Refusal<'static> {
        let headers: &[(&str, &str)] = match self {
            // RFC 6455 §4.4: name the versions we support.
            HandshakeError::UnsupportedVersion => {
                &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")]
            }
            HandshakeError::MethodNotGet => &[("Allow", "GET")],
            _ => &[],
        };
        Refusal { status: self.status(), headers: headers.to_vec(), body: Cow::Owned(format!("{self}\n")) }
    }
}

/// A response refusing a handshake, before it is rendered: its status, the
/// header fields beyond [`Refusal::COMMON`] and a plain-text body. Written
/// as bytes on a raw transport ([`to_bytes`](Self::to_bytes)), or handed
/// to an HTTP library as they are (feature `hyper`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal<'a> {
    pub(crate) status: u16,
    /// Checked: none would break a head.
    pub(crate) headers: Vec<(&'a str, &'a str)>,
    pub(crate) body: Cow<'a, str>,
}

impl Refusal<'_> {
    /// The fields every refusal has (besides Content-Length): the
    /// connection closes after it, and the body is text.
    pub(crate) const COMMON: [(&'static str, &'static str); 2] =
        [("Connection", "close"), ("Content-Type", "text/plain; charset=utf-8")];

    /// The HTTP/1.1 response.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        let length = self.body.len().to_string();
        let common = Self::COMMON.into_iter().chain([("Content-Length", length.as_str())]);
        for (name, value) in common.chain(self.headers.iter().copied()) {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::HeadTooLarge => f.write_str("handshake head too large"),
            HandshakeError::TooManyHeaders => f.write_str("too many header fields in handshake"),
            HandshakeError::MalformedHttp(e) => write!(f, "malformed HTTP in handshake: {e}"),
            HandshakeError::MethodNotGet => f.write_str("WebSocket handshake must use GET (RFC 6455 §4.2.1)"),
            HandshakeError::HttpVersion => {
                f.write_str("WebSocket handshake needs HTTP/1.1 (RFC 6455 §4.1, §4.2.1)")
            }
            HandshakeError::MissingHost => f.write_str("missing Host header (RFC 6455 §4.2.1)"),
            HandshakeError::DuplicateHeader(name) => write!(f, "header {name} appears more than once"),
            HandshakeError::MissingUpgrade => f.write_str("missing 'Upgrade: websocket' (RFC 6455 §4)"),
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("Connection header lacks the 'Upgrade' token (RFC 6455 §4)")
            }
            HandshakeError::MissingKey => f.write_str("missing Sec-WebSocket-Key (RFC 6455 §4.2.1)"),
            HandshakeError::InvalidKey => {
                f.write_str("Sec-WebSocket-Key is not base64 of 16 bytes (RFC 6455 §4.2.1)")
            }
            HandshakeError::UnsupportedVersion => {
                f.write_str("Sec-WebSocket-Version must be 13 (RFC 6455 §4.4)")
            }
            HandshakeError::InvalidProtocolHeader => {
                f.write_str("Sec-WebSocket-Protocol is not a list of tokens (RFC 6455 §4.1)")
            }
            HandshakeError::Rejected(status) => write!(f, "handshake rejected with status {status}"),
            HandshakeError::ProtocolNotOffered(p) => {
                write!(f, "subprotocol {p:?} chosen but not offered by the client")
            }
            HandshakeError::InvalidHeaderToSend(name) => write!(f, "invalid response header {name:?}"),
            HandshakeError::UnexpectedStatus(status) => {
                write!(f, "server answered {status} instead of 101 (RFC 6455 §4.1)")
            }
            HandshakeError::InvalidAccept => {
                f.write_str("missing or wrong Sec-WebSocket-Accept (RFC 6455 §4.1)")
            }
            HandshakeError::UnofferedProtocol(p) => {
                write!(f, "server chose subprotocol {p:?}, which was not offered (RFC 6455 §4.1)")
            }
            HandshakeError::UnofferedExtension(e) => {
                write!(f, "server named extension {e:?}, which was not offered (RFC 6455 §4.1)")
            }
            HandshakeError::InvalidExtension(e) => write!(f, "Sec-WebSocket-Extensions: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}
