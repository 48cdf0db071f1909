//! A client and a server `Connection` talking to each other, driven by an
//! input-chosen sequence of operations on either side: send text or binary,
//! send fragments, ping, pong, close, write out a prefix of the queued
//! output in place (`transmit_buffer` + `advance_transmit`, as a transport
//! that took part of a write), release idle buffers, and deliver a chosen
//! number of the bytes in flight (through `receive` or `read_buffer`). Nothing is lost or
//! duplicated on the wire, so the checks are:
//! - no panic, and every command succeeds unless the side has closed (or a
//!   fragmented message is in progress, or text fragments are not UTF-8);
//! - each side receives exactly the messages, pings, pongs and Close the
//!   other sent, in order, plus a Pong for each Ping it sent while the peer
//!   was open and the Close echo; never an error;
//! - bytes buffered by a receiver stay within one frame (14 + the largest
//!   payload the peer sent), and `pending_transmit` is what `poll_transmit`
//!   gives;
//! - once everything is delivered, if either side closed, both are Closed;
//! - time and the transport: a fake clock moves forward by input-chosen
//!   steps and each side is told it (`handle_timeout`); each side's
//!   transport does the step its connection directs (`Flush`, `Shutdown`,
//!   `Close`; `AwaitEof` is met by the peer's shutdown reaching it), or is
//!   aborted. No timer while open; once the clock passes a deadline the
//!   connection moves on; at the end every connection reaches
//!   `Directive::Done` within twice the close timeout of fake time, and
//!   unless a side timed out or was aborted nothing was lost on the way
//!   (a side whose close timer ran out during the teardown timed out too,
//!   though its handshake ended `Clean`: what it had not flushed is dropped).
//!
//! Input layout: `flags, frame_size, operations...`. flags bit 0: the client
//! sends with `max_send_frame_size = Some(frame_size + 1)`; bit 1: the server does.
//! Bit 2: both sides agreed to permessage-deflate (RFC 7692), bit 3 with
//! `server_no_context_takeover`, bit 4 with `client_no_context_takeover`,
//! bits 5-6 choosing `server_max_window_bits` (unnamed, 9, 12, 15). Then each
//! text or binary send takes one more byte choosing how it is sent: `send`
//! (compressed with the connection's context), `send_prepared` of a plain
//! `PreparedMessage`, or of one made `with_deflate` at a chosen level (its
//! shared compressed frame goes out only where the agreement allows it).
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sabai::{
    CloseCode, CloseFrame, Config, Connection, DeflateConfig, DeflateParams, Directive, Ending, Event,
    Message, MessageKind, PreparedMessage, SendError, State,
};

/// The close timeout of both sides (the default).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// A length byte, then that many bytes (fewer at the end of input).
    fn blob(&mut self) -> &'a [u8] {
        let n = self.byte().unwrap_or(0) as usize;
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }
}

/// One side: its connection, the bytes it transmitted that the peer has not
/// read yet, and what the peer must see from it, in order.
struct Side {
    conn: Connection,
    wire: Vec<u8>,
    expected: VecDeque<Event>,
    /// The fragmented message being sent, if any.
    fragments: Option<(MessageKind, Vec<u8>)>,
    /// Largest frame payload sent, bounding what the peer may buffer.
    largest: usize,
    /// permessage-deflate was agreed: sends take a byte choosing the path.
    deflate: bool,
    /// Its transport's sending direction is shut down (or closed): nothing
    /// more goes on the wire, and once the wire drains the peer gets EOF.
    shut: bool,
    /// The peer was told EOF.
    eof_sent: bool,
    /// Its close timer ran out: from then on the connection may drop what
    /// it still had to write (a closing handshake that completed but was
    /// not flushed in time ends `Clean`, not `TimedOut`).
    gave_up: bool,
}

impl Side {
    fn new(conn: Connection) -> Self {
        let deflate = conn.deflate().is_some();
        Side {
            conn,
            wire: Vec::new(),
            expected: VecDeque::new(),
            fragments: None,
            largest: 125,
            deflate,
            shut: false,
            eof_sent: false,
            gave_up: false,
        }
    }

