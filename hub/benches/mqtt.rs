//! The MQTT bridge under load: MQTT messages in per second that a
//! `sabai-hub` process turns into WebSocket deliveries to 1,000
//! subscribers, and the latency from the publisher's send to each
//! subscriber's receipt (p50, p99), at several offered rates.
//!
//!     cargo bench -p sabai-hub --bench mqtt -- [--subscribers 1000] [--rates 500,1000,2000]
//!         [--seconds 5] [--rounds 3]
//!
//! Everything runs on this machine: a real mosquitto (started here, on a
//! free port), the hub server (the bench build of the binary), the
//! publisher (a rumqttc client, QoS 1, paced every millisecond) and the
//! subscribers (sabai WebSocket clients, one task each, all in `global`).
//! Each reading carries its send time in microseconds (`fields.sent`); a
//! subscriber takes now - sent when it reads the frame, so the latency is
//! publisher → broker → bridge → hub → WebSocket → client, measured by a
//! Rust client (not a browser). The machine is shared by all four, so the
//! figures are what one small box does, not the hub alone.

#[allow(dead_code)]
#[path = "../tests/support/broker.rs"]
mod broker;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use sabai::Message;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

struct Args {
    subscribers: usize,
    rates: Vec<u64>,
    seconds: u64,
    rounds: usize,
}

