//! Micro-benchmarks of the sans-IO core, on the standard library alone.
//!
//!     cargo bench --bench micro              # everything
//!     cargo bench --bench micro -- mask      # names containing "mask"
//!
//! Each line is the median of 7 samples (each at least 100 ms of repeated
//! calls) with the min-max range. Comparisons (mask against a plain copy,
//! UTF-8 against `std::str::from_utf8`) run side by side in the same process,
//! so their ratio means something even on a noisy machine; absolute numbers
//! do not travel between machines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sabai::handshake::ServerHandshake;
use sabai::proto::{apply_mask, FrameHeader, OpCode, Utf8Validator, MAX_HEADER_LEN};
use sabai::{Config, Connection, Event};

const SAMPLES: usize = 7;
const SAMPLE_TIME: Duration = Duration::from_millis(100);

/// Seconds per call of `f`: the median and range over the samples.
fn measure(mut f: impl FnMut()) -> (f64, f64, f64) {
    // Calibrate: how many calls fill one sample.
    let mut calls = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        if start.elapsed() >= SAMPLE_TIME / 4 {
            break;
        }
        calls *= 2;
    }
    calls *= 4;
    let mut per_call: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    (per_call[SAMPLES / 2], per_call[0], per_call[SAMPLES - 1])
}

struct Bench {
    filter: Option<String>,
}

impl Bench {
    fn wanted(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| name.contains(f.as_str()))
    }

    /// Reports time per call.
    fn time(&self, name: &str, f: impl FnMut()) -> Option<f64> {
        if !self.wanted(name) {
            return None;
        }
        let (median, lo, hi) = measure(f);
        println!("{name:<44} {:>10.1} ns   [{:.1}-{:.1}]", median * 1e9, lo * 1e9, hi * 1e9);
        Some(median)
    }

    /// Reports throughput over `bytes` per call, in GB/s (10^9 bytes).
    fn rate(&self, name: &str, bytes: usize, f: impl FnMut()) -> Option<f64> {
        if !self.wanted(name) {
            return None;
        }
        let (median, lo, hi) = measure(f);
        let gbps = |t: f64| bytes as f64 / t / 1e9;
        println!("{name:<44} {:>10.2} GB/s [{:.2}-{:.2}]", gbps(median), gbps(hi), gbps(lo));
        Some(gbps(median))
    }
}

fn ratio(label: &str, a: Option<f64>, b: Option<f64>) {
    if let (Some(a), Some(b)) = (a, b) {
        println!("  -> {label}: {:.2}x", a / b);
    }
}

fn main() {
    // `cargo bench` passes "--bench"; any other argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let b = Bench { filter };

    frame_headers(&b);
    masking(&b);
    utf8(&b);
    handshake(&b);
    message_decode(&b);
}

fn frame_headers(b: &Bench) {
    let headers = [
        FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), len: 20 },
        FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: Some([1, 2, 3, 4]), len: 1024 },
        FrameHeader { fin: false, rsv: 0, opcode: OpCode::Binary, mask: None, len: 1 << 20 },
    ];
    let encoded: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| {
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            out[..n].to_vec()
        })
        .collect();
    for (h, bytes) in headers.iter().zip(&encoded) {
        let name = format!("frame header parse ({} B length)", h.len);
        b.time(&name, || {
            black_box(FrameHeader::parse(black_box(bytes)).unwrap());
        });
        let name = format!("frame header encode ({} B length)", h.len);
        b.time(&name, || {
            let mut out = [0u8; MAX_HEADER_LEN];
            black_box(black_box(h).encode(&mut out));
        });
    }
}

fn masking(b: &Bench) {
    for len in [64usize, 1024, 64 * 1024, 1 << 20] {
        // The reference copy's source and destination in one allocation,
        // 2 KiB apart modulo 4 KiB. As two `Vec`s of 64 KiB they were 16
        // bytes apart modulo 4 KiB (glibc's chunk header), and on AMD Zen 3
        // with glibc 2.36 such a copy (`rep movsb`) runs at about 2.7 GB/s
        // instead of about 45: a quirk of that placement, not a copy's speed.
        let gap = len.next_multiple_of(4096) + 2048;
        let mut both = vec![0x5au8; gap + len];
        let (source, rest) = both.split_at_mut(gap);
        let (source, buf) = (&source[..len], &mut rest[..len]);
        let mask = b.rate(&format!("mask {len} B"), len, || {
            apply_mask(black_box(&mut *buf), black_box([1, 2, 3, 4]));
        });
        let copy = b.rate(&format!("copy {len} B (memcpy, for scale)"), len, || {
            black_box(&mut *buf).copy_from_slice(black_box(source));
        });
        let bytewise = b.rate(&format!("mask {len} B byte at a time (reference)"), len, || {
            let key = black_box([1u8, 2, 3, 4]);
            for (i, byte) in black_box(&mut *buf).iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        });
        ratio("mask / copy", mask, copy);
        ratio("mask / byte-at-a-time", mask, bytewise);
    }
}

fn utf8(b: &Bench) {
    let ascii = "telemetry {\"t\":21.5,\"h\":40} ".repeat(40_000);
    let mixed = "κόσμε ünïcødé 漢字 😀 text ".repeat(30_000);
    for (label, text) in [("ASCII", &ascii), ("mixed", &mixed)] {
        let bytes = text.as_bytes();
        let ours = b.rate(
            &format!("utf8 validate {label} {} KiB, one piece", bytes.len() / 1024),
            bytes.len(),
            || {
                let mut v = Utf8Validator::new();
                v.finish(black_box(bytes)).unwrap();
            },
        );
        let pieces = b.rate(&format!("utf8 validate {label}, 1000-byte pieces"), bytes.len(), || {
            let mut v = Utf8Validator::new();
            for piece in black_box(bytes).chunks(1000) {
                v.feed(piece).unwrap();
            }
            v.finish(&[]).unwrap();
        });
        let std = b.rate(&format!("std::str::from_utf8 {label} (reference)"), bytes.len(), || {
            black_box(std::str::from_utf8(black_box(bytes)).unwrap());
        });
        ratio("one piece / std", ours, std);
        ratio("pieces / std", pieces, std);
    }
}

fn handshake(b: &Bench) {
    // What Chromium sends, cookies left out.
    let request = b"GET /ws?token=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) \
AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n\
Origin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    b.time("handshake: parse a browser request", || {
        let parsed = ServerHandshake::default().parse(black_box(request)).unwrap();
        black_box(parsed.unwrap());
    });
    b.time("handshake: parse and build the 101", || {
        let (request, _) = ServerHandshake::default().parse(black_box(request)).unwrap().unwrap();
        black_box(request.accept_response(&sabai::handshake::Accept::new()).unwrap());
    });
}

fn message_decode(b: &Bench) {
    for len in [20, 1024, 64 * 1024, 1 << 20] {
        // One masked binary frame, as a client sends it; the server decodes,
        // unmasks and hands out the message.
        let mut client = Connection::client(Config::default(), [3; 32]);
        client.send(sabai::Message::binary(vec![0x42u8; len])).unwrap();
        let wire: Vec<u8> = std::iter::from_fn(|| client.poll_transmit()).flatten().collect();
        let mut server = Connection::server(Config::default());
        b.rate(&format!("decode one {len} B binary message (server)"), len, || {
            server.buffers_mut().read_buffer().extend_from_slice(black_box(&wire));
            match server.poll_event() {
                Ok(Some(Event::Message(m))) => {
                    black_box(m);
                }
                other => panic!("{other:?}"),
            }
        });
    }
}
