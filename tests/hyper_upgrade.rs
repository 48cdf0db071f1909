//! `sabai::hyper` behind real HTTP servers on 127.0.0.1: a plain hyper
//! server and an axum app. sabai clients for the WebSocket side, raw
//! HTTP/1.x for the refusals. Every wait is bounded.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sabai::handshake::{Accept, HandshakeError, Reject};
use sabai::{DeflateConfig, Error, Message, WebSocketConfig};
use support::{handshake_request, Frame, TEXT, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

type Body = Full<Bytes>;

/// A hyper HTTP/1.1 server with upgrades on 127.0.0.1:0; `handler`
/// answers every request.
async fn serve<H, Fut>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let service = service_fn(move |request| {
                let answer = handler(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            tokio::spawn(
                http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades(),
            );
        }
    });
    addr
}

/// Serves every accepted WebSocket: first a text message saying what was
/// agreed, then an echo.
fn echo(upgrading: sabai::hyper::Upgrading) {
    tokio::spawn(async move {
        let Ok(mut ws) = upgrading.await else { return };
        let agreed = format!("protocol={:?} deflate={}", ws.protocol(), ws.deflate().is_some());
        if ws.send(Message::text(agreed)).await.is_err() {
            return;
        }
        while let Ok(Some(message)) = ws.recv().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    });
}

/// An echo server whose handshake goes through `sabai::hyper::upgrade`
/// with this configuration and hook.
async fn echo_server<F>(config: WebSocketConfig, hook: F) -> SocketAddr
where
    F: Fn(&sabai::handshake::Request) -> Result<Accept, Reject> + Send + Sync + 'static,
{
    let hook = Arc::new(hook);
    serve(move |request| {
        let answer = match sabai::hyper::upgrade(request, &config, |r| hook(r)) {
            Ok((response, upgrading)) => {
                echo(upgrading);
                response
            }
            Err(refusal) => refusal,
        };
        async move { answer }
    })
    .await
}

fn deflate_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.protocol.deflate = Some(DeflateConfig::default());
    config
}

async fn connect(
    url: &str,
    config: &WebSocketConfig,
) -> Result<sabai::WebSocket<sabai::MaybeTlsStream>, Error> {
    timeout(TIMEOUT, sabai::connect_with(url, config, |r| r.protocol("chat.v1"))).await.expect("connect hung")
}

async fn next_text(ws: &mut sabai::WebSocket<sabai::MaybeTlsStream>) -> String {
    let message = timeout(TIMEOUT, ws.recv()).await.expect("no message in time").unwrap();
    message.expect("closed").as_text().unwrap().to_owned()
}

/// Sends raw bytes and reads until the server closes; returns the response.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    timeout(TIMEOUT, stream.read_to_end(&mut response)).await.expect("server did not close").unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A header field of a raw response (hyper writes names in lowercase).
fn field<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn request_with(replace: (&str, &str)) -> Vec<u8> {
    let request = String::from_utf8(handshake_request("/ws")).unwrap();
    assert!(request.contains(replace.0), "{request}");
    request.replacen(replace.0, replace.1, 1).into_bytes()
}

#[tokio::test]
async fn echoes_over_a_hyper_upgrade_with_the_hooks_subprotocol() {
    let addr = echo_server(WebSocketConfig::default(), |request| {
        assert_eq!((request.path(), request.query()), ("/ws", Some("room=1")));
        match request.protocols().iter().any(|p| p == "chat.v1") {
            true => Ok(Accept::new().protocol("chat.v1").header("X-Served-By", "sabai")),
            false => Ok(Accept::new()),
        }
    })
    .await;
    let mut ws = connect(&format!("ws://{addr}/ws?room=1"), &WebSocketConfig::default()).await.unwrap();
    assert_eq!(ws.protocol(), Some("chat.v1"));
    assert_eq!(next_text(&mut ws).await, r#"protocol=Some("chat.v1") deflate=false"#);
    for message in
        [Message::text("hello"), Message::binary(vec![0, 1, 2, 255]), Message::text("é".repeat(70_000))]
    {
        ws.send(message.clone()).await.unwrap();
        let echoed = timeout(TIMEOUT, ws.recv()).await.unwrap().unwrap();
        assert_eq!(echoed, Some(message));
    }
    ws.close(sabai::CloseCode::NORMAL, "done").await.unwrap();
}

#[tokio::test]
async fn frames_sent_with_the_request_are_not_lost() {
    let addr = echo_server(WebSocketConfig::default(), |_| Ok(Accept::new())).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The request and a first frame in one write: hyper reads both, and the
    // frame must reach the WebSocket through the upgraded connection.
    let mut bytes = handshake_request("/ws");
    bytes.extend_from_slice(&Frame::text("early").encode());
    stream.write_all(&bytes).await.unwrap();
    let mut received = Vec::new();
    let frames = timeout(TIMEOUT, async {
        loop {
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n]);
            let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let mut rest = &received[end + 4..];
            let mut frames = Vec::new();
            while let Some((frame, used)) = Frame::decode(rest) {
                frames.push(frame);
                rest = &rest[used..];
            }
            if frames.len() == 2 {
                return frames;
            }
        }
    })
    .await
    .expect("no echo in time");
    assert!(received.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!((frames[1].opcode, frames[1].payload.as_slice()), (TEXT, &b"early"[..]));
}

