//! permessage-deflate (RFC 7692) on JSON telemetry: bytes on the wire and
//! throughput, through the sans-IO `Connection` API, on the standard library
//! alone.
//!
//!     cargo bench --bench deflate              # everything, about 30 s
//!     cargo bench --bench deflate -- batch     # cells whose name contains "batch"
//!
//! Two workloads, generated deterministically (a fixed-seed SplitMix64):
//! 1000 single readings of about 150-250 bytes, as a dashboard receives
//! them one at a time, and 64 batches of 64 readings (about 16 KiB each).
//! Each is sent both ways (server -> client, unmasked; client -> server,
//! masked) under every configuration in `configs()`.
//!
//! One pass = a fresh sender and a fresh receiver (so each pass also pays
//! for allocating the compressor and inflater, once). Timed on the sender:
//! `send` and draining `poll_transmit` into one buffer over the whole
//! workload (compress + frame + mask, plus the copy a socket write would
//! make). Timed on the receiver: filling `read_buffer` in 64 KiB reads and
//! `poll_event` (parse + unmask + inflate + UTF-8 check) over those bytes,
//! each message compared with what was sent (a memcmp) and dropped. A
//! message that differs, is missing or is extra panics, as does a pass whose
//! wire size differs from the first: a broken path cannot print a figure.
//! Each configuration runs in 3 rounds of 200 ms (at least 2 passes each),
//! the configurations of a table interleaved round by round; figures are
//! medians over all passes, with the min-max range. Configurations run side
//! by side in one process, so the ratios against the uncompressed path are
//! what to read; absolute numbers do not travel between machines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sabai::{Config, Connection, DeflateConfig, DeflateParams, Event, Message};

/// Each configuration runs `ROUNDS` times, interleaved with the others,
/// for `ROUND_TIME` (and at least `MIN_PASSES` passes) each time.
const ROUNDS: usize = 3;
const ROUND_TIME: Duration = Duration::from_millis(200);
const MIN_PASSES: usize = 2;
/// The tokio layer reads 64 KiB at a time.
const READ_SIZE: usize = 64 * 1024;

/// One row of the tables: `None` is no compression.
struct Setup {
    name: &'static str,
    deflate: Option<(DeflateConfig, DeflateParams)>,
}

fn configs() -> Vec<Setup> {
    let deflate = |level: u32| {
        let mut c = DeflateConfig::default();
        c.level = level;
        c
    };
    let takeover = DeflateParams::default();
    let no_takeover = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let bits9 = DeflateParams {
        server_max_window_bits: Some(9),
        client_max_window_bits: Some(9),
        ..DeflateParams::default()
    };
    vec![
        Setup { name: "none", deflate: None },
        Setup { name: "takeover, level 6, 15 bits", deflate: Some((deflate(6), takeover)) },
        Setup { name: "no takeover, level 6, 15 bits", deflate: Some((deflate(6), no_takeover)) },
        Setup { name: "takeover, level 1, 15 bits", deflate: Some((deflate(1), takeover)) },
        Setup { name: "no takeover, level 1, 15 bits", deflate: Some((deflate(1), no_takeover)) },
        Setup { name: "takeover, level 6, 9 bits", deflate: Some((deflate(6), bits9)) },
    ]
}

// ----- workload --------------------------------------------------------------

#[path = "common/telemetry.rs"]
mod telemetry;
use telemetry::{batch_messages, small_messages};

// ----- measurement -----------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    ServerToClient,
    ClientToServer,
}

fn endpoints(setup: &Setup, direction: Direction) -> (Connection, Connection) {
    let mut config = Config::default();
    if let Some((deflate, _)) = &setup.deflate {
        config.deflate = Some(deflate.clone());
    }
    let server = Connection::server(config.clone());
    let client = Connection::client(config, [9; 32]);
    let (server, client) = match &setup.deflate {
        Some((_, params)) => (server.with_deflate(*params), client.with_deflate(*params)),
        None => (server, client),
    };
    match direction {
        Direction::ServerToClient => (server, client),
        Direction::ClientToServer => (client, server),
    }
}

/// Median, min and max.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The passes of one configuration, over all rounds.
struct Cell<'a> {
    setup: &'a Setup,
    wire: Option<usize>,
    /// Seconds per pass.
    send: Vec<f64>,
    recv: Vec<f64>,
}

