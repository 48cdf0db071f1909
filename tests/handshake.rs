//! The opening handshake (RFC 6455 §4): the sans-IO parsers, every
//! rejection with its HTTP status, and the tokio accept hook over TCP.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use sabai::handshake::{
    accept_key, Accept, ClientHandshake, ClientRequest, HandshakeError, HandshakeLimits, Reject,
    ServerHandshake,
};
use sabai::{Message, WebSocketConfig};
use support::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid request with one header line replaced or removed (`None`).
fn request_with(name: &str, value: Option<&str>) -> Vec<u8> {
    let mut lines = vec![
        ("Host", "server.example.com".to_owned()),
        ("Upgrade", "websocket".to_owned()),
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Key", KEY.to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Origin", "http://example.com".to_owned()),
    ];
    lines.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        lines.push((name, value.to_owned()));
    }
    let mut out = "GET /chat?room=1 HTTP/1.1\r\n".to_owned();
    for (n, v) in lines {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn parse(bytes: &[u8]) -> Result<Option<(sabai::handshake::Request, usize)>, HandshakeError> {
    ServerHandshake::default().parse(bytes)
}

fn status_of(bytes: &[u8]) -> u16 {
    parse(bytes).expect_err("request should be refused").status()
}

#[test]
fn rfc_example_key_gives_rfc_accept_value() {
    // RFC 6455 §1.3.
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let bytes = request_with("Sec-WebSocket-Key", Some(KEY));
    let (request, used) = parse(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let response = String::from_utf8(request.accept_response(&Accept::new()).unwrap()).unwrap();
    assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(response.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(
        response.contains("\r\nUpgrade: websocket\r\n") && response.contains("\r\nConnection: Upgrade\r\n")
    );
    assert!(response.ends_with("\r\n\r\n"));
}

#[test]
fn request_parts_are_exposed_to_the_application() {
    let (request, _) =
        parse(&request_with("Sec-WebSocket-Protocol", Some("chat.v2, chat.v1"))).unwrap().unwrap();
    assert_eq!((request.path(), request.query(), request.uri()), ("/chat", Some("room=1"), "/chat?room=1"));
    assert_eq!(request.origin(), Some("http://example.com"));
    assert_eq!(request.host(), Some("server.example.com"));
    assert_eq!(request.protocols(), ["chat.v2", "chat.v1"]);
    assert_eq!(request.header("sec-websocket-version"), Some("13"));
}

#[test]
fn bytes_after_the_head_are_left_for_the_connection() {
    let mut bytes = request_with("Host", Some("x"));
    let head = bytes.len();
    bytes.extend_from_slice(&Frame::text("early").encode());
    assert_eq!(parse(&bytes).unwrap().unwrap().1, head);
}

#[test]
fn partial_requests_need_more_input_at_every_cut() {
    let bytes = request_with("Host", Some("x"));
    for cut in 0..bytes.len() {
        assert_eq!(parse(&bytes[..cut]), Ok(None), "cut {cut}");
    }
}

#[test]
fn header_values_are_case_insensitive_tokens_in_lists() {
    for (name, value) in [
        ("Upgrade", "WebSocket"),
        ("Upgrade", "h2c, websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Connection", "upgrade"),
    ] {
        assert!(parse(&request_with(name, Some(value))).unwrap().is_some(), "{name}: {value}");
    }
}

#[test]
fn rejects_missing_or_bad_upgrade_with_400() {
    assert_eq!(parse(&request_with("Upgrade", None)), Err(HandshakeError::MissingUpgrade));
    assert_eq!(parse(&request_with("Upgrade", Some("websockets"))), Err(HandshakeError::MissingUpgrade));
    assert_eq!(status_of(&request_with("Upgrade", None)), 400);
}

#[test]
fn rejects_missing_connection_upgrade_with_400() {
    assert_eq!(parse(&request_with("Connection", None)), Err(HandshakeError::MissingConnectionUpgrade));
    let bytes = request_with("Connection", Some("keep-alive"));
    assert_eq!(parse(&bytes), Err(HandshakeError::MissingConnectionUpgrade));
}

#[test]
fn rejects_missing_host_with_400() {
    assert_eq!(parse(&request_with("Host", None)), Err(HandshakeError::MissingHost));
}

#[test]
fn rejects_bad_keys_with_400() {
    assert_eq!(parse(&request_with("Sec-WebSocket-Key", None)), Err(HandshakeError::MissingKey));
    for bad in
        ["", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXh4eA==", "not base64 at all!!!!!!!", "AAAA"]
    {
        assert_eq!(
            parse(&request_with("Sec-WebSocket-Key", Some(bad))),
            Err(HandshakeError::InvalidKey),
            "{bad:?}"
        );
    }
}

#[test]
fn rejects_duplicated_single_headers_with_400() {
    let mut bytes = request_with("Host", Some("x"));
    let dup = format!("Sec-WebSocket-Key: {KEY}\r\n\r\n");
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(dup.as_bytes());
    assert_eq!(parse(&bytes), Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Key")));
}

#[test]
fn rejects_wrong_version_with_426_naming_13() {
    for version in [None, Some("8"), Some("14"), Some("13, 8")] {
        let error = parse(&request_with("Sec-WebSocket-Version", version)).unwrap_err();
        assert_eq!(error, HandshakeError::UnsupportedVersion);
        let response = String::from_utf8(error.response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{response}");
    }
}

#[test]
fn rejects_other_methods_with_405_and_http_1_0_with_400() {
    let bytes = String::from_utf8(request_with("Host", Some("x"))).unwrap();
    let post = bytes.replacen("GET", "POST", 1);
    assert_eq!(status_of(post.as_bytes()), 405);
    assert!(String::from_utf8(HandshakeError::MethodNotGet.response())
        .unwrap()
        .contains("\r\nAllow: GET\r\n"));
    let old = bytes.replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(parse(old.as_bytes()), Err(HandshakeError::HttpVersion));
}

#[test]
fn rejects_too_many_headers_with_431() {
    let mut bytes = request_with("Host", Some("x"));
    bytes.truncate(bytes.len() - 2);
    for i in 0..64 {
        bytes.extend_from_slice(format!("X-Filler-{i}: y\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    assert_eq!(parse(&bytes), Err(HandshakeError::TooManyHeaders));
    assert_eq!(status_of(&bytes), 431);
}

#[test]
fn rejects_oversized_head_with_431_before_it_ends() {
    let mut bytes = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 16 * 1024));
    assert_eq!(parse(&bytes), Err(HandshakeError::HeadTooLarge));
    let mut small = HandshakeLimits::default();
    small.max_head_bytes = 100;
    let error = ServerHandshake::new(small).parse(&request_with("Host", Some("x"))).unwrap_err();
    assert_eq!(error.status(), 431);
}

/// A wss:// client on a ws:// port: its TLS ClientHello (a record of type
/// 0x16) cannot start an HTTP request, and gets its 400 on the first byte
/// instead of after the head limit or the handshake timeout.
#[test]
fn rejects_a_tls_client_hello_on_its_first_byte_with_400() {
    assert_eq!(status_of(&[0x16]), 400);
    assert_eq!(status_of(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), 400);
    assert_eq!(status_of(b" GET / HTTP/1.1"), 400);
    // A method's first letter, or the empty lines RFC 9112 §2.2 lets a
    // request start with, still wait for more.
    for start in [&b"G"[..], b"\r\n", b"\n", b"\r\nGE"] {
        assert_eq!(parse(start), Ok(None), "{start:?}");
    }
    let mut after_empty_line = b"\r\n".to_vec();
    after_empty_line.extend(request_with("Host", Some("x")));
    assert!(parse(&after_empty_line).unwrap().is_some());
}

#[test]
fn rejects_hostile_protocol_lists() {
    let bad = parse(&request_with("Sec-WebSocket-Protocol", Some("chat, \"quoted\"")));
    assert_eq!(bad, Err(HandshakeError::InvalidProtocolHeader));
    // Thousands of tokens and long whitespace runs parse, within the head limit.
    let many = vec!["p"; 4000].join(",");
    let (request, _) = parse(&request_with("Sec-WebSocket-Protocol", Some(&many))).unwrap().unwrap();
    assert_eq!(request.protocols().len(), 4000);
    let spaces = format!("a{}b", " ".repeat(10_000));
    assert_eq!(
        parse(&request_with("Sec-WebSocket-Protocol", Some(&spaces))),
        Err(HandshakeError::InvalidProtocolHeader)
    );
}

#[test]
fn chosen_protocol_must_have_been_offered() {
    let (request, _) = parse(&request_with("Sec-WebSocket-Protocol", Some("chat"))).unwrap().unwrap();
    let ok = String::from_utf8(request.accept_response(&Accept::new().protocol("chat")).unwrap()).unwrap();
    assert!(ok.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
    assert_eq!(
        request.accept_response(&Accept::new().protocol("mqtt")),
        Err(HandshakeError::ProtocolNotOffered("mqtt".into()))
    );
}

#[test]
fn reject_renders_status_headers_and_body() {
    let response =
        Reject::unauthorized().header("WWW-Authenticate", "Bearer").body("token required").response();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n") && text.ends_with("\r\n\r\ntoken required"));
    // A header that would inject a line is dropped, never sent.
    let text = String::from_utf8(Reject::forbidden().header("X", "a\r\nSet-Cookie: x").response()).unwrap();
    assert!(!text.contains("Set-Cookie"));
}

#[test]
fn a_rejection_always_answers_with_an_error_status() {
    // A hook cannot turn a refusal into a success or a redirect by mistake.
    for status in [200, 302, 101, 99, 600] {
        let error = HandshakeError::Rejected(status);
        assert_eq!(error.status(), 500, "{status}");
        let text = String::from_utf8(error.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
    }
    assert_eq!(HandshakeError::Rejected(429).status(), 429);
}

// ----- client -------------------------------------------------------------

fn client() -> ClientHandshake {
    ClientHandshake::new(
        ClientRequest::new("example.com:9001", "/chat").protocol("chat"),
        *b"the sample nonce",
    )
}

fn response_with(extra: &str) -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n")
}

#[test]
fn client_request_is_well_formed() {
    let request = String::from_utf8(client().request_bytes().unwrap()).unwrap();
    assert!(request.starts_with("GET /chat HTTP/1.1\r\n"));
    for line in
        ["Host: example.com:9001", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
    {
        assert!(request.contains(&format!("\r\n{line}\r\n")), "{line}");
    }
    assert!(request.contains(&format!("\r\nSec-WebSocket-Key: {KEY}\r\n")));
    assert!(request.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
    // A server built from our own parser accepts it.
    assert!(parse(request.as_bytes()).unwrap().is_some());
}

#[test]
fn client_accepts_a_correct_response_and_keeps_trailing_bytes() {
    let mut bytes = response_with(
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n",
    )
    .into_bytes();
    let head = bytes.len();
    bytes.extend_from_slice(&Frame::text("hi").unmasked().encode());
    let (response, used) = client().parse_response(&bytes).unwrap().unwrap();
    assert_eq!((response.protocol(), used), (Some("chat"), head));
}

#[test]
fn client_rejects_bad_responses() {
    let good_accept = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
    let cases = [
        (
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned(),
            HandshakeError::UnexpectedStatus(403),
        ),
        (response_with("Sec-WebSocket-Accept: wrong=\r\n"), HandshakeError::InvalidAccept),
        (response_with(""), HandshakeError::InvalidAccept),
        (
            response_with(&format!("{good_accept}Sec-WebSocket-Protocol: mqtt\r\n")),
            HandshakeError::UnofferedProtocol("mqtt".into()),
        ),
        (
            response_with(&format!("{good_accept}Sec-WebSocket-Extensions: permessage-deflate\r\n")),
            HandshakeError::UnofferedExtension("permessage-deflate".into()),
        ),
        (
            format!("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n{good_accept}\r\n"),
            HandshakeError::MissingUpgrade,
        ),
        (
            format!("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n{good_accept}\r\n"),
            HandshakeError::MissingConnectionUpgrade,
        ),
        // RFC 6455 §4.1, §4.2.2 step 5 item 1: the 101 of HTTP/1.1, not of 1.0.
        (
            format!("HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{good_accept}\r\n"),
            HandshakeError::HttpVersion,
        ),
        // §4.2.2 step 5 item 5: a Sec-WebSocket-Protocol field names a token.
        (
            response_with(&format!("{good_accept}Sec-WebSocket-Protocol: \r\n")),
            HandshakeError::InvalidProtocolHeader,
        ),
        // A refusal in HTTP/1.0 still reports its status.
        ("HTTP/1.0 403 Forbidden\r\n\r\n".to_owned(), HandshakeError::UnexpectedStatus(403)),
    ];
    for (response, expected) in cases {
        assert_eq!(client().parse_response(response.as_bytes()), Err(expected), "{response}");
    }
}

// ----- over TCP -------------------------------------------------------------

/// Starts a server whose hook allows one Origin, needs `?token=secret`, and
/// picks "chat.v1" when offered; returns its port. It echoes one message.
fn hooked_server(
    config: WebSocketConfig,
) -> (u16, std::sync::mpsc::Receiver<Result<Option<String>, sabai::Error>>) {
    serve_once(move |stream| async move {
        let result = sabai::accept_with(stream, &config, |request| {
            if request.origin() != Some("http://allowed.example") {
                return Err(Reject::forbidden().body("origin not allowed"));
            }
            if request.query() != Some("token=secret") {
                return Err(Reject::unauthorized());
            }
            let chosen = request.protocols().iter().find(|p| *p == "chat.v1");
            Ok(chosen.map_or_else(Accept::new, |p| Accept::new().protocol(p.as_str())))
        })
        .await;
        match result {
            Ok(mut ws) => {
                let protocol = ws.protocol().map(str::to_owned);
                if let Ok(Some(message)) = ws.recv().await {
                    let _ = ws.send(message).await;
                }
                let _ = ws.close(sabai::CloseCode::NORMAL, "").await;
                Ok(protocol)
            }
            Err(error) => Err(error),
        }
    })
}

fn raw_exchange(port: u16, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") && response.starts_with(b"HTTP/1.1 101") {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn tcp_request(origin: &str, target: &str, protocols: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n{protocols}\r\n"
    )
    .into_bytes()
}

#[test]
fn hook_rejects_disallowed_origin_with_403() {
    let (port, done) = hooked_server(WebSocketConfig::default());
    let response = raw_exchange(port, &tcp_request("http://evil.example", "/?token=secret", ""));
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
    assert!(response.ends_with("origin not allowed"));
    let error = done.recv_timeout(TIMEOUT).unwrap().unwrap_err();
    assert!(matches!(error, sabai::Error::Handshake(HandshakeError::Rejected(403))), "{error}");
}

#[test]
fn hook_rejects_missing_token_with_401() {
    let (port, _) = hooked_server(WebSocketConfig::default());
    let response = raw_exchange(port, &tcp_request("http://allowed.example", "/", ""));
    assert!(response.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{response}");
}

#[test]
fn malformed_request_over_tcp_gets_its_status() {
    let (port, done) = hooked_server(WebSocketConfig::default());
    let response =
        raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
    assert!(matches!(
        done.recv_timeout(TIMEOUT).unwrap(),
        Err(sabai::Error::Handshake(HandshakeError::UnsupportedVersion))
    ));
}

#[test]
fn hook_accepts_and_selects_a_subprotocol_and_first_frame_is_not_lost() {
    let (port, done) = hooked_server(WebSocketConfig::default());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The request and the first frame in one write: the frame must survive.
    let mut bytes =
        tcp_request("http://allowed.example", "/?token=secret", "Sec-WebSocket-Protocol: x, chat.v1\r\n");
    bytes.extend_from_slice(&Frame::text("in the same packet").encode());
    stream.write_all(&bytes).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.windows(18).any(|w| w == b"in the same packet") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{text}");
    assert!(text.contains("\r\nSec-WebSocket-Protocol: chat.v1\r\n"), "{text}");
    stream.write_all(&Frame::close(1000, "").encode()).unwrap();
    // As a client does (RFC 6455 §7.1.1): wait for the server to end TCP, then close.
    while stream.read(&mut chunk).unwrap() > 0 {}
    drop(stream);
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap().unwrap(), Some("chat.v1".to_owned()));
}

#[test]
fn handshake_timeout_closes_a_silent_client() {
    let mut config = WebSocketConfig::default();
    config.handshake_timeout = Duration::from_millis(200);
    let (port, done) = hooked_server(config);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(); // never finished
    let started = Instant::now();
    let outcome = done.recv_timeout(TIMEOUT).unwrap();
    assert!(matches!(outcome, Err(sabai::Error::Timeout(sabai::TimeoutKind::Handshake))), "{outcome:?}");
    assert!(started.elapsed() < TIMEOUT);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(stream.read(&mut [0u8; 16]).unwrap_or(0), 0, "the connection is closed");
}

#[test]
fn connect_reports_non_101_status() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = stream.read(&mut buf);
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap();
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let error = runtime.block_on(sabai::connect(&format!("ws://127.0.0.1:{port}/missing"))).unwrap_err();
    assert!(matches!(error, sabai::Error::Handshake(HandshakeError::UnexpectedStatus(404))), "{error}");
}

#[test]
fn connect_and_subprotocol_round_trip() {
    let (port, done) = hooked_server(WebSocketConfig::default());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/?token=secret");
        let mut ws = sabai::connect_with(&url, &WebSocketConfig::default(), |r| {
            r.protocol("chat.v1").header("Origin", "http://allowed.example")
        })
        .await
        .unwrap();
        assert_eq!(ws.protocol(), Some("chat.v1"));
        ws.send(Message::text("ping?")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text("ping?")));
        // The server closes; the client sees the end of the stream.
        assert_eq!(ws.recv().await.unwrap(), None);
        assert_eq!(ws.close_frame().map(|f| f.code), Some(sabai::CloseCode::NORMAL));
    });
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap().unwrap(), Some("chat.v1".to_owned()));
}