#[tokio::test]
async fn deflate_is_agreed_when_configured_and_offered() {
    let text = r#"{"device":"a1","temperature":21.5,"humidity":40}"#.repeat(200);
    // Configured on the server and offered by the client: agreed on both sides.
    let addr = echo_server(deflate_config(), |_| Ok(Accept::new())).await;
    let mut ws = connect(&format!("ws://{addr}/"), &deflate_config()).await.unwrap();
    assert!(ws.deflate().is_some());
    assert_eq!(next_text(&mut ws).await, "protocol=None deflate=true");
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, text);
    // Not offered: not agreed.
    let mut ws = connect(&format!("ws://{addr}/"), &WebSocketConfig::default()).await.unwrap();
    assert_eq!(ws.deflate(), None);
    assert_eq!(next_text(&mut ws).await, "protocol=None deflate=false");
    // Offered but not configured: not agreed.
    let addr = echo_server(WebSocketConfig::default(), |_| Ok(Accept::new())).await;
    let mut ws = connect(&format!("ws://{addr}/"), &deflate_config()).await.unwrap();
    assert_eq!(ws.deflate(), None);
    assert_eq!(next_text(&mut ws).await, "protocol=None deflate=false");
}

#[tokio::test]
async fn the_hooks_rejection_reaches_the_client() {
    let addr = echo_server(WebSocketConfig::default(), |request| match request.query() {
        Some("token=s3cret") => Ok(Accept::new()),
        _ => Err(Reject::unauthorized().header("WWW-Authenticate", "Bearer").body("who are you?")),
    })
    .await;
    let refused = connect(&format!("ws://{addr}/ws"), &WebSocketConfig::default()).await;
    assert!(matches!(refused, Err(Error::Handshake(HandshakeError::UnexpectedStatus(401)))), "{refused:?}");
    assert!(connect(&format!("ws://{addr}/ws?token=s3cret"), &WebSocketConfig::default()).await.is_ok());
    let response = raw(addr, &handshake_request("/ws")).await;
    assert!(response.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{response}");
    assert_eq!(field(&response, "WWW-Authenticate"), Some("Bearer"));
    assert_eq!(field(&response, "Connection"), Some("close"));
    assert!(response.ends_with("\r\n\r\nwho are you?"), "{response}");
}

#[tokio::test]
async fn bad_handshakes_get_the_same_statuses_as_accept_with() {
    let mut limits = sabai::handshake::HandshakeLimits::default();
    limits.max_headers = 8;
    let mut config = WebSocketConfig::default();
    config.handshake = limits;
    let addr = echo_server(config.clone(), |_| Ok(Accept::new())).await;
    // The same requests to sabai::accept_with on a plain TCP listener.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move { sabai::accept_with(stream, &config, |_| Ok(Accept::new())).await });
        }
    });
    let key = ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ");
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("not a WebSocket request", b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request"),
        ("a bad key", request_with(key), "400 Bad Request"),
        ("no Host", request_with(("Host: 127.0.0.1\r\n", "")), "400 Bad Request"),
        ("version 8", request_with(("Version: 13", "Version: 8")), "426 Upgrade Required"),
        ("a POST", request_with(("GET ", "POST ")), "405 Method Not Allowed"),
        ("HTTP/1.0", request_with(("HTTP/1.1", "HTTP/1.0")), "400 Bad Request"),
        (
            "too many fields",
            // 5 fields of the handshake and 4 more: one over the limit.
            request_with(("Host: 127.0.0.1\r\n", "Host: 127.0.0.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n")),
            "431 Request Header Fields Too Large",
        ),
    ];
    for (what, request, status) in cases {
        let response = raw(addr, &request).await;
        assert!(response.lines().next().is_some_and(|l| l.ends_with(status)), "{what}: {response}");
        // Status and body (the reason) as accept_with answers; hyper
        // answers an HTTP/1.0 request in HTTP/1.0.
        let expected = raw(plain, &request).await;
        let status_and_body = |r: &str| {
            let (head, body) = r.split_once("\r\n\r\n").unwrap_or_default();
            let status = head.lines().next().and_then(|l| l.split_once(' ')).unwrap_or_default().1;
            (status.to_owned(), body.to_owned())
        };
        assert_eq!(status_and_body(&response), status_and_body(&expected), "{what}");
        if status.starts_with("426") {
            // RFC 6455 §4.4: name the version we speak.
            assert_eq!(field(&response, "Sec-WebSocket-Version"), Some("13"), "{response}");
        }
        if status.starts_with("405") {
            assert_eq!(field(&response, "Allow"), Some("GET"), "{response}");
        }
    }
}

