//! The sans-IO `Connection` driven directly: client-role rules, sending
//! rules and local misuse (`SendError`), and state transitions.

mod support;

use bytes::Bytes;
use sabai::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, MessageKind, ProtocolError, SendError, State,
};
use support::*;

fn client() -> Connection {
    Connection::client(Config::default(), [9; 32])
}

// §5.3: a client masks every frame, with a fresh key each time.
#[test]
fn client_masks_every_frame_with_fresh_keys() {
    let mut conn = client();
    for _ in 0..20 {
        conn.send(Message::text("same payload")).unwrap();
    }
    conn.ping(b"p").unwrap();
    let frames = frames_sent(&mut conn);
    let keys: std::collections::HashSet<[u8; 4]> =
        frames.iter().map(|f| f.mask.expect("client frames are masked")).collect();
    assert_eq!(keys.len(), frames.len(), "mask keys repeat");
    assert!(frames[..20].iter().all(|f| f.payload == b"same payload"));
}

// §10.3: different seeds (from the OS in the tokio layer) give different keys.
#[test]
fn mask_keys_depend_on_the_seed() {
    let mut a = Connection::client(Config::default(), [1; 32]);
    let mut b = Connection::client(Config::default(), [2; 32]);
    a.send(Message::text("x")).unwrap();
    b.send(Message::text("x")).unwrap();
    assert_ne!(frames_sent(&mut a)[0].mask, frames_sent(&mut b)[0].mask);
}

// §5.1: a server never masks.
#[test]
fn server_frames_are_unmasked() {
    let mut conn = Connection::server(Config::default());
    conn.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(frames_sent(&mut conn), vec![Frame::binary([1, 2, 3]).unmasked()]);
}

// §5.1: a client MUST close the connection if it receives a masked frame.
#[test]
fn client_rejects_masked_frames() {
    let mut conn = client();
    conn.receive(&Frame::text("masked").encode());
    assert_eq!(conn.poll_event(), Err(ProtocolError::MaskedFrame));
    assert_eq!(conn.state(), State::Failed);
    let sent = frames_sent(&mut conn);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].close_code(), Some(1002));
}

#[test]
fn client_receives_unmasked_frames() {
    let mut conn = client();
    conn.receive(&wire(&[Frame::text("hi").unmasked(), Frame::ping("p").unmasked()]));
    assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Message::text("hi")))));
    assert_eq!(conn.poll_event(), Ok(Some(Event::Ping(Bytes::from_static(b"p")))));
    assert_eq!(conn.poll_event(), Ok(None));
    let pong = &frames_sent(&mut conn)[0];
    assert_eq!((pong.opcode, pong.payload.as_slice(), pong.mask.is_some()), (PONG, &b"p"[..], true));
}

// §5.5: control payloads are at most 125 bytes, on the way out too.
#[test]
fn refuses_to_send_oversized_control_frames() {
    let mut conn = client();
    assert_eq!(conn.ping(&[0; 126]), Err(SendError::ControlPayloadTooLong(126)));
    assert_eq!(conn.pong(&[0; 200]), Err(SendError::ControlPayloadTooLong(200)));
    assert!(conn.ping(&[0; 125]).is_ok());
}

// §7.4: only codes valid on the wire may be sent; the reason fits in 123 bytes.
#[test]
fn refuses_invalid_close_codes_and_long_reasons() {
    let mut conn = client();
    for code in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(conn.close(CloseCode(code), ""), Err(SendError::InvalidCloseCode(code)));
    }
    assert_eq!(conn.close(CloseCode::NORMAL, &"x".repeat(124)), Err(SendError::CloseReasonTooLong(124)));
    assert_eq!(conn.state(), State::Open, "nothing was sent");
    assert!(conn.poll_transmit().is_none());
    conn.close(CloseCode(4000), &"x".repeat(123)).unwrap();
    assert_eq!(frames_sent(&mut conn)[0].close_code(), Some(4000));
}

// §5.5.1: after sending a Close, nothing else is sent.
#[test]
fn nothing_is_sent_after_close() {
    let mut conn = client();
    conn.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(conn.state(), State::CloseSent);
    assert_eq!(conn.send(Message::text("late")), Err(SendError::Closed));
    assert_eq!(conn.ping(b""), Err(SendError::Closed));
    assert_eq!(conn.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
    // A Ping from the peer is reported, but not answered.
    conn.receive(&Frame::ping("still there?").unmasked().encode());
    assert_eq!(conn.poll_event(), Ok(Some(Event::Ping(Bytes::from_static(b"still there?")))));
    let sent = frames_sent(&mut conn);
    assert_eq!(sent.len(), 1, "only our Close: {sent:?}");
    // Messages the peer sent before seeing our Close are still delivered.
    conn.receive(&Frame::text("in flight").unmasked().encode());
    assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Message::text("in flight")))));
    conn.receive(&Frame::close(1000, "ok").unmasked().encode());
    assert_eq!(conn.poll_event(), Ok(Some(Event::Close(Some(CloseFrame::new(1000, "ok"))))));
    assert_eq!(conn.state(), State::Closed);
    assert!(frames_sent(&mut conn).is_empty(), "no second Close");
}

