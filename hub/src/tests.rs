//! The hub server over loopback: the JSON room protocol with sabai
//! clients, the HTTP endpoints with raw HTTP/1.1, auth and Origin checks.

use std::sync::Arc;
use std::time::Duration;

use sabai::handshake::HandshakeError;
use sabai::{Error, Message, WebSocket, WebSocketConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::options::Options;
use crate::App;

async fn start(flags: &[&str]) -> (Arc<App>, String) {
    let options = Options::parse(std::iter::once("sabai-hub").chain(flags.iter().copied())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = App::new(options);
    let serving = app.clone();
    tokio::spawn(async move { crate::accept_loop(&listener, serving).await });
    (app, addr)
}

type Ws = WebSocket<TcpStream>;

async fn connect(addr: &str, query: &str) -> Ws {
    sabai::connect(&format!("ws://{addr}/ws{query}")).await.unwrap()
}

/// The next envelope, within 5 s.
async fn next(ws: &mut Ws) -> Value {
    let message = timeout(Duration::from_secs(5), ws.recv()).await.expect("no envelope in time").unwrap();
    serde_json::from_str(message.expect("closed").as_text().unwrap()).unwrap()
}

/// The next envelope of this type, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let envelope = next(ws).await;
        if envelope["type"] == kind {
            return envelope;
        }
    }
}

/// Sends and flushes: `send` batches while received bytes wait unread
/// (the greeting may have come with the handshake response).
async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
    ws.flush().await.unwrap();
}

/// One HTTP/1.1 request; returns the status and the body.
async fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn greets_subscribes_and_answers_pings_with_request_ids() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ws = connect(&addr, "?user=ann").await;
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "connected");
    assert_eq!(hello["payload"]["user"], "ann");
    assert!(hello["payload"]["connection_id"].as_u64().is_some());
    assert_eq!(hello["v"], 1);
    assert!(humantime::parse_rfc3339(hello["timestamp"].as_str().unwrap()).is_ok(), "{hello}");
    assert!(hello["payload"]["node"].as_str().is_some_and(|n| !n.is_empty()));
    send(
        &mut ws,
        json!({"type": "subscribe", "payload": {"rooms": ["global", "device:a1"]}, "request_id": "s1"}),
    )
    .await;
    let subscribed = next_of(&mut ws, "subscribed").await;
    assert_eq!(subscribed["request_id"], "s1");
    assert_eq!(subscribed["payload"]["rooms"], json!(["device:a1", "global"]));
    // Both rooms keep a history by default: the client learns where they stand.
    for room in ["device:a1", "global"] {
        let at = &subscribed["payload"]["positions"][room];
        assert!(at["offset"].as_u64() == Some(0) && at["epoch"].as_str().is_some(), "{subscribed}");
    }
    assert!(subscribed["payload"].get("recovered").is_none(), "nothing asked to recover");
    send(&mut ws, json!({"type": "unsubscribe", "payload": {"rooms": ["global"]}, "request_id": 2})).await;
    let unsubscribed = next(&mut ws).await;
    assert_eq!(
        (unsubscribed["type"].as_str(), &unsubscribed["request_id"]),
        (Some("unsubscribed"), &json!(2))
    );
    assert_eq!(unsubscribed["payload"]["rooms"], json!(["device:a1"]));
    send(&mut ws, json!({"type": "ping", "request_id": "p"})).await;
    let pong = next(&mut ws).await;
    assert_eq!((pong["type"].as_str(), pong["request_id"].as_str()), (Some("pong"), Some("p")));
}

