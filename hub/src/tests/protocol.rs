//! The JSON protocol over /ws: greeting, rooms, chat, presence, limits.

use std::time::Duration;

use sabai::Message;
use serde_json::{json, Value};
use tokio::time::timeout;

use super::*;

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