// §5.5.1: the peer's Close is echoed with its code; the peer's frame is kept.
#[test]
fn peer_close_is_echoed_and_remembered() {
    let mut conn = Connection::server(Config::default());
    conn.receive(&Frame::close(4001, "going").encode());
    assert_eq!(conn.poll_event(), Ok(Some(Event::Close(Some(CloseFrame::new(4001, "going"))))));
    assert_eq!(conn.peer_close(), Some(&CloseFrame::new(4001, "going")));
    assert_eq!(frames_sent(&mut conn)[0].close_code(), Some(4001));
    assert_eq!(conn.send(Message::text("x")), Err(SendError::Closed));
}

// §7.1.7: a failed connection sends its Close once and discards all input.
#[test]
fn failed_connection_discards_input() {
    let mut conn = Connection::server(Config::default());
    conn.receive(&wire(&[Frame::new(0x3, ""), Frame::text("after")]));
    assert_eq!(conn.poll_event(), Err(ProtocolError::ReservedOpcode(3)));
    assert_eq!(conn.poll_event(), Ok(None));
    conn.receive(&Frame::ping("more").encode());
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().buffered_input(), 0);
    let sent = frames_sent(&mut conn);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].close_code(), Some(1002));
    assert!(std::str::from_utf8(&sent[0].payload[2..]).unwrap().contains("reserved opcode"));
}

// §5.4: automatic fragmentation by a maximum frame size.
#[test]
fn auto_fragmentation_splits_by_max_send_frame_size() {
    let mut config = Config::default();
    config.max_send_frame_size = Some(1000);
    let mut conn = Connection::server(config);
    conn.send(Message::text("a".repeat(2500))).unwrap();
    conn.send(Message::binary(vec![0; 1000])).unwrap();
    let shapes: Vec<(bool, u8, usize)> =
        frames_sent(&mut conn).iter().map(|f| (f.fin, f.opcode, f.payload.len())).collect();
    assert_eq!(
        shapes,
        [(false, TEXT, 1000), (false, CONTINUATION, 1000), (true, CONTINUATION, 500), (true, BINARY, 1000)]
    );
}

// §5.4: sending a message as fragments, with a Ping between them.
#[test]
fn send_fragment_builds_one_message() {
    let mut conn = Connection::server(Config::default());
    conn.send_fragment(MessageKind::Text, "κό".as_bytes(), false).unwrap();
    conn.ping(b"between").unwrap();
    conn.send_fragment(MessageKind::Text, &"σμε".as_bytes()[..1], false).unwrap(); // splits a character
    conn.send_fragment(MessageKind::Text, &"σμε".as_bytes()[1..], true).unwrap();
    let shapes: Vec<(bool, u8)> = frames_sent(&mut conn).iter().map(|f| (f.fin, f.opcode)).collect();
    assert_eq!(shapes, [(false, TEXT), (true, PING), (false, CONTINUATION), (true, CONTINUATION)]);
}

#[test]
fn send_fragment_refuses_interleaving_and_bad_utf8() {
    let mut conn = Connection::server(Config::default());
    conn.send_fragment(MessageKind::Binary, b"part", false).unwrap();
    assert_eq!(conn.send(Message::text("other")), Err(SendError::FragmentedMessageInProgress));
    assert_eq!(
        conn.send_fragment(MessageKind::Text, b"x", true),
        Err(SendError::FragmentedMessageInProgress)
    );
    conn.send_fragment(MessageKind::Binary, b"end", true).unwrap();
    assert_eq!(conn.send_fragment(MessageKind::Text, b"\xff", false), Err(SendError::InvalidUtf8));
    assert_eq!(conn.send_fragment(MessageKind::Text, b"ok\xe2\x82", true), Err(SendError::InvalidUtf8));
    // The refused fragments queued nothing and left no message open.
    conn.send(Message::text("fine")).unwrap();
    assert_eq!(frames_sent(&mut conn).len(), 3);
}

