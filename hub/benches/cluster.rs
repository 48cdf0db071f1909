//! The hub server across nodes on Redis: benchmarks, not tests. They print
//! markdown tables for BENCHMARKS.md ("Many nodes (Redis engine)") and
//! write every raw figure as JSON lines under `--out DIR`.
//!
//!     cargo bench -p sabai-hub --bench cluster -- fanout   [--subscribers 10000] [--rate 10] ...
//!     cargo bench -p sabai-hub --bench cluster -- recovery [--clients 1,10,100,1000] [--missed 100] ...
//!     cargo bench -p sabai-hub --bench cluster -- memory   [--connections 10000] [--rooms 3] ...
//!
//! The servers are the real `sabai-hub` binary (one process per node) and
//! a real `redis-server` started here on a free loopback port with
//! persistence off (`sabai_redis::testing::RedisServer`) and stopped by
//! its PID. `memory` also runs a plain `sabai::hub` server (this binary,
//! in a child mode) to say what the hub server adds to the hub core.
//! Servers and Redis are pinned to CPU 0 and this process and its
//! subscriber child to CPU 1 (`taskset`), unless `--no-pin`; run this
//! binary itself under `taskset -c 1` (the scripts in benches/ do).
//! Everything listens on 127.0.0.1 and every wait is bounded.
//!
//! The scripts benches/cluster_fanout.sh, benches/recovery.sh and
//! benches/hub_idle_memory.sh run these with the figures' parameters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sabai::hub::{HistoryPolicy, Hub, HubConfig};
use sabai::{Message, WebSocket};
use sabai_redis::testing::RedisServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep, sleep_until, timeout};

type Ws = WebSocket<sabai::MaybeTlsStream>;

/// Handshakes in flight at once while opening many connections.
const CONNECTING_AT_ONCE: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: cluster (fanout | recovery | memory) [options]; see the file's docs");
        std::process::exit(2);
    };
    let rest = Args(args[1..].to_vec());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    match mode.as_str() {
        "fanout" => runtime.block_on(fanout(rest)),
        "recovery" => runtime.block_on(recovery(rest)),
        "memory" => runtime.block_on(memory(rest)),
        "child-subscribers" => runtime.block_on(child_subscribers(rest)),
        "hold" => runtime.block_on(hold(rest)),
        "child-plain-hub" => {
            // The same runtime as the hub server's (#[tokio::main]): one
            // worker per CPU this process may run on.
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
            runtime.block_on(child_plain_hub(rest))
        }
        other => {
            eprintln!("cluster: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers: arguments, time, /proc, processes.

struct Args(Vec<String>);

impl Args {
    fn value(&self, flag: &str) -> Option<&str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    fn num<T: std::str::FromStr>(&self, flag: &str, default: T) -> T {
        match self.value(flag) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| panic!("{flag}: bad value {v:?}")),
        }
    }

    fn list(&self, flag: &str, default: &str) -> Vec<String> {
        self.value(flag).unwrap_or(default).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    fn out_dir(&self) -> Option<PathBuf> {
        self.value("--out").map(PathBuf::from)
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    (field(11) + field(12)) / ticks
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command pinned to `cpu` (with `taskset`), or not pinned.
fn pinned(cpu: Option<u32>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu.to_string(), program]);
            command
        }
        None => Command::new(program),
    }
}

/// A child process, killed (by its PID) when dropped.
struct Proc {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Starts it with stdout piped into `lines`.
    fn spawn(mut command: Command) -> Proc {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start a process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix` (others are skipped), within `limit`.
    async fn line(&mut self, prefix: &str, limit: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Ok(None) => return Err(format!("process {} ended before {prefix:?}", self.pid())),
                Err(_) => return Err(format!("no {prefix:?} from process {} within {limit:?}", self.pid())),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sabai-hub` process.
struct Node {
    proc: Proc,
    addr: String,
}

impl Node {
    async fn start(cpu: Option<u32>, flags: &[String]) -> Node {
        let mut command = pinned(cpu, env!("CARGO_BIN_EXE_sabai-hub"));
        command.args(["--addr", "127.0.0.1:0", "--no-simulator"]).args(flags);
        let mut proc = Proc::spawn(command);
        let line = proc.line("hub server ", Duration::from_secs(20)).await.expect("sabai-hub started");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .map(|a| a.trim_end_matches('/').to_owned())
            .expect("sabai-hub says where it listens");
        Node { proc, addr }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// A redis-server of this run, pinned like the servers; its PID from INFO.
struct Redis {
    server: RedisServer,
    pid: u32,
}

impl Redis {
    fn start(cpu: Option<u32>) -> Redis {
        let server = RedisServer::start();
        let info = info(&server, "server");
        let pid: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("INFO server gives process_id");
        if let Some(cpu) = cpu {
            let status = Command::new("taskset")
                .args(["-pc", &cpu.to_string(), &pid.to_string()])
                .stdout(Stdio::null())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "taskset -pc {cpu} {pid} failed");
        }
        Redis { server, pid }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// INFO commandstats: command -> calls.
    fn command_calls(&self) -> BTreeMap<String, u64> {
        info(&self.server, "commandstats")
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
            })
            .collect()
    }
}

/// INFO `section`, over a plain RESP connection (no Redis client here).
fn info(server: &RedisServer, section: &str) -> String {
    use std::io::Read as _;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect to redis-server");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    stream.write_all(request.as_bytes()).expect("send INFO");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).expect("read INFO");
        assert!(n > 0, "redis-server closed the connection");
        answer.extend_from_slice(&chunk[..n]);
        // A bulk string: $<length>\r\n<bytes>\r\n
        let Some(eol) = answer.windows(2).position(|w| w == b"\r\n") else { continue };
        let header = String::from_utf8_lossy(&answer[..eol]).into_owned();
        let length: usize = header
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("INFO answered {header:?}"));
        if answer.len() >= eol + 2 + length {
            return String::from_utf8_lossy(&answer[eol + 2..eol + 2 + length]).into_owned();
        }
    }
}

/// One HTTP/1.1 connection kept alive: POST /publish and GET /stats.
struct Http {
    stream: TcpStream,
    addr: String,
    buf: Vec<u8>,
    /// When it last wrote: the server closes a keep-alive connection that
    /// sends no request head for 10 s, so one idle longer is opened again.
    used: Instant,
}

impl Http {
    async fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).await.expect("connect to the node's HTTP port");
        stream.set_nodelay(true).expect("nodelay");
        Http { stream, addr: addr.to_owned(), buf: Vec::new(), used: Instant::now() }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
    }

    async fn write(&mut self, bytes: &[u8]) {
        if self.used.elapsed() > Duration::from_secs(5) {
            *self = Http::connect(&self.addr).await;
        }
        self.used = Instant::now();
        self.stream.write_all(bytes).await.expect("write to the node");
    }

    /// The next response: status and body.
    async fn response(&mut self) -> (u16, String) {
        let read = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if self.buf.len() >= end + 4 + length {
                        let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into_owned();
                        self.buf.drain(..end + 4 + length);
                        return (status, body);
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await.expect("read from the node");
                assert!(n > 0, "the node closed the HTTP connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        timeout(Duration::from_secs(10), read).await.expect("an HTTP response within 10 s")
    }

    async fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = self.request(method, path, body);
        self.write(request.as_bytes()).await;
        self.response().await
    }

    async fn stats(&mut self) -> Value {
        let (status, body) = self.call("GET", "/stats", "").await;
        assert_eq!(status, 200, "/stats: {body}");
        serde_json::from_str(&body).expect("/stats is JSON")
    }
}

