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
