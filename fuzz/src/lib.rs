//! Helpers shared by the fuzz targets: how an input chooses its chunking,
//! and small independent oracles (head end, base64, a reference model of the
//! receiving side of RFC 6455) written here from the RFC, not from sabai.

pub mod model;

/// Reads a chunk plan from the front of `input`: one byte `n` (its low three
/// bits, plus one, give the number of size bytes), then the size bytes.
/// Returns the size bytes and the rest of the input.
pub fn take_plan(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = input.split_first()?;
    let n = 1 + (n & 7) as usize;
    if rest.len() < n {
        return None;
    }
    Some(rest.split_at(n))
}

/// The size one plan byte stands for: 0 is an empty chunk, 1..=0xEF that
/// many bytes, 0xF0..=0xFF a power of two from 256 up (a "large read").
pub fn chunk_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 256 << (b - 0xF0),
        _ => b as usize,
    }
}

/// Splits `data` into chunks whose sizes cycle through the plan. Empty chunks
/// are produced too (a read of nothing), but a plan of only empty chunks
/// reads one byte at a time so the split always ends.
pub struct Chunks<'a> {
    data: &'a [u8],
    plan: &'a [u8],
    next: usize,
    all_empty: bool,
    done: bool,
}

impl<'a> Chunks<'a> {
    pub fn new(data: &'a [u8], plan: &'a [u8]) -> Self {
        let all_empty = plan.iter().all(|&b| chunk_len(b) == 0);
        Chunks { data, plan, next: 0, all_empty, done: false }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        if self.data.is_empty() {
            // Always hand out at least one chunk (possibly empty), then stop.
            self.done = true;
            return if self.next == 0 { Some(self.data) } else { None };
        }
        let want = if self.all_empty || self.plan.is_empty() {
            1
        } else {
            chunk_len(self.plan[self.next % self.plan.len()])
        };
        self.next += 1;
        let (chunk, rest) = self.data.split_at(want.min(self.data.len()));
        self.data = rest;
        Some(chunk)
    }
}

/// Where an HTTP/1.1 head ends (just past the first empty line, accepting
/// bare LF line ends as httparse does), looking only at the first `limit`
/// bytes. Written independently of sabai's scanner.
pub fn head_end(buf: &[u8], limit: usize) -> Option<usize> {
    let buf = &buf[..buf.len().min(limit)];
    (0..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        if buf.get(i + 1) == Some(&b'\n') {
            Some(i + 2)
        } else if buf.get(i + 1..i + 3) == Some(b"\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// Strict standard base64 (RFC 4648 §4, with padding, no whitespace, zero
/// trailing bits) decoding of exactly 16 bytes, as a Sec-WebSocket-Key is.
pub fn decode_key(key: &[u8]) -> Option<[u8; 16]> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    // 16 bytes: 5 full groups of 3 bytes (20 chars) + 1 byte (2 chars + "==").
    if key.len() != 24 || &key[22..] != b"==" {
        return None;
    }
    let mut out = [0u8; 16];
    for g in 0..5 {
        let mut n = 0u32;
        for c in &key[g * 4..g * 4 + 4] {
            n = (n << 6) | value(*c)?;
        }
        out[g * 3..g * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let (a, b) = (value(key[20])?, value(key[21])?);
    if b & 0xF != 0 {
        return None; // non-zero trailing bits: not canonical
    }
    out[15] = ((a << 2) | (b >> 4)) as u8;
    Some(out)
}

/// Standard base64 encoding (with padding), for the round trip checks.
pub fn encode_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let mut n = 0u32;
        for (i, b) in group.iter().enumerate() {
            n |= (*b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Checks an HTTP error response as sabai renders it: a 4xx or 5xx status
/// line, a head ending in an empty line, and a Content-Length that matches
/// the body.
pub fn check_error_response(response: &[u8]) {
    assert!(
        response.starts_with(b"HTTP/1.1 4") || response.starts_with(b"HTTP/1.1 5"),
        "error response does not start with a 4xx/5xx status line: {:?}",
        String::from_utf8_lossy(response)
    );
    let split =
        response.windows(4).position(|w| w == b"\r\n\r\n").expect("error response has no end of head");
    let (head, body) = (&response[..split], &response[split + 4..]);
    let head = std::str::from_utf8(head).expect("error response head is not UTF-8");
    let length = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("error response has no Content-Length");
    assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "Content-Length does not match the body");
    assert!(!head.contains('\n') || head.split("\r\n").all(|l| !l.contains('\n') && !l.contains('\r')));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(decode_key(b"dGhlIHNhbXBsZSBub25jZQ=="), Some(*b"the sample nonce"));
        assert_eq!(encode_base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(decode_key(b"dGhlIHNhbXBsZSBub25jZR=="), None);
    }

    #[test]
    fn head_end_finds_first_blank_line() {
        assert_eq!(head_end(b"a\r\n\r\nb", 100), Some(5));
        assert_eq!(head_end(b"a\n\nb", 100), Some(3));
        assert_eq!(head_end(b"a\r\n\r\n", 4), None);
    }
}
