//! Close codes and Close frames (RFC 6455 §5.5.1, §7.4). A received Close
//! payload is read in `receive` (`read_close`), with the other rules on
//! received frames.

use std::fmt;

/// A close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no code was present. Reported locally, never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection ended without a Close frame. Never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (bad UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether a Close frame may carry this code, on the wire in either
    /// direction: 1000–1003 and 1007–1014 (RFC 6455 §7.4.1 and the IANA
    /// registry), 3000–4999 (§7.4.2: libraries, frameworks, applications).
    /// 1004–1006 and 1015 are reserved or local-only (§7.4.1), 0–999 and
    /// 1016–2999 are not in use (§7.4.2), 5000+ is not defined.
    pub fn is_valid(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest reason a Close frame can carry: a control frame payload is at
/// most 125 bytes (RFC 6455 §5.5), two of which are the code.
pub const MAX_CLOSE_REASON: usize = 123;

/// The longest prefix of `reason` that fits a Close frame
/// ([`MAX_CLOSE_REASON`] bytes), cut on a character boundary.
pub(crate) fn fit_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A Close frame's code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (RFC 6455 §7.4).
    pub code: CloseCode,
    /// The reason: UTF-8, at most [`MAX_CLOSE_REASON`] bytes (§5.5: a control payload is at most 125 bytes, 2 of them the code).
    pub reason: String,
}

impl CloseFrame {
    /// A Close frame with `code` and `reason`.
    pub fn new(code: impl Into<CloseCode>, reason: impl Into<String>) -> Self {
        CloseFrame { code: code.into(), reason: reason.into() }
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} ({})", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_are_exactly_the_allowed_ranges() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_valid(), expected, "{code}");
        }
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(fit_reason("bye"), "bye");
        // 61 two-byte characters (122 bytes), then one more: 124 bytes.
        assert_eq!(fit_reason(&"é".repeat(62)), "é".repeat(61));
        assert_eq!(fit_reason(&"x".repeat(200)).len(), MAX_CLOSE_REASON);
    }
}
