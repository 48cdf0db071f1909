//! Feeds an arbitrary server response to `ClientHandshake::parse_response`
//! (fixed key, offering "chat" and "superchat"), as a buffer growing by
//! input-chosen chunks, and checks:
//! - no panic;
//! - the result is the same as parsing the whole input at once;
//! - `Ok(Some((response, n)))`: `n` is exactly the end of the first empty
//!   line (found independently), where httparse ends the head too; the
//!   status line says 101; the accept value is the one our key requires;
//!   the subprotocol is one we offered;
//! - `Ok(None)` only while no empty line is within the head limit.
//!
//! Input layout: `flags, head_limit: u16le, max_headers, plan..., response`.
//! flags bit 0: use `head_limit` and `max_headers` instead of the defaults.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::handshake::{
    accept_key, ClientHandshake, ClientRequest, HandshakeError, HandshakeLimits, Response,
};
use sabai_fuzz::{encode_base64, head_end, take_plan, Chunks};

/// The client's fixed nonce; its Sec-WebSocket-Key is "c2FiYWkgZnV6eiBub25jZQ==".
const KEY: [u8; 16] = *b"sabai fuzz nonce";
const OFFERED: [&str; 2] = ["chat", "superchat"];

type Parsed = Result<Option<(Response, usize)>, HandshakeError>;

fn handshake(limits: &HandshakeLimits) -> ClientHandshake {
    let mut request = ClientRequest::new("example.com", "/chat");
    for p in OFFERED {
        request = request.protocol(p);
    }
    ClientHandshake::new(request, KEY).with_limits(limits.clone())
}

fn parse_growing<'a>(limits: &HandshakeLimits, chunks: impl Iterator<Item = &'a [u8]>) -> Parsed {
    let mut client = handshake(limits);
    let mut buf = Vec::new();
    let mut last = Ok(None);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        last = client.parse_response(&buf);
        if !matches!(last, Ok(None)) {
            break;
        }
    }
    last
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let mut limits = HandshakeLimits::default();
    if input[0] & 1 != 0 {
        limits.max_head_bytes = u16::from_le_bytes([input[1], input[2]]) as usize;
        limits.max_headers = (input[3] % 80) as usize;
    }
    let Some((plan, data)) = take_plan(&input[4..]) else {
        return;
    };

    let chunked = parse_growing(&limits, Chunks::new(data, plan));
    let whole = parse_growing(&limits, std::iter::once(data));
    assert_eq!(chunked, whole, "chunked and one-piece parses differ");

    match whole {
        Ok(Some((response, used))) => {
            assert!(used <= data.len());
            assert_eq!(Some(used), head_end(data, limits.max_head_bytes), "head length");
            let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
            let status = httparse::Response::new(&mut slots).parse(&data[..used]);
            assert!(matches!(status, Ok(httparse::Status::Complete(n)) if n == used), "httparse: {status:?}");
            let head = &data[..used];
            let status_line = head.split(|&b| b == b'\n').find(|l| !l.is_empty() && *l != b"\r").unwrap();
            assert!(
                // RFC 6455 §4.2.2 step 5 item 1: HTTP/1.0 101 is refused.
                status_line.starts_with(b"HTTP/1.1 101"),
                "accepted status line {:?}",
                String::from_utf8_lossy(status_line)
            );
            let expected = accept_key(&encode_base64(&KEY));
            assert_eq!(response.header("Sec-WebSocket-Accept").map(str::trim), Some(expected.as_str()));
            if let Some(p) = response.protocol() {
                assert!(OFFERED.contains(&p), "accepted unoffered subprotocol {p:?}");
            }
        }
        Ok(None) => {
            assert_eq!(head_end(data, limits.max_head_bytes), None, "a complete head was not parsed");
            assert!(data.len() < limits.max_head_bytes, "Ok(None) past the head limit");
        }
        Err(error) => {
            // The message renders, and a client-side error has a status too.
            let _ = error.to_string();
            let _ = error.status();
        }
    }
});
