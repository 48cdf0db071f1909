//! The room hub with permessage-deflate (`HubConfig::deflate`) over loopback
//! TCP: clients that offer it and clients that do not share a room, and a
//! fanned-out message is compressed once for all that agreed.

#[allow(dead_code)]
#[path = "support/frames.rs"]
mod frames;

use std::time::Duration;

use flate2::{Decompress, FlushDecompress};
use frames::Frame;
use sabai::hub::{ConnId, Hub, HubConfig};
use sabai::{DeflateConfig, DeflateParams, Message, WebSocket, WebSocketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// A hub with deflate on, served on 127.0.0.1. Text "join ROOM" joins it
/// (answered "joined ROOM"); "echo TEXT" sends TEXT back.
async fn start() -> (Hub, String) {
    let mut config = HubConfig::default();
    config.deflate = Some(DeflateConfig::default());
    config.max_message_size = 1 << 20;
    let hub = Hub::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = hub.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hub = server.clone();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let Ok(accepted) = hub.accept(stream, |_| Ok(None)).await else { return };
                accepted.serve(handle).await;
            });
        }
    });
    (hub, addr)
}

async fn handle(hub: Hub, conn: ConnId, message: Message) {
    let text = message.as_text().unwrap_or_default();
    if let Some(room) = text.strip_prefix("join ") {
        hub.join(conn, room).await.unwrap();
        hub.send_to(conn, format!("joined {room}"));
    } else if let Some(said) = text.strip_prefix("echo ") {
        hub.send_to(conn, said.to_owned());
    }
}

type Client = WebSocket<sabai::MaybeTlsStream>;

/// A sabai client; `deflate` is what it offers, if anything.
async fn client(addr: &str, deflate: Option<DeflateConfig>) -> Client {
    let mut config = WebSocketConfig::default();
    config.protocol.deflate = deflate;
    sabai::connect_with(&format!("ws://{addr}/"), &config, |r| r).await.unwrap()
}

async fn next(ws: &mut Client) -> Message {
    let message = timeout(Duration::from_secs(5), ws.recv()).await.expect("no message in time");
    message.unwrap().expect("closed")
}

async fn join(ws: &mut Client, room: &str) {
    ws.send(Message::text(format!("join {room}"))).await.unwrap();
    assert_eq!(next(ws).await, Message::text(format!("joined {room}")));
}

/// A browser-like peer written independently of sabai: it offers
/// permessage-deflate with `client_max_window_bits` (as Chromium does) and
/// reads the raw frames, inflating them with flate2.
struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
    answer: String,
}

impl RawPeer {
    async fn connect(addr: &str) -> RawPeer {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut peer = RawPeer { stream, buf: Vec::new(), answer: String::new() };
        let end = loop {
            if let Some(end) = peer.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            peer.read_more().await;
        };
        peer.answer = String::from_utf8(peer.buf.drain(..end).collect()).unwrap();
        peer
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n =
            timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await.expect("no bytes in time");
        let n = n.unwrap();
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            self.read_more().await;
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.stream.write_all(&Frame::text(text).encode()).await.unwrap();
    }
}

/// RFC 7692 §7.2.2: append 00 00 ff ff and inflate, from an empty window.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    Decompress::new(false).decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

/// Compressible JSON of at least `len` bytes.
fn json(len: usize, seed: u64) -> String {
    let mut out = String::from("[");
    let mut i = seed;
    while out.len() < len {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(&format!(
            "{{\"device\":\"sensor-{}\",\"temperature\":{}.{}}},",
            i >> 60,
            (i >> 40) % 40,
            i % 10
        ));
    }
    out.push_str("{}]");
    out
}

#[tokio::test]
async fn fan_out_reaches_deflate_and_plain_clients_alike() {
    let (hub, addr) = start().await;
    let mut a = client(&addr, Some(DeflateConfig::default())).await;
    let mut small_window = DeflateConfig::default();
    small_window.server_max_window_bits = Some(9);
    let mut b = client(&addr, Some(small_window)).await;
    let mut c = client(&addr, None).await;
    let mut raw = RawPeer::connect(&addr).await;

    // RFC 7692 §7.1.1.1: the hub answers with server_no_context_takeover
    // although nobody asked for it; §7.1.2.1: b's window is honoured.
    let hub_default = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
    assert_eq!(a.deflate(), Some(&hub_default));
    assert_eq!(b.deflate(), Some(&DeflateParams { server_max_window_bits: Some(9), ..hub_default }));
    assert_eq!(c.deflate(), None);
    let answer = raw.answer.to_ascii_lowercase();
    assert!(
        answer.contains("sec-websocket-extensions: permessage-deflate; server_no_context_takeover"),
        "{answer}"
    );

    for ws in [&mut a, &mut b, &mut c] {
        join(ws, "telemetry").await;
    }
    raw.send_text("join telemetry").await;
    assert_eq!(raw.frame().await.payload, b"joined telemetry");

    let big = json(40_000, 1);
    let messages =
        [Message::text(big.clone()), Message::text("tiny"), Message::binary(json(5000, 2).into_bytes())];
    let before = hub.stats().bytes_out;
    assert_eq!(hub.members("telemetry").len(), 4);
    for message in &messages {
        hub.publish("telemetry", message.clone()).await.unwrap();
    }
    for ws in [&mut a, &mut b, &mut c] {
        for message in &messages {
            assert_eq!(&next(ws).await, message);
        }
    }
    // On the wire: RSV1 and DEFLATE data for the large ones, plain for the tiny one.
    for message in &messages {
        let frame = raw.frame().await;
        assert!(frame.fin && frame.mask.is_none());
        if message.len() < DeflateConfig::default().threshold {
            assert_eq!((frame.rsv, &frame.payload[..]), (0, message.as_bytes()));
        } else {
            assert_eq!(frame.rsv, 4, "RSV1: compressed (RFC 7692 §6)");
            assert!(frame.payload.len() < message.len() / 2);
            assert_eq!(inflate(&frame.payload), message.as_bytes());
        }
    }
    // Counted as sent: three compressed copies and one plain, far under four plain.
    let plain: usize = messages.iter().map(|m| m.len()).sum();
    let sent = (hub.stats().bytes_out - before) as usize;
    assert!(sent < plain * 2, "{sent} bytes out for {plain} bytes of messages");
}

#[tokio::test]
async fn many_messages_both_ways_stay_in_step() {
    // Client to hub: the client's own compressor keeps its context (the hub
    // does not ask it not to). Hub to client: replies to this connection and
    // room messages, each compressed alone, interleaved over many messages.
    let (hub, addr) = start().await;
    let mut a = client(&addr, Some(DeflateConfig::default())).await;
    let mut c = client(&addr, None).await;
    join(&mut a, "room").await;
    join(&mut c, "room").await;
    for i in 0..300u64 {
        let body = json(50 + (i as usize % 11) * 97, i % 4);
        if i % 3 == 0 {
            a.send(Message::text(format!("echo {body}"))).await.unwrap();
            assert_eq!(next(&mut a).await, Message::text(body));
        } else {
            hub.publish("room", body.clone()).await.unwrap();
            assert_eq!(next(&mut a).await, Message::text(body.clone()));
            assert_eq!(next(&mut c).await, Message::text(body));
        }
    }
    assert_eq!(hub.stats().close_codes.len(), 0);
}
