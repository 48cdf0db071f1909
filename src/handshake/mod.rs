//! The opening handshake (RFC 6455 §4), sans-IO: HTTP/1.1 Upgrade request
//! and response, written and checked by hand.
//!
//! Server: [`ServerHandshake`] reads the request and gives a [`Request`] for
//! the application to [`Accept`] or [`Reject`]. Client: [`ClientHandshake`]
//! writes the request and checks the response. Both report how many bytes
//! the head took: bytes after it are the first WebSocket frames.

mod client;
#[cfg(feature = "deflate")]
pub mod deflate;
mod error;
mod extensions;
mod head;
mod server;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

pub use client::{ClientHandshake, ClientRequest, Response};
pub use error::HandshakeError;
pub use extensions::{parse_extensions, Extension, ExtensionError, Param, MAX_EXTENSIONS, MAX_PARAMS};
pub use head::HandshakeLimits;
pub use server::{Accept, Reject, Request, ServerHandshake};
#[cfg(feature = "hyper")]
pub(crate) use {error::Refusal, server::check_head};

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 item 5.4):
/// base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// RFC 6455 §4.1 item 7: the key is a base64-encoded 16-byte nonce.
pub(crate) fn encode_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// The 16 bytes of a key, or `None` when it is not base64 of 16 bytes
/// (RFC 6455 §4.2.1 item 5).
pub(crate) fn decode_key(key: &[u8]) -> Option<[u8; 16]> {
    // 16 bytes encode to exactly 24 characters: checking first keeps a
    // hostile key from costing more than that.
    if key.len() != 24 {
        return None;
    }
    BASE64.decode(key).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 §1.3 and §4.2.2.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_must_be_16_bytes() {
        assert_eq!(decode_key(b"dGhlIHNhbXBsZSBub25jZQ=="), Some(*b"the sample nonce"));
        assert_eq!(decode_key(b"dGhlIHNhbXBsZSBub25jZQ="), None);
        assert_eq!(decode_key(b"dGhlIHNhbXBsZSBub25jZXg="), None); // 17 bytes' worth of padding mismatch
        assert_eq!(decode_key(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(decode_key(b"!!!!!!!!!!!!!!!!!!!!!!=="), None);
        assert_eq!(encode_key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
