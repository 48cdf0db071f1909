//! The sending side: an input-chosen sequence of commands (`send`,
//! `send_fragment`, `ping`, `pong`, `close`) on one connection, whose bytes
//! are read by a peer of the other role. Checks:
//! - every command succeeds or fails exactly as RFC 6455 and the docs say
//!   (closed, fragment in progress, control payload over 125, invalid close
//!   code, reason over 123 bytes, text fragments that are not UTF-8), and a
//!   refused command transmits nothing;
//! - `send` splits into frames of at most `max_send_frame_size` (text or
//!   binary first, then continuations, FIN only on the last);
//! - the peer reads without error exactly the messages, pings, pongs and
//!   Close that were sent;
//! - the peer's replies (a Pong per Ping, the Close echo) come back.
//!
//! Input layout: `flags, frame_size, commands...`. flags bit 0: the sender is
//! the client; bit 1: `max_send_frame_size = Some(frame_size)`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sabai::proto::{FrameHeader, OpCode};
use sabai::{CloseCode, CloseFrame, Config, Connection, Event, Message, MessageKind, SendError, State};

/// Reads the command stream.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }
    /// A length byte, then that many bytes (fewer at the end of input).
    fn blob(&mut self) -> &'a [u8] {
        let n = self.byte().unwrap_or(0) as usize;
        self.bytes(n)
    }
}

/// The frames in `bytes`, decoded with `FrameHeader::parse` and unmasked.
fn frames(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (header, n) =
            FrameHeader::parse(&bytes[at..]).expect("sent an invalid header").expect("cut header");
        at += n;
        let len = header.len as usize;
        let mut payload = bytes[at..at + len].to_vec();
        if let Some(key) = header.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        at += len;
        out.push((header, payload));
    }
    out
}

/// A fragmented message being sent, as the test sees it.
struct Pending {
    kind: MessageKind,
    data: Vec<u8>,
}

