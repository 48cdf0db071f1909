//! The hub server over loopback, in this process: the JSON room protocol
//! with sabai clients (protocol.rs), recovery (recovery.rs), SSE (sse.rs),
//! the HTTP endpoints with raw HTTP/1.1 (http.rs), tokens (auth.rs).

mod admin;
mod auth;
mod http;
mod iot;
mod protocol;
mod recovery;
mod sse;

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

pub async fn start(flags: &[&str]) -> (Arc<App>, String) {
    let options = Options::parse(std::iter::once("sabai-hub").chain(flags.iter().copied())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = App::new(options).unwrap();
    let serving = app.clone();
    tokio::spawn(async move { crate::accept_loop(&listener, serving).await });
    (app, addr)
}

pub type Ws = WebSocket<sabai::MaybeTlsStream>;

pub async fn connect(addr: &str, query: &str) -> Ws {
    sabai::connect(&format!("ws://{addr}/ws{query}")).await.unwrap()
}

/// The next envelope, within 5 s.
pub async fn next(ws: &mut Ws) -> Value {
    let message = timeout(Duration::from_secs(5), ws.recv()).await.expect("no envelope in time").unwrap();
    serde_json::from_str(message.expect("closed").as_text().unwrap()).unwrap()
}

/// The next envelope of this type, skipping others.
pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let envelope = next(ws).await;
        if envelope["type"] == kind {
            return envelope;
        }
    }
}

/// Sends and flushes: `send` batches while received bytes wait unread
/// (the greeting may have come with the handshake response).
pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
    ws.flush().await.unwrap();
}

/// One HTTP/1.1 request; returns the status and the body.
pub async fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
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

pub async fn handshake_status(addr: &str, query: &str, header: Option<(&str, &str)>) -> Result<(), u16> {
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

/// A client offering permessage-deflate, as browsers do.
pub async fn connect_deflate(addr: &str, query: &str) -> Ws {
    let mut config = WebSocketConfig::default();
    config.protocol.deflate = Some(sabai::DeflateConfig::default());
    sabai::connect_with(&format!("ws://{addr}/ws{query}"), &config, |r| r).await.unwrap()
}

#[tokio::test]
async fn deflate_is_agreed_through_the_hyper_upgrade_unless_turned_off() {
    let (_app, addr) = start(&["--no-simulator", "--max-message", "200000"]).await;
    let mut ann = connect_deflate(&addr, "?user=ann").await;
    let mut bob = connect(&addr, "?user=bob").await;
    // RFC 7692 §7.1.1.1: the hub always answers with server_no_context_takeover;
    // §7.1.1.2: and asks the client for client_no_context_takeover, so it
    // keeps no inflater between a client's messages.
    assert!(ann.deflate().is_some_and(|d| d.server_no_context_takeover && d.client_no_context_takeover));
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
    // Each of ann's messages compressed alone: a second one still arrives.
    send(&mut ann, json!({"type": "publish", "room": "chat:big", "payload": {"text": text}})).await;
    assert_eq!(next_of(&mut bob, "message").await["payload"]["text"].as_str(), Some(text.as_str()));

    let (_app, addr) = start(&["--no-simulator", "--no-deflate"]).await;
    assert_eq!(connect_deflate(&addr, "").await.deflate(), None);
}

/// Publishes a chat message as `ws` and waits for its own copy.
pub async fn say(ws: &mut Ws, room: &str, text: &str) {
    send(ws, json!({"type": "publish", "room": room, "payload": {"text": text}})).await;
    assert_eq!(next_of(ws, "message").await["payload"]["text"], text);
}