    /// Sends a whole message, by the path `input` chooses when compression
    /// is on. A compressed frame can be longer than its payload (RFC 7692
    /// §7.2.3.3 allows stored blocks), so the bytes queued bound the peer.
    fn send(&mut self, message: Message, input: &mut Input) -> Option<()> {
        let result = if !self.deflate {
            self.conn.send(message.clone())
        } else {
            let how = input.byte()?;
            let before = self.conn.buffers().pending_transmit();
            let result = match how % 3 {
                0 => self.conn.send(message.clone()),
                1 => self.conn.send_prepared(&PreparedMessage::new(&message)).map(|_| ()),
                _ => {
                    let mut config = DeflateConfig::default();
                    config.level = u32::from(how >> 2) % 10;
                    config.threshold = 0;
                    self.conn.send_prepared(&PreparedMessage::with_deflate(&message, &config)).map(|_| ())
                }
            };
            self.largest = self.largest.max(self.conn.buffers().pending_transmit() - before);
            result
        };
        self.check(result, Some(Event::Message(message)));
        Some(())
    }

    fn collect(&mut self) {
        if self.shut {
            // The transport takes nothing more; what is left is dropped
            // when the connection closes.
            return;
        }
        let pending = self.conn.buffers().pending_transmit();
        let before = self.wire.len();
        while let Some(bytes) = self.conn.poll_transmit() {
            assert!(!bytes.is_empty());
            self.wire.extend_from_slice(&bytes);
        }
        assert_eq!(self.wire.len() - before, pending, "pending_transmit disagrees");
    }

    /// Does the transport step the connection directs, as a transport that
    /// always succeeds would. `AwaitEof` waits for the peer.
    fn do_directive(&mut self) {
        match self.conn.poll_directive() {
            Directive::Flush => {
                self.collect();
                self.conn.directive_done(Directive::Flush);
            }
            Directive::Shutdown => {
                self.collect();
                self.shut = true;
                self.conn.directive_done(Directive::Shutdown);
            }
            Directive::Close => {
                self.shut = true;
                self.conn.directive_done(Directive::Close);
                assert_eq!(self.conn.poll_directive(), Directive::Done);
                assert_eq!(self.conn.buffers().pending_transmit(), 0, "a closed connection keeps output");
            }
            _ => {}
        }
    }

    /// Tells the connection the time, and checks the timer: none while
    /// open, never further than the close timeout, and a deadline that has
    /// passed moves the connection on.
    fn tick(&mut self, now: Instant) {
        let deadline = self.conn.poll_timeout();
        if self.conn.state() == State::Open {
            assert_eq!(deadline, None, "a timer while open");
        }
        let before = self.conn.poll_directive();
        self.conn.handle_timeout(now);
        if let Some(deadline) = deadline {
            assert!(deadline <= now + CLOSE_TIMEOUT, "a deadline past the close timeout");
            if now >= deadline {
                self.gave_up = true;
                // It moved on, or its timer ran out and the step under
                // way gets one try, given up at the next tick.
                let moved = self.conn.poll_directive() != before;
                assert!(
                    moved || self.conn.poll_timeout().is_none(),
                    "{:?}: the deadline passed and nothing moved ({before:?})",
                    self.conn.role()
                );
            }
        }
    }

    /// The side lost something on the way: it timed out (its closing
    /// handshake, or the teardown after it) or was aborted.
    fn lossy(&self) -> bool {
        self.gave_up || matches!(self.conn.ending(), Some(Ending::TimedOut | Ending::Aborted))
    }

    /// Checks a command's result: refused only when closed or mid-message.
    fn check(&mut self, result: Result<(), SendError>, expect: Option<Event>) {
        let open = self.conn.state() == State::Open;
        match result {
            Ok(()) => {
                if let Some(event) = expect {
                    self.expected.push_back(event);
                }
            }
            Err(SendError::Closed) => assert!(!open, "Closed error while open"),
            Err(SendError::FragmentedMessageInProgress) => assert!(self.fragments.is_some()),
            Err(e) => panic!("unexpected send error {e:?}"),
        }
    }
}

