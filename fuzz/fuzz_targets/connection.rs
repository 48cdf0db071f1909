//! Feeds an arbitrary byte stream to a `Connection`, in input-chosen chunks
//! and in one piece, and checks:
//! - no panic;
//! - chunking changes nothing: the events, the final error, the state and
//!   every transmitted byte are identical to the one-piece run;
//! - the events and error equal those of an independent reference model
//!   (`sabai_fuzz::model`);
//! - no message exceeds `max_message_size`, no control payload 125 bytes;
//! - after an `Err` or a Close event, nothing more comes, ever;
//! - `buffered_input()` stays within `max_frame_size + 14 + chunk`, and
//!   within `max_frame_size + 14` once polled;
//! - what the connection transmits is exactly what the protocol requires:
//!   a Pong echoing each Ping, a Close echoing the peer's code, and on an
//!   error a Close with `error.close_code()` (nothing for 1006), and nothing
//!   at all once our own Close went out.
//!
//! Input layout: `flags, max_frame: u16le, max_message: u16le, plan..., stream`.
//! flags bit 0: client role; bit 1: small max_frame_size; bit 2: small
//! max_message_size; bit 3: send our Close before reading; bit 4: append
//! through `read_buffer()` instead of `receive()`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::{CloseCode, Config, Connection, Ending, Event, Role, State};
use sabai_fuzz::model::{self, End};
use sabai_fuzz::{take_plan, Chunks};

const MASK_SEED: [u8; 32] = [7; 32];
const OUR_CLOSE_REASON: &str = "bye";

struct Setup {
    role: Role,
    config: Config,
    close_first: bool,
    use_read_buffer: bool,
}

impl Setup {
    fn connection(&self) -> Connection {
        let mut conn = match self.role {
            Role::Client => Connection::client(self.config.clone(), MASK_SEED),
            Role::Server => Connection::server(self.config.clone()),
        };
        if self.close_first {
            conn.close(CloseCode::NORMAL, OUR_CLOSE_REASON).expect("close on a new connection");
            assert_eq!(conn.state(), State::CloseSent);
        }
        conn
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<End>,
    state: State,
    transmit: Vec<u8>,
}

fn is_reading(state: State) -> bool {
    matches!(state, State::Open | State::CloseSent)
}

/// Polls until `Ok(None)` or an error, checking each event.
fn drain(conn: &mut Connection, setup: &Setup, out: &mut Outcome) {
    loop {
        let before = conn.state();
        match conn.poll_event() {
            Ok(Some(event)) => {
                assert!(out.error.is_none(), "event {event:?} after error {:?}", out.error);
                assert!(
                    !matches!(out.events.last(), Some(Event::Close(_))),
                    "event {event:?} after the peer's Close"
                );
                assert!(is_reading(before), "event {event:?} in state {before:?}");
                match &event {
                    Event::Message(m) => assert!(
                        m.len() <= setup.config.max_message_size,
                        "message of {} bytes over max_message_size {}",
                        m.len(),
                        setup.config.max_message_size
                    ),
                    Event::Ping(p) | Event::Pong(p) => {
                        assert!(p.len() <= 125 && p.len() <= setup.config.max_frame_size)
                    }
                    Event::Close(frame) => {
                        assert_eq!(conn.state(), State::Closed, "state after the peer's Close");
                        assert_eq!(conn.peer_close(), frame.as_ref());
                        assert_eq!(conn.buffers().buffered_input(), 0, "input kept after the Close");
                    }
                    other => panic!("an event this target does not know: {other:?}"),
                }
                if !matches!(event, Event::Close(_)) {
                    assert_eq!(conn.state(), before, "state changed by {event:?}");
                }
                out.events.push(event);
            }
            Ok(None) => {
                // The transport's end is no error: the connection ends
                // abnormally (RFC 6455 §7.1.5) and says so in its ending.
                if is_reading(before) && conn.ending() == Some(&Ending::Abnormal) {
                    assert!(out.error.is_none(), "abnormal end after {:?}", out.error);
                    assert_eq!(conn.state(), State::Closed, "state after the abnormal end");
                    assert_eq!(conn.buffers().buffered_input(), 0, "input kept after the abnormal end");
                    out.error = Some(End::Abnormal);
                }
                return;
            }
            Err(error) => {
                assert!(out.error.is_none(), "second error {error:?} after {:?}", out.error);
                assert!(is_reading(before), "error {error:?} in state {before:?}");
                assert_eq!(conn.state(), State::Failed, "state after {error:?}");
                assert_eq!(conn.ending(), Some(&Ending::Failed(error)), "ending after {error:?}");
                assert_eq!(conn.buffers().buffered_input(), 0, "input kept after {error:?}");
                out.error = Some(End::Failed(error));
                return;
            }
        }
    }
}

fn take_transmit(conn: &mut Connection, out: &mut Outcome) {
    while let Some(bytes) = conn.poll_transmit() {
        assert!(!bytes.is_empty(), "poll_transmit gave an empty buffer");
        out.transmit.extend_from_slice(&bytes);
    }
    assert_eq!(conn.buffers().pending_transmit(), 0);
}

fn run<'a>(setup: &Setup, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut conn = setup.connection();
    let max_frame = setup.config.max_frame_size;
    let mut out = Outcome { events: Vec::new(), error: None, state: conn.state(), transmit: Vec::new() };
    take_transmit(&mut conn, &mut out);
    for chunk in chunks {
        if setup.use_read_buffer && is_reading(conn.state()) {
            conn.buffers_mut().read_buffer().extend_from_slice(chunk);
        } else {
            conn.receive(chunk);
        }
        let buffered = conn.buffers().buffered_input();
        assert!(
            buffered <= max_frame.saturating_add(14 + chunk.len()),
            "{buffered} bytes buffered (max_frame_size {max_frame}, chunk {})",
            chunk.len()
        );
        drain(&mut conn, setup, &mut out);
        let buffered = conn.buffers().buffered_input();
        assert!(buffered <= max_frame.saturating_add(14), "{buffered} bytes buffered after polling");
        if !is_reading(conn.state()) {
            assert_eq!(buffered, 0, "input kept in state {:?}", conn.state());
        }
        take_transmit(&mut conn, &mut out);
    }
    conn.receive_eof();
    drain(&mut conn, setup, &mut out);
    take_transmit(&mut conn, &mut out);
    // Once the input has ended, reading is over one way or the other.
    assert!(
        out.error.is_some() || matches!(out.events.last(), Some(Event::Close(_))),
        "input ended without an error or a Close: {:?}",
        out.events.last()
    );
    assert!(!is_reading(conn.state()), "still reading after EOF: {:?}", conn.state());
    // And stays over.
    conn.receive(b"\x89\x80\x00\x00\x00\x00\x81\x00");
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffers().buffered_input(), 0);
    assert_eq!(conn.poll_transmit(), None);
    // A closed or failed connection refuses to send.
    assert!(conn.send(sabai::Message::text("x")).is_err());
    assert!(conn.ping(b"").is_err());
    assert_eq!(conn.poll_transmit(), None);
    out.state = conn.state();
    out
}

