//! Load generator for the TLS cost benchmark (benches/tls_cost.sh). It
//! speaks ws or wss through tokio-tungstenite's client and reads the
//! server's CPU time and memory from /proc, so what it reports is the
//! server's cost, not its own (on 2 cores its own TLS work caps the rate).
//!
//!     tls-load certs DIR
//!     tls-load load PORT PID [--tls DIR] [--conns 16] [--inflight 1] [--size 1024] [--secs 5] [--warmup 1]
//!     tls-load idle PORT PID [--tls DIR] [--conns 5000] [--echo]
//!
//! Each prints one JSON line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Error = Box<dyn std::error::Error>;

struct Args {
    port: u16,
    pid: u32,
    tls: Option<PathBuf>,
    conns: usize,
    inflight: usize,
    size: usize,
    secs: f64,
    warmup: f64,
    echo: bool,
}

fn parse(args: &[String], conns: usize) -> Result<Args, Error> {
    let mut a = Args {
        port: args.first().ok_or("PORT missing")?.parse()?,
        pid: args.get(1).ok_or("PID missing")?.parse()?,
        tls: None,
        conns,
        inflight: 1,
        size: 1024,
        secs: 5.0,
        warmup: 1.0,
        echo: false,
    };
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        if flag == "--echo" {
            a.echo = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tls" => a.tls = Some(PathBuf::from(value)),
            "--conns" => a.conns = value.parse()?,
            "--inflight" => a.inflight = value.parse()?,
            "--size" => a.size = value.parse()?,
            "--secs" => a.secs = value.parse()?,
            "--warmup" => a.warmup = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

/// The server's CPU time so far, from every thread's schedstat
/// (nanoseconds, not clock ticks).
fn server_cpu(pid: u32) -> Result<Duration, Error> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat.split_whitespace().next().ok_or("empty schedstat")?.parse::<u64>()?;
    }
    Ok(Duration::from_nanos(total))
}

/// The server's resident memory in bytes.
fn server_rss(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?;
    Ok(kib * 1024)
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Ws = WebSocketStream<Box<dyn Stream>>;

async fn open(port: u16, tls: Option<&TlsConnector>) -> Result<Ws, Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = match tls {
        Some(connector) => Box::new(connector.connect("localhost".try_into()?, tcp).await?),
        None => Box::new(tcp),
    };
    let (ws, _) = tokio_tungstenite::client_async("ws://localhost/", stream).await?;
    Ok(ws)
}

async fn open_all(a: &Args) -> Result<Vec<Ws>, Error> {
    let tls = match &a.tls {
        Some(dir) => Some(TlsConnector::from(sabai_tls_bench::client_config(dir)?)),
        None => None,
    };
    let opened: Vec<Result<Ws, Error>> = futures_util::stream::iter(0..a.conns)
        .map(|_| open(a.port, tls.as_ref()))
        .buffer_unordered(32)
        .collect()
        .await;
    opened.into_iter().collect()
}

async fn load(a: Args) -> Result<String, Error> {
    let sockets = open_all(&a).await?;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let payload = vec![0x5a; a.size];
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (counting, stop, echoed, payload, inflight) =
            (counting.clone(), stop.clone(), echoed.clone(), payload.clone(), a.inflight);
        tasks.push(tokio::spawn(async move {
            for _ in 0..inflight {
                ws.send(Message::binary(payload.clone())).await?;
            }
            while let Some(message) = ws.next().await {
                if message?.len() != payload.len() {
                    return Err("echo of the wrong length".into());
                }
                if counting.load(Ordering::Relaxed) {
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                ws.send(Message::binary(payload.clone())).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let (cpu0, t0) = (server_cpu(a.pid)?, Instant::now());
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    counting.store(false, Ordering::Relaxed);
    let (cpu1, elapsed) = (server_cpu(a.pid)?, t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for task in tasks {
        if !matches!(tokio::time::timeout(Duration::from_secs(5), task).await, Ok(Ok(Ok(())))) {
            errors += 1;
        }
    }
    let messages = echoed.load(Ordering::Relaxed);
    if messages == 0 {
        return Err("no echo in the measured window".into());
    }
    let cpu = (cpu1 - cpu0).as_secs_f64();
    Ok(format!(
        "{{\"mode\":\"load\",\"conns\":{},\"inflight\":{},\"size\":{},\"messages\":{messages},\
         \"msgs_per_sec\":{:.0},\"server_cpu_secs\":{cpu:.3},\"server_us_per_msg\":{:.3},\"errors\":{errors}}}",
        a.conns,
        a.inflight,
        a.size,
        messages as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / messages as f64,
    ))
}

async fn idle(a: Args) -> Result<String, Error> {
    let base = server_rss(a.pid)?;
    let mut sockets = open_all(&a).await?;
    if a.echo {
        // One message each way, so buffers that grow on first use have.
        for ws in &mut sockets {
            ws.send(Message::binary(vec![0x5a; a.size])).await?;
            ws.next().await.ok_or("closed before the echo")??;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = server_rss(a.pid)?;
    let per_conn = held.saturating_sub(base) as f64 / a.conns as f64;
    drop(sockets);
    Ok(format!(
        "{{\"mode\":\"idle\",\"conns\":{},\"echo\":{},\"rss_base_kib\":{},\"rss_idle_kib\":{},\"bytes_per_conn\":{per_conn:.0}}}",
        a.conns,
        a.echo,
        base / 1024,
        held / 1024,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = match args.first().map(String::as_str) {
        Some("certs") => match args.get(1) {
            Some(dir) => {
                sabai_tls_bench::make_certs(Path::new(dir)).map(|()| format!("certificates in {dir}"))
            }
            None => Err("certs DIR".into()),
        },
        Some("load") => parse(&args[1..], 16).and_then(|a| runtime.block_on(load(a))),
        Some("idle") => parse(&args[1..], 5000).and_then(|a| runtime.block_on(idle(a))),
        _ => Err("usage: tls-load certs DIR | load PORT PID [flags] | idle PORT PID [flags]".into()),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("tls-load: {error}");
            std::process::exit(1);
        }
    }
}
