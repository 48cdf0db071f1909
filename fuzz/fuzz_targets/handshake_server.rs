//! Feeds an arbitrary client request to `ServerHandshake::parse`, as a buffer
//! that grows by input-chosen chunks (the documented contract), and checks:
//! - no panic;
//! - the result is the same as parsing the whole input at once;
//! - `Ok(Some((request, n)))`: `n` is exactly the end of the first empty
//!   line (found independently) within the head limit, and where httparse
//!   ends the head too; the key is base64 of
//!   16 bytes; the path and query put together give the URI; the version is
//!   13; `accept_response` works, for no subprotocol and for each offered
//!   one, refuses one not offered; and a `ClientHandshake` with the same key
//!   and protocols accepts that response;
//! - `Ok(None)` only while no empty line is within the limit;
//! - `Err`: `response()` is a well-formed 4xx/5xx HTTP response.
//!
//! Input layout: `flags, head_limit: u16le, max_headers, plan..., request`.
//! flags bit 0: use `head_limit` and `max_headers` instead of the defaults.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::handshake::Request;
use sabai::handshake::{
    Accept, ClientHandshake, ClientRequest, HandshakeError, HandshakeLimits, ServerHandshake,
};
use sabai_fuzz::{check_error_response, decode_key, head_end, take_plan, Chunks};

type Parsed = Result<Option<(Request, usize)>, HandshakeError>;

/// Parses with a buffer that grows by `chunks`, stopping at the first answer.
fn parse_growing<'a>(limits: &HandshakeLimits, chunks: impl Iterator<Item = &'a [u8]>) -> Parsed {
    let mut handshake = ServerHandshake::new(limits.clone());
    let mut buf = Vec::new();
    let mut last = Ok(None);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        last = handshake.parse(&buf);
        if !matches!(last, Ok(None)) {
            break;
        }
    }
    last
}

fn check_request(request: &Request, used: usize, data: &[u8], limits: &HandshakeLimits) {
    assert!(used <= data.len());
    assert_eq!(Some(used), head_end(data, limits.max_head_bytes), "head length");
    // httparse ends the head at the same byte: nothing between is lost.
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let status = httparse::Request::new(&mut slots).parse(&data[..used]);
    assert!(matches!(status, Ok(httparse::Status::Complete(n)) if n == used), "httparse: {status:?}");

    // The URI is the path plus the query.
    match request.query() {
        Some(query) => assert_eq!(request.uri(), format!("{}?{query}", request.path())),
        None => assert_eq!(request.uri(), request.path()),
    }
    assert_eq!(request.header("sec-websocket-version").map(str::trim), Some("13"));
    let key = decode_key(request.key().as_bytes()).expect("accepted key is not base64 of 16 bytes");
    assert_eq!(sabai_fuzz::encode_base64(&key), request.key());
    for protocol in request.protocols() {
        assert!(!protocol.is_empty() && !protocol.contains([',', ' ', '\t']), "protocol {protocol:?}");
    }

    // Accepting, with and without each offered subprotocol, must work, and a
    // client with the same key and offer must accept that answer.
    let host = request.host().unwrap_or("example.com").to_owned();
    let mut choices: Vec<Option<&str>> = vec![None];
    choices.extend(request.protocols().iter().map(|p| Some(p.as_str())));
    for choice in choices.into_iter().take(4) {
        let accept = match choice {
            Some(p) => Accept::new().protocol(p),
            None => Accept::new(),
        };
        let response = request.accept_response(&accept).expect("accept_response failed on a valid request");
        assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.ends_with(b"\r\n\r\n"));
        let mut offer = ClientRequest::new(host.clone(), "/");
        for p in request.protocols() {
            offer = offer.protocol(p.clone());
        }
        let mut client = ClientHandshake::new(offer, key);
        let (answer, n) = client
            .parse_response(&response)
            .expect("client refused the server's 101")
            .expect("client found the 101 incomplete");
        assert_eq!(n, response.len());
        assert_eq!(answer.protocol(), choice);
    }
    // A subprotocol the client did not offer is refused.
    let unoffered = "x-never-offered";
    if !request.protocols().iter().any(|p| p == unoffered) {
        assert!(matches!(
            request.accept_response(&Accept::new().protocol(unoffered)),
            Err(HandshakeError::ProtocolNotOffered(_))
        ));
    }
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
        Ok(Some((request, used))) => check_request(&request, used, data, &limits),
        Ok(None) => {
            assert_eq!(head_end(data, limits.max_head_bytes), None, "a complete head was not parsed");
            // Nothing received is not yet over any limit, even a limit of 0.
            assert!(data.is_empty() || data.len() < limits.max_head_bytes, "Ok(None) past the head limit");
        }
        Err(error) => {
            assert!((400..=599).contains(&error.status()), "status {} for {error:?}", error.status());
            check_error_response(&error.response());
        }
    }
});
