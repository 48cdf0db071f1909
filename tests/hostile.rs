//! Hostile input against the sans-IO core and handshake: each test checks
//! the exact outcome and that the cost stays bounded, measured with a
//! counting allocator (bytes and calls, never time). The classes other test
//! files already show are listed in SECURITY.md with their tests.

#[path = "support/counting.rs"]
mod counting;

use counting::{measure_thread, serial, Counting};
use sabai::handshake::HandshakeError;
use sabai::handshake::{ClientHandshake, ClientRequest, HandshakeLimits, ServerHandshake};
use sabai::{Config, Connection, Ending, Event, Message, ProtocolError};

#[global_allocator]
static ALLOC: Counting = Counting;

const HEAD: &str = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A masked frame header (the key is zero, so the payload is as written).
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out
}

fn unlimited() -> Config {
    let mut config = Config::default();
    config.max_frame_size = usize::MAX;
    config.max_message_size = usize::MAX;
    config
}

// One endless header line, a byte per read: each call looks only at the new
// bytes (plus two), so the whole dribble costs linear work and no memory,
// and it ends in 431 at the head limit.
#[test]
fn dribbled_header_line_is_scanned_once_then_431() {
    let _serial = serial();
    let limits = HandshakeLimits::default();
    let mut buf = format!("{HEAD}X-Long: ").into_bytes();
    buf.resize(limits.max_head_bytes + 10, b'a');
    let mut handshake = ServerHandshake::new(limits.clone());
    let (result, usage) = measure_thread(|| {
        for end in 1..limits.max_head_bytes {
            assert!(handshake.parse(&buf[..end]).unwrap().is_none(), "complete at {end}");
        }
        handshake.parse(&buf[..limits.max_head_bytes])
    });
    let error = result.unwrap_err();
    assert_eq!(error, HandshakeError::HeadTooLarge);
    assert_eq!(error.status(), 431);
    // 16 Ki calls and no allocation per call: no copy, no re-parse into
    // headers.
    assert!(usage.calls <= 4 && usage.allocated < 1024, "{usage:?}");

    // Proof that scanned bytes are not looked at again: a blank line written
    // into the part already scanned goes unseen.
    let mut handshake = ServerHandshake::new(limits);
    let mut buf = format!("{HEAD}X-Long: ").into_bytes();
    buf.resize(4000, b'a');
    for end in 1..=buf.len() {
        assert!(handshake.parse(&buf[..end]).unwrap().is_none());
    }
    buf[2000..2004].copy_from_slice(b"\r\n\r\n");
    buf.push(b'a');
    assert!(handshake.parse(&buf).unwrap().is_none(), "the scanned prefix was re-read");
}

// The client side reads a hostile server's response the same way: an
// endless header line costs one scan per byte and ends in HeadTooLarge.
#[test]
fn dribbled_response_header_is_refused_at_the_head_limit() {
    let _serial = serial();
    let limits = HandshakeLimits::default();
    let mut buf = b"HTTP/1.1 101 Switching Protocols\r\nX-Long: ".to_vec();
    buf.resize(limits.max_head_bytes + 10, b'a');
    let request = ClientRequest::new("example.com", "/");
    let mut handshake = ClientHandshake::new(request, *b"the sample nonce");
    let (result, usage) = measure_thread(|| {
        for end in 1..limits.max_head_bytes {
            assert!(handshake.parse_response(&buf[..end]).unwrap().is_none(), "complete at {end}");
        }
        handshake.parse_response(&buf[..limits.max_head_bytes])
    });
    assert_eq!(result.unwrap_err(), HandshakeError::HeadTooLarge);
    assert!(usage.calls <= 4 && usage.allocated < 1024, "{usage:?}");
}

