//! The hub server as a process: health, readiness, and how it ends on
//! SIGTERM (drain: 1012, so clients recover on another node) and SIGINT
//! (shutdown: 1001).

mod support;

use std::time::Duration;

use serde_json::json;
use support::{http, next, next_of, send, Node};

async fn client(node: &Node) -> support::Ws {
    let mut ws = sabai::connect(&node.ws_url()).await.unwrap();
    next_of(&mut ws, "connected").await;
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:a"]}})).await;
    next_of(&mut ws, "subscribed").await;
    ws
}

/// Reads until the server closes; its close code.
async fn close_code(ws: &mut support::Ws) -> Option<u16> {
    while next(ws).await.is_some() {}
    ws.close_frame().map(|f| f.code.0)
}

#[tokio::test]
async fn sigterm_drains_with_1012_and_is_not_ready_meanwhile() {
    let mut node = Node::start(&["--no-simulator"]);
    assert_eq!(http(&node.addr, "GET", "/healthz", "").await, (200, "ok".into()));
    assert_eq!(http(&node.addr, "GET", "/readyz", "").await, (200, "ready".into()));
    // One client that answers its Close, one that does not read: the
    // drain waits for it (5 s), and /readyz says 503 meanwhile.
    let mut polite = client(&node).await;
    let _stuck = client(&node).await;
    node.signal("TERM");
    assert_eq!(close_code(&mut polite).await, Some(1012));
    assert_eq!(http(&node.addr, "GET", "/readyz", "").await, (503, "draining".into()));
    let refused = sabai::connect(&node.ws_url()).await;
    assert!(refused.is_err(), "a draining node takes no new connection");
    let status = tokio::task::spawn_blocking(move || node.wait(Duration::from_secs(15))).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test]
async fn sigint_shuts_down_with_1001() {
    let mut node = Node::start(&["--no-simulator"]);
    let mut ws = client(&node).await;
    node.signal("INT");
    assert_eq!(close_code(&mut ws).await, Some(1001));
    let status = tokio::task::spawn_blocking(move || node.wait(Duration::from_secs(15))).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test]
async fn logs_are_one_json_line_per_event_and_never_show_a_token() {
    let node = Node::start(&["--no-simulator", "--log-json", "--token", "s3cret-t0ken"]);
    let refused = sabai::connect(&format!("{}?token=wrong-t0ken", node.ws_url())).await;
    assert!(refused.is_err());
    let mut ws = sabai::connect(&format!("{}?token=s3cret-t0ken&user=ann", node.ws_url())).await.unwrap();
    next_of(&mut ws, "connected").await;
    ws.close(sabai::CloseCode::NORMAL, "bye").await.unwrap();
    while next(&mut ws).await.is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<serde_json::Value> = node
            .logs()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect();
        let closed = lines.iter().any(|l| l["fields"]["message"] == "connection closed");
        if closed || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |message: &str| lines.iter().find(|l| l["fields"]["message"] == message).cloned();
    let refused = find("handshake refused").expect("the refusal is logged");
    assert_eq!(refused["fields"]["status"], 401);
    let opened = find("connection opened").expect("the connection is logged");
    assert_eq!(opened["fields"]["user"], "ann");
    let closed = find("connection closed").expect("its end is logged");
    assert_eq!(closed["fields"]["code"], 1000);
    let all = node.logs().join("\n");
    assert!(!all.contains("t0ken"), "a token was logged: {all}");
}

/// The status of a handshake with this Origin.
async fn origin_status(node: &Node, origin: &str) -> Result<(), u16> {
    let config = sabai::WebSocketConfig::default();
    match sabai::connect_with(&node.ws_url(), &config, |r| r.header("Origin", origin)).await {
        Ok(_) => Ok(()),
        Err(sabai::Error::Handshake(sabai::handshake::HandshakeError::UnexpectedStatus(status))) => {
            Err(status)
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bound_to_every_address_its_own_pages_are_accepted_and_foreign_ones_are_not() {
    let node = Node::start_at("0.0.0.0:0", &["--no-simulator", "--public-origin", "https://hub.example"]);
    let port = node.addr.rsplit(':').next().unwrap().to_owned();
    for own in
        [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}"), "https://hub.example".into()]
    {
        assert_eq!(origin_status(&node, &own).await, Ok(()), "{own}");
    }
    for foreign in ["http://evil.example".to_owned(), format!("http://evil.example:{port}"), "null".into()] {
        assert_eq!(origin_status(&node, &foreign).await, Err(403), "{foreign}");
    }
}

/// The status line of a raw GET.
async fn get_status(addr: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\n{headers}\r\n").as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await.unwrap().unwrap();
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[tokio::test]
async fn a_browser_request_without_an_origin_is_held_to_its_host() {
    // A same-origin GET (EventSource) carries no Origin: the Host stands
    // in, so a page on a rebound DNS name cannot open the stream.
    let node = Node::start(&["--no-simulator"]);
    let port = node.addr.rsplit(':').next().unwrap().to_owned();
    let browser = "Sec-Fetch-Site: same-origin\r\n";
    assert_eq!(
        get_status(&node.addr, "/events?rooms=global", &format!("Host: evil.example:{port}\r\n{browser}"))
            .await,
        "403"
    );
    assert_eq!(
        get_status(&node.addr, "/events?rooms=global", &format!("Host: 127.0.0.1:{port}\r\n{browser}")).await,
        "200"
    );
    // Not a browser (no Sec-Fetch-*): a backend may name any Host.
    assert_eq!(get_status(&node.addr, "/events?rooms=global", "Host: backend.internal\r\n").await, "200");
}
