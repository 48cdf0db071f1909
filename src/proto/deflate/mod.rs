//! permessage-deflate (RFC 7692 §7), the transform between frames and
//! messages: [`Compressor`] turns an outgoing message into the payload of a
//! compressed message, [`Inflater`] turns a compressed message back, never
//! producing more than the message size limit.
//!
//! Negotiation lives in [`handshake`](crate::handshake); its result,
//! [`DeflateParams`], is handed to
//! [`Connection::with_deflate`](crate::Connection::with_deflate).

mod compress;
mod inflate;

pub(crate) use compress::{compress_alone, Compressor};
pub(crate) use inflate::Inflater;

use super::role::Role;

/// RFC 7692 §7.2.1: the empty stored block a sync flush ends with, which the
/// sender removes and the receiver appends.
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// RFC 7692 §7: the registered extension name.
pub(crate) const EXTENSION_NAME: &str = "permessage-deflate";

/// The largest LZ77 window, 32 KiB (RFC 7692 §7.2.1).
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window the parameters can name, 256 bytes (RFC 7692 §7.1.2).
pub const MIN_WINDOW_BITS: u8 = 8;

/// What this endpoint offers (client) or insists on (server) for
/// permessage-deflate. Set it as [`Config::deflate`](crate::Config::deflate).
///
/// ```
/// let mut config = sabai::Config::default();
/// let mut deflate = sabai::DeflateConfig::default();
/// deflate.server_no_context_takeover = true; // no window kept between messages
/// config.deflate = Some(deflate);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Messages shorter than this many bytes are sent uncompressed (RSV1
    /// clear, RFC 7692 §6): compressing them costs more than it saves.
    pub threshold: usize,
    /// DEFLATE level, 0 (store) to 9 (smallest); default 6.
    pub level: u32,
    /// The server starts every message with an empty window (RFC 7692
    /// §7.1.1.1). A client asks for it in its offer; a server always answers
    /// with it.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty window (RFC 7692
    /// §7.1.1.2). A client offers it as a hint; a server requires it.
    pub client_no_context_takeover: bool,
    /// Largest window the server may compress with, 8–15 (RFC 7692
    /// §7.1.2.1). A client asks for it; a server answers with at most it.
    pub server_max_window_bits: Option<u8>,
    /// Largest window the client may compress with, 8–15 (RFC 7692
    /// §7.1.2.2). A client offers it as a hint; a server answers with at most
    /// it when the offer allows.
    pub client_max_window_bits: Option<u8>,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            threshold: 32,
            level: 6,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
        }
    }
}

/// The agreed parameters: exactly what the server's answer said (RFC 7692
/// §5). A window size of `None` was not named and means 15 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server starts every message it compresses with an empty window (§7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client starts every message it compresses with an empty window (§7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The server's window is at most 2^bits bytes, 8 to 15 (§7.1.2.1).
    pub server_max_window_bits: Option<u8>,
    /// The client's window is at most 2^bits bytes, 8 to 15 (§7.1.2.2).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value that states these parameters.
    pub fn header_value(&self) -> String {
        extension_header(
            self.server_no_context_takeover,
            self.client_no_context_takeover,
            self.server_max_window_bits,
            self.client_max_window_bits.map(Some),
        )
    }

    /// How `role` compresses what it sends: (no context takeover, window bits).
    /// RFC 7692 §7: "client_" parameters bind the client's compressor,
    /// "server_" ones the server's.
    pub(crate) fn sending(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.server_no_context_takeover, self.server_max_window_bits.unwrap_or(15)),
            Role::Client => (self.client_no_context_takeover, self.client_max_window_bits.unwrap_or(15)),
        }
    }

    /// Whether the peer of `role` starts each message with an empty window.
    pub(crate) fn peer_resets(&self, role: Role) -> bool {
        match role {
            Role::Server => self.client_no_context_takeover,
            Role::Client => self.server_no_context_takeover,
        }
    }
}

/// A permessage-deflate element for `Sec-WebSocket-Extensions` (RFC 7692
/// §7.1): the name, then each parameter that is set. A window of
/// `Some(None)` is `client_max_window_bits` without a value, which only an
/// offer may carry (§7.1.2.2). The one writer of the header, for the
/// client's offer and the server's answer alike.
pub(crate) fn extension_header(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<Option<u8>>,
) -> String {
    let mut out = String::from(EXTENSION_NAME);
    if server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = server_max_window_bits {
        out.push_str(&format!("; server_max_window_bits={bits}"));
    }
    match client_max_window_bits {
        Some(Some(bits)) => out.push_str(&format!("; client_max_window_bits={bits}")),
        Some(None) => out.push_str("; client_max_window_bits"),
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_value_names_only_what_was_agreed() {
        assert_eq!(DeflateParams::default().header_value(), "permessage-deflate");
        let all = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(8),
        };
        assert_eq!(
            all.header_value(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=8"
        );
        assert_eq!(all.sending(Role::Server), (true, 10));
        assert_eq!(all.sending(Role::Client), (true, 8));
    }
}