/// Moves up to `n` bytes from `from`'s wire to `to`, then reads every event.
fn deliver(from: &mut Side, to: &mut Side, n: usize, via_buffer: bool) {
    from.collect();
    let n = n.min(from.wire.len());
    let chunk: Vec<u8> = from.wire.drain(..n).collect();
    let reading = matches!(to.conn.state(), State::Open | State::CloseSent);
    if via_buffer && reading {
        to.conn.buffers_mut().read_buffer().extend_from_slice(&chunk);
    } else {
        to.conn.receive(&chunk);
    }
    loop {
        let was_open = to.conn.state() == State::Open;
        let event = match to.conn.poll_event() {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(e) => panic!("{:?} failed reading its peer: {e:?}", to.conn.role()),
        };
        let expected = from.expected.pop_front();
        assert_eq!(Some(&event), expected.as_ref(), "{:?} got an unexpected event", to.conn.role());
        match event {
            // RFC 6455 §5.5.2: the auto-Pong goes out unless our Close did.
            Event::Ping(payload) if was_open => to.expected.push_back(Event::Pong(payload)),
            // RFC 6455 §5.5.1: the echo carries the code, without the reason.
            Event::Close(frame) => {
                assert_eq!(to.conn.state(), State::Closed);
                if was_open {
                    let echo = frame.map(|f| CloseFrame::new(f.code, ""));
                    to.expected.push_back(Event::Close(echo));
                }
            }
            _ => {}
        }
    }
    let buffered = to.conn.buffers().buffered_input();
    assert!(buffered <= from.largest + 14, "{buffered} bytes buffered, largest payload {}", from.largest);
    if from.shut && from.wire.is_empty() && !from.eof_sent {
        // The peer's FIN arrives after its last byte.
        from.eof_sent = true;
        to.conn.receive_eof();
        while let Ok(Some(event)) = to.conn.poll_event() {
            panic!("{:?} got {event:?} after the EOF", to.conn.role());
        }
    }
}

fn text(data: &[u8]) -> String {
    data.iter().map(|&b| (b'a' + b % 26) as char).collect()
}

/// The agreement that flags bits 2-6 describe, if any.
fn deflate_params(flags: u8) -> Option<DeflateParams> {
    (flags & 4 != 0).then(|| DeflateParams {
        server_no_context_takeover: flags & 8 != 0,
        client_no_context_takeover: flags & 16 != 0,
        server_max_window_bits: [None, Some(9), Some(12), Some(15)][usize::from(flags >> 5 & 3)],
        client_max_window_bits: None,
    })
}

fn config(frame_size: Option<usize>) -> Config {
    let mut config = Config::default();
    config.max_send_frame_size = frame_size;
    config
}

