//! Reading an HTTP/1.1 head (request or response line plus header fields)
//! that arrives in pieces, and the header helpers both sides share.

use super::error::HandshakeError;

/// Limits on the opening handshake (RFC 6455 §10.4: implementations should
/// bound what a peer can make them buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeLimits {
    /// Bytes in the head, up to and including the blank line. Over it: 431.
    pub max_head_bytes: usize,
    /// Header fields in the head. Over it: 431.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        // Browsers send 10-20 fields; cookies can make a head a few KiB.
        HandshakeLimits { max_head_bytes: 16 * 1024, max_headers: 64 }
    }
}

/// Finds where a head ends in a buffer that grows between calls. Each byte
/// is looked at a bounded number of times, so a head dribbled in one byte at
/// a time costs linear time; only a complete head is handed to httparse.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadScanner {
    /// Bytes already searched without finding the end.
    scanned: usize,
}

impl HeadScanner {
    /// The length of the head, blank line included, once `buf` holds it all.
    /// Fails with 431 once the head is longer than the limit.
    pub(crate) fn find_end(
        &mut self,
        buf: &[u8],
        limits: &HandshakeLimits,
    ) -> Result<Option<usize>, HandshakeError> {
        // Re-check the last two bytes: the blank line may straddle the boundary.
        // A caller that hands in a shorter buffer gets a rescan, not a panic.
        if buf.len() < self.scanned {
            self.scanned = 0;
        }
        let end = buf.len().min(limits.max_head_bytes);
        let from = self.scanned.saturating_sub(2).min(end);
        let window = &buf[from..end];
        for (i, _) in window.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            // A line feed followed by an empty line: "\n\n" or "\n\r\n".
            // httparse accepts bare LF line ends too (RFC 9112 §2.2).
            match &window[i + 1..] {
                [b'\n', ..] => return Ok(Some(from + i + 2)),
                [b'\r', b'\n', ..] => return Ok(Some(from + i + 3)),
                _ => {}
            }
        }
        if buf.len() >= limits.max_head_bytes {
            return Err(HandshakeError::HeadTooLarge);
        }
        self.scanned = buf.len();
        Ok(None)
    }
}

/// Whether a comma-separated header value lists `token`, compared ASCII
/// case-insensitively (RFC 9110 §5.6.1 lists, §7.8 Upgrade, §7.6.1 Connection).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// The non-empty items of a comma-separated list, with optional whitespace
/// trimmed. Linear in the length of the value.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|item| item.trim_ascii()).filter(|item| !item.is_empty())
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// All values of a header field, in order (names compare case-insensitively).
pub(crate) fn values<'a, 'n>(
    headers: &'a [(String, Vec<u8>)],
    name: &'n str,
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// Whether any value of a list-valued header field lists `token`. A field
/// sent several times is one list (RFC 9110 §5.3).
pub(crate) fn any_has_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    values(headers, name).any(|v| has_token(v, token))
}

/// The single value of a field that must appear at most once: `Ok(None)`
/// when absent, an error when repeated.
pub(crate) fn single<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'static str,
) -> Result<Option<&'a [u8]>, HandshakeError> {
    let mut found = values(headers, name);
    let first = found.next();
    if found.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(name));
    }
    Ok(first)
}

/// Copies httparse's borrowed fields into owned pairs.
pub(crate) fn own_headers(parsed: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    parsed.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect()
}

/// Renders `name: value\r\n`, refusing what would break the head
/// (header injection through CR, LF or NUL, or a name that is not a token).
pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), HandshakeError> {
    check_header(name, value)?;
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Refuses a header field to send that would break the head: a name that
/// is not a token, or a value with a control byte (header injection
/// through CR, LF or NUL).
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), HandshakeError> {
    // RFC 9110 §5.5: a field value is visible characters, spaces and tabs;
    // any other control byte could split or smuggle a header.
    let bad_byte = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if !is_token(name.as_bytes()) || value.bytes().any(bad_byte) {
        return Err(HandshakeError::InvalidHeaderToSend(name.to_owned()));
    }
    Ok(())
}

/// Maps httparse's errors: a full header array means too many fields (431).
pub(crate) fn parse_error(error: httparse::Error) -> HandshakeError {
    match error {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        other => HandshakeError::MalformedHttp(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_blank_line_across_pieces() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let limits = HandshakeLimits::default();
        for cut in 0..head.len() {
            let mut scanner = HeadScanner::default();
            let first = scanner.find_end(&head[..cut], &limits).unwrap();
            let end = first.or_else(|| scanner.find_end(head, &limits).unwrap());
            assert_eq!(end, Some(head.len() - 4), "cut {cut}");
        }
    }

    #[test]
    fn accepts_bare_line_feeds() {
        let mut scanner = HeadScanner::default();
        assert_eq!(
            scanner.find_end(b"GET / HTTP/1.1\nHost: x\n\n", &HandshakeLimits::default()),
            Ok(Some(24))
        );
    }

    #[test]
    fn refuses_a_head_over_the_limit() {
        let limits = HandshakeLimits { max_head_bytes: 32, max_headers: 4 };
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.find_end(&[b'a'; 31], &limits), Ok(None));
        assert_eq!(scanner.find_end(&[b'a'; 32], &limits), Err(HandshakeError::HeadTooLarge));
        // The end is found only within the limit.
        let mut long = vec![b'a'; 40];
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(HeadScanner::default().find_end(&long, &limits), Err(HandshakeError::HeadTooLarge));
    }

    #[test]
    fn token_lists() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b" ,, websocket ,", "websocket"));
        assert!(!has_token(b"upgraded", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
        assert!(is_token(b"chat.v2"));
        assert!(!is_token(b"chat v2") && !is_token(b"") && !is_token(b"a\"b"));
    }

    #[test]
    fn header_injection_is_refused() {
        let mut out = Vec::new();
        assert!(write_header(&mut out, "X-Ok", "fine").is_ok());
        assert!(write_header(&mut out, "X-Bad", "a\r\nSet-Cookie: x").is_err());
        assert!(write_header(&mut out, "Bad Name", "v").is_err());
        // Every control byte but HTAB, and DEL, is refused too.
        for b in (0u8..0x20).chain([0x7f]).filter(|&b| b != b'\t') {
            let value = format!("a{}b", b as char);
            assert!(write_header(&mut out, "X-Ctl", &value).is_err(), "byte {b:#x}");
        }
        assert!(write_header(&mut out, "X-Tab", "a\tb").is_ok());
        assert_eq!(out, b"X-Ok: fine\r\nX-Tab: a\tb\r\n");
    }

    #[test]
    fn a_shorter_buffer_is_rescanned_not_a_panic() {
        let limits = HandshakeLimits::default();
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.find_end(b"GET / HTTP/1.1\r\nHost: x\r\n", &limits), Ok(None));
        assert_eq!(scanner.find_end(b"\r\n\r\n", &limits), Ok(Some(4)));
    }
}