// Chunking: the same bytes in any pieces give the same events.
#[test]
fn events_do_not_depend_on_chunking() {
    let bytes = wire(&[
        Frame::text("fragment1").fin(false),
        Frame::ping("p"),
        Frame::cont("fragment2"),
        Frame::binary(vec![5; 300]),
        Frame::close(1000, "end"),
    ]);
    let events_for = |chunk: usize| {
        let mut conn = Connection::server(Config::default());
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk) {
            conn.receive(piece);
            while let Some(event) = conn.poll_event().unwrap() {
                events.push(event);
            }
        }
        events
    };
    let whole = events_for(bytes.len());
    assert_eq!(whole.len(), 4);
    for chunk in 1..64 {
        assert_eq!(events_for(chunk), whole, "chunk size {chunk}");
    }
}

// Bytes after the peer's Close are dropped, not buffered (bounded memory).
#[test]
fn input_after_close_is_not_buffered() {
    let mut conn = Connection::server(Config::default());
    conn.receive(&Frame::close(1000, "").encode());
    conn.poll_event().unwrap();
    conn.receive(&vec![0u8; 1 << 20]);
    assert_eq!(conn.buffers().buffered_input(), 0);
}

// The same through `read_buffer`, which appends without the connection
// looking: the next `poll_event` drops it.
#[test]
fn input_appended_through_read_buffer_after_failure_is_dropped() {
    let mut conn = Connection::server(Config::default());
    conn.receive(&Frame::new(0x3, "").encode());
    assert_eq!(conn.poll_event(), Err(ProtocolError::ReservedOpcode(3)));
    conn.buffers_mut().read_buffer().extend_from_slice(&vec![0u8; 1 << 20]);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().buffered_input(), 0);
}

// Writing in place: `transmit_buffer` + `advance_transmit` give the same
// bytes as `poll_transmit`, and a partial write keeps the rest queued.
#[test]
fn transmit_buffer_can_be_written_in_pieces() {
    let mut a = Connection::server(Config::default());
    let mut b = Connection::server(Config::default());
    for conn in [&mut a, &mut b] {
        conn.send(Message::binary(vec![7u8; 300])).unwrap();
        conn.ping(b"p").unwrap();
    }
    let whole = a.poll_transmit().unwrap();
    let mut pieces = Vec::new();
    while !b.buffers().transmit_front().is_empty() {
        let n = b.buffers().transmit_front().len().min(100);
        pieces.extend_from_slice(&b.buffers().transmit_front()[..n]);
        b.buffers_mut().advance_transmit(n);
        assert_eq!(b.buffers().pending_transmit(), whole.len() - pieces.len());
    }
    assert_eq!(pieces, whole);
    // Advancing past the end is clamped.
    b.ping(b"q").unwrap();
    b.buffers_mut().advance_transmit(usize::MAX);
    assert_eq!(b.buffers().pending_transmit(), 0);
}

// An idle connection gives its buffers back; a partial frame keeps its bytes.
#[test]
fn idle_buffers_are_released_but_partial_input_is_kept() {
    let mut conn = Connection::server(Config::default());
    conn.buffers_mut().read_buffer().reserve(16 * 1024);
    conn.send(Message::text("x")).unwrap();
    conn.buffers_mut().advance_transmit(usize::MAX);
    conn.buffers_mut().release_idle();
    assert_eq!(conn.buffers_mut().read_buffer().capacity(), 0);

    let frame = Frame::text("hello").encode();
    conn.receive(&frame[..frame.len() - 2]);
    assert_eq!(conn.poll_event(), Ok(None));
    conn.buffers_mut().release_idle();
    conn.receive(&frame[frame.len() - 2..]);
    assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Message::text("hello")))));
}

// Large server payloads are queued without a copy; the bytes on the wire
// are the same whichever way they are taken out, and interleave correctly
// with small frames queued before and after them.
#[test]
fn large_payloads_go_out_intact_in_order() {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let text: String = "añb€".repeat(10_000);
    let queue = |conn: &mut Connection| {
        conn.send(Message::text("before")).unwrap();
        conn.send(Message::binary(big.clone())).unwrap();
        conn.ping(b"mid").unwrap();
        conn.send(Message::text(text.clone())).unwrap();
        conn.send(Message::binary(vec![1u8; 10])).unwrap();
    };
    let mut by_pop = Connection::server(Config::default());
    queue(&mut by_pop);
    let mut by_slices = Connection::server(Config::default());
    queue(&mut by_slices);
    let total = by_slices.buffers().pending_transmit();
    let mut wire = Vec::new();
    while by_slices.buffers().pending_transmit() > 0 {
        let mut slices = [std::io::IoSlice::new(&[]); 3];
        let n = by_slices.buffers().transmit_chunks(&mut slices);
        assert!(n > 0);
        // A short write: at most 7000 bytes of the first slices.
        let mut budget = 7000;
        let mut wrote = 0;
        for s in &slices[..n] {
            let take = s.len().min(budget);
            wire.extend_from_slice(&s[..take]);
            (budget, wrote) = (budget - take, wrote + take);
        }
        by_slices.buffers_mut().advance_transmit(wrote);
    }
    assert_eq!(wire.len(), total);
    let popped: Vec<u8> = std::iter::from_fn(|| by_pop.poll_transmit()).flatten().collect();
    assert_eq!(popped, wire);

    let mut client = client();
    client.receive(&wire);
    let mut events = Vec::new();
    while let Some(event) = client.poll_event().unwrap() {
        events.push(event);
    }
    assert_eq!(
        events,
        [
            Event::Message(Message::text("before")),
            Event::Message(Message::binary(big.clone())),
            Event::Ping(Bytes::from_static(b"mid")),
            Event::Message(Message::text(text.clone())),
            Event::Message(Message::binary(vec![1u8; 10])),
        ]
    );
}

