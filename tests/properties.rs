//! Property tests: header round trips, chunking independence, masking,
//! incremental UTF-8, and client-to-server message round trips.

mod support;

use proptest::prelude::*;
use sabai::proto::{apply_mask, apply_mask_at, FrameHeader, OpCode, Utf8Validator, MAX_HEADER_LEN};
use sabai::{CloseCode, Config, Connection, Event, Message, MessageKind};
use support::*;

fn opcode() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ])
}

fn length() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..126, 126u64..=0xFFFF, 0x1_0000u64..(1 << 63)]
}

/// Something an application can send.
#[derive(Clone, Debug)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Fragments(MessageKind, Vec<Vec<u8>>),
    Ping(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        ".{0,40}".prop_map(Op::Text),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Op::Binary),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5)
            .prop_map(|parts| Op::Fragments(MessageKind::Binary, parts)),
        ".{0,30}"
            .prop_flat_map(|s: String| {
                let len = s.len();
                (Just(s), prop::collection::vec(0..=len, 0..4))
            })
            .prop_map(|(s, mut cuts)| {
                cuts.sort();
                let mut parts = Vec::new();
                let mut at = 0;
                for cut in cuts {
                    parts.push(s.as_bytes()[at..cut].to_vec());
                    at = cut;
                }
                parts.push(s.as_bytes()[at..].to_vec());
                Op::Fragments(MessageKind::Text, parts)
            }),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Op::Ping),
    ]
}

/// The event the receiving side should report for an operation.
fn expected(op: &Op) -> Event {
    match op {
        Op::Text(s) => Event::Message(Message::text(s.as_str())),
        Op::Binary(b) => Event::Message(Message::binary(b.clone())),
        Op::Fragments(MessageKind::Text, parts) => {
            Event::Message(Message::text(String::from_utf8(parts.concat()).unwrap()))
        }
        Op::Fragments(MessageKind::Binary, parts) => Event::Message(Message::binary(parts.concat())),
        Op::Ping(p) => Event::Ping(p.clone().into()),
    }
}

fn apply(conn: &mut Connection, op: &Op) {
    match op {
        Op::Text(s) => conn.send(Message::text(s.as_str())).unwrap(),
        Op::Binary(b) => conn.send(Message::binary(b.clone())).unwrap(),
        Op::Fragments(kind, parts) => {
            for (i, part) in parts.iter().enumerate() {
                conn.send_fragment(*kind, part, i == parts.len() - 1).unwrap();
            }
        }
        Op::Ping(p) => conn.ping(p).unwrap(),
    }
}

fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = conn.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

fn events_in_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Result<Event, sabai::ProtocolError>> {
    let mut conn = Connection::server(Config::default());
    let mut events = Vec::new();
    let mut at = 0;
    let mut feed = |piece: &[u8], conn: &mut Connection| {
        conn.receive(piece);
        loop {
            match conn.poll_event() {
                Ok(Some(event)) => events.push(Ok(event)),
                Ok(None) => break,
                Err(error) => events.push(Err(error)),
            }
        }
    };
    for &cut in cuts {
        let cut = cut.clamp(at, bytes.len());
        feed(&bytes[at..cut], &mut conn);
        at = cut;
    }
    feed(&bytes[at..], &mut conn);
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // Encode then parse gives the same header, for every frame shape.
    #[test]
    fn header_round_trip(fin: bool, rsv in 0u8..8, op in opcode(), mask: Option<[u8; 4]>, len in length()) {
        let header = FrameHeader { fin, rsv, opcode: op, mask, len };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        prop_assert_eq!(FrameHeader::parse(&buf[..n]).unwrap(), Some((header, n)));
    }

    // Masking twice restores the data, and masking in pieces equals masking at once.
    #[test]
    fn mask_twice_is_identity(data in prop::collection::vec(any::<u8>(), 0..500), key: [u8; 4], cut in 0usize..500) {
        let mut once = data.clone();
        apply_mask(&mut once, key);
        let mut twice = once.clone();
        apply_mask(&mut twice, key);
        prop_assert_eq!(&twice, &data);
        let cut = cut.min(data.len());
        let mut pieces = data.clone();
        let (a, b) = pieces.split_at_mut(cut);
        apply_mask_at(a, key, 0);
        apply_mask_at(b, key, cut);
        prop_assert_eq!(pieces, once);
    }

    // The incremental validator agrees with std at every split point.
    #[test]
    fn utf8_validator_agrees_with_std(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        ".{0,20}".prop_map(String::into_bytes),
    ]) {
        let expected = std::str::from_utf8(&bytes).is_ok();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let ok = v.feed(&bytes[..cut]).and_then(|()| v.finish(&bytes[cut..])).is_ok();
            prop_assert_eq!(ok, expected, "cut at {}", cut);
        }
    }

    // Whatever a client sends, the server receives, in order.
    #[test]
    fn client_to_server_round_trip(ops in prop::collection::vec(op(), 0..12), seed: [u8; 32]) {
        let mut client = Connection::client(Config::default(), seed);
        let mut server = Connection::server(Config::default());
        for op in &ops {
            apply(&mut client, op);
        }
        client.close(CloseCode::NORMAL, "done").unwrap();
        server.receive(&drain(&mut client));
        let mut got = Vec::new();
        while let Some(event) = server.poll_event().unwrap() {
            got.push(event);
        }
        let mut want: Vec<Event> = ops.iter().map(expected).collect();
        want.push(Event::Close(Some(sabai::CloseFrame::new(1000, "done"))));
        prop_assert_eq!(got, want);
        // ...and the server's replies (Pongs, the Close echo) reach the client.
        client.receive(&drain(&mut server));
        let mut replies = Vec::new();
        while let Some(event) = client.poll_event().unwrap() {
            replies.push(event);
        }
        let pongs = ops.iter().filter(|op| matches!(op, Op::Ping(_))).count();
        prop_assert_eq!(replies.len(), pongs + 1);
        prop_assert_eq!(client.state(), sabai::State::Closed);
    }

    // The same bytes, chunked any way, give the same events: valid streams...
    #[test]
    fn chunking_does_not_change_events(ops in prop::collection::vec(op(), 0..8), seed: [u8; 32],
                                       cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let mut client = Connection::client(Config::default(), seed);
        for op in &ops {
            apply(&mut client, op);
        }
        let bytes = drain(&mut client);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort();
        prop_assert_eq!(events_in_chunks(&bytes, &cuts), events_in_chunks(&bytes, &[]));
    }

    // ...and arbitrary, mostly invalid, bytes.
    #[test]
    fn chunking_does_not_change_errors(frames in prop::collection::vec(
            (any::<bool>(), 0u8..8, 0u8..16, any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let frames: Vec<Frame> = frames
            .into_iter()
            .map(|(fin, rsv, opcode, masked, payload)| {
                let frame = Frame::new(opcode, payload).fin(fin).rsv(rsv);
                if masked { frame } else { frame.unmasked() }
            })
            .collect();
        let bytes = wire(&frames);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort();
        prop_assert_eq!(events_in_chunks(&bytes, &cuts), events_in_chunks(&bytes, &[]));
    }
}