#[tokio::test]
async fn user_names_keep_their_combining_marks_and_lose_control_characters() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    // ลูกค้า ("customer") has two combining marks; %0A is a line feed.
    let mut ws = connect(&addr, "?user=%E0%B8%A5%E0%B8%B9%E0%B8%81%E0%B8%84%E0%B9%89%E0%B8%B2%0A").await;
    assert_eq!(next_of(&mut ws, "connected").await["payload"]["user"], "ลูกค้า");
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ws = connect(&addr, "").await;
    next_of(&mut ws, "connected").await;
    let bad: [(Message, &str); 7] = [
        (Message::text("{not json"), "invalid JSON"),
        (Message::text("[1,2]"), "invalid JSON"),
        (Message::binary(vec![1, 2, 3]), "binary"),
        (Message::text(r#"{"type":"dance"}"#), "unknown message type"),
        (Message::text(r#"{"type":"subscribe","payload":{"rooms":"global"}}"#), "payload.rooms"),
        (
            Message::text(r#"{"type":"subscribe","payload":{"rooms":["global","kitchen"]},"request_id":9}"#),
            "kitchen",
        ),
        (Message::text(r#"{"type":"publish","room":"device:x","payload":{"text":"hi"}}"#), "may not publish"),
    ];
    for (message, expected) in bad {
        ws.send(message).await.unwrap();
        ws.flush().await.unwrap();
        let error = next(&mut ws).await;
        assert_eq!(error["type"], "error");
        let text = error["payload"]["message"].as_str().unwrap();
        assert!(text.contains(expected), "{text:?} should mention {expected:?}");
    }
    // All or nothing: "global" was not joined with "kitchen".
    send(&mut ws, json!({"type": "ping", "request_id": 1})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn chat_messages_typing_and_presence_reach_the_room() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ann = connect(&addr, "?user=ann").await;
    send(&mut ann, json!({"type": "subscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
    assert_eq!(next_of(&mut ann, "online_users").await["payload"]["users"], json!(["ann"]));
    let mut bob = connect(&addr, "?user=bob").await;
    send(&mut bob, json!({"type": "subscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
    let joined = next_of(&mut ann, "user_joined").await;
    assert_eq!(
        (joined["room"].as_str(), joined["payload"]["user"].as_str()),
        (Some("chat:lobby"), Some("bob"))
    );
    assert!(joined.get("offset").is_none(), "presence events carry no offset");
    // The whole list goes to the joiner only; the others got the delta.
    assert_eq!(next_of(&mut bob, "online_users").await["payload"]["users"], json!(["ann", "bob"]));
    send(&mut bob, json!({"type": "typing", "room": "chat:lobby", "payload": {"typing": true}})).await;
    let typing = next_of(&mut ann, "typing").await;
    assert_eq!(
        (typing["payload"]["user"].as_str(), typing["payload"]["typing"].as_bool()),
        (Some("bob"), Some(true))
    );
    let publish =
        json!({"type": "publish", "room": "chat:lobby", "payload": {"text": "hi all"}, "request_id": 5});
    send(&mut bob, publish).await;
    let message = next_of(&mut ann, "message").await;
    assert_eq!(
        (message["payload"]["text"].as_str(), message["payload"]["user"].as_str()),
        (Some("hi all"), Some("bob"))
    );
    assert_eq!((message["offset"].as_u64(), &message["offsets"]), (Some(1), &json!({"chat:lobby": 1})));
    // The sender's own copy arrives too, and it never saw its own typing.
    let own = next(&mut bob).await;
    assert_eq!((own["type"].as_str(), own["payload"]["text"].as_str()), (Some("message"), Some("hi all")));
    let ack = next(&mut bob).await;
    assert_eq!((ack["type"].as_str(), &ack["request_id"]), (Some("published"), &json!(5)));
    assert_eq!(ack["payload"]["offsets"], json!({"chat:lobby": 1}));
    send(&mut ann, json!({"type": "presence", "room": "chat:lobby", "request_id": "p"})).await;
    let presence = next_of(&mut ann, "presence").await;
    let users = json!([{"user": "ann", "connections": 1}, {"user": "bob", "connections": 1}]);
    assert_eq!(presence["payload"]["users"], users);
    bob.close(sabai::CloseCode::NORMAL, "").await.unwrap();
    let left = next_of(&mut ann, "user_left").await;
    assert_eq!(left["payload"]["user"], "bob");
}

#[tokio::test]
async fn http_endpoints_report_and_publish() {
    let (_app, addr) = start(&["--no-simulator", "--publish-key", "k3y"]).await;
    let mut ws = connect(&addr, "").await;
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["device:t1"]}})).await;
    next_of(&mut ws, "subscribed").await;
    let event = r#"{"room":"device:t1","type":"telemetry","payload":{"temperature":21.5}}"#;
    assert_eq!(http(&addr, "POST", "/publish", "", event).await.0, 401);
    assert_eq!(http(&addr, "POST", "/publish", "X-Publish-Key: nope\r\n", event).await.0, 401);
    let (status, body) = http(&addr, "POST", "/publish", "X-Publish-Key: k3y\r\n", event).await;
    assert_eq!((status, body.as_str()), (200, r#"{"offsets":{"device:t1":1}}"#));
    let telemetry = next_of(&mut ws, "telemetry").await;
    assert_eq!(
        (telemetry["room"].as_str(), telemetry["payload"]["temperature"].as_f64()),
        (Some("device:t1"), Some(21.5))
    );
    // One publication to several rooms: this client, in one of them, gets it once.
    let both = r#"{"rooms":["device:t1","global"],"type":"telemetry","payload":{"temperature":22}}"#;
    let (status, body) = http(&addr, "POST", "/publish", "X-Publish-Key: k3y\r\n", both).await;
    assert_eq!((status, body.as_str()), (200, r#"{"offsets":{"device:t1":2,"global":1}}"#));
    let telemetry = next_of(&mut ws, "telemetry").await;
    assert_eq!(telemetry["offsets"], json!({"device:t1": 2, "global": 1}));
    assert_eq!(http(&addr, "POST", "/publish", "X-Publish-Key: k3y\r\n", "{oops").await.0, 400);
    assert_eq!(
        http(&addr, "POST", "/publish", "X-Publish-Key: k3y\r\n", r#"{"room":"nope","type":"x"}"#).await.0,
        400
    );

    let (status, rooms) = http(&addr, "GET", "/rooms", "", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&rooms).unwrap(),
        json!({"rooms": [{"room": "device:t1", "members": 1, "cluster": {"users": 1, "connections": 1}}]})
    );
    let (status, stats) = http(&addr, "GET", "/stats", "", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!((status, stats["connections"].as_u64(), stats["rooms"].as_u64()), (200, Some(1), Some(1)));
    assert!(stats["messages_out"].as_u64().unwrap() >= 3, "{stats}");
    let (status, metrics) = http(&addr, "GET", "/metrics", "", "").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE sabai_hub_connections gauge\nsabai_hub_connections 1\n"), "{metrics}");
    assert!(metrics.contains("sabai_hub_messages_in_total 1\n"), "{metrics}");
    for (path, marker) in [
        ("/", "sabai hub"),
        ("/chat", "sabai chat"),
        ("/dashboard", "IoT dashboard"),
        ("/client.js", "class HubClient"),
    ] {
        let (status, body) = http(&addr, "GET", path, "", "").await;
        assert!(status == 200 && body.contains(marker), "{path}: {status}");
    }
    assert_eq!(http(&addr, "GET", "/nope", "", "").await.0, 404);
    assert_eq!(http(&addr, "DELETE", "/stats", "", "").await.0, 405);
    // /ws without an upgrade is refused by sabai's handshake checks.
    assert_eq!(http(&addr, "GET", "/ws", "", "").await.0, 400);
}

async fn handshake_status(addr: &str, query: &str, header: Option<(&str, &str)>) -> Result<(), u16> {
    let url = format!("ws://{addr}/ws{query}");
    let result = sabai::connect_with(&url, &WebSocketConfig::default(), |request| match header {
        Some((name, value)) => request.header(name, value),
        None => request,
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(status))) => Err(status),
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_and_origin_are_checked_at_the_handshake() {
    let (_app, addr) =
        start(&["--no-simulator", "--token", "s3cret", "--allow-origin", "http://good.example"]).await;
    assert_eq!(handshake_status(&addr, "", None).await, Err(401));
    assert_eq!(handshake_status(&addr, "?token=wrong", None).await, Err(401));
    assert_eq!(handshake_status(&addr, "?token=s3cret", None).await, Ok(()));
    assert_eq!(handshake_status(&addr, "", Some(("Authorization", "Bearer s3cret"))).await, Ok(()));
    let origin = |o| Some(("Origin", o));
    assert_eq!(handshake_status(&addr, "?token=s3cret", origin("http://evil.example")).await, Err(403));
    assert_eq!(handshake_status(&addr, "?token=s3cret", origin("http://good.example")).await, Ok(()));
}

#[tokio::test]
async fn limits_from_flags_apply() {
    let (_app, addr) = start(&["--no-simulator", "--max-connections", "1", "--max-message", "100"]).await;
    let mut ws = connect(&addr, "").await;
    assert_eq!(handshake_status(&addr, "", None).await, Err(503));
    ws.send(Message::text("x".repeat(101))).await.unwrap();
    ws.flush().await.unwrap();
    while let Ok(Some(_)) = timeout(Duration::from_secs(5), ws.recv()).await.unwrap() {}
    assert_eq!(ws.close_frame().map(|f| f.code.0), Some(1009));
}

/// A client offering permessage-deflate, as browsers do.
async fn connect_deflate(addr: &str, query: &str) -> Ws {
    let mut config = WebSocketConfig::default();
    config.protocol.deflate = Some(sabai::DeflateConfig::default());
    sabai::connect_with(&format!("ws://{addr}/ws{query}"), &config, |r| r).await.unwrap()
}

#[tokio::test]
async fn deflate_is_agreed_through_the_hyper_upgrade_unless_turned_off() {
    let (_app, addr) = start(&["--no-simulator", "--max-message", "200000"]).await;
    let mut ann = connect_deflate(&addr, "?user=ann").await;
    let mut bob = connect(&addr, "?user=bob").await;
    // RFC 7692 §7.1.1.1: the hub always answers with server_no_context_takeover.
    assert!(ann.deflate().is_some_and(|d| d.server_no_context_takeover));
    assert_eq!(bob.deflate(), None);
    for ws in [&mut ann, &mut bob] {
        send(ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:big"]}})).await;
        next_of(ws, "subscribed").await;
    }
    // 64 KiB of JSON each way: compressed by ann's client, inflated by the
    // hub, fanned out compressed to ann and plain to bob.
    let text = json!((0..2000).map(|i| json!({"i": i, "t": 20.5})).collect::<Vec<_>>()).to_string();
    let text = text.repeat(65536 / text.len() + 1);
    send(&mut ann, json!({"type": "publish", "room": "chat:big", "payload": {"text": text}})).await;
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next_of(ws, "message").await["payload"]["text"].as_str(), Some(text.as_str()));
    }

    let (_app, addr) = start(&["--no-simulator", "--no-deflate"]).await;
    assert_eq!(connect_deflate(&addr, "").await.deflate(), None);
}

/// Publishes a chat message as `ws` and waits for its own copy.
async fn say(ws: &mut Ws, room: &str, text: &str) {
    send(ws, json!({"type": "publish", "room": room, "payload": {"text": text}})).await;
    assert_eq!(next_of(ws, "message").await["payload"]["text"], text);
}

#[tokio::test]
async fn a_client_that_comes_back_with_since_gets_what_it_missed_in_order() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ann = connect(&addr, "?user=ann").await;
    send(&mut ann, json!({"type": "subscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
    let at = next_of(&mut ann, "subscribed").await["payload"]["positions"]["chat:lobby"].clone();
    say(&mut ann, "chat:lobby", "one").await;
    drop(ann);
    let mut bob = connect(&addr, "?user=bob").await;
    send(&mut bob, json!({"type": "subscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
    next_of(&mut bob, "subscribed").await;
    for text in ["two", "three"] {
        say(&mut bob, "chat:lobby", text).await;
    }
    // ann saw offset 1; she comes back and asks for what followed.
    let mut ann = connect(&addr, "?user=ann").await;
    let since = json!({"chat:lobby": {"offset": 1, "epoch": at["epoch"]}});
    let request =
        json!({"type": "subscribe", "request_id": "r", "payload": {"rooms": ["chat:lobby"], "since": since}});
    send(&mut ann, request).await;
    let subscribed = next_of(&mut ann, "subscribed").await;
    assert_eq!(subscribed["request_id"], "r");
    assert_eq!(subscribed["payload"]["recovered"], true);
    assert_eq!(subscribed["payload"]["positions"]["chat:lobby"]["offset"], 3);
    for (offset, text) in [(2, "two"), (3, "three")] {
        let message = next(&mut ann).await;
        assert_eq!(
            (message["offset"].as_u64(), message["payload"]["text"].as_str()),
            (Some(offset), Some(text))
        );
    }
    say(&mut bob, "chat:lobby", "four").await;
    let live = next_of(&mut ann, "message").await;
    assert_eq!((live["offset"].as_u64(), live["payload"]["text"].as_str()), (Some(4), Some("four")));

    // A position the room cannot have: not recovered, and no replay.
    let mut carl = connect(&addr, "?user=carl").await;
    for since in [json!({"offset": 99, "epoch": at["epoch"]}), json!({"offset": 1, "epoch": "not-this-one"})]
    {
        let payload = json!({"rooms": ["chat:lobby"], "since": {"chat:lobby": since}});
        send(&mut carl, json!({"type": "unsubscribe", "payload": {"rooms": ["chat:lobby"]}})).await;
        send(&mut carl, json!({"type": "subscribe", "payload": payload})).await;
        let subscribed = next_of(&mut carl, "subscribed").await;
        assert_eq!(subscribed["payload"]["recovered"], false, "{since}");
        let at = &subscribed["payload"]["positions"]["chat:lobby"];
        assert_eq!((at["offset"].as_u64(), at["recovered"].as_bool()), (Some(4), Some(false)));
    }
    send(&mut carl, json!({"type": "ping"})).await;
    loop {
        let envelope = next(&mut carl).await;
        assert_ne!(envelope["type"], "message", "nothing is replayed: {envelope}");
        if envelope["type"] == "pong" {
            break;
        }
    }
}

#[tokio::test]
async fn hostile_subscribe_requests_get_precise_errors() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ws = connect(&addr, "").await;
    next_of(&mut ws, "connected").await;
    let cases = [
        (json!({"v": 2, "type": "ping"}), "version"),
        (
            json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": {"chat:a": {"offset": -1, "epoch": "e"}}}}),
            "since",
        ),
        (
            json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": {"chat:a": {"offset": "9", "epoch": "e"}}}}),
            "since",
        ),
        (
            json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": {"chat:b": {"offset": 1, "epoch": "e"}}}}),
            "not in payload.rooms",
        ),
        (
            json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": {"chat:a": {"offset": 1, "epoch": "e".repeat(100)}}}}),
            "epoch",
        ),
        (json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": "yesterday"}}), "since"),
    ];
    for (request, expected) in cases {
        send(&mut ws, request.clone()).await;
        let error = next(&mut ws).await;
        assert_eq!(error["type"], "error", "{request}");
        let text = error["payload"]["message"].as_str().unwrap();
        assert!(text.contains(expected), "{text:?} should mention {expected:?}");
    }
    // None of them joined anything; an offset at the top of u64 is only "not recovered".
    let huge = json!({"chat:a": {"offset": u64::MAX, "epoch": "e"}});
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:a"], "since": huge}})).await;
    let subscribed = next_of(&mut ws, "subscribed").await;
    assert_eq!(
        (subscribed["payload"]["rooms"].clone(), subscribed["payload"]["recovered"].clone()),
        (json!(["chat:a"]), json!(false))
    );
}

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

/// Opens a request and sends it one byte every `pace` (at most `bytes`);
/// returns the status the server answered with, if any, and when.
async fn trickle(addr: &str, head: &str, bytes: usize, pace: Duration) -> (Option<u16>, Duration) {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    for _ in 0..bytes {
        let mut buf = [0u8; 512];
        tokio::select! {
            read = stream.read(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => { response.extend_from_slice(&buf[..n]); break; }
                }
            }
            () = tokio::time::sleep(pace) => {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
    }
    let status = std::str::from_utf8(&response).ok().and_then(|r| r.get(9..12)).and_then(|s| s.parse().ok());
    (status, started.elapsed())
}

#[tokio::test]
async fn slow_requests_are_cut_off_and_plain_requests_are_bounded() {
    let (_app, addr) = start(&["--no-simulator", "--request-timeout", "1", "--max-requests", "2"]).await;
    // A body at one byte per 300 ms: 408 after about a second, not never.
    let head = format!("POST /publish HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n");
    let (status, took) = trickle(&addr, &head, 60, Duration::from_millis(300)).await;
    assert_eq!(status, Some(408));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A head at the same pace: the connection is dropped (hyper answers 408 or closes).
    let (status, took) =
        trickle(&addr, "GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ", 60, Duration::from_millis(300)).await;
    assert!(status.is_none() || status == Some(408), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Two slow bodies take both places: a third request does not wait, it gets 503.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (addr, head) = (addr.clone(), head.clone());
            tokio::spawn(async move { trickle(&addr, &head, 60, Duration::from_millis(300)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http(&addr, "GET", "/stats", "", "").await.0, 503);
    for request in slow {
        assert_eq!(request.await.unwrap().0, Some(408));
    }
    assert_eq!(http(&addr, "GET", "/healthz", "", "").await.0, 200, "the places are free again");
}

/// Reads until the server ends the connection; its Close code and reason.
async fn closed_with(ws: &mut Ws) -> Option<(u16, String)> {
    let end = timeout(Duration::from_secs(10), async { while let Ok(Some(_)) = ws.recv().await {} });
    end.await.expect("the connection did not end");
    ws.close_frame().map(|f| (f.code.0, f.reason.clone()))
}

#[tokio::test]
async fn a_client_over_the_rate_limit_is_closed_with_1008_and_counted() {
    let (app, addr) = start(&["--no-simulator", "--rate", "20", "--rate-burst", "30"]).await;
    let mut ann = connect(&addr, "?user=ann").await;
    next_of(&mut ann, "connected").await;
    let mut flood = connect(&addr, "?user=flood").await;
    next_of(&mut flood, "connected").await;
    for i in 0..500 {
        if flood.send(Message::text(json!({"type": "ping", "request_id": i}).to_string())).await.is_err() {
            break;
        }
    }
    let _ = flood.flush().await;
    assert_eq!(closed_with(&mut flood).await, Some((1008, "Rate limit".into())));
    // Its pongs were the burst's (what was still queued went with the close).
    let (_, stats) = http(&addr, "GET", "/stats", "", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!((stats["rate_limited"].as_u64(), stats["close_codes"]["1008"].as_u64()), (Some(1), Some(1)));
    let (_, metrics) = http(&addr, "GET", "/metrics", "", "").await;
    assert!(metrics.contains("\nsabai_hub_rate_limited_total 1\n"), "{metrics}");
    // The innocent one is untouched.
    send(&mut ann, json!({"type": "ping", "request_id": "still"})).await;
    assert_eq!(next_of(&mut ann, "pong").await["request_id"], "still");
    assert_eq!(app.hub.connection_count(), 1);
}

/// An admin API request with this Authorization header (or none).
async fn admin(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let header = key.map(|k| format!("Authorization: {k}\r\n")).unwrap_or_default();
    let (status, body) = http(addr, method, path, &header, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_needs_the_key_lists_connections_and_disconnects_one() {
    let key = "Bearer adm1n-k3y";
    let (app, addr) = start(&["--no-simulator", "--admin-key", "adm1n-k3y"]).await;
    let (status, page) = http(&addr, "GET", "/admin", "", "").await;
    assert!(status == 200 && page.contains("sabai admin"), "{status}");
    let mut users = Vec::new();
    for name in ["ann", "bob"] {
        let mut ws = connect(&addr, &format!("?user={name}")).await;
        send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:ops"]}})).await;
        next_of(&mut ws, "online_users").await;
        users.push(ws);
    }
    let (mut ann, mut bob) = (users.remove(0), users.remove(0));
    next_of(&mut ann, "user_joined").await;

    // No key, a wrong one, a prefix of the right one, another scheme: 401, counted.
    let list = "/admin/api/connections";
    for wrong in
        [None, Some("Bearer nope"), Some("Bearer adm1n-k3"), Some("Basic adm1n-k3y"), Some("adm1n-k3y")]
    {
        let (status, body) = admin(&addr, "GET", list, wrong, "").await;
        assert_eq!(status, 401, "{wrong:?}");
        assert!(body["error"].as_str().is_some_and(|e| !e.contains("adm1n")), "{body}");
    }
    assert_eq!(admin(&addr, "POST", "/admin/api/disconnect", None, r#"{"connection_id":1}"#).await.0, 401);
    assert_eq!(app.admin_refused.load(std::sync::atomic::Ordering::Relaxed), 6);
    let (_, stats) = http(&addr, "GET", "/stats", "", "").await;
    assert_eq!(serde_json::from_str::<Value>(&stats).unwrap()["admin_refused"], 6);
    let (_, metrics) = http(&addr, "GET", "/metrics", "", "").await;
    assert!(metrics.contains("\nsabai_hub_admin_refused_total 6\n"), "{metrics}");

    // The right key: each connection with its user, rooms, queue and traffic.
    let (status, body) = admin(&addr, "GET", list, Some(key), "").await;
    assert_eq!(status, 200, "{body}");
    let connections = body["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2, "{body}");
    for (conn, user) in connections.iter().zip(["ann", "bob"]) {
        assert_eq!((conn["user"].as_str(), &conn["rooms"]), (Some(user), &json!(["chat:ops"])), "{conn}");
        assert_eq!(conn["transport"], "websocket");
        assert!(conn["queued"].as_u64().is_some() && conn["messages_in"].as_u64() == Some(1), "{conn}");
        assert!(conn["bytes_out"].as_u64().unwrap() > 0, "{conn}");
        assert!(humantime::parse_rfc3339(conn["connected_at"].as_str().unwrap()).is_ok());
    }
    let presence = json!([{"user": "ann", "connections": 1}, {"user": "bob", "connections": 1}]);
    assert_eq!(body["rooms"], json!([{"room": "chat:ops", "members": 2, "presence": presence}]));
    assert_eq!(body["cluster"], json!({"nodes": 1, "connections": 2}));
    let bob_id = connections[1]["id"].as_u64().unwrap();

    // Disconnect bob: 1013 "Disconnected by an operator"; ann sees him leave.
    let disconnect = |id: u64| json!({"connection_id": id}).to_string();
    let (status, body) = admin(&addr, "POST", "/admin/api/disconnect", Some(key), &disconnect(bob_id)).await;
    assert_eq!((status, &body["code"]), (200, &json!(1013)), "{body}");
    assert_eq!(closed_with(&mut bob).await, Some((1013, "Disconnected by an operator".into())));
    assert_eq!(next_of(&mut ann, "user_left").await["payload"]["user"], "bob");
    let (status, _) = admin(&addr, "POST", "/admin/api/disconnect", Some(key), &disconnect(bob_id)).await;
    assert_eq!(status, 404, "gone already");

    // Bad requests: 400, and nothing closed.
    let ann_id = connections[0]["id"].as_u64().unwrap();
    for bad in [
        "{oops".to_owned(),
        json!({}).to_string(),
        json!({"connection_id": "1"}).to_string(),
        json!({"connection_id": ann_id, "code": 1005}).to_string(),
        json!({"connection_id": ann_id, "code": 70000}).to_string(),
        json!({"connection_id": ann_id, "reason": "x".repeat(124)}).to_string(),
    ] {
        assert_eq!(admin(&addr, "POST", "/admin/api/disconnect", Some(key), &bad).await.0, 400, "{bad}");
    }
    assert_eq!(admin(&addr, "GET", "/admin/api/disconnect", Some(key), "").await.0, 405);
    // A code and reason of the operator's choosing.
    let custom = json!({"connection_id": ann_id, "code": 4000, "reason": "maintenance"}).to_string();
    assert_eq!(admin(&addr, "POST", "/admin/api/disconnect", Some(key), &custom).await.0, 200);
    assert_eq!(closed_with(&mut ann).await, Some((4000, "maintenance".into())));
    assert_eq!(app.admin_refused.load(std::sync::atomic::Ordering::Relaxed), 6, "none of these counted");
}

#[tokio::test]
async fn without_an_admin_key_there_is_no_admin_page() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    assert_eq!(http(&addr, "GET", "/admin", "", "").await.0, 404);
    assert_eq!(admin(&addr, "GET", "/admin/api/connections", Some("Bearer x"), "").await.0, 404);
    assert_eq!(admin(&addr, "POST", "/admin/api/disconnect", Some("Bearer x"), "{}").await.0, 404);
}
