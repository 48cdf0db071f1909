//! Subscribing with `since`, and bad `since` values.

use serde_json::json;

use super::*;

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