/// Whether `bytes` could still be the start of valid UTF-8.
fn utf8_prefix_ok(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(flags), Some(frame_size)) = (input.byte(), input.byte()) else {
        return;
    };
    let client_sends = flags & 1 != 0;
    let max_send = (flags & 2 != 0).then_some(frame_size as usize);
    let mut config = Config::default();
    config.max_send_frame_size = max_send;
    let (mut sender, mut peer) = if client_sends {
        (Connection::client(config, [3; 32]), Connection::server(Config::default()))
    } else {
        (Connection::server(config), Connection::client(Config::default(), [4; 32]))
    };

    let mut expected: Vec<Event> = Vec::new();
    let mut got: Vec<Event> = Vec::new();
    let mut pings_sent: Vec<Bytes> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut closed = false;

    while let Some(op) = input.byte() {
        let result: Result<(), SendError>;
        let mut expect_error: Option<SendError> = None;
        let mut expect_event: Option<Event> = None;
        let mut send_len: Option<usize> = None;
        match op % 6 {
            0 | 1 => {
                let bytes = input.blob();
                let message = if op % 6 == 0 {
                    Message::text(String::from_utf8_lossy(bytes))
                } else {
                    Message::binary(bytes.to_vec())
                };
                if closed {
                    expect_error = Some(SendError::Closed);
                } else if pending.is_some() {
                    expect_error = Some(SendError::FragmentedMessageInProgress);
                } else {
                    send_len = Some(message.len());
                    expect_event = Some(Event::Message(message.clone()));
                }
                result = sender.send(message);
            }
            2 => {
                let kind = if op & 0x40 != 0 { MessageKind::Text } else { MessageKind::Binary };
                let fin = op & 0x80 != 0;
                let bytes = input.blob();
                let mut would = pending.as_ref().map_or(Vec::new(), |p| p.data.clone());
                would.extend_from_slice(bytes);
                if closed {
                    expect_error = Some(SendError::Closed);
                } else if pending.as_ref().is_some_and(|p| p.kind != kind) {
                    expect_error = Some(SendError::FragmentedMessageInProgress);
                } else if kind == MessageKind::Text
                    && !(if fin { std::str::from_utf8(&would).is_ok() } else { utf8_prefix_ok(&would) })
                {
                    expect_error = Some(SendError::InvalidUtf8);
                }
                result = sender.send_fragment(kind, bytes, fin);
                if expect_error.is_none() {
                    if fin {
                        expect_event = Some(Event::Message(match kind {
                            MessageKind::Text => Message::Text(String::from_utf8(would).unwrap()),
                            MessageKind::Binary => Message::Binary(would.into()),
                        }));
                        pending = None;
                    } else {
                        pending = Some(Pending { kind, data: would });
                    }
                }
            }
            3 | 4 => {
                let payload = Bytes::copy_from_slice(input.blob());
                if closed {
                    expect_error = Some(SendError::Closed);
                } else if payload.len() > 125 {
                    expect_error = Some(SendError::ControlPayloadTooLong(payload.len()));
                } else if op % 6 == 3 {
                    expect_event = Some(Event::Ping(payload.clone()));
                    pings_sent.push(payload.clone());
                } else {
                    expect_event = Some(Event::Pong(payload.clone()));
                }
                result = if op % 6 == 3 { sender.ping(&payload) } else { sender.pong(&payload) };
            }
            _ => {
                let code = u16::from_be_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)]);
                let reason = String::from_utf8_lossy(input.blob()).into_owned();
                if closed {
                    expect_error = Some(SendError::Closed);
                } else if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    expect_error = Some(SendError::InvalidCloseCode(code));
                } else if reason.len() > 123 {
                    expect_error = Some(SendError::CloseReasonTooLong(reason.len()));
                } else {
                    expect_event = Some(Event::Close(Some(CloseFrame::new(code, reason.clone()))));
                    closed = true;
                    pending = None;
                }
                result = sender.close(CloseCode(code), &reason);
            }
        }
        assert_eq!(result.err(), expect_error, "result of command {op:#04x}");

        // What the command transmitted.
        let mut sent = Vec::new();
        while let Some(bytes) = sender.poll_transmit() {
            sent.extend_from_slice(&bytes);
        }
        let sent_frames = frames(&sent);
        if expect_error.is_some() {
            assert!(sent.is_empty(), "a refused command transmitted {} bytes", sent.len());
            continue;
        }
        for (header, _) in &sent_frames {
            assert_eq!(header.mask.is_some(), client_sends, "masking");
            assert_eq!(header.rsv, 0);
        }
        if let Some(len) = send_len {
            let max = max_send.unwrap_or(usize::MAX).max(1);
            let count = if len == 0 { 1 } else { len.div_ceil(max) };
            assert_eq!(sent_frames.len(), count, "frames for a {len}-byte message, max {max:?}");
            for (i, (header, payload)) in sent_frames.iter().enumerate() {
                assert!(payload.len() <= max, "frame of {} bytes over {max}", payload.len());
                assert_eq!(header.fin, i + 1 == count);
                assert_eq!(header.opcode == OpCode::Continuation, i > 0);
            }
        } else {
            assert_eq!(sent_frames.len(), 1, "one frame per fragment or control command");
        }
        expected.extend(expect_event);

        // The peer reads it, without error.
        peer.receive(&sent);
        loop {
            match peer.poll_event() {
                Ok(Some(event)) => got.push(event),
                Ok(None) => break,
                Err(e) => panic!("peer failed on what we sent: {e:?}"),
            }
        }
        assert_eq!(got, expected, "the peer read something else");
    }

    // The peer's replies: a Pong per Ping (while it was open), and the echo
    // of our Close.
    let mut replies = Vec::new();
    while let Some(bytes) = peer.poll_transmit() {
        replies.extend_from_slice(&bytes);
    }
    sender.receive(&replies);
    let mut back = Vec::new();
    loop {
        match sender.poll_event() {
            Ok(Some(event)) => back.push(event),
            Ok(None) => break,
            Err(e) => panic!("sender failed on the peer's replies: {e:?}"),
        }
    }
    let mut want: Vec<Event> = pings_sent.into_iter().map(Event::Pong).collect();
    if closed {
        let Some(Event::Close(Some(ours))) = expected.last() else { unreachable!() };
        want.push(Event::Close(Some(CloseFrame::new(ours.code, ""))));
        assert_eq!(peer.state(), State::Closed);
        assert_eq!(sender.state(), State::Closed);
    } else {
        assert_eq!(sender.state(), State::Open);
    }
    assert_eq!(back, want, "the peer's replies");
});