#[tokio::test]
async fn a_head_over_the_size_limit_gets_431() {
    let mut config = WebSocketConfig::default();
    config.handshake.max_head_bytes = 1024;
    let addr = echo_server(config, |_| Ok(Accept::new())).await;
    let cookie = format!("Host: 127.0.0.1\r\nCookie: {}\r\n", "c".repeat(1000));
    let response = raw(addr, &request_with(("Host: 127.0.0.1\r\n", &cookie))).await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    // Just under the limit is fine.
    let cookie = format!("Host: 127.0.0.1\r\nCookie: {}\r\n", "c".repeat(700));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request_with(("Host: 127.0.0.1\r\n", &cookie))).await.unwrap();
    let mut head = [0; 12];
    timeout(TIMEOUT, stream.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[tokio::test]
async fn a_subprotocol_the_client_did_not_offer_is_a_500() {
    let addr = echo_server(WebSocketConfig::default(), |_| Ok(Accept::new().protocol("other"))).await;
    let response = raw(addr, &handshake_request("/ws")).await;
    assert!(response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{response}");
}

/// The two steps, with an async decision between them, in an axum app
/// that has ordinary routes too.
#[tokio::test]
async fn axum_routes_a_websocket_beside_ordinary_routes() {
    use axum::routing::{any, get};

    async fn ws(request: axum::extract::Request) -> axum::response::Response {
        let upgrade = match sabai::hyper::parse(request, &WebSocketConfig::default()) {
            Ok(upgrade) => upgrade,
            Err(refusal) => return refusal,
        };
        // An async look-up between parsing and answering.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if upgrade.request().header("Authorization") != Some("Bearer t0ken") {
            return upgrade.reject(Reject::unauthorized());
        }
        match upgrade.accept(Accept::new()) {
            Ok((response, upgrading)) => {
                echo(upgrading);
                response
            }
            Err(refusal) => refusal,
        }
    }

    let app = axum::Router::new().route("/", get(|| async { "home" })).route("/ws", any(ws));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let home = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(home.starts_with("HTTP/1.1 200 OK\r\n") && home.ends_with("home"), "{home}");
    let refused = connect(&format!("ws://{addr}/ws"), &WebSocketConfig::default()).await;
    assert!(matches!(refused, Err(Error::Handshake(HandshakeError::UnexpectedStatus(401)))), "{refused:?}");
    let (url, config) = (format!("ws://{addr}/ws"), WebSocketConfig::default());
    let connecting = sabai::connect_with(&url, &config, |r| r.header("Authorization", "Bearer t0ken"));
    let mut ws = timeout(TIMEOUT, connecting).await.unwrap().unwrap();
    assert_eq!(next_text(&mut ws).await, "protocol=None deflate=false");
    ws.send(Message::text("through axum")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "through axum");
    let response = raw(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{response}");
}