// Sec-WebSocket-Extensions and -Protocol built to hurt a parser: thousands
// of tokens and parameters, long whitespace runs, unclosed quotes. A
// malformed or oversized extension list is a 400 (RFC 6455 §9.1 grammar,
// at most `MAX_EXTENSIONS` elements); a long but well-formed one is parsed
// and, unknown, ignored (101, none agreed); an unclosed quote in the
// protocol list is a 400. Memory stays proportional to the head.
#[test]
fn hostile_extension_and_protocol_values_cost_linear_memory() {
    use sabai::handshake::ExtensionError;
    let _serial = serial();
    let limits = HandshakeLimits::default;
    // Unclosed quotes, 150 times.
    let tokens = vec!["permessage-deflate; client_max_window_bits=\"15"; 150].join(", ");
    let head = format!("{HEAD}Sec-WebSocket-Extensions: {tokens}\r\n\r\n");
    let (result, usage) = measure_thread(|| ServerHandshake::new(limits()).parse(head.as_bytes()));
    let error = result.unwrap_err();
    assert_eq!(error, HandshakeError::InvalidExtension(ExtensionError::Malformed));
    assert_eq!(error.status(), 400);
    assert!(usage.peak < 4 * head.len() + 16 * 1024, "{usage:?} for a {}-byte head", head.len());

    // Well-formed, but thousands of elements: refused on the count.
    let many = vec!["x-ext; a=1"; 1000].join(", ");
    let head = format!("{HEAD}Sec-WebSocket-Extensions: {many}\r\n\r\n");
    let (result, usage) = measure_thread(|| ServerHandshake::new(limits()).parse(head.as_bytes()));
    assert_eq!(result.unwrap_err(), HandshakeError::InvalidExtension(ExtensionError::TooMany));
    assert!(usage.peak < 4 * head.len() + 16 * 1024, "{usage:?} for a {}-byte head", head.len());

    // Long whitespace runs in one well-formed element: parsed, ignored.
    let spaces = format!("x-ext;{}a=1", " \t".repeat(2000));
    let head = format!("{HEAD}Sec-WebSocket-Extensions: {spaces}\r\n\r\n");
    assert!(head.len() < limits().max_head_bytes);
    let (result, usage) = measure_thread(|| ServerHandshake::new(limits()).parse(head.as_bytes()));
    let (request, used) = result.unwrap().unwrap();
    assert_eq!(used, head.len());
    let response =
        String::from_utf8(request.accept_response(&sabai::handshake::Accept::new()).unwrap()).unwrap();
    assert!(response.starts_with("HTTP/1.1 101 "));
    assert!(!response.contains("Sec-WebSocket-Extensions"), "{response}");
    // Owned copies of the headers and httparse's slots: a few times the head.
    assert!(usage.peak < 4 * head.len() + 16 * 1024, "{usage:?} for a {}-byte head", head.len());

    let protocols = format!("{}\"chat", "p, ".repeat(3000));
    let head = format!("{HEAD}Sec-WebSocket-Protocol: {protocols}\r\n\r\n");
    let (result, usage) =
        measure_thread(|| ServerHandshake::new(HandshakeLimits::default()).parse(head.as_bytes()));
    let error = result.unwrap_err();
    assert_eq!((error.clone(), error.status()), (HandshakeError::InvalidProtocolHeader, 400));
    assert!(usage.peak < 64 * head.len() + 16 * 1024, "{usage:?} for a {}-byte head", head.len());
}

// Declared lengths the size of the address space, with ten bytes sent. With
// the default limits: 1009 on the header. With no limits at all the frame is
// waited for, but nothing near the declared size is reserved, nothing
// overflows, and the end of input is 1006. A length with the top bit set is
// 1002 either way (RFC 6455 §5.2).
#[test]
fn huge_declared_lengths_allocate_nothing() {
    let _serial = serial();
    for len in [1u64 << 62, (1 << 63) - 1, (1 << 63) - 14, u64::MAX >> 1] {
        let mut input = header(true, 0x2, len);
        input.extend_from_slice(&[0; 10]);

        let (event, usage) = measure_thread(|| {
            let mut conn = Connection::server(Config::default());
            conn.receive(&input);
            (conn.poll_event(), conn.buffers().pending_transmit())
        });
        let (error, queued) = event;
        let error = error.unwrap_err();
        assert_eq!(error.close_code().0, 1009, "len {len}: {error:?}");
        assert!(queued > 0 && usage.peak < 16 * 1024, "len {len}: {usage:?}");

        let (outcome, usage) = measure_thread(|| {
            let mut conn = Connection::server(unlimited());
            conn.receive(&input);
            let first = conn.poll_event();
            let buffered = conn.buffers().buffered_input();
            conn.receive_eof();
            (first, buffered, conn.poll_event(), conn.ending().cloned())
        });
        // The header is consumed; only the ten payload bytes wait.
        assert_eq!(outcome, (Ok(None), 10, Ok(None), Some(Ending::Abnormal)), "len {len}");
        assert!(usage.peak < 16 * 1024, "len {len}: {usage:?}");
    }
    for len in [1u64 << 63, u64::MAX] {
        let mut conn = Connection::server(unlimited());
        conn.receive(&header(true, 0x2, len));
        assert_eq!(conn.poll_event(), Err(ProtocolError::LengthMsbSet));
        assert_eq!(ProtocolError::LengthMsbSet.close_code().0, 1002);
    }
}

