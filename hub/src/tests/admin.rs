//! Fairness and operators: the per-connection rate limit, the admin API.

use std::time::Duration;

use sabai::Message;
use serde_json::{json, Value};
use tokio::time::timeout;

use super::*;

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