fn args() -> Args {
    let mut out = Args { subscribers: 1000, rates: vec![250, 500, 1000, 2000], seconds: 5, rounds: 3 };
    let list: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut it = list.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--subscribers" => out.subscribers = value.parse().unwrap(),
            "--rates" => out.rates = value.split(',').map(|r| r.parse().unwrap()).collect(),
            "--seconds" => out.seconds = value.parse().unwrap(),
            "--rounds" => out.rounds = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

/// The hub server, killed on drop.
struct Hub(Child, String);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hub(broker: &str, max_connections: usize) -> Hub {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sabai-hub"))
        .args(["--addr", "127.0.0.1:0", "--no-simulator", "--mqtt", broker])
        .args(["--max-connections", &max_connections.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start sabai-hub");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("sabai-hub said nothing").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Hub(child, addr)
}

async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// What the subscribers saw, per round tag: latencies in microseconds.
type Seen = Arc<Mutex<HashMap<String, Vec<u32>>>>;

/// A number after `"key":` in a JSON text (no full parse: the clients
/// share the machine with the server).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn tag_of(text: &str) -> Option<&str> {
    let at = text.find("\"device_id\":\"")? + 13;
    let end = text[at..].find('"')?;
    Some(&text[at..at + end])
}

/// One subscriber, until the step `generation` is over.
async fn subscriber(
    url: String,
    seen: Seen,
    ready: Arc<AtomicU64>,
    step: Arc<AtomicU64>,
    generation: u64,
    last: Arc<AtomicU64>,
) {
    let mut ws = sabai::connect(&url).await.expect("connect");
    let subscribe = r#"{"type":"subscribe","payload":{"rooms":["global"]}}"#;
    ws.send(Message::text(subscribe)).await.unwrap();
    ws.flush().await.unwrap();
    let mut mine: HashMap<String, Vec<u32>> = HashMap::new();
    let mut last_flush = Instant::now();
    while step.load(Ordering::SeqCst) == generation {
        let message = tokio::time::timeout(Duration::from_millis(200), ws.recv()).await;
        match message {
            Ok(Ok(Some(Message::Text(text)))) => {
                if text.contains("\"type\":\"subscribed\"") {
                    ready.fetch_add(1, Ordering::SeqCst);
                } else if text.contains("\"type\":\"telemetry\"") {
                    let now = now_us();
                    last.fetch_max(now, Ordering::Relaxed);
                    if let (Some(sent), Some(tag)) = (number_after(&text, "\"sent\":"), tag_of(&text)) {
                        mine.entry(tag.to_owned()).or_default().push(now.saturating_sub(sent) as u32);
                    }
                }
            }
            Ok(Ok(Some(_))) => {}
            // Closed (4008 when too slow): what it had is counted below.
            Ok(_) => break,
            Err(_) => {}
        }
        if last_flush.elapsed() > Duration::from_millis(200) && !mine.is_empty() {
            let mut shared = seen.lock().unwrap();
            for (tag, list) in mine.drain() {
                shared.entry(tag).or_default().extend(list);
            }
            last_flush = Instant::now();
        }
    }
    let mut shared = seen.lock().unwrap();
    for (tag, list) in mine.drain() {
        shared.entry(tag).or_default().extend(list);
    }
}

/// The hub's count of slow consumers closed so far.
async fn slow_closes(addr: &str) -> u64 {
    let stats = get(addr, "/stats").await;
    number_after(&stats, "\"slow_consumer_closes\":").unwrap_or(0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = args();
    let broker = broker::Mosquitto::start();
    let hub = start_hub(&broker.url(), args.subscribers + 100);
    let addr = hub.1.clone();
    // The bridge connected and subscribed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(&addr, "/stats").await.contains("\"connected\":true") {
        assert!(Instant::now() < deadline, "the bridge did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Seen = Arc::default();
    let step = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let mut options = MqttOptions::new("bench-publisher", "127.0.0.1", broker.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    println!(
        "subscribers {}, {} s per rate, {} rounds; load average before: {}",
        args.subscribers,
        args.seconds,
        args.rounds,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "round rate/s sent received_per_sub(avg) lost slow_closed deliveries/s in/s p50_ms p99_ms max_ms"
    );
    for round in 1..=args.rounds {
        for &rate in &args.rates {
            let tag = format!("bench-{round}-{rate}");
            // Fresh subscribers for every step: one closed as slow in a
            // step does not thin out the next.
            let generation = step.fetch_add(1, Ordering::SeqCst) + 1;
            let ready = Arc::new(AtomicU64::new(0));
            for _ in 0..args.subscribers {
                let url = format!("ws://{addr}/ws");
                let (seen, ready, step, last) = (seen.clone(), ready.clone(), step.clone(), last.clone());
                tokio::spawn(subscriber(url, seen, ready, step, generation, last));
                tokio::task::yield_now().await;
            }
            while ready.load(Ordering::SeqCst) < args.subscribers as u64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let slow_before = slow_closes(&addr).await;
            let first_send = now_us();
            let total = rate * args.seconds;
            let started = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while sent < total {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64).ceil() as u64;
                while sent < due.min(total) {
                    sent += 1;
                    let payload =
                        format!(r#"{{"fields":{{"v":{},"sent":{}}},"seq":{sent}}}"#, sent % 100, now_us());
                    client
                        .publish(format!("devices/{tag}/telemetry"), QoS::AtLeastOnce, false, payload)
                        .await
                        .unwrap();
                }
            }
            let published_in = started.elapsed();
            // Until every subscriber has every reading, or 10 s of quiet.
            let expected = total as usize * args.subscribers;
            let mut last_count = 0;
            let mut quiet_since = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let count = seen.lock().unwrap().get(&tag).map_or(0, Vec::len);
                if count >= expected {
                    break;
                }
                if count != last_count {
                    last_count = count;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() > Duration::from_secs(3) {
                    break;
                }
            }
            let slow = slow_closes(&addr).await - slow_before;
            // The subscribers of this step end (and hand over what they had).
            step.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut latencies = seen.lock().unwrap().remove(&tag).unwrap_or_default();
            latencies.sort_unstable();
            // The span from the first send to the last receipt.
            let span = last.load(Ordering::Relaxed).saturating_sub(first_send) as f64 / 1e6;
            let delivered = latencies.len();
            let per_sub = delivered as f64 / args.subscribers as f64;
            println!(
                "{round} {rate} {total} {per_sub:.0} {} {slow} {:.0} {:.0} {:.1} {:.1} {:.1}",
                expected - delivered.min(expected),
                delivered as f64 / span.max(1e-3),
                total as f64 / published_in.as_secs_f64(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let stats = get(&addr, "/stats").await;
    println!("hub /stats: {stats}");
    println!("load average after: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    drop(hub);
}