/// Opens connections to `urls` (round robin) and runs `setup` on each, with
/// at most CONNECTING_AT_ONCE in flight; the connections in order.
async fn open_many<F, Fut>(n: usize, urls: &[String], setup: F) -> Vec<Ws>
where
    F: Fn(usize, Ws) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Ws> + 'static,
{
    open_many_with(n, urls, false, setup).await
}

/// [`open_many`], offering permessage-deflate (as browsers do; every
/// message compressed on the client's side) when `deflate`.
async fn open_many_with<F, Fut>(n: usize, urls: &[String], deflate: bool, setup: F) -> Vec<Ws>
where
    F: Fn(usize, Ws) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Ws> + 'static,
{
    let mut config = sabai::WebSocketConfig::default();
    if deflate {
        let mut offer = sabai::DeflateConfig::default();
        offer.threshold = 0;
        config.protocol.deflate = Some(offer);
    }
    let config = Arc::new(config);
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut handles = Vec::with_capacity(n);
    let local = tokio::task::LocalSet::new();
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let gate = gate.clone();
        let setup = setup.clone();
        let config = config.clone();
        handles.push(local.spawn_local(async move {
            let _permit = gate.acquire().await.expect("open gate");
            let ws = timeout(Duration::from_secs(20), sabai::connect_with(&url, &config, |r| r))
                .await
                .unwrap_or_else(|_| panic!("connect {i} to {url}: timed out"))
                .unwrap_or_else(|e| panic!("connect {i} to {url}: {e}"));
            timeout(Duration::from_secs(30), setup(i, ws))
                .await
                .unwrap_or_else(|_| panic!("set up {i}: timed out"))
        }));
    }
    local
        .run_until(async move {
            let mut out = Vec::with_capacity(n);
            for handle in handles {
                out.push(handle.await.expect("a connection task"));
            }
            out
        })
        .await
}

/// Sends a JSON envelope and flushes.
async fn send_json(ws: &mut Ws, value: &Value) {
    ws.send(Message::text(value.to_string())).await.expect("send");
    ws.flush().await.expect("flush");
}

/// The next envelope of type `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        match ws.recv().await {
            Ok(Some(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("an envelope");
                if value["type"] == kind {
                    return value;
                }
            }
            Ok(Some(_)) => {}
            other => panic!("connection ended while waiting for {kind}: {other:?}"),
        }
    }
}

/// The number after `key` (for example `"s":`) in a text, if any.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// Appends raw results to DIR/NAME (one JSON object a line).
struct Raw(Option<std::fs::File>);

impl Raw {
    fn open(dir: Option<PathBuf>, name: &str) -> Raw {
        Raw(dir.map(|dir| {
            std::fs::create_dir_all(&dir).expect("make the output directory");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("open the raw file")
        }))
    }

    fn write(&mut self, value: &Value) {
        if let Some(file) = &mut self.0 {
            writeln!(file, "{value}").expect("write a raw result");
        }
    }
}

fn cpu_of(args: &Args, name: &str, default: u32) -> Option<u32> {
    (!args.has("--no-pin")).then(|| args.num(name, default))
}

// ---------------------------------------------------------------------------
// Cross-node fan-out.

/// The three setups: one node on the memory engine, one on Redis, two on Redis.
const SETUPS: [&str; 3] = ["memory-1", "redis-1", "redis-2"];

/// Publications back to back in a burst.
const BURST: usize = 100;

/// One round of one setup: start it, publish, measure, stop it.
async fn fanout(args: Args) {
    let n: usize = args.num("--subscribers", 10_000);
    let rate: f64 = args.num("--rate", 10.0);
    let paced: usize = args.num("--paced", 200);
    let bursts: usize = args.num("--bursts", 5);
    let warmup: usize = args.num("--warmup", 10);
    let idle = Duration::from_secs_f64(args.num("--idle", 20.0));
    let perf_dir = args.value("--perf").map(PathBuf::from);
    let burst_conns: Vec<usize> = args
        .list("--burst-publishers", "1,10")
        .iter()
        .map(|s| s.parse().expect("a publisher count"))
        .collect();
    let rounds: usize = args.num("--rounds", 3);
    let setups = args.list("--setups", &SETUPS.join(","));
    let extra: Vec<String> =
        args.value("--server-flags").unwrap_or("").split_whitespace().map(str::to_owned).collect();
    let room = args.value("--room").unwrap_or("group:bench").to_owned();
    let server_cpu = cpu_of(&args, "--server-cpu", 0);
    let client_cpu = cpu_of(&args, "--client-cpu", 1);
    let ticks = clock_ticks();
    let mut raw = Raw::open(args.out_dir(), "fanout.jsonl");
    let mut results: Vec<Value> = Vec::new();
    eprintln!(
        "fanout: {n} subscribers, paced {paced} at {rate}/s, {bursts} bursts of {BURST}, {rounds} rounds, \
         setups {setups:?}, room {room}, server flags {extra:?}, loadavg {}",
        loadavg()
    );
    for round in 1..=rounds {
        let mut order = setups.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for setup in &order {
            let outcome = fanout_run(FanoutRun {
                setup,
                n,
                rate,
                paced,
                bursts,
                burst_conns: &burst_conns,
                warmup,
                idle,
                perf_dir: perf_dir.as_deref(),
                room: &room,
                extra: &extra,
                server_cpu,
                client_cpu,
                ticks,
            })
            .await;
            for mut result in outcome {
                result["round"] = json!(round);
                eprintln!("{result}");
                raw.write(&result);
                results.push(result);
            }
            sleep(Duration::from_secs(2)).await;
        }
    }
    print_fanout_tables(&results, &setups, n, rate, paced, bursts, &burst_conns);
}

struct FanoutRun<'a> {
    setup: &'a str,
    n: usize,
    rate: f64,
    paced: usize,
    bursts: usize,
    burst_conns: &'a [usize],
    warmup: usize,
    idle: Duration,
    perf_dir: Option<&'a std::path::Path>,
    room: &'a str,
    extra: &'a [String],
    server_cpu: Option<u32>,
    client_cpu: Option<u32>,
    ticks: f64,
}

/// What the subscribers said about one phase.
#[derive(Debug, Default)]
struct PhaseReport {
    deliveries: u64,
    gaps: u64,
    out_of_order: u64,
    closed: u64,
    last_recv_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    first_p50_ns: u64,
    first_p99_ns: u64,
    last_p50_ns: u64,
    last_p99_ns: u64,
}

impl PhaseReport {
    fn parse(line: &str) -> PhaseReport {
        let v: Value = serde_json::from_str(line).expect("a phase report");
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        PhaseReport {
            deliveries: g("deliveries"),
            gaps: g("gaps"),
            out_of_order: g("out_of_order"),
            closed: g("closed"),
            last_recv_ns: g("last_recv_ns"),
            p50_ns: g("p50_ns"),
            p90_ns: g("p90_ns"),
            p99_ns: g("p99_ns"),
            max_ns: g("max_ns"),
            first_p50_ns: g("first_p50_ns"),
            first_p99_ns: g("first_p99_ns"),
            last_p50_ns: g("last_p50_ns"),
            last_p99_ns: g("last_p99_ns"),
        }
    }
}

