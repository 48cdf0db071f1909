//! permessage-deflate on the wire (RFC 7692 §6, §7.2): round trips with
//! every parameter, RSV1 misuse, bombs, and results that do not depend on
//! how the bytes were chunked. Frames are built by the test harness and
//! inflated with flate2 directly, not through sabai.
#![cfg(feature = "deflate")]

mod support;

use flate2::{Decompress, FlushDecompress};
use sabai::{Config, Connection, DeflateConfig, DeflateParams, Event, Message, ProtocolError};
use support::*;

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fn config(threshold: usize) -> Config {
    let mut deflate = DeflateConfig::default();
    deflate.threshold = threshold;
    let mut config = Config::default();
    config.deflate = Some(deflate);
    config
}

fn server(params: DeflateParams) -> Connection {
    Connection::server(config(0)).with_deflate(params)
}

fn client(params: DeflateParams) -> Connection {
    Connection::client(config(0), [7; 32]).with_deflate(params)
}

/// Moves what `from` sends into `to`, `chunk` bytes at a time, and returns
/// `to`'s events (stopping at the first error).
fn deliver(from: &mut Connection, to: &mut Connection, chunk: usize) -> Result<Vec<Event>, ProtocolError> {
    let mut bytes = Vec::new();
    while let Some(b) = from.poll_transmit() {
        bytes.extend_from_slice(&b);
    }
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        to.receive(piece);
        while let Some(event) = to.poll_event()? {
            events.push(event);
        }
    }
    Ok(events)
}

/// Independent inflater: one DEFLATE stream per message, or shared.
fn inflate(raw: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(input.len() * 1100 + 64);
    raw.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

fn text(n: usize, seed: u32) -> String {
    (0..n as u32).map(|i| format!("{{\"t\":{},\"v\":{}}}", i % 50, (i * seed) % 7)).collect()
}

fn all_params() -> Vec<DeflateParams> {
    let mut out = Vec::new();
    for snct in [false, true] {
        for cnct in [false, true] {
            for bits in [None, Some(8), Some(9), Some(12), Some(15)] {
                out.push(DeflateParams {
                    server_no_context_takeover: snct,
                    client_no_context_takeover: cnct,
                    server_max_window_bits: bits,
                    client_max_window_bits: bits,
                });
            }
        }
    }
    out
}

#[test]
fn round_trips_with_every_parameter_combination() {
    for params in all_params() {
        let (mut c, mut s) = (client(params), server(params));
        let messages = [
            Message::text(text(300, 3)),
            Message::text(text(300, 3)),
            Message::binary(vec![0u8; 70_000]),
            Message::text(""),
            Message::text("é".repeat(5000)),
        ];
        for m in &messages {
            c.send(m.clone()).unwrap();
            s.send(m.clone()).unwrap();
        }
        let at_server = deliver(&mut c, &mut s, 1 << 20).unwrap();
        let at_client = deliver(&mut s, &mut c, 1 << 20).unwrap();
        let expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        assert_eq!(at_server, expected, "{params:?}");
        assert_eq!(at_client, expected, "{params:?}");
    }
}

#[test]
fn rfc_example_hello_goes_out_plain_because_it_would_grow() {
    // RFC 7692 §7.2.3.1 compresses "Hello" to 7 bytes, §7.2.3.2 the second
    // one to 5 (both checked byte for byte in
    // src/proto/deflate/compress.rs::tests::rfc_example_hello): neither is
    // smaller than the 5 bytes it stands for, so both go out uncompressed,
    // RSV1 clear (§6: each message may be sent compressed or not).
    let mut s = server(DeflateParams::default());
    s.send(Message::text("Hello")).unwrap();
    s.send(Message::text("Hello")).unwrap();
    let frames = frames_sent(&mut s);
    for frame in &frames {
        assert_eq!((frame.rsv, frame.opcode, frame.payload.as_slice()), (0, TEXT, &b"Hello"[..]));
    }
    // Longer, it shrinks: compressed, and with server_no_context_takeover
    // the same message twice is the same payload twice.
    let hello = "Hello, Hello, Hello, Hello, Hello";
    let mut s = server(DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() });
    s.send(Message::text(hello)).unwrap();
    s.send(Message::text(hello)).unwrap();
    let frames = frames_sent(&mut s);
    assert_eq!((frames[0].rsv, frames[1].rsv), (0b100, 0b100));
    assert!(frames[0].payload.len() < hello.len());
    assert_eq!(frames[0].payload, frames[1].payload);
    assert_eq!(inflate(&mut Decompress::new(false), &frames[0].payload), hello.as_bytes());
}

