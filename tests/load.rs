//! Load and faults, bounded and self-stopping, all on 127.0.0.1:
//! - 10,000 connections held at once against an echo server in this
//!   process, in waves (connect, exchange, close), the clients in a child
//!   process (this same binary) so each side has its own fd limit; after the
//!   waves: no task, fd or heap byte left, RSS within a tolerance;
//! - clients cut off at seeded random points mid-handshake and mid-frame:
//!   the server cleans up every one;
//! - (feature `hub`) hub shutdown under load: every client gets 1001.
//!
//! Sizes: SABAI_LOAD_CONNS (10000) and SABAI_LOAD_WAVES (2). Linux only.
#![cfg(target_os = "linux")]

#[path = "support/counting.rs"]
mod counting;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use counting::Counting;
use sabai::{CloseCode, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};
use tokio::time::{sleep, timeout};

#[global_allocator]
static ALLOC: Counting = Counting;

const CHILD_ENV: &str = "SABAI_LOAD_CHILD";
/// Heap bytes that may stay allocated after the waves: tokio's internal
/// tables grow with the peak task count and are kept.
const HEAP_TOLERANCE: usize = 4 << 20;
/// RSS may stay higher than the heap: the allocator keeps freed pages.
const RSS_TOLERANCE: usize = 64 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

extern "C" {
    fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
}

/// Raises the soft fd limit to the hard one and returns it.
fn raise_fd_limit() -> u64 {
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = Rlimit { cur: 0, max: 0 };
    // SAFETY: plain libc calls on a properly sized struct.
    unsafe {
        assert_eq!(getrlimit(RLIMIT_NOFILE, &mut limit), 0);
        limit.cur = limit.max;
        assert_eq!(setrlimit(RLIMIT_NOFILE, &limit), 0);
    }
    limit.cur
}

/// Live counts kept by the server's tasks.
#[derive(Default)]
struct Gauges {
    /// Connections accepted from the listener.
    accepted: AtomicUsize,
    /// Connection tasks alive, handshake or not.
    tasks: AtomicUsize,
    /// Connections past the handshake, alive.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    handshakes: AtomicUsize,
    /// Heap bytes when `open` first reached `held_target`.
    heap_at_target: AtomicUsize,
    held_target: AtomicUsize,
}

struct Live<'a>(&'a AtomicUsize);
impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// An echo server: every message is sent back until the peer closes.
async fn echo_server(gauges: Arc<Gauges>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            // Counted before the spawn: no moment where an accepted socket
            // is open and no task is counted.
            gauges.tasks.fetch_add(1, SeqCst);
            gauges.accepted.fetch_add(1, SeqCst);
            let gauges = gauges.clone();
            tokio::spawn(async move {
                let _task = Live(&gauges.tasks);
                let Ok(mut ws) = sabai::accept(stream).await else { return };
                gauges.handshakes.fetch_add(1, SeqCst);
                let now = gauges.open.fetch_add(1, SeqCst) + 1;
                let _open = Live(&gauges.open);
                gauges.peak_open.fetch_max(now, SeqCst);
                if now == gauges.held_target.load(SeqCst) {
                    gauges.heap_at_target.store(counting::current(), SeqCst);
                }
                while let Ok(Some(message)) = ws.recv().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// Waits until the server has accepted `accepted` connections in all and
/// every connection task has ended.
async fn settle(gauges: &Gauges, accepted: usize) {
    let drained = async {
        while gauges.accepted.load(SeqCst) < accepted || gauges.tasks.load(SeqCst) > 0 {
            sleep(Duration::from_millis(20)).await;
        }
    };
    if timeout(Duration::from_secs(60), drained).await.is_err() {
        let (done, alive) = (gauges.accepted.load(SeqCst), gauges.tasks.load(SeqCst));
        panic!("after 60 s: {done} of {accepted} accepted, {alive} server tasks alive");
    }
}

/// In the child: `conns` clients per wave, all held open at once, each
/// exchanging one message, then all closing.
#[test]
fn load_client_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else { return };
    raise_fd_limit();
    let (conns, waves) = (env("SABAI_LOAD_CONNS", 10_000), env("SABAI_LOAD_WAVES", 2));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for wave in 0..waves {
            let connecting = Arc::new(Semaphore::new(256));
            let held = Arc::new(Barrier::new(conns));
            let tasks: Vec<_> = (0..conns)
                .map(|i| {
                    let (url, connecting, held) = (url.clone(), connecting.clone(), held.clone());
                    tokio::spawn(async move {
                        let permit = connecting.acquire().await.unwrap();
                        let mut ws = sabai::connect(&url).await.expect("connect");
                        let text = format!("wave {wave} client {i}");
                        ws.send(Message::text(text.clone())).await.unwrap();
                        assert_eq!(ws.recv().await.unwrap(), Some(Message::text(text)));
                        drop(permit);
                        held.wait().await;
                        ws.close(CloseCode::NORMAL, "").await.unwrap();
                        while let Ok(Some(_)) = ws.recv().await {}
                    })
                })
                .collect();
            for task in tasks {
                timeout(Duration::from_secs(120), task).await.expect("client hung").expect("client failed");
            }
            println!("wave {wave}: {conns} connections held, echoed and closed");
        }
    });
}