// The same with automatic fragmentation: each fragment of a large message
// is a slice of it, not a copy, and reassembles to the original.
#[test]
fn large_payloads_fragment_without_copies() {
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let mut config = Config::default();
    config.max_send_frame_size = Some(9000);
    let mut server = Connection::server(config);
    server.send(Message::binary(big.clone())).unwrap();
    let frames = frames_sent(&mut server);
    assert_eq!(frames.len(), 6);
    assert!(frames.iter().all(|f| f.payload.len() <= 9000));
    let mut client = client();
    client.receive(&frames.iter().flat_map(Frame::encode).collect::<Vec<u8>>());
    assert_eq!(client.poll_event(), Ok(Some(Event::Message(Message::binary(big)))));
}

// Reading hint: the rest of the frame in progress, 0 otherwise.
#[test]
fn input_needed_is_the_rest_of_the_frame() {
    let mut conn = Connection::server(Config::default());
    assert_eq!(conn.buffers().input_needed(), 0);
    let frame = Frame::binary(vec![5u8; 70_000]).encode();
    conn.receive(&frame[..1000]);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().input_needed(), frame.len() - 1000);
    conn.receive(&frame[1000..]);
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    assert_eq!(conn.buffers().input_needed(), 0);
}

// Read sizing between frames: the size of the last frame plus a header,
// less what is already buffered; inside a frame, the rest of it.
#[test]
fn read_hint_expects_a_frame_like_the_last_one() {
    let mut conn = Connection::server(Config::default());
    assert_eq!(conn.buffers().read_hint(), 0, "nothing known before the first frame");
    let frame = Frame::binary(vec![5u8; 70_000]).encode();
    conn.receive(&frame[..1000]);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().read_hint(), conn.buffers().input_needed());
    conn.receive(&frame[1000..]);
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    assert_eq!(conn.buffers().input_needed(), 0);
    assert_eq!(conn.buffers().read_hint(), 70_000 + 14);
    conn.receive(&frame[..2]); // the next header, in part
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().read_hint(), 70_000 + 14 - 2);
    // A small frame makes the next guess small.
    conn.receive(&frame[2..]);
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    conn.receive(&Frame::binary(b"hi").encode());
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    assert_eq!(conn.buffers().read_hint(), 2 + 14);
    // A Ping between large frames leaves the guess at the data frame's size.
    conn.receive(&frame);
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Message(_)))));
    conn.receive(&Frame::ping(b"are you there").encode());
    assert!(matches!(conn.poll_event(), Ok(Some(Event::Ping(_)))));
    assert_eq!(conn.buffers().read_hint(), 70_000 + 14);
}

#[test]
fn fixed_mask_key_masks_every_frame_with_it() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut client = Connection::client(Config::default(), [9; 32]).with_fixed_mask_key(key);
    client.send(Message::text("Hello")).unwrap();
    client.ping(b"").unwrap();
    client.send(Message::text("Hello")).unwrap();
    let mut wire = Vec::new();
    while let Some(bytes) = client.poll_transmit() {
        wire.extend_from_slice(&bytes);
    }
    let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let ping = [0x89, 0x80, 0x37, 0xfa, 0x21, 0x3d];
    assert_eq!(wire, [&hello[..], &ping, &hello].concat());
}

#[test]
fn fixed_mask_key_changes_nothing_on_a_server() {
    let mut server = Connection::server(Config::default()).with_fixed_mask_key([1, 2, 3, 4]);
    server.send(Message::text("Hello")).unwrap();
    assert_eq!(&server.poll_transmit().unwrap()[..], [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
}