/// RFC 7692 §6: the sender chooses per message. sabai never sends a
/// compressed message that is not smaller than the message: 1 MiB of
/// random bytes goes out as itself, RSV1 clear. With context takeover its
/// compressor was reset, so the next compressed message refers to nothing
/// the receiver's window lacks (the plain message never went through it).
#[test]
fn incompressible_messages_go_out_plain_and_the_windows_stay_in_step() {
    for params in all_params() {
        let (mut c, mut s) = (client(params), server(params));
        let random = noise(1 << 20, 7);
        let json = text(3000, 5);
        s.send(Message::text(json.clone())).unwrap();
        s.send(Message::binary(random.clone())).unwrap();
        s.send(Message::text(json.clone())).unwrap();
        s.send(Message::binary(random[..5000].to_vec())).unwrap();
        s.send(Message::text(json.clone())).unwrap();
        let mut wire = Vec::new();
        while let Some(b) = s.poll_transmit() {
            wire.extend_from_slice(&b);
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = Frame::decode(&wire[at..]) {
            frames.push(frame);
            at += used;
        }
        let rsv: Vec<u8> = frames.iter().map(|f| f.rsv).collect();
        assert_eq!(rsv, [0b100, 0, 0b100, 0, 0b100], "{params:?}");
        assert_eq!(frames[1].payload, random, "{params:?}");
        assert_eq!(frames[3].payload, &random[..5000], "{params:?}");
        // The library's own client inflates the same bytes.
        let mut got = Vec::new();
        for piece in wire.chunks(4096) {
            c.receive(piece);
            while let Some(event) = c.poll_event().unwrap() {
                got.push(event);
            }
        }
        let expected = [
            Message::text(json.clone()),
            Message::binary(random.clone()),
            Message::text(json.clone()),
            Message::binary(random[..5000].to_vec()),
            Message::text(json.clone()),
        ];
        assert_eq!(got, expected.map(Event::Message), "{params:?}");
    }
}

/// RFC 7692 §7.1.2, §7.2.1: with a negotiated window of 2^9 or 2^10
/// bytes, each side compresses with that window and still takes it over
/// from message to message; several messages round-trip both ways, and
/// later ones are shorter for it.
#[test]
fn small_windows_keep_context_takeover() {
    for bits in [9, 10] {
        let params = DeflateParams {
            server_max_window_bits: Some(bits),
            client_max_window_bits: Some(bits),
            ..DeflateParams::default()
        };
        let (mut c, mut s) = (client(params), server(params));
        // 200 hex digits: shorter than the window, and compressible only
        // to about half on its own.
        let line: String = noise(100, bits.into()).iter().map(|b| format!("{b:02x}")).collect();
        let messages: Vec<Message> = (0..6).map(|_| Message::text(line.clone())).collect();
        for m in &messages {
            s.send(m.clone()).unwrap();
        }
        let mut wire = Vec::new();
        while let Some(b) = s.poll_transmit() {
            wire.extend_from_slice(&b);
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = Frame::decode(&wire[at..]) {
            frames.push(frame);
            at += used;
        }
        assert!(frames.iter().all(|f| f.rsv == 0b100), "window bits {bits}");
        // The client takes the same bytes in (later ones refer back).
        c.receive(&wire);
        let expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        let got: Vec<Event> = std::iter::from_fn(|| c.poll_event().unwrap()).collect();
        assert_eq!(got, expected, "window bits {bits}");
        // Context taken over: the repeats refer back into the first one.
        assert!(frames[1].payload.len() < frames[0].payload.len() / 2, "window bits {bits}");
        // An independent inflater with only that window (it fails on any
        // reference further back) and one stream for the whole connection.
        let mut raw = Decompress::new_with_window_bits(false, bits);
        for frame in &frames {
            assert_eq!(inflate(&mut raw, &frame.payload), line.as_bytes(), "window bits {bits}");
        }
        for m in &messages {
            s.send(m.clone()).unwrap();
            c.send(m.clone()).unwrap();
        }
        assert_eq!(deliver(&mut s, &mut c, 7).unwrap(), expected, "window bits {bits}");
        assert_eq!(deliver(&mut c, &mut s, 7).unwrap(), expected, "window bits {bits}");
    }
}

#[test]
fn context_takeover_output_inflates_with_one_shared_window() {
    let mut s = server(DeflateParams::default());
    let mut raw = Decompress::new(false);
    for i in 0..20 {
        let m = text(200, i % 3 + 1);
        s.send(Message::text(m.clone())).unwrap();
        let frames = frames_sent(&mut s);
        assert_eq!(inflate(&mut raw, &frames[0].payload), m.as_bytes());
    }
}

#[test]
fn window_bits_8_output_inflates_and_stays_in_the_window() {
    // RFC 7692 §7.1.2: 8 bits is a 256-byte window. Each piece of at most
    // 256 bytes is compressed on its own, so every 256-byte run of input
    // must inflate from a fresh decoder once the pieces are cut apart.
    let params = DeflateParams { server_max_window_bits: Some(8), ..DeflateParams::default() };
    let mut s = server(params);
    let m = text(500, 5);
    s.send(Message::text(m.clone())).unwrap();
    let payload = frames_sent(&mut s).remove(0).payload;
    assert_eq!(inflate(&mut Decompress::new(false), &payload), m.as_bytes());
    let pieces: Vec<&[u8]> = payload.split_inclusive_tail();
    assert_eq!(pieces.len(), m.len().div_ceil(256));
    for (i, piece) in pieces.iter().enumerate() {
        let expected = &m.as_bytes()[i * 256..((i + 1) * 256).min(m.len())];
        assert_eq!(inflate(&mut Decompress::new(false), piece), expected, "piece {i}");
    }
}

/// Splits a payload at every empty stored block (0x00 0x00 0xff 0xff),
/// dropping the marker, as a decoder starting fresh at each would see it.
trait SplitTail {
    fn split_inclusive_tail(&self) -> Vec<&[u8]>;
}

impl SplitTail for Vec<u8> {
    fn split_inclusive_tail(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i + 4 <= self.len() {
            if self[i..i + 4] == TAIL {
                out.push(&self[start..i]);
                i += 4;
                start = i;
            } else {
                i += 1;
            }
        }
        out.push(&self[start..]);
        out
    }
}

#[test]
fn fragmented_compressed_messages_carry_rsv1_on_the_first_frame_only() {
    let mut cfg = config(0);
    cfg.max_send_frame_size = Some(10);
    let mut s = Connection::server(cfg).with_deflate(DeflateParams::default());
    let m = text(100, 7);
    s.send(Message::text(m.clone())).unwrap();
    let frames = frames_sent(&mut s);
    assert!(frames.len() > 2);
    assert_eq!((frames[0].rsv, frames[0].opcode, frames[0].fin), (0b100, TEXT, false));
    for f in &frames[1..] {
        assert_eq!((f.rsv, f.opcode), (0, CONTINUATION));
    }
    let payload: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
    assert_eq!(inflate(&mut Decompress::new(false), &payload), m.as_bytes());
    // And sabai reads such a message back, however the bytes are cut.
    for chunk in [1, 3, 7, 1000] {
        let mut s = Connection::server(config(0)).with_deflate(DeflateParams::default());
        let wire = wire(&[
            Frame::text(&payload[..4]).rsv(0b100).fin(false),
            Frame::ping("p"),
            Frame::cont(&payload[4..9]).fin(false),
            Frame::cont(&payload[9..]),
        ]);
        let mut events = Vec::new();
        for piece in wire.chunks(chunk) {
            s.receive(piece);
            while let Some(e) = s.poll_event().unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], Event::Message(Message::text(m.clone())), "chunk {chunk}");
    }
}

#[test]
fn results_do_not_depend_on_chunking() {
    let params = DeflateParams::default();
    let mut c = client(params);
    for i in 0..5 {
        c.send(Message::text(text(100 * i, 3))).unwrap();
        c.send(Message::binary(vec![i as u8; 3000])).unwrap();
    }
    let mut bytes = Vec::new();
    while let Some(b) = c.poll_transmit() {
        bytes.extend_from_slice(&b);
    }
    let reference = {
        let mut s = server(params);
        s.receive(&bytes);
        std::iter::from_fn(|| s.poll_event().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(reference.len(), 10);
    for chunk in [1, 2, 5, 64, 4096] {
        let mut s = server(params);
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk) {
            s.receive(piece);
            while let Some(e) = s.poll_event().unwrap() {
                events.push(e);
            }
        }
        assert_eq!(events, reference, "chunk {chunk}");
    }
}

#[test]
fn threshold_leaves_small_messages_uncompressed() {
    let mut s = Connection::server(config(10)).with_deflate(DeflateParams::default());
    s.send(Message::text("short")).unwrap();
    s.send(Message::text("long enough to compress, long enough to compress")).unwrap();
    let frames = frames_sent(&mut s);
    assert_eq!((frames[0].rsv, frames[0].payload.as_slice()), (0, &b"short"[..]));
    assert_eq!(frames[1].rsv, 0b100);
    // Uncompressed messages between compressed ones do not touch the window
    // (RFC 7692 §7.2.3.2).
    let mut c = client(DeflateParams::default());
    c.send(Message::text("Hello")).unwrap();
    let mut s = server(DeflateParams::default());
    deliver(&mut c, &mut s, 100).unwrap();
    s.receive(&Frame::text("plain").encode());
    assert_eq!(s.poll_event().unwrap(), Some(Event::Message(Message::text("plain"))));
}

// An inflated message is not held in the inflater's larger buffer.
#[test]
fn inflated_messages_are_not_kept_in_oversized_buffers() {
    for n in [10, 300, 3000] {
        let mut c = client(DeflateParams::default());
        let mut s = server(DeflateParams::default());
        let sent = text(n, 3);
        c.send(Message::text(sent.clone())).unwrap();
        c.send(Message::binary(sent.clone().into_bytes())).unwrap();
        let events = deliver(&mut c, &mut s, 1 << 20).unwrap();
        let [Event::Message(Message::Text(t)), Event::Message(Message::Binary(_))] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(t, &sent);
        let len = t.len();
        assert!(t.capacity() <= len + len / 4, "{len}-byte text held in {} bytes", t.capacity());
    }
}

/// Feeds frames to a deflate server and returns its error and close code.
fn failure(frames: &[Frame], max_message: Option<usize>) -> (ProtocolError, Option<u16>) {
    let mut cfg = config(0);
    if let Some(max) = max_message {
        cfg.max_message_size = max;
    }
    let mut s = Connection::server(cfg).with_deflate(DeflateParams::default());
    s.receive(&wire(frames));
    let error = loop {
        match s.poll_event() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error"),
            Err(error) => break error,
        }
    };
    let close = frames_sent(&mut s).last().and_then(Frame::close_code);
    (error, close)
}

#[test]
fn rsv1_misuse_fails_with_1002() {
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    // RFC 7692 §6.1: RSV1 on a continuation frame.
    let frames = [Frame::text(&hello[..3]).rsv(0b100).fin(false), Frame::cont(&hello[3..]).rsv(0b100)];
    assert_eq!(failure(&frames, None), (ProtocolError::CompressedContinuation, Some(1002)));
    let frames = [Frame::text("a").fin(false), Frame::cont("b").rsv(0b100)];
    assert_eq!(failure(&frames, None), (ProtocolError::CompressedContinuation, Some(1002)));
    // RFC 7692 §6.1: RSV1 on control frames.
    for frame in [Frame::ping("x"), Frame::pong("x"), Frame::close(1000, "")] {
        assert_eq!(failure(&[frame.rsv(0b100)], None), (ProtocolError::CompressedControlFrame, Some(1002)));
    }
    // RSV2 and RSV3 stay reserved (RFC 6455 §5.2).
    for rsv in [0b010, 0b001, 0b110, 0b111] {
        assert_eq!(
            failure(&[Frame::text(hello).rsv(rsv)], None),
            (ProtocolError::ReservedBits(rsv), Some(1002))
        );
    }
}

#[test]
fn rsv1_without_the_extension_still_fails() {
    let mut s = Connection::server(config(0));
    s.receive(&Frame::text("x").rsv(0b100).encode());
    assert_eq!(s.poll_event(), Err(ProtocolError::ReservedBits(0b100)));
}

#[test]
fn garbage_compressed_data_fails_with_1002() {
    // BTYPE 11 is reserved in DEFLATE (RFC 1951 §3.2.3).
    let frames = [Frame::binary([0xff, 0xff, 0xff]).rsv(0b100)];
    assert_eq!(failure(&frames, None), (ProtocolError::InvalidCompressedData, Some(1002)));
}

#[test]
fn inflated_text_must_be_utf8_and_fails_fast() {
    let mut raw = flate2::Compress::new(flate2::Compression::default(), false);
    let mut bad = Vec::with_capacity(100);
    raw.compress_vec(b"ok \xff nope", &mut bad, flate2::FlushCompress::Sync).unwrap();
    // The first frame already inflates to invalid UTF-8: the error comes
    // before the message's last frame has arrived.
    let mut s = server(DeflateParams::default());
    s.receive(&Frame::text(&bad).rsv(0b100).fin(false).encode());
    assert_eq!(s.poll_event(), Err(ProtocolError::InvalidUtf8));
    assert_eq!(frames_sent(&mut s).last().and_then(Frame::close_code), Some(1007));
}

/// A raw DEFLATE bomb: one fixed-Huffman block holding a literal 0 and then
/// `matches` copies of (length 258, distance 1), 13 bits each, so every
/// byte of it inflates to about 160 bytes.
fn bomb(matches: usize) -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(0, 1); // BFINAL = 0
    bits.put(1, 2); // BTYPE = 01, fixed Huffman
    bits.put_code(0b0011_0000, 8); // literal 0
    for _ in 0..matches {
        bits.put_code(0b1100_0101, 8); // length code 285: 258 bytes
        bits.put_code(0, 5); // distance code 0: distance 1
    }
    bits.put_code(0, 7); // end of block (256)
    bits.finish()
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    /// Puts `len` bits of `value`, least significant first (RFC 1951 §3.1.1).
    fn put(&mut self, value: u32, len: u32) {
        for i in 0..len {
            self.acc |= ((value >> i) & 1) << self.n;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    /// Huffman codes go most significant bit first.
    fn put_code(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.put((code >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

#[test]
fn the_bomb_helper_is_a_real_bomb() {
    let small = bomb(100);
    let out = inflate(&mut Decompress::new(false), &small);
    assert_eq!(out.len(), 1 + 100 * 258);
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn a_bomb_that_inflates_to_gigabytes_is_refused_with_1009() {
    // 4 MiB in, over 4 GiB out; the limit is 1 MiB of inflated message.
    let payload = bomb((4 << 20) * 8 / 13);
    assert!(payload.len() > 3 << 20 && payload.len() < 5 << 20);
    let (error, close) = failure(&[Frame::binary(&payload).rsv(0b100)], Some(1 << 20));
    assert!(matches!(error, ProtocolError::MessageTooLarge { max: 1048576, .. }), "{error:?}");
    assert_eq!(close, Some(1009));
    // The same through many small frames: the limit is on the whole message.
    let small = bomb(1000);
    let mut frames = vec![Frame::binary(&small[..small.len() / 2]).rsv(0b100).fin(false)];
    frames.extend(std::iter::repeat_n(Frame::cont([0u8; 0]).fin(false), 3));
    frames.push(Frame::cont(&small[small.len() / 2..]));
    let (error, close) = failure(&frames, Some(100_000));
    assert!(matches!(error, ProtocolError::MessageTooLarge { max: 100_000, .. }), "{error:?}");
    assert_eq!(close, Some(1009));
}

#[test]
fn a_message_just_at_the_limit_passes() {
    let mut c = client(DeflateParams::default());
    c.send(Message::binary(vec![1u8; 50_000])).unwrap();
    let mut cfg = config(0);
    cfg.max_message_size = 50_000;
    let mut s = Connection::server(cfg).with_deflate(DeflateParams::default());
    let events = deliver(&mut c, &mut s, 1 << 16).unwrap();
    assert_eq!(events, [Event::Message(Message::binary(vec![1u8; 50_000]))]);
}

#[test]
fn empty_and_bfinal_messages() {
    let mut s = server(DeflateParams::default());
    let frames = [
        // An empty message compresses to one 0x00 byte (RFC 7692 §7.2.1).
        Frame::text([0x00]).rsv(0b100),
        // RFC 7692 §7.2.3.4: a block with BFINAL set, then padding.
        Frame::text([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]).rsv(0b100),
        // RFC 7692 §7.2.3.3: a stored block.
        Frame::binary([0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]).rsv(0b100),
    ];
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    assert_eq!(
        events,
        [
            Event::Message(Message::text("")),
            Event::Message(Message::text("Hello")),
            Event::Message(Message::binary(&b"Hello"[..]))
        ]
    );
}

/// RFC 7692 §7.2.3.4 then §7.2.3.2: a message ending in a block with
/// BFINAL set, then the second "Hello", a match 5 bytes back into it. The
/// DEFLATE stream ended, but with context takeover the window did not
/// (§7.2.2): the inflater starts the next stream with the last bytes it
/// inflated as its dictionary.
#[test]
fn context_takeover_survives_a_bfinal_block() {
    let mut s = server(DeflateParams::default());
    let frames = [
        // RFC 7692 §7.2.3.4: "Hello" in a block with BFINAL set, then padding.
        Frame::text([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]).rsv(0b100),
        // RFC 7692 §7.2.3.2: the second "Hello", a match 5 bytes back.
        Frame::text([0xf2, 0x00, 0x11, 0x00, 0x00]).rsv(0b100),
    ];
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    assert_eq!(events, [Event::Message(Message::text("Hello")), Event::Message(Message::text("Hello"))]);
}

/// The same two messages with the first flushed the usual way (BFINAL
/// clear): the window is kept and the reference resolves. The control for
/// the test above.
#[test]
fn context_takeover_resolves_the_rfcs_second_hello() {
    let mut s = server(DeflateParams::default());
    let frames = [
        Frame::text([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).rsv(0b100),
        Frame::text([0xf2, 0x00, 0x11, 0x00, 0x00]).rsv(0b100),
    ];
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    assert_eq!(events, [Event::Message(Message::text("Hello")), Event::Message(Message::text("Hello"))]);
}

/// A DEFLATE back-reference to bytes before the first one ever inflated
/// is invalid data (RFC 1951 §3.2.5: a distance refers back into the
/// output; zlib: "invalid distance too far back"): 1002, not zeros.
#[test]
fn a_reference_before_the_first_byte_fails_with_1002() {
    // RFC 7692 §7.2.3.2's second "Hello" on a connection with no first one.
    let frames = [Frame::text([0xf2, 0x00, 0x11, 0x00, 0x00]).rsv(0b100)];
    assert_eq!(failure(&frames, None), (ProtocolError::InvalidCompressedData, Some(1002)));
}

/// Raw DEFLATE of `data` from a window holding `dictionary`: flushed and
/// its tail removed (RFC 7692 §7.2.1), or ended by a BFINAL block
/// (§7.2.3.4), as a sender that takes its window over across BFINAL would.
fn deflate_after(dictionary: &[u8], data: &[u8], bfinal: bool) -> Vec<u8> {
    let mut raw = flate2::Compress::new(flate2::Compression::default(), false);
    if !dictionary.is_empty() {
        raw.set_dictionary(dictionary).unwrap();
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    let flush = if bfinal { flate2::FlushCompress::Finish } else { flate2::FlushCompress::Sync };
    raw.compress_vec(data, &mut out, flush).unwrap();
    if bfinal {
        // §7.2.3.4: then 0x00, which the appended 00 00 ff ff makes an
        // empty stored block.
        out.push(0x00);
    } else if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    out
}

/// After a peer's first BFINAL the inflater keeps the last 32 KiB it
/// inflated, so later BFINALs start the next stream with the exact window,
/// even one that spans several messages.
#[test]
fn bfinal_blocks_keep_the_window_across_several_messages() {
    let mut s = server(DeflateParams::default());
    let frames = [
        Frame::text(deflate_after(b"", b"Hello", true)).rsv(0b100),
        Frame::text(deflate_after(b"Hello", b"World", true)).rsv(0b100),
        // Distance 10: back into the first message, across the second.
        Frame::text(deflate_after(b"HelloWorld", b"HelloWorld", false)).rsv(0b100),
    ];
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    let expected = ["Hello", "World", "HelloWorld"].map(|t| Event::Message(Message::text(t)));
    assert_eq!(events, expected);
}

/// The limit of that (SPEC_NOTES.md, §5, 7.2.3.4): the copy starts at the
/// peer's first BFINAL, so when that comes after earlier messages and the
/// message is shorter than 32 KiB, the earlier bytes are not in the new
/// stream's dictionary. A reference into them fails with 1002; it never
/// reads the wrong bytes.
#[test]
fn a_first_bfinal_after_earlier_messages_cannot_reach_back_past_itself() {
    let frames = [
        Frame::text(deflate_after(b"", b"Hello", false)).rsv(0b100),
        Frame::text(deflate_after(b"Hello", b"World", true)).rsv(0b100),
        // Distance 5 (into "World"): inside the dictionary.
        Frame::text(deflate_after(b"HelloWorld", b"World", false)).rsv(0b100),
    ];
    let mut s = server(DeflateParams::default());
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    assert_eq!(events, ["Hello", "World", "World"].map(|t| Event::Message(Message::text(t))));
    // Distance 10 (into "Hello", before the first BFINAL message).
    let frames = [
        frames[0].clone(),
        frames[1].clone(),
        Frame::text(deflate_after(b"HelloWorld", b"HelloWorld", false)).rsv(0b100),
    ];
    assert_eq!(failure(&frames, None), (ProtocolError::InvalidCompressedData, Some(1002)));
}

/// RFC 7692 §7.2.1: a sender that fragments as it compresses keeps the
/// 0x00 0x00 0xff 0xff of a non-final fragment; only the message's end
/// lost its tail, so only the last fragment gets it back (§7.2.2). The two
/// blocks of §7.2.3.5, cut after the first block's flush, then the empty
/// last fragment of §7.2.3.6.
#[test]
fn a_non_final_fragment_keeps_its_flush_tail() {
    let mut s = server(DeflateParams::default());
    let frames = [
        Frame::text([0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff]).rsv(0b100).fin(false),
        Frame::cont([0xca, 0xc9, 0xc9, 0x07, 0x00]),
        Frame::text([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff]).rsv(0b100).fin(false),
        Frame::cont([0x00]),
    ];
    s.receive(&wire(&frames));
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event().unwrap()).collect();
    assert_eq!(events, [Event::Message(Message::text("Hello")), Event::Message(Message::text("Hello"))]);
}