#[test]
fn ten_thousand_connections_in_waves_leave_nothing_behind() {
    let _serial = counting::serial(); // fds and memory are process-wide
    let conns = env("SABAI_LOAD_CONNS", 10_000);
    let hard = raise_fd_limit();
    if hard < conns as u64 + 512 {
        eprintln!(
            "\n!!! SKIPPED: fd hard limit {hard} < {} needed for {conns} connections !!!\n",
            conns + 512
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let gauges = Arc::new(Gauges::default());
    let url = rt.block_on(echo_server(gauges.clone()));
    // A small warm-up so threads, the allocator and tokio's tables exist
    // before the baseline.
    let warm = |n: &str, waves: &str| {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "load_client_process", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &url)
            .env("SABAI_LOAD_CONNS", n)
            .env("SABAI_LOAD_WAVES", waves)
            .status()
            .unwrap();
        assert!(status.success(), "client process failed: {status}");
        rt.block_on(settle(&gauges, 0));
    };
    warm("200", "1");
    let (fds, heap, rss) = (open_fds(), counting::current(), rss_bytes());
    gauges.held_target.store(conns, SeqCst);
    gauges.peak_open.store(0, SeqCst);
    let waves = env("SABAI_LOAD_WAVES", 2);
    warm(&conns.to_string(), &waves.to_string());
    let (fds_after, heap_after, rss_after) = (open_fds(), counting::current(), rss_bytes());
    let held_heap = gauges.heap_at_target.load(SeqCst).saturating_sub(heap);
    eprintln!(
        "load: {conns} x {waves} waves, peak open {}, server heap with {conns} open {} B ({} B/conn); \
         fds {fds} -> {fds_after}; heap {heap} -> {heap_after} B; rss {rss} -> {rss_after} B",
        gauges.peak_open.load(SeqCst),
        held_heap,
        held_heap / conns
    );
    assert_eq!(gauges.peak_open.load(SeqCst), conns, "not all connections were open at once");
    assert_eq!(gauges.handshakes.load(SeqCst), 200 + conns * waves);
    assert_eq!((gauges.tasks.load(SeqCst), gauges.open.load(SeqCst)), (0, 0));
    assert_eq!(fds_after, fds, "file descriptors leaked");
    assert!(heap_after <= heap + HEAP_TOLERANCE, "heap {heap} -> {heap_after}");
    assert!(rss_after <= rss + RSS_TOLERANCE, "rss {rss} -> {rss_after}");
}

/// A tiny seeded generator (xorshift64*): the same cuts on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

// 600 clients each send a prefix of (handshake, then frames) cut at a seeded
// random byte, and vanish. Every
// server task ends on its own (EOF: handshake error or 1006), and no fd stays.
#[test]
fn abrupt_disconnects_at_random_points_are_cleaned_up() {
    let _serial = counting::serial(); // fds and memory are process-wide
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let gauges = Arc::new(Gauges::default());
    let url = rt.block_on(echo_server(gauges.clone()));
    let addr = url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
    let fds = open_fds();
    let mut script = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let head = script.len();
    // Masked binary frames in each length encoding (RFC 6455 §5.2).
    for (len, code) in [(5usize, 5u8), (300, 126), (70_000, 127)] {
        script.extend_from_slice(&[0x82, 0x80 | code]);
        match code {
            126 => script.extend_from_slice(&(len as u16).to_be_bytes()),
            127 => script.extend_from_slice(&(len as u64).to_be_bytes()),
            _ => {}
        }
        script.extend_from_slice(&[1, 2, 3, 4]);
        script.extend(std::iter::repeat_n(0x55, len));
    }
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    // Half the cuts fall in the handshake, half in the frames after it.
    let cuts: Vec<usize> =
        (0..600)
            .map(|i| {
                if i % 2 == 0 {
                    1 + rng.below(head - 1)
                } else {
                    head + 1 + rng.below(script.len() - head - 1)
                }
            })
            .collect();
    let mid_handshake = cuts.iter().filter(|&&c| c < head).count();
    rt.block_on(async {
        let script = Arc::new(script);
        // In batches that the listen backlog holds: a client that connects
        // and vanishes while the accept queue is full is dropped by the
        // kernel before the server ever sees it.
        for (batch, cuts) in cuts.chunks(100).enumerate() {
            let tasks: Vec<_> = cuts
                .iter()
                .map(|&cut| {
                    let (addr, script) = (addr.clone(), script.clone());
                    tokio::spawn(async move {
                        let mut stream = TcpStream::connect(addr).await.unwrap();
                        // The server may already have given up on a bad prefix.
                        let _ = stream.write_all(&script[..cut]).await;
                        drop(stream);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            settle(&gauges, (batch + 1) * 100).await;
        }
    });
    let handshakes = gauges.handshakes.load(SeqCst);
    eprintln!("abrupt: 600 cut clients, {mid_handshake} mid-handshake, {handshakes} past it");
    assert_eq!(mid_handshake, 300);
    // A client that vanished right after its head may make the 101 fail
    // (reset), so past-the-head cuts give at most, not exactly, a handshake.
    assert!(handshakes > 0 && handshakes <= 300, "{handshakes} handshakes from 300 complete heads");
    assert_eq!(gauges.open.load(SeqCst), 0);
    assert_eq!(open_fds(), fds, "file descriptors leaked");
}

// A hub with 1000 clients under a stream of room messages shuts down: each
// client reads every update it was sent, then a Close 1001, and the hub
// ends empty within the wait.
#[cfg(feature = "hub")]
#[test]
fn hub_shutdown_under_load_closes_everyone_with_1001() {
    use sabai::hub::{Hub, HubConfig};
    const CLIENTS: usize = 1000;
    let _serial = counting::serial(); // fds and memory are process-wide
    if raise_fd_limit() < 2 * CLIENTS as u64 + 256 {
        eprintln!("\n!!! SKIPPED: fd hard limit too low for {CLIENTS} hub connections !!!\n");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let hub = Hub::new(HubConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = hub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let hub = server.clone();
                tokio::spawn(async move {
                    let Ok(accepted) = hub.accept(stream, |_| Ok(None)).await else { return };
                    accepted
                        .serve(|hub, conn, _| async move {
                            hub.join(conn, "all").await.unwrap();
                            hub.send_to(conn, "joined");
                        })
                        .await;
                });
            }
        });
        let connecting = Arc::new(Semaphore::new(128));
        let joined = Arc::new(Barrier::new(CLIENTS + 1));
        let readers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, connecting, joined) = (url.clone(), connecting.clone(), joined.clone());
                tokio::spawn(async move {
                    let permit = connecting.acquire().await.unwrap();
                    let mut ws = sabai::connect(&url).await.expect("connect");
                    ws.send(Message::text("join")).await.unwrap();
                    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("joined")));
                    drop(permit);
                    joined.wait().await;
                    let mut received = 0usize;
                    while let Ok(Some(_)) = ws.recv().await {
                        received += 1;
                    }
                    (ws.close_frame().map(|f| f.code.0), received)
                })
            })
            .collect();
        timeout(Duration::from_secs(120), joined.wait()).await.expect("clients did not all join");
        assert_eq!(hub.connection_count(), CLIENTS);
        assert_eq!(hub.members("all").len(), CLIENTS);
        for i in 0..50 {
            hub.publish("all", format!("update {i}")).await.unwrap();
            sleep(Duration::from_millis(2)).await;
        }
        assert!(hub.shutdown(Duration::from_secs(30)).await, "connections left after shutdown");
        let mut total = 0;
        for reader in readers {
            let (code, received) = timeout(Duration::from_secs(30), reader).await.expect("hang").unwrap();
            assert_eq!(code, Some(1001));
            // Every publish was accepted into every queue (capacity 256),
            // and a shutdown's Close waits for the queue (hub/outbox.rs).
            assert_eq!(received, 50, "updates read before the Close");
            total += received;
        }
        eprintln!("hub shutdown: {CLIENTS} clients closed with 1001 after {total} messages in all");
        assert_eq!(hub.connection_count(), 0);
        assert_eq!(hub.stats().close_codes.get(&1001), Some(&(CLIENTS as u64)));
    });
}