/// One frame as transmitted, decoded here independently of sabai.
#[derive(Debug, PartialEq)]
struct Sent {
    opcode: u8,
    payload: Vec<u8>,
}

fn decode_transmit(role: Role, mut bytes: &[u8]) -> Vec<Sent> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated frame header");
        let (b0, b1) = (bytes[0], bytes[1]);
        assert_eq!(b0 & 0xF0, 0x80, "sent frame without FIN or with RSV bits: {b0:#04x}");
        let (len, mut at) = match b1 & 0x7F {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        let masked = b1 & 0x80 != 0;
        // RFC 6455 §5.1, §5.3: a client masks every frame, a server none.
        assert_eq!(masked, role == Role::Client, "masking of a {role:?} frame");
        let key = if masked {
            let key = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            at += 4;
            key
        } else {
            [0; 4]
        };
        let mut payload = bytes[at..at + len].to_vec();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        frames.push(Sent { opcode: b0 & 0x0F, payload });
        bytes = &bytes[at + len..];
    }
    frames
}

/// Checks the transmitted frames against what the events and error require.
fn check_transmit(setup: &Setup, out: &Outcome) {
    let mut sent = decode_transmit(setup.role, &out.transmit).into_iter();
    if setup.close_first {
        let ours = sent.next().expect("our Close was not transmitted");
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(OUR_CLOSE_REASON.as_bytes());
        assert_eq!(ours, Sent { opcode: 0x8, payload });
        // RFC 6455 §5.5.1: after our Close, nothing more goes out.
        assert!(sent.next().is_none(), "frames sent after our Close");
        return;
    }
    for event in &out.events {
        match event {
            Event::Ping(payload) => {
                assert_eq!(
                    sent.next(),
                    Some(Sent { opcode: 0xA, payload: payload.to_vec() }),
                    "Pong for a Ping"
                )
            }
            Event::Close(frame) => {
                let payload = frame.as_ref().map_or(Vec::new(), |f| f.code.0.to_be_bytes().to_vec());
                assert_eq!(sent.next(), Some(Sent { opcode: 0x8, payload }), "Close echo");
            }
            _ => {}
        }
    }
    match out.error {
        None | Some(End::Abnormal) => {}
        Some(End::Failed(error)) => {
            let close = sent.next().unwrap_or_else(|| panic!("no Close sent after {error:?}"));
            assert_eq!(close.opcode, 0x8, "frame sent on {error:?} is not a Close");
            assert!(close.payload.len() >= 2 && close.payload.len() <= 125);
            let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
            assert_eq!(CloseCode(code), error.close_code(), "close code sent for {error:?}");
            assert!(CloseCode(code).is_valid(), "invalid close code {code} sent");
            let reason = std::str::from_utf8(&close.payload[2..]).expect("close reason is not UTF-8");
            assert!(error.to_string().starts_with(reason), "close reason {reason:?} for {error:?}");
        }
    }
    assert!(sent.next().is_none(), "unexpected extra frames transmitted");
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 5 {
        return;
    }
    let flags = input[0];
    let mut config = Config::default();
    if flags & 2 != 0 {
        config.max_frame_size = u16::from_le_bytes([input[1], input[2]]) as usize;
    }
    if flags & 4 != 0 {
        config.max_message_size = u16::from_le_bytes([input[3], input[4]]) as usize;
    }
    let setup = Setup {
        role: if flags & 1 != 0 { Role::Client } else { Role::Server },
        config,
        close_first: flags & 8 != 0,
        use_read_buffer: flags & 16 != 0,
    };
    let Some((plan, stream)) = take_plan(&input[5..]) else {
        return;
    };

    let chunked = run(&setup, Chunks::new(stream, plan));
    let whole = run(&setup, std::iter::once(stream));
    assert_eq!(chunked, whole, "chunked and one-piece runs differ");

    let expected =
        model::expect(setup.role, setup.config.max_frame_size, setup.config.max_message_size, stream);
    assert_eq!(whole.events, expected.events, "events differ from the reference model");
    assert_eq!(whole.error, expected.error, "final error differs from the reference model");

    check_transmit(&setup, &whole);
});
