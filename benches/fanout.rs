//! Fan-out benchmark: one publisher, N subscribers in one room, over
//! loopback TCP. Not a test: it prints numbers for BENCHMARKS.md.
//!
//!     cargo bench --features hub --bench fanout             # 1,000 and 10,000
//!     cargo bench --features hub --bench fanout -- 1000     # one size
//!
//! The hub runs in this process; the subscribers (sabai clients) run in a
//! child process, so each side stays under the file-descriptor limit.
//! Phase 1 publishes a burst of 100 messages (deliveries per second);
//! phase 2 publishes 100 messages 20 ms apart (delivery latency, measured
//! by each subscriber from the send time carried in the message).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sabai::hub::{Hub, HubConfig, HubEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const BURST: u64 = 100;
const PACED: u64 = 100;
const PACE: Duration = Duration::from_millis(20);
/// The whole run of one size stops by itself after this.
const LIMIT: Duration = Duration::from_secs(120);

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let [flag, n, url] = &args[..] {
        if flag == "--subscribers" {
            return runtime.block_on(subscribers(n.parse().unwrap(), url));
        }
    }
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000, 10_000] } else { sizes };
    println!("| subscribers | burst: deliveries/s | burst: p99 latency | paced (50/s): p50 latency | paced: p99 latency | delivered |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        runtime.block_on(run(n));
    }
}

/// The hub side: accept N subscribers into room "bench", then publish.
async fn run(n: usize) {
    let mut config = HubConfig::default();
    config.max_connections = n + 10;
    let hub = Hub::new(config);
    hub.on_event(|hub, event| {
        if let HubEvent::Connected { conn, .. } = event {
            let (hub, conn) = (hub.clone(), *conn);
            tokio::spawn(async move { hub.join(conn, "bench").await });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = hub.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hub = server.clone();
            tokio::spawn(async move {
                if let Ok(accepted) = hub.accept(stream, |_| Ok(None)).await {
                    accepted.serve(|_, _, _| async {}).await;
                }
            });
        }
    });
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--subscribers", &n.to_string(), &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the subscribers");
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let outcome = timeout(LIMIT, async {
        while hub.members("bench").len() < n {
            sleep(Duration::from_millis(50)).await;
        }
        for seq in 0..BURST {
            drop(hub.publish("bench", format!("{seq} {}", now_ns())));
        }
        sleep(Duration::from_millis(500)).await;
        for seq in BURST..BURST + PACED {
            drop(hub.publish("bench", format!("{seq} {}", now_ns())));
            sleep(PACE).await;
        }
        drop(hub.publish("bench", "end"));
        while let Some(line) = lines.recv().await {
            if let Some(result) = line.strip_prefix("RESULT ") {
                return result.to_owned();
            }
        }
        "the subscribers ended without a result".to_owned()
    })
    .await;
    match outcome {
        Ok(result) => println!("| {n} | {result} |"),
        Err(_) => println!("| {n} | did not finish within {LIMIT:?} |"),
    }
    let _ = child.kill();
    let _ = child.wait();
    hub.shutdown(Duration::from_secs(5)).await;
    accepting.abort();
}

/// The subscriber side (child process): N clients, each recording the
/// latency of every message, until "end".
async fn subscribers(n: usize, url: &str) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Vec<(u64, u64)>>();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        // Connect one at a time: the listener's backlog stays small.
        let ws = match timeout(Duration::from_secs(10), sabai::connect(url)).await {
            Ok(Ok(ws)) => ws,
            other => return println!("RESULT connect failed: {other:?}"),
        };
        clients.push(ws);
    }
    for mut ws in clients {
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity((BURST + PACED) as usize);
            while let Ok(Some(message)) = ws.recv().await {
                let received = now_ns();
                let Some(text) = message.as_text() else { continue };
                let Some((seq, sent)) = text.split_once(' ') else { break };
                if let (Ok(seq), Ok(sent)) = (seq.parse::<u64>(), sent.parse::<u64>()) {
                    seen.push((seq, received.saturating_sub(sent)));
                    if seq == 0 {
                        seen.push((u64::MAX, sent));
                    }
                    if seq == BURST - 1 {
                        seen.push((u64::MAX - 1, received));
                    }
                }
            }
            let _ = done_tx.send(seen);
        });
    }
    drop(done_tx);
    let (mut burst, mut paced, mut delivered) = (Vec::new(), Vec::new(), 0u64);
    let (mut first_sent, mut last_burst) = (u64::MAX, 0u64);
    while let Some(seen) = done.recv().await {
        for (seq, value) in seen {
            match seq {
                u64::MAX => first_sent = first_sent.min(value),
                s if s == u64::MAX - 1 => last_burst = last_burst.max(value),
                s if s < BURST => {
                    burst.push(value);
                    delivered += 1;
                }
                _ => {
                    paced.push(value);
                    delivered += 1;
                }
            }
        }
    }
    let rate = burst.len() as f64 / (last_burst.saturating_sub(first_sent).max(1) as f64 / 1e9);
    println!(
        "RESULT {:.0} | {} | {} | {} | {delivered} of {}",
        rate,
        ms(percentile(&mut burst, 0.99)),
        ms(percentile(&mut paced, 0.50)),
        ms(percentile(&mut paced, 0.99)),
        (BURST + PACED) * n as u64,
    );
}

fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}