fn publish_body(room: &str, phase: u64, seq: u64, end: bool) -> String {
    format!(
        r#"{{"room":"{room}","type":"bench","payload":{{"e":{},"p":{phase},"s":{seq},"t":{}}}}}"#,
        u8::from(end),
        now_ns()
    )
}

/// `count` publications `interval` apart, then the phase's end marker.
async fn paced_publish(http: &mut Http, room: &str, phase: u64, count: usize, interval: Duration) {
    let start = tokio::time::Instant::now();
    for seq in 1..=count {
        sleep_until(start + interval * (seq as u32 - 1)).await;
        let (status, body) =
            http.call("POST", "/publish", &publish_body(room, phase, seq as u64, false)).await;
        assert_eq!(status, 200, "POST /publish: {body}");
    }
    sleep_until(start + interval * count as u32).await;
    let (status, body) = http.call("POST", "/publish", &publish_body(room, phase, count as u64, true)).await;
    assert_eq!(status, 200, "POST /publish: {body}");
}

async fn fanout_run(run: FanoutRun<'_>) -> Vec<Value> {
    let FanoutRun {
        setup,
        n,
        rate,
        paced,
        bursts,
        burst_conns,
        warmup,
        idle,
        perf_dir,
        room,
        extra,
        server_cpu,
        client_cpu,
        ticks,
    } = run;
    let redis = setup.starts_with("redis").then(|| Redis::start(server_cpu));
    let nodes_wanted = if setup == "redis-2" { 2 } else { 1 };
    let mut nodes = Vec::new();
    for i in 0..nodes_wanted {
        let mut flags: Vec<String> = vec!["--node-id".into(), ["a", "b"][i].into()];
        flags.extend(["--max-connections".into(), (n + 100).to_string()]);
        if let Some(redis) = &redis {
            flags.extend(["--redis".into(), redis.url()]);
        }
        flags.extend(extra.iter().cloned());
        nodes.push(Node::start(server_cpu, &flags).await);
    }
    let urls: Vec<String> = nodes.iter().map(Node::ws_url).collect();
    let exe = std::env::current_exe().expect("this binary");
    let mut command = pinned(client_cpu, exe.to_str().expect("a UTF-8 path"));
    command.args(["child-subscribers", room, &n.to_string()]).args(&urls);
    let mut subscribers = Proc::spawn(command);
    let ready = subscribers.line("READY", Duration::from_secs(180)).await;
    if let Err(why) = ready {
        return vec![json!({ "setup": setup, "error": why })];
    }
    let mut http = Http::connect(&nodes[0].addr).await;
    let mut pids: Vec<(String, u32)> =
        nodes.iter().zip(["node_a", "node_b"]).map(|(n, name)| (name.to_owned(), n.pid())).collect();
    if let Some(redis) = &redis {
        pids.push(("redis".into(), redis.pid));
    }
    let cpu = |pids: &[(String, u32)]| -> Vec<f64> {
        pids.iter().map(|(_, pid)| cpu_seconds(*pid, ticks)).collect()
    };

    // Warm-up: a few publications at the paced rate, not measured.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut phase = 0u64;
    paced_publish(&mut http, room, phase, warmup, interval).await;
    if let Err(why) = subscribers.line("PHASE ", Duration::from_secs(60)).await {
        return vec![json!({ "setup": setup, "error": why })];
    }

    let mut out = Vec::new();
    // Idle: what the servers spend with the subscribers connected and
    // nothing published (heartbeats; on Redis, its PINGs and the presence
    // entries rewritten every 10 s), per second.
    if !idle.is_zero() {
        let before = cpu(&pids);
        let started = Instant::now();
        sleep(idle).await;
        let elapsed = started.elapsed().as_secs_f64();
        let after = cpu(&pids);
        let mut parts = serde_json::Map::new();
        for (i, (name, _)) in pids.iter().enumerate() {
            parts.insert(name.clone(), json!((after[i] - before[i]) / elapsed));
        }
        let total: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        out.push(json!({
            "setup": setup,
            "phase": "idle",
            "elapsed_s": elapsed,
            "cpu_s_per_s": parts,
            "cpu_total_s_per_s": total / elapsed,
        }));
    }
    // Paced.
    phase += 1;
    let load_before = loadavg();
    let before = cpu(&pids);
    let client_before = cpu_seconds(subscribers.pid(), ticks);
    // With --perf DIR: a profile of every server process over the paced phase.
    let profiler = perf_dir.map(|dir| {
        let pid_list: Vec<String> = pids.iter().map(|(_, pid)| pid.to_string()).collect();
        let file = dir.join(format!("perf-{setup}-{}.data", now_ns()));
        Command::new("perf")
            .args(["record", "-q", "-F", "999", "-g", "-p", &pid_list.join(","), "-o"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start perf record")
    });
    let started = Instant::now();
    paced_publish(&mut http, room, phase, paced, interval).await;
    let report = match subscribers.line("PHASE ", Duration::from_secs(60)).await {
        Ok(line) => PhaseReport::parse(&line),
        Err(why) => return vec![json!({ "setup": setup, "error": why })],
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(mut perf) = profiler {
        // perf writes its file on SIGINT.
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
    let after = cpu(&pids);
    out.push(phase_result(
        setup,
        "paced",
        &pids,
        &before,
        &after,
        &report,
        elapsed,
        &load_before,
        json!({
            "rate": rate,
            "publications": paced + 1,
            "client_cpu_s": cpu_seconds(subscribers.pid(), ticks) - client_before,
        }),
    ));

    // Bursts: BURST publications written back to back (pipelined), then
    // the end marker; the next burst once every subscriber has it.
    // Bursts: BURST publications written back to back, pipelined over
    // `conns` HTTP connections (1: one publisher, whose publications the
    // server takes one at a time); the end marker once every one of them
    // is answered (so it comes after them on every node); the next burst
    // once every subscriber has the marker.
    for &conns in burst_conns {
        if bursts == 0 {
            break;
        }
        let mut publishers = vec![http];
        for _ in 1..conns {
            publishers.push(Http::connect(&nodes[0].addr).await);
        }
        let load_before = loadavg();
        let before = cpu(&pids);
        let client_before = cpu_seconds(subscribers.pid(), ticks);
        let started = Instant::now();
        let mut spreads: [Vec<f64>; 4] = Default::default();
        let (mut deliveries, mut busy_ns, mut p99s, mut worst) =
            (0u64, 0u64, Vec::new(), PhaseReport::default());
        let mut p50s = Vec::new();
        let mut p90s = Vec::new();
        for _ in 0..bursts {
            phase += 1;
            let first_send = now_ns();
            let mut pipelines = vec![String::new(); conns];
            for seq in 1..=BURST {
                let publisher = &publishers[seq % conns];
                pipelines[seq % conns].push_str(&publisher.request(
                    "POST",
                    "/publish",
                    &publish_body(room, phase, seq as u64, false),
                ));
            }
            for (publisher, pipeline) in publishers.iter_mut().zip(&pipelines) {
                publisher.write(pipeline.as_bytes()).await;
            }
            for (i, publisher) in publishers.iter_mut().enumerate() {
                let sent = (1..=BURST).filter(|seq| seq % conns == i).count();
                for _ in 0..sent {
                    let (status, body) = publisher.response().await;
                    assert_eq!(status, 200, "POST /publish: {body}");
                }
            }
            let (status, body) =
                publishers[0].call("POST", "/publish", &publish_body(room, phase, BURST as u64, true)).await;
            assert_eq!(status, 200, "POST /publish: {body}");
            let report = match subscribers.line("PHASE ", Duration::from_secs(120)).await {
                Ok(line) => PhaseReport::parse(&line),
                Err(why) => return vec![json!({ "setup": setup, "error": why })],
            };
            deliveries += report.deliveries;
            busy_ns += report.last_recv_ns.saturating_sub(first_send);
            p50s.push(report.p50_ns as f64);
            p90s.push(report.p90_ns as f64);
            for (all, one) in spreads.iter_mut().zip([
                report.first_p50_ns,
                report.first_p99_ns,
                report.last_p50_ns,
                report.last_p99_ns,
            ]) {
                all.push(one as f64);
            }
            p99s.push(report.p99_ns as f64);
            worst.gaps += report.gaps;
            worst.out_of_order += report.out_of_order;
            worst.closed = worst.closed.max(report.closed);
            worst.max_ns = worst.max_ns.max(report.max_ns);
            sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = cpu(&pids);
        worst.deliveries = deliveries;
        worst.p50_ns = median(&p50s) as u64;
        worst.p90_ns = median(&p90s) as u64;
        worst.p99_ns = median(&p99s) as u64;
        worst.first_p50_ns = median(&spreads[0]) as u64;
        worst.first_p99_ns = median(&spreads[1]) as u64;
        worst.last_p50_ns = median(&spreads[2]) as u64;
        worst.last_p99_ns = median(&spreads[3]) as u64;
        let extra = json!({
            "bursts": bursts,
            "burst": BURST + 1,
            "publishers": conns,
            "deliveries_per_s": deliveries as f64 / (busy_ns.max(1) as f64 / 1e9),
            "p99_of_bursts_ms": p99s.iter().map(|p| p / 1e6).collect::<Vec<_>>(),
            "client_cpu_s": cpu_seconds(subscribers.pid(), ticks) - client_before,
        });
        let name = format!("burst-{conns}");
        out.push(phase_result(setup, &name, &pids, &before, &after, &worst, elapsed, &load_before, extra));
        http = publishers.swap_remove(0);
    }
    drop(subscribers);
    drop(nodes);
    drop(redis);
    // CPU per delivery net of the idle cost over the same time.
    let idle_rate = out.iter().find(|r| r["phase"] == "idle").and_then(|r| r["cpu_total_s_per_s"].as_f64());
    if let Some(idle_rate) = idle_rate {
        for result in out.iter_mut().filter(|r| r["phase"] != "idle") {
            let (Some(total), Some(elapsed), Some(deliveries)) =
                (result["cpu_total_s"].as_f64(), result["elapsed_s"].as_f64(), result["deliveries"].as_f64())
            else {
                continue;
            };
            result["cpu_us_per_delivery_net"] =
                json!((total - idle_rate * elapsed) * 1e6 / deliveries.max(1.0));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn phase_result(
    setup: &str,
    phase: &str,
    pids: &[(String, u32)],
    before: &[f64],
    after: &[f64],
    report: &PhaseReport,
    elapsed: f64,
    load_before: &str,
    extra: Value,
) -> Value {
    let mut cpu = serde_json::Map::new();
    let mut total = 0.0;
    for (i, (name, _)) in pids.iter().enumerate() {
        let used = after[i] - before[i];
        total += used;
        cpu.insert(name.clone(), json!(used));
    }
    let mut result = json!({
        "setup": setup,
        "phase": phase,
        "deliveries": report.deliveries,
        "cpu_s": cpu,
        "cpu_total_s": total,
        "cpu_us_per_delivery": total * 1e6 / report.deliveries.max(1) as f64,
        "p50_ms": report.p50_ns as f64 / 1e6,
        "p90_ms": report.p90_ns as f64 / 1e6,
        "p99_ms": report.p99_ns as f64 / 1e6,
        "max_ms": report.max_ns as f64 / 1e6,
        "first_p50_ms": report.first_p50_ns as f64 / 1e6,
        "first_p99_ms": report.first_p99_ns as f64 / 1e6,
        "last_p50_ms": report.last_p50_ns as f64 / 1e6,
        "last_p99_ms": report.last_p99_ns as f64 / 1e6,
        "gaps": report.gaps,
        "out_of_order": report.out_of_order,
        "closed": report.closed,
        "elapsed_s": elapsed,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut result, extra) {
        map.extend(more);
    }
    result
}

fn print_fanout_tables(
    results: &[Value],
    setups: &[String],
    n: usize,
    rate: f64,
    paced: usize,
    bursts: usize,
    burst_conns: &[usize],
) {
    let rounds = results.iter().filter_map(|r| r["round"].as_u64()).max().unwrap_or(0);
    let errors: Vec<&Value> = results.iter().filter(|r| r.get("error").is_some()).collect();
    let phases: Vec<String> =
        std::iter::once("paced".to_owned()).chain(burst_conns.iter().map(|k| format!("burst-{k}"))).collect();
    let has = |name: &str| setups.iter().any(|s| s == name);
    let idle: Vec<&Value> = results.iter().filter(|r| r["phase"] == "idle").collect();
    if !idle.is_empty() {
        println!("\nidle: {n} subscribers connected, nothing published; server CPU, ms per second (median of {rounds} rounds [min-max])\n");
        println!("| setup | node a | node b | redis-server | total |");
        println!("|---|---:|---:|---:|---:|");
        for setup in setups {
            let of: Vec<&&Value> = idle.iter().filter(|r| r["setup"] == *setup).collect();
            if of.is_empty() {
                continue;
            }
            let part = |pick: &dyn Fn(&Value) -> Option<f64>| -> String {
                let v: Vec<f64> = of.iter().filter_map(|r| pick(r)).map(|x| x * 1e3).collect();
                if v.is_empty() {
                    return "-".into();
                }
                let (lo, hi) = range(&v);
                format!("{:.1} [{lo:.1}-{hi:.1}]", median(&v))
            };
            println!(
                "| {setup} | {} | {} | {} | {} |",
                part(&|r| r["cpu_s_per_s"]["node_a"].as_f64()),
                part(&|r| r["cpu_s_per_s"]["node_b"].as_f64()),
                part(&|r| r["cpu_s_per_s"]["redis"].as_f64()),
                part(&|r| r["cpu_total_s_per_s"].as_f64()),
            );
        }
    }
    for phase in &phases {
        let phase = phase.as_str();
        let of = |setup: &str| -> Vec<&Value> {
            results.iter().filter(|r| r["setup"] == setup && r["phase"] == phase).collect()
        };
        if setups.iter().all(|s| of(s).is_empty()) {
            continue;
        }
        let metric = |setup: &str, key: &str| -> Vec<f64> {
            of(setup).iter().filter_map(|r| r[key].as_f64()).collect()
        };
        // A setup's value against a base's, round by round (side by side),
        // then the median and range of those.
        let against = |setup: &str, base: &str, key: &str, diff: bool| -> String {
            if base == setup || !has(base) {
                return "-".into();
            }
            let by_round = |s: &str| -> BTreeMap<u64, f64> {
                of(s).iter().filter_map(|r| Some((r["round"].as_u64()?, r[key].as_f64()?))).collect()
            };
            let theirs = by_round(base);
            let per_round: Vec<f64> = by_round(setup)
                .iter()
                .filter_map(|(round, v)| theirs.get(round).map(|b| if diff { v - b } else { v / b }))
                .collect();
            if per_round.is_empty() {
                return "-".into();
            }
            let (lo, hi) = range(&per_round);
            if diff {
                format!("{:+.2} [{lo:+.2} to {hi:+.2}]", median(&per_round))
            } else {
                format!("{:.2} [{lo:.2}-{hi:.2}]", median(&per_round))
            }
        };
        let cell = |setup: &str, key: &str, digits: usize| {
            let v = metric(setup, key);
            let (lo, hi) = range(&v);
            format!("{:.d$} [{lo:.d$}-{hi:.d$}]", median(&v), d = digits)
        };
        let title = match phase.strip_prefix("burst-") {
            None => format!("paced: {} publications at {rate}/s to {n} subscribers", paced + 1),
            Some(k) => format!(
                "bursts: {bursts} x {} publications ({BURST} written back to back over {k} HTTP \
                 connection(s), then an end marker) to {n} subscribers",
                BURST + 1
            ),
        };
        let burst = phase != "paced";
        println!("\n{title}; medians of {rounds} rounds [min-max]\n");
        println!(
            "| setup | deliveries | server CPU, us/delivery | / memory-1 | / redis-1 | net of idle, us/delivery | / memory-1 | / redis-1 | client CPU, s |{}",
            if burst { " deliveries/s |" } else { "" }
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|{}", if burst { "---:|" } else { "" });
        for setup in setups.iter().filter(|s| !of(s).is_empty()) {
            print!(
                "| {setup} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                median(&metric(setup, "deliveries")),
                cell(setup, "cpu_us_per_delivery", 2),
                against(setup, "memory-1", "cpu_us_per_delivery", false),
                against(setup, "redis-1", "cpu_us_per_delivery", false),
                cell(setup, "cpu_us_per_delivery_net", 2),
                against(setup, "memory-1", "cpu_us_per_delivery_net", false),
                against(setup, "redis-1", "cpu_us_per_delivery_net", false),
                cell(setup, "client_cpu_s", 1),
            );
            if burst {
                let rates = metric(setup, "deliveries_per_s");
                let (lo, hi) = range(&rates);
                print!(" {:.0}k [{:.0}k-{:.0}k] |", median(&rates) / 1e3, lo / 1e3, hi / 1e3);
            }
            println!();
        }
        println!("\nlatency, ms (every delivery; per publication its first and its last delivery):\n");
        println!(
            "| setup | p50 | p99 | p99 added to memory-1 | p99 added to redis-1 | first: p50 | first: p99 | first p99 added to memory-1 | last: p50 | last: p99 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for setup in setups.iter().filter(|s| !of(s).is_empty()) {
            println!(
                "| {setup} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(setup, "p50_ms", 2),
                cell(setup, "p99_ms", 2),
                against(setup, "memory-1", "p99_ms", true),
                against(setup, "redis-1", "p99_ms", true),
                cell(setup, "first_p50_ms", 2),
                cell(setup, "first_p99_ms", 2),
                against(setup, "memory-1", "first_p99_ms", true),
                cell(setup, "last_p50_ms", 1),
                cell(setup, "last_p99_ms", 1),
            );
        }
        println!("\nserver CPU by process, seconds (median of rounds):\n");
        println!("| setup | node a | node b | redis-server | total | gaps | out of order | closed |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for setup in setups.iter().filter(|s| !of(s).is_empty()) {
            let part = |name: &str| -> String {
                let v: Vec<f64> = of(setup).iter().filter_map(|r| r["cpu_s"][name].as_f64()).collect();
                if v.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}", median(&v))
                }
            };
            let sum = |key: &str| -> u64 { of(setup).iter().filter_map(|r| r[key].as_u64()).sum() };
            println!(
                "| {setup} | {} | {} | {} | {:.2} | {} | {} | {} |",
                part("node_a"),
                part("node_b"),
                part("redis"),
                median(&metric(setup, "cpu_total_s")),
                sum("gaps"),
                sum("out_of_order"),
                sum("closed"),
            );
        }
    }
    for error in errors {
        println!("\nERROR: {error}");
    }
}

/// The subscribers (a child process): `n` connections over the URLs,
/// each subscribed to `room`; every publication's latency measured on
/// receipt; one "PHASE {json}" line per phase, once every subscriber
/// has its end marker.
async fn child_subscribers(args: Args) {
    let room = args.0[0].clone();
    let n: usize = args.0[1].parse().expect("a subscriber count");
    let urls: Vec<String> = args.0[2..].to_vec();
    let subscribe = json!({ "v": 1, "type": "subscribe", "payload": { "rooms": [room] } });
    let clients = open_many(n, &urls, move |_, mut ws| {
        let subscribe = subscribe.clone();
        async move {
            send_json(&mut ws, &subscribe).await;
            next_of(&mut ws, "subscribed").await;
            ws
        }
    })
    .await;
    let (reports, mut incoming) = mpsc::unbounded_channel::<Option<Phase>>();
    for mut ws in clients {
        let reports = reports.clone();
        tokio::spawn(async move {
            let mut state = Phase::default();
            loop {
                match ws.recv().await {
                    Ok(Some(Message::Text(text))) => {
                        let received = now_ns();
                        let (Some(p), Some(s), Some(t)) = (
                            number_after(&text, "\"p\":"),
                            number_after(&text, "\"s\":"),
                            number_after(&text, "\"t\":"),
                        ) else {
                            continue;
                        };
                        state.phase = p;
                        state.deliveries += 1;
                        state.last_recv = state.last_recv.max(received);
                        if number_after(&text, "\"e\":") == Some(1) {
                            // The marker says how many came before it.
                            state.gaps = s.saturating_sub(state.data);
                            let done = std::mem::take(&mut state);
                            if reports.send(Some(done)).is_err() {
                                return;
                            }
                            continue;
                        }
                        state.latencies.push(received.saturating_sub(t));
                        state.seqs.push(s as u32);
                        state.data += 1;
                        if s < state.next {
                            state.out_of_order += 1;
                        }
                        state.next = s + 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = reports.send(None);
                        return;
                    }
                }
            }
        });
    }
    drop(reports);
    println!("READY {n}");
    let mut alive = n as u64;
    let mut pending: BTreeMap<u64, Vec<Phase>> = BTreeMap::new();
    while let Some(report) = incoming.recv().await {
        match report {
            None => alive -= 1,
            Some(phase) => pending.entry(phase.phase).or_default().push(phase),
        }
        let complete: Vec<u64> =
            pending.iter().filter(|(_, v)| v.len() as u64 >= alive).map(|(p, _)| *p).collect();
        for p in complete {
            let phases = pending.remove(&p).unwrap_or_default();
            let mut latencies: Vec<u64> = Vec::new();
            // Per publication: its first and its last delivery (the path
            // to the nearest subscriber, and the whole fan-out).
            let mut spread: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for phase in &phases {
                latencies.extend_from_slice(&phase.latencies);
                for (seq, latency) in phase.seqs.iter().zip(&phase.latencies) {
                    let entry = spread.entry(*seq).or_insert((u64::MAX, 0));
                    *entry = (entry.0.min(*latency), entry.1.max(*latency));
                }
            }
            latencies.sort_unstable();
            let mut firsts: Vec<u64> = spread.values().map(|v| v.0).collect();
            let mut lasts: Vec<u64> = spread.values().map(|v| v.1).collect();
            firsts.sort_unstable();
            lasts.sort_unstable();
            let line = json!({
                "phase": p,
                "subscribers": phases.len(),
                "deliveries": phases.iter().map(|x| x.deliveries).sum::<u64>(),
                "gaps": phases.iter().map(|x| x.gaps).sum::<u64>(),
                "out_of_order": phases.iter().map(|x| x.out_of_order).sum::<u64>(),
                "closed": n as u64 - alive,
                "last_recv_ns": phases.iter().map(|x| x.last_recv).max().unwrap_or(0),
                "p50_ns": percentile(&latencies, 0.50),
                "p90_ns": percentile(&latencies, 0.90),
                "p99_ns": percentile(&latencies, 0.99),
                "max_ns": latencies.last().copied().unwrap_or(0),
                "first_p50_ns": percentile(&firsts, 0.50),
                "first_p99_ns": percentile(&firsts, 0.99),
                "last_p50_ns": percentile(&lasts, 0.50),
                "last_p99_ns": percentile(&lasts, 0.99),
            });
            println!("PHASE {line}");
        }
    }
}

/// One subscriber's view of one phase.
#[derive(Default)]
struct Phase {
    phase: u64,
    /// Every message of the phase, its end marker included.
    deliveries: u64,
    /// Publications before the end marker.
    data: u64,
    next: u64,
    /// Publications the end marker counts that did not arrive.
    gaps: u64,
    /// Publications that came after one with a higher sequence number.
    out_of_order: u64,
    last_recv: u64,
    latencies: Vec<u64>,
    /// The sequence number of each of `latencies`.
    seqs: Vec<u32>,
}

// ---------------------------------------------------------------------------
// Recovery: clients reconnecting at once with `since`.

async fn recovery(args: Args) {
    let sizes: Vec<usize> =
        args.list("--clients", "1,10,100,1000").iter().map(|s| s.parse().expect("a client count")).collect();
    let missed: u64 = args.num("--missed", 100);
    let rounds: usize = args.num("--rounds", 3);
    let setups = args.list("--setups", "redis,memory");
    let server_cpu = cpu_of(&args, "--server-cpu", 0);
    let mut raw = Raw::open(args.out_dir(), "recovery.jsonl");
    let mut results: Vec<Value> = Vec::new();
    eprintln!(
        "recovery: clients {sizes:?}, {missed} missed each, {rounds} rounds, setups {setups:?}, loadavg {}",
        loadavg()
    );
    for round in 1..=rounds {
        for setup in &setups {
            // One node (and Redis) per setup and round; a fresh room per size.
            let redis = (setup == "redis").then(|| Redis::start(server_cpu));
            let mut flags: Vec<String> = vec!["--node-id".into(), "a".into()];
            if let Some(redis) = &redis {
                flags.extend(["--redis".into(), redis.url()]);
            }
            let node = Node::start(server_cpu, &flags).await;
            let mut order = sizes.clone();
            if round % 2 == 0 {
                order.reverse();
            }
            for &clients in &order {
                let room = format!("group:r{round}n{clients}");
                let mut result = recovery_run(&node, redis.as_ref(), &room, clients, missed).await;
                result["round"] = json!(round);
                result["setup"] = json!(setup);
                eprintln!("{result}");
                raw.write(&result);
                results.push(result);
            }
        }
    }
    print_recovery_tables(&results, &sizes, &setups, missed);
}

async fn recovery_run(node: &Node, redis: Option<&Redis>, room: &str, clients: usize, missed: u64) -> Value {
    let urls = vec![node.ws_url()];
    let mut http = Http::connect(&node.addr).await;
    // Subscribe, note the position, leave.
    let subscribe = json!({ "v": 1, "type": "subscribe", "payload": { "rooms": [room] } });
    let positions = Arc::new(std::sync::Mutex::new(vec![(0u64, String::new()); clients]));
    let noted = positions.clone();
    let room_owned = room.to_owned();
    let first = open_many(clients, &urls, move |i, mut ws| {
        let subscribe = subscribe.clone();
        let noted = noted.clone();
        let room = room_owned.clone();
        async move {
            send_json(&mut ws, &subscribe).await;
            let reply = next_of(&mut ws, "subscribed").await;
            let at = &reply["payload"]["positions"][&room];
            let position = (
                at["offset"].as_u64().expect("an offset"),
                at["epoch"].as_str().expect("an epoch").to_owned(),
            );
            noted.lock().expect("positions")[i] = position;
            ws
        }
    })
    .await;
    for mut ws in first {
        let _ = ws.close(sabai::CloseCode::NORMAL, "bye").await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.stats().await["connections"].as_u64() != Some(0) {
        assert!(Instant::now() < deadline, "the node still holds connections after 20 s");
        sleep(Duration::from_millis(50)).await;
    }
    for seq in 1..=missed {
        let body = format!(r#"{{"room":"{room}","type":"bench","payload":{{"s":{seq}}}}}"#);
        let (status, body) = http.call("POST", "/publish", &body).await;
        assert_eq!(status, 200, "POST /publish: {body}");
    }
    // Let the leaves' presence writes and the publications settle.
    sleep(Duration::from_millis(500)).await;
    let stats_before = http.stats().await;
    let calls_before = redis.map(Redis::command_calls).unwrap_or_default();
    let load_before = loadavg();
    let ticks = clock_ticks();
    let cpu_now = || (cpu_seconds(node.pid(), ticks), redis.map_or(0.0, |r| cpu_seconds(r.pid, ticks)));
    let cpu_before = cpu_now();

    // Every client reconnects at once with `since`.
    let positions = positions.lock().expect("positions").clone();
    let started = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(clients);
    for (offset, epoch) in positions {
        let url = urls[0].clone();
        let room = room.to_owned();
        handles.push(local.spawn_local(async move {
            let run = async {
                let mut ws = sabai::connect(&url).await.map_err(|e| format!("connect: {e}"))?;
                let since = json!({ room.clone(): { "offset": offset, "epoch": epoch } });
                let subscribe =
                    json!({ "v": 1, "type": "subscribe", "payload": { "rooms": [room], "since": since } });
                send_json(&mut ws, &subscribe).await;
                let reply = next_of(&mut ws, "subscribed").await;
                if reply["payload"]["recovered"] != true {
                    return Err(format!("not recovered: {reply}"));
                }
                let mut expected = offset + 1;
                while expected <= offset + missed {
                    let message = next_of(&mut ws, "bench").await;
                    let got = message["offset"].as_u64().unwrap_or(0);
                    if got != expected {
                        return Err(format!("offset {got} where {expected} was expected"));
                    }
                    expected += 1;
                }
                Ok((started.elapsed(), ws))
            };
            timeout(Duration::from_secs(60), run)
                .await
                .unwrap_or_else(|_| Err("not recovered within 60 s".into()))
        }));
    }
    let outcomes = local
        .run_until(async move {
            let mut out = Vec::new();
            for handle in handles {
                out.push(handle.await.expect("a client task"));
            }
            out
        })
        .await;
    let wall = started.elapsed();
    let cpu_after = cpu_now();
    let calls_after = redis.map(Redis::command_calls).unwrap_or_default();
    let stats_after = http.stats().await;
    let mut times: Vec<u64> = Vec::new();
    let mut failures = Vec::new();
    let mut kept = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok((at, ws)) => {
                times.push(at.as_micros() as u64);
                kept.push(ws);
            }
            Err(why) => failures.push(why),
        }
    }
    times.sort_unstable();
    let calls: BTreeMap<String, u64> = calls_after
        .iter()
        .map(|(k, v)| (k.clone(), v - calls_before.get(k).copied().unwrap_or(0)))
        // Not the INFO that read the counters before.
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect();
    let delta = |path: &[&str]| -> u64 {
        let pick = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone()).as_u64().unwrap_or(0);
        pick(&stats_after).saturating_sub(pick(&stats_before))
    };
    for mut ws in kept {
        let _ = ws.close(sabai::CloseCode::NORMAL, "bye").await;
    }
    json!({
        "clients": clients,
        "missed": missed,
        "recovered": times.len(),
        "failures": failures.len(),
        "first_failure": failures.first(),
        "all_ms": wall.as_secs_f64() * 1e3,
        "p50_ms": percentile(&times, 0.5) as f64 / 1e3,
        "last_ms": times.last().copied().unwrap_or(0) as f64 / 1e3,
        "hub_history_reads": delta(&["history_reads"]),
        "engine_history_reads": delta(&["redis", "history_reads"]),
        "redis_calls": calls,
        "node_cpu_ms": (cpu_after.0 - cpu_before.0) * 1e3,
        "redis_cpu_ms": (cpu_after.1 - cpu_before.1) * 1e3,
        "loadavg_before": load_before,
    })
}

fn print_recovery_tables(results: &[Value], sizes: &[usize], setups: &[String], missed: u64) {
    let rounds = results.iter().filter_map(|r| r["round"].as_u64()).max().unwrap_or(0);
    println!("\nrecovery: clients reconnect at once with `since` and get {missed} missed publications each; medians of {rounds} rounds [min-max]\n");
    println!("| engine | clients | all recovered, ms | p50 client, ms | node CPU, ms | redis-server CPU, ms | recovered | hub history reads |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for setup in setups {
        for &clients in sizes {
            let of: Vec<&Value> =
                results.iter().filter(|r| r["setup"] == *setup && r["clients"] == clients).collect();
            if of.is_empty() {
                continue;
            }
            let cell = |key: &str| {
                let v: Vec<f64> = of.iter().filter_map(|r| r[key].as_f64()).collect();
                let (lo, hi) = range(&v);
                format!("{:.1} [{lo:.1}-{hi:.1}]", median(&v))
            };
            let recovered: Vec<String> =
                of.iter().map(|r| format!("{}/{}", r["recovered"], clients)).collect();
            let reads: Vec<String> = of.iter().map(|r| r["hub_history_reads"].to_string()).collect();
            println!(
                "| {setup} | {clients} | {} | {} | {} | {} | {} | {} |",
                cell("all_ms"),
                cell("p50_ms"),
                cell("node_cpu_ms"),
                cell("redis_cpu_ms"),
                recovered.join(", "),
                reads.join(", ")
            );
        }
    }
    // Redis commands per size (median of rounds), every command seen.
    let redis: Vec<&Value> = results.iter().filter(|r| r["setup"] == "redis").collect();
    if redis.is_empty() {
        return;
    }
    let mut commands: Vec<String> =
        redis.iter().filter_map(|r| r["redis_calls"].as_object()).flat_map(|m| m.keys().cloned()).collect();
    commands.sort();
    commands.dedup();
    println!("\nRedis commands during the reconnection (INFO commandstats after minus before; medians of {rounds} rounds; commands run inside scripts counted too)\n");
    println!("| clients | {} |", commands.join(" | "));
    println!("|---:|{}", "---:|".repeat(commands.len()));
    for &clients in sizes {
        let of: Vec<&&Value> = redis.iter().filter(|r| r["clients"] == clients).collect();
        if of.is_empty() {
            continue;
        }
        let cells: Vec<String> = commands
            .iter()
            .map(|c| {
                let v: Vec<f64> = of.iter().map(|r| r["redis_calls"][c].as_f64().unwrap_or(0.0)).collect();
                let (lo, hi) = range(&v);
                if lo == hi {
                    format!("{}", median(&v))
                } else {
                    format!("{} [{lo}-{hi}]", median(&v))
                }
            })
            .collect();
        println!("| {clients} | {} |", cells.join(" | "));
    }
}

// ---------------------------------------------------------------------------
// Memory per idle connection.

/// The servers compared: a plain `sabai::hub` server (this binary's
/// child-plain-hub mode) and the hub server, each without and with Redis.
const MEMORY_SETUPS: [&str; 4] = ["hub-memory", "hub-redis", "server-memory", "server-redis"];

async fn memory(args: Args) {
    let n: usize = args.num("--connections", 10_000);
    let rooms_per: Vec<usize> =
        args.list("--rooms", "0,3").iter().map(|s| s.parse().expect("a room count")).collect();
    let rounds: usize = args.num("--rounds", 3);
    let setups = args.list("--setups", &MEMORY_SETUPS.join(","));
    let server_cpu = cpu_of(&args, "--server-cpu", 0);
    // `--deflate`: the clients offer permessage-deflate and exchange one
    // compressed message each way (the JSON protocol's ping and pong, so
    // the server's setups only).
    let deflate = args.has("--deflate");
    assert!(
        !deflate || setups.iter().all(|s| s.starts_with("server")),
        "--deflate measures the server's setups only (the plain hub sends nothing large enough to compress)"
    );
    let mut raw = Raw::open(args.out_dir(), "memory.jsonl");
    let mut results = Vec::new();
    eprintln!(
        "memory: {n} connections, rooms {rooms_per:?}, {rounds} rounds, setups {setups:?}, loadavg {}",
        loadavg()
    );
    for round in 1..=rounds {
        let mut order = setups.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for &rooms in &rooms_per {
            for setup in &order {
                let mut result = memory_run(setup, n, rooms, server_cpu, deflate).await;
                result["round"] = json!(round);
                eprintln!("{result}");
                raw.write(&result);
                results.push(result);
                sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let with = if deflate { ", permessage-deflate agreed and one compressed message each way" } else { "" };
    println!("\n{n} idle connections{with}; medians of {rounds} rounds [min-max]\n");
    println!(
        "| server | rooms per connection | RSS before, KiB | RSS idle, KiB | bytes per idle connection |"
    );
    println!("|---|---:|---:|---:|---:|");
    for &rooms in &rooms_per {
        for setup in &setups {
            let of: Vec<&Value> =
                results.iter().filter(|r| r["setup"] == *setup && r["rooms"] == rooms).collect();
            if of.is_empty() {
                continue;
            }
            let cell = |key: &str| {
                let v: Vec<f64> = of.iter().filter_map(|r| r[key].as_f64()).collect();
                let (lo, hi) = range(&v);
                format!("{:.0} [{lo:.0}-{hi:.0}]", median(&v))
            };
            println!(
                "| {setup} | {rooms} | {} | {} | {} |",
                cell("rss_before_kib"),
                cell("rss_idle_kib"),
                cell("bytes_per_conn")
            );
        }
    }
}

/// The rooms connection `i` joins: `global`, one of 16 groups, one of 256
/// devices (up to `count` of them).
fn rooms_of(i: usize, count: usize) -> Vec<String> {
    let all = ["global".to_owned(), format!("group:g{}", i % 16), format!("device:d{}", i % 256)];
    all.into_iter()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(k, r)| if k < 3 { r } else { format!("group:x{k}") })
        .collect()
}

async fn memory_run(setup: &str, n: usize, rooms: usize, server_cpu: Option<u32>, deflate: bool) -> Value {
    let redis = setup.ends_with("redis").then(|| Redis::start(server_cpu));
    let (proc_, url) = if setup.starts_with("server") {
        let mut flags: Vec<String> =
            vec!["--node-id".into(), "a".into(), "--max-connections".into(), (n + 100).to_string()];
        if let Some(redis) = &redis {
            flags.extend(["--redis".into(), redis.url()]);
        }
        let node = Node::start(server_cpu, &flags).await;
        let url = node.ws_url();
        (node.proc, url)
    } else {
        let exe = std::env::current_exe().expect("this binary");
        let mut command = pinned(server_cpu, exe.to_str().expect("a UTF-8 path"));
        command.args(["child-plain-hub", &(n + 100).to_string()]);
        if let Some(redis) = &redis {
            command.arg(redis.url());
        }
        let mut proc_ = Proc::spawn(command);
        let addr = proc_.line("listening on ", Duration::from_secs(20)).await.expect("the plain hub started");
        (proc_, format!("ws://{addr}/"))
    };
    let pid = proc_.pid();
    sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let clients = open_idle(n, &url, rooms, setup.starts_with("server"), deflate).await;
    // Idle: the clients keep reading (and answering pings) meanwhile.
    let live = Arc::new(AtomicU64::new(clients.len() as u64));
    let mut readers = Vec::new();
    for mut ws in clients {
        let live = live.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(_)) = ws.recv().await {}
            live.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    let still = live.load(Ordering::SeqCst);
    for reader in readers {
        reader.abort();
    }
    drop(proc_);
    drop(redis);
    json!({
        "setup": setup,
        "connections": n,
        "rooms": rooms,
        "deflate": deflate,
        "open_at_the_end": still,
        "rss_before_kib": before,
        "rss_idle_kib": idle,
        "bytes_per_conn": (idle.saturating_sub(before) * 1024) as f64 / n as f64,
        "loadavg": loadavg(),
    })
}

/// Opens `n` connections to `url`, each in the rooms `rooms_of` gives:
/// through the JSON protocol (`server`), or one line of room names (the
/// plain hub).
async fn open_idle(n: usize, url: &str, rooms: usize, server: bool, deflate: bool) -> Vec<Ws> {
    open_many_with(n, &[url.to_owned()], deflate, move |i, mut ws| async move {
        let names = rooms_of(i, rooms);
        if server {
            next_of(&mut ws, "connected").await;
            if !names.is_empty() {
                send_json(&mut ws, &json!({ "v": 1, "type": "subscribe", "payload": { "rooms": names } }))
                    .await;
                next_of(&mut ws, "subscribed").await;
            }
            if deflate {
                // One compressed message each way, as a page's first
                // exchange: a ping whose request_id makes both it and the
                // pong (which echoes it) longer than the server's 128-byte
                // threshold.
                assert!(ws.deflate().is_some(), "the server did not agree to permessage-deflate");
                let id = format!("{i:08}-").repeat(24);
                send_json(&mut ws, &json!({ "v": 1, "type": "ping", "request_id": id })).await;
                next_of(&mut ws, "pong").await;
            }
        } else {
            ws.send(Message::text(names.join(" "))).await.expect("send");
            ws.flush().await.expect("flush");
            loop {
                match ws.recv().await {
                    Ok(Some(Message::Text(t))) if t == "ok" => break,
                    Ok(Some(_)) => {}
                    other => panic!("plain hub: {other:?}"),
                }
            }
        }
        ws
    })
    .await
}

/// `hold URL N ROOMS (server|plain) SECS [deflate]`: opens idle
/// connections to a server started elsewhere (under valgrind's massif, for
/// the breakdown in BENCHMARKS.md), says READY, and holds them for SECS.
/// `deflate`: as `memory --deflate`.
async fn hold(args: Args) {
    let url = args.0[0].clone();
    let n: usize = args.0[1].parse().expect("a connection count");
    let rooms: usize = args.0[2].parse().expect("a room count");
    let server = args.0[3] == "server";
    let secs: u64 = args.0[4].parse().expect("seconds");
    let deflate = args.0.get(5).is_some_and(|a| a == "deflate");
    let clients = open_idle(n, &url, rooms, server, deflate).await;
    println!("READY {}", clients.len());
    let mut readers = Vec::new();
    for mut ws in clients {
        readers.push(tokio::spawn(async move { while let Ok(Some(_)) = ws.recv().await {} }));
    }
    sleep(Duration::from_secs(secs)).await;
}

/// A plain `sabai::hub` server (a child process): each connection sends
/// one line of room names, joins them and gets "ok". Users are named as
/// the hub server names anonymous connections (`guest-N`), the history
/// rules are the hub server's defaults; on Redis if given a URL.
async fn child_plain_hub(args: Args) {
    let max: usize = args.0[0].parse().expect("max connections");
    let hour = Duration::from_secs(3600);
    let mut config = HubConfig::default()
        .history("chat:", HistoryPolicy::new(200, 24 * hour))
        .history("device:", HistoryPolicy::new(300, hour))
        .history("group:", HistoryPolicy::new(1000, hour))
        .history("global", HistoryPolicy::new(2000, hour));
    config.max_connections = max;
    let hub = match args.0.get(1) {
        Some(url) => {
            let engine = sabai_redis::RedisEngine::connect(sabai_redis::RedisConfig::new(url.clone()))
                .await
                .expect("connect to Redis");
            Hub::with_engine(config, Arc::new(engine))
        }
        None => Hub::new(config),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    println!("listening on {}", listener.local_addr().expect("an address"));
    let guests = Arc::new(AtomicU64::new(1));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        let guests = guests.clone();
        tokio::spawn(async move {
            let user = format!("guest-{}", guests.fetch_add(1, Ordering::Relaxed));
            let Ok(accepted) = hub.accept(stream, |_| Ok(Some(user))).await else { return };
            accepted
                .serve(|hub, conn, message| async move {
                    if let Some(text) = message.as_text() {
                        for room in text.split_whitespace() {
                            let _ = hub.join(conn, room).await;
                        }
                        hub.send_to(conn, "ok");
                    }
                })
                .await;
        });
    }
}