impl Cell<'_> {
    /// Runs passes for `budget` (at least `MIN_PASSES`), adding their times.
    fn run(&mut self, direction: Direction, messages: &[String], budget: Duration) {
        let name = self.setup.name;
        let payload: usize = messages.iter().map(String::len).sum();
        let mut wire = Vec::with_capacity(payload + 16 * messages.len());
        let start = Instant::now();
        let mut passes = 0;
        while passes < MIN_PASSES || start.elapsed() < budget {
            passes += 1;
            let (mut sender, mut receiver) = endpoints(self.setup, direction);
            // Built before the clock starts: `send` takes its message by value.
            let outgoing: Vec<Message> = messages.iter().map(|m| Message::text(m.as_str())).collect();
            wire.clear();

            let t = Instant::now();
            for message in outgoing {
                sender.send(message).unwrap();
                while let Some(bytes) = sender.poll_transmit() {
                    wire.extend_from_slice(&bytes);
                }
            }
            self.send.push(t.elapsed().as_secs_f64());

            // Each message is compared with what was sent as it arrives (a
            // memcmp, about what an application reading it would cost) and
            // then dropped, as an application would.
            let mut expected = messages.iter();
            let t = Instant::now();
            for chunk in black_box(&wire).chunks(READ_SIZE) {
                receiver.buffers_mut().read_buffer().extend_from_slice(chunk);
                while let Some(event) = receiver.poll_event().unwrap() {
                    let Event::Message(message) = event else { panic!("{name}: unexpected {event:?}") };
                    let sent = expected.next().unwrap_or_else(|| panic!("{name}: a message too many"));
                    assert!(message.as_text() == Some(sent.as_str()), "{name}: payload differs");
                }
            }
            self.recv.push(t.elapsed().as_secs_f64());

            // Every message arrived, nothing is left over, and every pass put
            // the same number of bytes on the wire.
            assert!(expected.next().is_none(), "{name}: messages lost");
            assert_eq!(receiver.buffers().buffered_input(), 0, "{name}: bytes left over");
            assert_eq!(*self.wire.get_or_insert(wire.len()), wire.len(), "{name}: wire size varies");
        }
    }
}

fn main() {
    // `cargo bench` passes "--bench"; any other argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let workloads = [
        ("small", "1000 single readings", small_messages()),
        ("batch", "64 batches of 64 readings", batch_messages()),
    ];
    let directions = [
        (Direction::ServerToClient, "server -> client", "s2c"),
        (Direction::ClientToServer, "client -> server (masked)", "c2s"),
    ];
    let setups = configs();
    let total = Instant::now();
    let mut tables = String::new();
    for (key, what, messages) in &workloads {
        let payload: usize = messages.iter().map(String::len).sum();
        let n = messages.len();
        let lens = || messages.iter().map(String::len);
        let (lo, hi) = (lens().min().unwrap(), lens().max().unwrap());
        for (direction, arrow, dkey) in directions {
            let name = |setup: &Setup| format!("{key} {dkey} {}", setup.name);
            let mut cells: Vec<Cell> = setups
                .iter()
                .filter(|setup| filter.as_ref().is_none_or(|f| name(setup).contains(f.as_str())))
                .map(|setup| Cell { setup, wire: None, send: Vec::new(), recv: Vec::new() })
                .collect();
            if cells.is_empty() {
                continue;
            }
            // Interleaved rounds: a noisy spell on the machine is spread over
            // every configuration instead of landing on one.
            for _ in 0..ROUNDS {
                for cell in &mut cells {
                    cell.run(direction, messages, ROUND_TIME);
                }
            }
            let mbps = |t: f64| payload as f64 / t / 1e6;
            for cell in &cells {
                let (send, recv) = (stats(&cell.send), stats(&cell.recv));
                let wire = cell.wire.unwrap();
                println!(
                    "{:<42} wire {:>8.1} B/msg ({:.3})  send {:>7.1} MB/s [{:.1}-{:.1}]  \
                     recv {:>7.1} MB/s [{:.1}-{:.1}]  ({} passes)",
                    name(cell.setup),
                    wire as f64 / n as f64,
                    wire as f64 / payload as f64,
                    mbps(send.0),
                    mbps(send.2),
                    mbps(send.1),
                    mbps(recv.0),
                    mbps(recv.2),
                    mbps(recv.1),
                    cell.send.len(),
                );
            }

            tables.push_str(&format!(
                "\n{what}, {arrow}: {n} messages of {lo}-{hi} bytes ({:.0} on average)\n\n",
                payload as f64 / n as f64
            ));
            tables.push_str(
                "| configuration | wire B/msg | wire / payload | send msgs/s | send MB/s | send time / none \
                 | receive msgs/s | receive MB/s | receive time / none |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            // Time per message against the uncompressed row, when it ran.
            let none = cells.iter().find(|c| c.setup.deflate.is_none());
            let none = none.map(|c| (stats(&c.send).0, stats(&c.recv).0));
            let times = |t: f64, base: Option<f64>| match base.map(|b| t / b) {
                Some(x) if x >= 10.0 => format!("{x:.0}x"),
                Some(x) => format!("{x:.1}x"),
                None => "-".into(),
            };
            for cell in &cells {
                let (send, recv) = (stats(&cell.send).0, stats(&cell.recv).0);
                let wire = cell.wire.unwrap();
                tables.push_str(&format!(
                    "| {} | {:.1} | {:.3} | {} | {:.1} | {} | {} | {:.1} | {} |\n",
                    cell.setup.name,
                    wire as f64 / n as f64,
                    wire as f64 / payload as f64,
                    si(n as f64 / send),
                    mbps(send),
                    times(send, none.map(|b| b.0)),
                    si(n as f64 / recv),
                    mbps(recv),
                    times(recv, none.map(|b| b.1)),
                ));
            }
        }
    }
    println!("{tables}");
    println!("total time {:.1} s", total.elapsed().as_secs_f64());
}

/// 1234567 -> "1.23M", 45678 -> "45.7k".
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
