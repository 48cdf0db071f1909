//! sabai's side of `benches/deflate_vs_node.sh`: permessage-deflate
//! compression on the sender, the JSON telemetry of `benches/deflate.rs`,
//! beside Node's `ws` (benches/deflate_node/bench.js) on the same bytes.
//!
//!     deflate_vs_node write DIR                 # the workload, one message a line
//!     deflate_vs_node round DIR [LEVEL] [MS]    # one round over DIR's workload, JSON lines
//!     cargo bench --bench deflate_vs_node       # one round over the generated workload
//!
//! The script writes the workload with `write` and runs rounds of this
//! program and of the Node script in turn; both read the same files, so
//! both compress the same bytes.
//!
//! What is timed, per cell (workload x context takeover or not): a pass is
//! the whole workload through a fresh server `Connection` with
//! permessage-deflate agreed (so it pays for allocating its compressor
//! once, as `ws` does for its zlib stream): `send` of each message and
//! draining `poll_transmit` into one buffer (compress + frame + the copy).
//! The messages are built before the clock starts. A pass that is not
//! timed comes first (warm-up); its output is inflated by flate2 directly
//! and compared with the input, and every timed pass must put the same
//! compressed bytes on the wire, or the program panics. Each cell runs
//! passes for MS milliseconds (default 1000), at least 2.
//!
//! One JSON line per cell: passes, seconds (the sum over passes),
//! messages and input bytes per pass, and the compressed payload (the
//! frames' payloads, without their headers: what ws's `compress` returns)
//! per pass.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use sabai::{Config, Connection, DeflateConfig, DeflateParams, Message};

#[path = "common/telemetry.rs"]
mod telemetry;

/// The two workloads, by the names the Node script and the table use.
const WORKLOADS: [&str; 2] = ["readings", "batches"];

fn generate(name: &str) -> Vec<String> {
    match name {
        "readings" => telemetry::small_messages(),
        "batches" => telemetry::batch_messages(),
        _ => unreachable!(),
    }
}

fn read_workload(dir: &Path, name: &str) -> Vec<String> {
    let path = dir.join(format!("{name}.txt"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// A server connection with permessage-deflate agreed at `level`, with or
/// without the server's context takeover (RFC 7692 §7.1.1.1).
fn sender(level: u32, takeover: bool) -> Connection {
    let mut deflate = DeflateConfig::default();
    deflate.level = level;
    let mut config = Config::default();
    config.deflate = Some(deflate);
    let params = DeflateParams { server_no_context_takeover: !takeover, ..DeflateParams::default() };
    Connection::server(config).with_deflate(params)
}

/// The payloads of the unmasked frames in `wire`, each with RSV1 set
/// (compressed) or not.
fn payloads(wire: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let (b0, b1) = (rest[0], rest[1]);
        assert_eq!(b1 & 0x80, 0, "a server's frames are not masked");
        let (len, head) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        out.push((b0 & 0x40 != 0, &rest[head..head + len]));
        rest = &rest[head + len..];
    }
    out
}

/// Inflates what the sender put on the wire, as one stream (each message
/// with its 0x00 0x00 0xff 0xff put back, RFC 7692 §7.2.2), and compares it
/// with the messages.
fn check(wire: &[u8], messages: &[String]) {
    let frames = payloads(wire);
    assert_eq!(frames.len(), messages.len(), "one frame per message");
    let mut inflater = Decompress::new_with_window_bits(false, 15);
    for ((compressed, payload), message) in frames.iter().zip(messages) {
        if !compressed {
            assert_eq!(*payload, message.as_bytes(), "an uncompressed message differs");
            continue;
        }
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(message.len() + 64);
        inflater.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("inflates");
        assert_eq!(out, message.as_bytes(), "a message inflates to something else");
    }
}

/// One pass: seconds, and the bytes on the wire.
fn pass(messages: &[String], level: u32, takeover: bool, wire: &mut Vec<u8>) -> f64 {
    let mut conn = sender(level, takeover);
    let outgoing: Vec<Message> = messages.iter().map(|m| Message::text(m.as_str())).collect();
    wire.clear();
    let t = Instant::now();
    for message in outgoing {
        conn.send(message).unwrap();
        while let Some(bytes) = conn.poll_transmit() {
            wire.extend_from_slice(&bytes);
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    black_box(&wire);
    seconds
}

fn round(messages: &[(&str, Vec<String>)], level: u32, budget: Duration) {
    for (name, messages) in messages {
        for takeover in [true, false] {
            let input: usize = messages.iter().map(String::len).sum();
            let mut wire = Vec::with_capacity(input + 16 * messages.len());
            pass(messages, level, takeover, &mut wire);
            check(&wire, messages);
            let expected = wire.clone();
            let frames = payloads(&expected);
            let compressed: usize = frames.iter().map(|(_, p)| p.len()).sum();
            let compressed_messages = frames.iter().filter(|(c, _)| *c).count();

            let (mut passes, mut seconds) = (0, 0.0);
            let start = Instant::now();
            while passes < 2 || start.elapsed() < budget {
                seconds += pass(messages, level, takeover, &mut wire);
                passes += 1;
                assert!(wire == expected, "{name}: a pass put other bytes on the wire");
            }
            println!(
                "{{\"impl\":\"sabai\",\"workload\":\"{name}\",\"takeover\":{takeover},\"level\":{level},\
                 \"passes\":{passes},\"seconds\":{seconds:.6},\"messages\":{},\"input\":{input},\
                 \"compressed\":{compressed},\"compressed_messages\":{compressed_messages}}}",
                messages.len(),
            );
        }
    }
}

fn main() {
    // `cargo bench` passes "--bench"; the rest are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["write", dir] => {
            fs::create_dir_all(dir).unwrap();
            for name in WORKLOADS {
                let messages = generate(name);
                assert!(messages.iter().all(|m| !m.contains('\n')));
                fs::write(Path::new(dir).join(format!("{name}.txt")), messages.join("\n") + "\n").unwrap();
            }
        }
        ["round", dir, rest @ ..] => {
            let level = rest.first().map_or(6, |l| l.parse().expect("LEVEL: 0 to 9"));
            let ms = rest.get(1).map_or(1000, |m| m.parse().expect("MS: milliseconds"));
            let messages: Vec<_> = WORKLOADS.iter().map(|&n| (n, read_workload(Path::new(dir), n))).collect();
            round(&messages, level, Duration::from_millis(ms));
        }
        [] => {
            let messages: Vec<_> = WORKLOADS.iter().map(|&n| (n, generate(n))).collect();
            round(&messages, 6, Duration::from_millis(1000));
        }
        _ => panic!("usage: deflate_vs_node [write DIR | round DIR [LEVEL] [MS]]"),
    }
}