fn step(sides: &mut [Side; 2], now: &mut Instant, input: &mut Input) -> Option<()> {
    let op = input.byte()?;
    let who = (op & 1) as usize;
    let [a, b] = sides;
    let (me, peer) = if who == 0 { (a, b) } else { (b, a) };
    match (op >> 1) % 14 {
        0 => {
            let data = input.blob();
            me.largest = me.largest.max(data.len());
            me.send(Message::binary(Bytes::copy_from_slice(data)), input)?;
        }
        1 => {
            let data = text(input.blob());
            me.largest = me.largest.max(data.len());
            me.send(Message::text(data), input)?;
        }
        2 => {
            // A fragment; text fragments are arbitrary bytes, so they may be refused.
            let flags = input.byte()?;
            let kind = if flags & 1 != 0 { MessageKind::Text } else { MessageKind::Binary };
            let fin = flags & 2 != 0;
            let data = input.blob();
            me.largest = me.largest.max(data.len());
            let result = me.conn.send_fragment(kind, data, fin);
            let ok = result.is_ok();
            if let Err(SendError::InvalidUtf8) = result {
                assert_eq!(kind, MessageKind::Text);
                return Some(());
            }
            let mismatch = me.fragments.as_ref().is_some_and(|(k, _)| *k != kind);
            if let Err(SendError::FragmentedMessageInProgress) = result {
                assert!(mismatch);
            }
            me.check(result, None);
            if ok {
                let (_, mut acc) = me.fragments.take().unwrap_or((kind, Vec::new()));
                acc.extend_from_slice(data);
                if fin {
                    let message = match kind {
                        MessageKind::Text => Message::text(String::from_utf8(acc).expect("accepted text")),
                        MessageKind::Binary => Message::binary(acc),
                    };
                    me.expected.push_back(Event::Message(message));
                } else {
                    me.fragments = Some((kind, acc));
                }
            }
        }
        3 => {
            let data = &input.blob()[..];
            let data = &data[..data.len().min(125)];
            let result = me.conn.ping(data);
            me.check(result, Some(Event::Ping(Bytes::copy_from_slice(data))));
        }
        4 => {
            let data = input.blob();
            let data = &data[..data.len().min(125)];
            let result = me.conn.pong(data);
            me.check(result, Some(Event::Pong(Bytes::copy_from_slice(data))));
        }
        5 => {
            let code = match input.byte()? {
                0..=127 => CloseCode::NORMAL,
                c => CloseCode(3000 + c as u16),
            };
            let reason = text(input.blob());
            let reason = &reason[..reason.len().min(123)];
            let result = me.conn.close(code, reason);
            let ok = result.is_ok();
            me.check(result, Some(Event::Close(Some(CloseFrame::new(code, reason)))));
            if ok {
                // RFC 6455 §5.4: the unfinished message is abandoned.
                me.fragments = None;
            }
        }
        6 | 7 => {
            let n = input.byte()? as usize;
            let n = if n >= 0xF0 { 256 << (n - 0xF0) } else { n };
            deliver(me, peer, n, op & 2 != 0);
        }
        8 => deliver(me, peer, usize::MAX, false),
        9 => {
            // A partial write: the transport took only a prefix, in place.
            let n = input.byte()? as usize;
            let front = me.conn.buffers().transmit_front();
            let n = n.min(front.len());
            me.wire.extend_from_slice(&front[..n]);
            let before = me.conn.buffers().pending_transmit();
            me.conn.buffers_mut().advance_transmit(n);
            assert_eq!(me.conn.buffers().pending_transmit(), before - n);
        }
        10 => me.conn.buffers_mut().release_idle(),
        11 => {
            // Time passes: 0 to 7.65 s, in 30 ms steps.
            *now += Duration::from_millis(30 * u64::from(input.byte()?));
            me.tick(*now);
            peer.tick(*now);
        }
        12 => me.do_directive(),
        _ => {
            // The transport failed (rarely: a byte must agree).
            if input.byte()? == 0xA5 {
                me.conn.abort();
                assert_eq!(me.conn.poll_directive(), Directive::Close);
                me.shut = true;
            }
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(flags), Some(size)) = (input.byte(), input.byte()) else {
        return;
    };
    let frame = |bit: u8| (flags & bit != 0).then_some(size as usize + 1);
    let mut client = Connection::client(config(frame(1)), [9; 32]);
    let mut server = Connection::server(config(frame(2)));
    if let Some(params) = deflate_params(flags) {
        client = client.with_deflate(params);
        server = server.with_deflate(params);
    }
    let mut sides = [Side::new(client), Side::new(server)];
    let mut now = Instant::now();
    let mut ops = 0;
    while ops < 2000 && step(&mut sides, &mut now, &mut input).is_some() {
        ops += 1;
    }
    // Deliver everything still in flight, both ways, until nothing moves.
    loop {
        let [a, b] = &mut sides;
        deliver(a, b, usize::MAX, false);
        deliver(b, a, usize::MAX, false);
        if a.wire.is_empty()
            && b.wire.is_empty()
            && a.conn.buffers().pending_transmit() == 0
            && b.conn.buffers().pending_transmit() == 0
        {
            break;
        }
    }
    let lossy = sides.iter().any(Side::lossy);
    for side in &sides {
        if !lossy {
            assert!(side.expected.is_empty(), "{:?}'s peer never saw {:?}", side.conn.role(), side.expected);
        }
        assert_eq!(side.conn.buffers().buffered_input(), 0);
    }
    let closed = sides.iter().any(|s| s.conn.state() != State::Open);
    if closed && !lossy && sides.iter().all(|s| s.conn.ending().is_none_or(|e| matches!(e, Ending::Clean(_))))
    {
        // RFC 6455 §7.1.2-§7.1.3: once either side closed, the handshake completes.
        for side in &sides {
            assert_eq!(side.conn.state(), State::Closed, "{:?} did not finish closing", side.conn.role());
        }
    }
    if !closed {
        return;
    }
    // Both transports do as directed until both connections are done; a
    // side left waiting is moved on by its close timer, so this ends
    // within twice the close timeout (the wait for a Close, then the
    // steps) of fake time.
    let start = now;
    for round in 0.. {
        assert!(round < 1000, "closing never ended");
        let [a, b] = &mut sides;
        a.do_directive();
        deliver(a, b, usize::MAX, false);
        b.do_directive();
        deliver(b, a, usize::MAX, false);
        if sides.iter().all(|s| s.conn.poll_directive() == Directive::Done) {
            break;
        }
        let stuck = sides.iter().all(|s| {
            matches!(s.conn.poll_directive(), Directive::AwaitEof | Directive::Read | Directive::Done)
        });
        if stuck {
            // Both wait: let time pass, to the next deadline (or a second
            // when a side still has to start its timer).
            let next = sides.iter().filter_map(|s| s.conn.poll_timeout()).min();
            now = next.unwrap_or(now + Duration::from_secs(1)).max(now);
            for side in &mut sides {
                side.tick(now);
            }
        }
        assert!(now - start <= 2 * CLOSE_TIMEOUT + Duration::from_secs(1), "closing took too long");
    }
    if !lossy {
        for side in &sides {
            assert!(
                matches!(side.conn.ending(), Some(Ending::Clean(_) | Ending::Abnormal)),
                "{:?} ended {:?}",
                side.conn.role(),
                side.conn.ending()
            );
        }
    }
});
