//! Test support: hub server processes (the real binary) on 127.0.0.1,
//! and clients of the JSON protocol.
#![allow(dead_code)]

pub mod broker;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sabai::{Message, WebSocket};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A `sabai-hub` process, stopped (SIGKILL) when dropped.
pub struct Node {
    child: Child,
    pub addr: String,
    /// What it wrote to stderr (its logs), line by line.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    /// Starts the server with these flags on a free port; waits (at most
    /// 20 s) until it says where it listens.
    pub fn start(flags: &[&str]) -> Node {
        Node::start_at("127.0.0.1:0", flags)
    }

    /// The same, on a given address (to restart a node where it was).
    pub fn start_at(addr: &str, flags: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sabai-hub"))
            .args(["--addr", addr])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sabai-hub");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[sabai-hub] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line
                        .split("listening on http://")
                        .nth(1)
                        .or(line.split("listening on https://").nth(1));
                    if let Some(rest) = found {
                        let addr = rest.trim_end_matches('/').to_owned();
                        // Keep draining its output so it never blocks on a full pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Node { child, addr, logs };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("sabai-hub did not start (exit: {:?})", child.try_wait());
                }
            }
        }
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "INT", "KILL").
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (at most `limit`) for the process to end.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws = WebSocket<sabai::MaybeTlsStream>;

/// The next envelope, within 10 s; `None` once the connection ended.
pub async fn next(ws: &mut Ws) -> Option<Value> {
    let message = timeout(Duration::from_secs(10), ws.recv()).await.expect("no envelope in time");
    match message {
        Ok(Some(Message::Text(text))) => Some(serde_json::from_str(&text).unwrap()),
        Ok(Some(other)) => panic!("unexpected {other:?}"),
        Ok(None) | Err(_) => None,
    }
}

/// The next envelope of this type, skipping others.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let envelope = next(ws).await.unwrap_or_else(|| panic!("closed while waiting for {kind}"));
        if envelope["type"] == kind {
            return envelope;
        }
    }
}

/// Sends one envelope and flushes.
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
    ws.flush().await.unwrap();
}

/// One HTTP/1.1 request; the status and the body.
pub async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A client that follows rooms across node failures, as the JS client
/// does: it keeps its position per room, and after any disconnect moves
/// to the next URL and subscribes with `since`. It keeps every `message`
/// it receives, duplicates included, so a test can check exactly once.
pub struct Follower {
    urls: Vec<String>,
    next_url: usize,
    rooms: Vec<String>,
    /// room → (offset, epoch)
    positions: std::collections::BTreeMap<String, (u64, String)>,
    ws: Option<Ws>,
    pub messages: Vec<Value>,
    /// `recovered` of every `subscribed` after a reconnect.
    pub recoveries: Vec<bool>,
    /// How many messages it had each time it had to reconnect.
    pub reconnected_at: Vec<usize>,
}

impl Follower {
    pub async fn start(urls: Vec<String>, rooms: &[&str]) -> Follower {
        let mut follower = Follower {
            urls,
            next_url: 0,
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            positions: Default::default(),
            ws: None,
            messages: Vec::new(),
            recoveries: Vec::new(),
            reconnected_at: Vec::new(),
        };
        follower.connect().await;
        follower
    }

    /// Connects to the next node that answers (each tried in turn, for at
    /// most 30 s in all) and subscribes with its positions.
    async fn connect(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no node took the follower back");
            let url = self.urls[self.next_url % self.urls.len()].clone();
            self.next_url += 1;
            let Ok(Ok(mut ws)) = timeout(Duration::from_secs(5), sabai::connect(&url)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let since: serde_json::Map<String, Value> = self
                .positions
                .iter()
                .map(|(room, (offset, epoch))| {
                    (room.clone(), serde_json::json!({"offset": offset, "epoch": epoch}))
                })
                .collect();
            let request = serde_json::json!({"type": "subscribe", "request_id": "follow",
                "payload": {"rooms": self.rooms, "since": since}});
            if ws.send(Message::text(request.to_string())).await.is_err() || ws.flush().await.is_err() {
                continue;
            }
            self.ws = Some(ws);
            return;
        }
    }

    /// Reads until `done(messages)` holds, reconnecting as needed.
    pub async fn follow(&mut self, limit: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.messages) {
            assert!(Instant::now() < deadline, "follower timed out with {} messages", self.messages.len());
            let ws = self.ws.as_mut().expect("connected");
            let received = timeout(Duration::from_secs(10), ws.recv()).await;
            let text = match received {
                Ok(Ok(Some(Message::Text(text)))) => text,
                Ok(Ok(Some(_))) => continue,
                // Closed, failed, or silent for 10 s: move on.
                _ => {
                    self.ws = None;
                    self.reconnected_at.push(self.messages.len());
                    self.connect().await;
                    continue;
                }
            };
            let envelope: Value = serde_json::from_str(&text).unwrap();
            match envelope["type"].as_str() {
                Some("subscribed") => {
                    if let Some(recovered) = envelope["payload"]["recovered"].as_bool() {
                        self.recoveries.push(recovered);
                    }
                    let positions = envelope["payload"]["positions"].as_object().cloned().unwrap_or_default();
                    for (room, at) in positions {
                        if let (Some(offset), Some(epoch)) = (at["offset"].as_u64(), at["epoch"].as_str()) {
                            self.positions.insert(room, (offset, epoch.to_owned()));
                        }
                    }
                }
                Some("message") => {
                    for (room, offset) in envelope["offsets"].as_object().cloned().unwrap_or_default() {
                        if let (Some(at), Some(offset)) = (self.positions.get_mut(&room), offset.as_u64()) {
                            at.0 = offset;
                        }
                    }
                    self.messages.push(envelope);
                }
                _ => {}
            }
        }
    }

    /// The texts of the messages received, in order.
    pub fn texts(&self) -> Vec<String> {
        self.messages.iter().map(|m| m["payload"]["text"].as_str().unwrap_or_default().to_owned()).collect()
    }
}