/// Feeds `input` in 64 KiB reads, polling between them, and returns the
/// events and the largest `buffered_input()` seen after polling.
fn feed(conn: &mut Connection, input: &[u8]) -> (Vec<Event>, usize) {
    let (mut events, mut most) = (Vec::new(), 0);
    for chunk in input.chunks(64 * 1024) {
        conn.receive(chunk);
        while let Some(event) = conn.poll_event().unwrap() {
            events.push(event);
        }
        most = most.max(conn.buffers().buffered_input());
    }
    (events, most)
}

// A million 1-byte fragments: the message arrives whole, memory stays near
// the message size (not the 7 MB of frames), and reassembly allocates a
// number of times that grows with the log of the size, not per fragment.
#[test]
fn a_million_one_byte_fragments_reassemble_in_bounded_memory() {
    let _serial = serial();
    const N: usize = 1_000_000;
    let mut input = Vec::with_capacity(N * 7 + 16);
    for i in 0..N {
        input.extend_from_slice(&header(i == N - 1, if i == 0 { 0x2 } else { 0x0 }, 1));
        input.push(i as u8);
    }
    let ((events, most), usage) = measure_thread(|| feed(&mut Connection::server(Config::default()), &input));
    let expected: Vec<u8> = (0..N).map(|i| i as u8).collect();
    assert_eq!(events, vec![Event::Message(Message::binary(expected))]);
    assert!(most <= 7, "{most} bytes left buffered between reads");
    // The message (1 MB, grown by doubling) plus a 64 KiB read.
    assert!(usage.peak < 3 * N, "{usage:?}");
    assert!(usage.calls < 1000, "allocations per fragment: {usage:?}");
    assert!(usage.allocated < 8 * N, "{usage:?}");

    // The same count of empty fragments: nothing grows at all.
    let mut input = Vec::with_capacity(N * 6 + 16);
    for i in 0..N {
        input.extend_from_slice(&header(i == N - 1, if i == 0 { 0x1 } else { 0x0 }, 0));
    }
    let ((events, _), usage) = measure_thread(|| feed(&mut Connection::server(Config::default()), &input));
    assert_eq!(events, vec![Event::Message(Message::text(""))]);
    assert!(usage.peak < 256 * 1024 && usage.calls < 1000, "{usage:?}");
}

// The same flood against a small message limit stops at the limit: 1009 on
// the header of the fragment that would pass it, with nothing past it kept.
#[test]
fn fragment_flood_over_the_message_limit_fails_with_1009() {
    let _serial = serial();
    let mut config = Config::default();
    config.max_message_size = 1000;
    let mut input = Vec::new();
    for i in 0..100_000 {
        input.extend_from_slice(&header(false, if i == 0 { 0x2 } else { 0x0 }, 1));
        input.push(b'x');
    }
    let mut conn = Connection::server(config);
    let (result, usage) = measure_thread(|| {
        for chunk in input.chunks(4096) {
            conn.receive(chunk);
            if let Some(error) = conn.poll_event().err() {
                return Err(error);
            }
        }
        Ok(None::<Event>)
    });
    assert_eq!(result, Err(ProtocolError::MessageTooLarge { len: 1001, max: 1000 }));
    assert_eq!(conn.buffers().buffered_input(), 0);
    assert!(usage.peak < 16 * 1024, "{usage:?}");
}
