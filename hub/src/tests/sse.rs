//! Server-Sent Events and POST /send.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

/// A raw HTTP/1.1 client reading an SSE stream (chunked).
struct Sse {
    stream: TcpStream,
    raw: Vec<u8>,
    body: String,
}

impl Sse {
    /// Opens `GET path`; returns the status and, for a 200, the stream.
    async fn open(addr: &str, path: &str, headers: &str) -> (u16, Option<Sse>) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed before the head");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let status: u16 = head[9..12].parse().unwrap();
        if status != 200 {
            return (status, None);
        }
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        raw.drain(..head_end);
        (status, Some(Sse { stream, raw, body: String::new() }))
    }

    /// The next event: its id, if any, and its envelope.
    async fn next(&mut self) -> (Option<String>, Value) {
        loop {
            if let Some(end) = self.body.find("\n\n") {
                let event: String = self.body.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                match data {
                    Some(data) => return (id, data),
                    None => continue, // a comment (heartbeat)
                }
            }
            // De-chunk what has arrived: "<hex size>\r\n<bytes>\r\n".
            while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.raw[..line_end]).unwrap(), 16).unwrap();
                if self.raw.len() < line_end + 2 + size + 2 {
                    break;
                }
                let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
                self.raw.drain(..line_end + 2 + size + 2);
                self.body.push_str(&String::from_utf8(data).unwrap());
            }
            if self.body.contains("\n\n") {
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("no event in time")
                .unwrap();
            assert!(n > 0, "the stream ended");
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next event of this type, with the last id seen on the way.
    async fn next_of(&mut self, kind: &str, last_id: &mut Option<String>) -> Value {
        loop {
            let (id, envelope) = self.next().await;
            if id.is_some() {
                *last_id = id;
            }
            if envelope["type"] == kind {
                return envelope;
            }
        }
    }
}

#[tokio::test]
async fn server_sent_events_stream_recover_from_last_event_id_and_send_through_post() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let (status, sse) = Sse::open(&addr, "/events?rooms=chat:lobby&user=ann", "").await;
    let mut sse = sse.unwrap_or_else(|| panic!("status {status}"));
    let mut last_id = None;
    let hello = sse.next_of("connected", &mut last_id).await;
    let session = hello["payload"]["session"].as_str().unwrap().to_owned();
    assert_eq!(hello["payload"]["user"], "ann");
    let subscribed = sse.next_of("subscribed", &mut last_id).await;
    assert_eq!(subscribed["payload"]["rooms"], json!(["chat:lobby"]));
    assert!(last_id.is_some(), "subscribed gives a position");

    // The client's side goes through POST /send with the session key.
    let body =
        json!({"type": "publish", "room": "chat:lobby", "payload": {"text": "over sse"}, "request_id": 1});
    let header = format!("X-Sabai-Session: {session}\r\nContent-Type: application/json\r\n");
    let (status, _) = http(&addr, "POST", "/send", &header, &body.to_string()).await;
    assert_eq!(status, 202);
    let message = sse.next_of("message", &mut last_id).await;
    assert_eq!(
        (message["payload"]["text"].as_str(), message["offset"].as_u64()),
        (Some("over sse"), Some(1))
    );
    assert_eq!(sse.next_of("published", &mut last_id).await["request_id"], 1);
    let seen = last_id.clone().unwrap();
    assert_eq!(crate::sse::decode_id(&seen).unwrap()["chat:lobby"].offset, 1);
    drop(sse);

    // Missed while away, recovered with Last-Event-ID.
    let mut bob = connect(&addr, "?user=bob").await;
    send(&mut bob, json!({"type": "subscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
    next_of(&mut bob, "subscribed").await;
    say(&mut bob, "chat:lobby", "while away").await;
    let (_, sse) =
        Sse::open(&addr, "/events?rooms=chat:lobby&user=ann", &format!("Last-Event-ID: {seen}\r\n")).await;
    let mut sse = sse.unwrap();
    let subscribed = sse.next_of("subscribed", &mut last_id).await;
    assert_eq!(subscribed["payload"]["recovered"], true);
    let replayed = sse.next_of("message", &mut last_id).await;
    assert_eq!(
        (replayed["payload"]["text"].as_str(), replayed["offset"].as_u64()),
        (Some("while away"), Some(2))
    );

    // Bad input: unknown session, a body that is not an envelope, a room that does not exist.
    let (status, _) = http(&addr, "POST", "/send", "X-Sabai-Session: nope\r\n", "{}").await;
    assert_eq!(status, 404);
    let (status, _) = http(&addr, "POST", "/send", &header.replace(&session, "x"), "[1]").await;
    assert_eq!(status, 404);
    assert_eq!(Sse::open(&addr, "/events?rooms=kitchen", "").await.0, 400);
}

#[tokio::test]
async fn a_last_event_id_that_cannot_be_read_is_not_recovered_and_nothing_breaks() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    for id in ["garbage".to_owned(), format!("v1.{}", "A".repeat(2000)), "v1.e30".repeat(10)] {
        let (status, sse) =
            Sse::open(&addr, "/events?rooms=chat:a,global", &format!("Last-Event-ID: {id}\r\n")).await;
        let mut sse = sse.unwrap_or_else(|| panic!("status {status}"));
        let subscribed = sse.next_of("subscribed", &mut None).await;
        assert_eq!(subscribed["payload"]["recovered"], false, "{id:.30}");
    }
    // 100 KB of id (hyper bounds a head at 400 KB): not even decoded.
    let huge = "A".repeat(100 * 1024);
    let (_, sse) = Sse::open(&addr, "/events?rooms=chat:a", &format!("Last-Event-ID: v1.{huge}\r\n")).await;
    let subscribed = sse.unwrap().next_of("subscribed", &mut None).await;
    assert_eq!(subscribed["payload"]["recovered"], false);
}

#[tokio::test]
async fn an_sse_reader_that_stops_reading_is_closed_as_a_slow_consumer_and_its_connection_dropped() {
    let (app, addr) = start(&["--no-simulator", "--queue", "8"]).await;
    let (_, sse) = Sse::open(&addr, "/events?rooms=device:x", "").await;
    let mut sse = sse.unwrap();
    sse.next_of("subscribed", &mut None).await;
    // It reads no more; 60 KB events pile up in the socket, the channel
    // to hyper, then the hub's queue of 8.
    let reading =
        json!({"room": "device:x", "type": "telemetry", "payload": {"blob": "x".repeat(60_000)}}).to_string();
    let mut sent = 0;
    while app.hub.stats().slow_consumer_closes == 0 {
        assert!(sent < 2000, "the slow reader was never closed");
        assert_eq!(http(&addr, "POST", "/publish", "", &reading).await.0, 200);
        sent += 1;
    }
    // The connection is dropped: reading what was buffered reaches its end.
    let mut rest = Vec::new();
    let read = timeout(Duration::from_secs(10), sse.stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert_eq!(app.hub.stats().close_codes.get(&4008), Some(&1));
    assert_eq!(app.hub.connection_count(), 0);
    assert!(app.sessions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_stream_is_told_which_device_rooms_name_no_known_device() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let (status, sse) = Sse::open(&addr, "/events?rooms=device:ghost,global", "").await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    loop {
        let (_, envelope) = sse.next().await;
        if envelope["type"] == "subscribed" {
            assert_eq!(envelope["payload"]["unknown_devices"], json!(["ghost"]));
            break;
        }
    }
}
