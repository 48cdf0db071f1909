//! The IoT side without a broker: the device list from POST /publish,
//! `unknown_devices` in `subscribed`, the `history` request, and commands
//! refused when there is no broker. The bridge itself is tested against a
//! real mosquitto in hub/tests/mqtt.rs.

use super::*;

async fn post_reading(addr: &str, device: &str, seq: u64, temperature: f64) {
    let body = json!({"rooms": [format!("device:{device}"), "global"], "type": "telemetry",
        "payload": {"device_id": device, "timestamp": "2026-12-03T10:00:00.000Z",
                    "fields": {"temperature": temperature}, "tags": {"group": "lab"}, "seq": seq}});
    let (status, answer) = http(addr, "POST", "/publish", "", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn devices_are_listed_from_what_was_published_and_unknown_ones_are_flagged() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let (_, list) = http(&addr, "GET", "/devices", "", "").await;
    assert_eq!(serde_json::from_str::<Value>(&list).unwrap()["devices"], json!([]));
    post_reading(&addr, "d1", 7, 20.5).await;
    let (status, list) = http(&addr, "GET", "/devices", "", "").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(status, 200);
    let d1 = &list["devices"][0];
    assert_eq!(
        (d1["device_id"].as_str(), d1["group"].as_str(), d1["last_seq"].as_u64()),
        (Some("d1"), Some("lab"), Some(7))
    );
    assert_eq!(d1["status"], "online");
    assert!(humantime::parse_rfc3339(d1["last_seen"].as_str().unwrap()).is_ok());
    assert_eq!(http(&addr, "POST", "/devices", "", "").await.0, 405);

    let mut ws = connect(&addr, "").await;
    send(&mut ws, json!({"type": "subscribe", "request_id": 1, "payload": {"rooms": ["device:d1", "device:ghost", "global"]}})).await;
    let subscribed = next_of(&mut ws, "subscribed").await;
    assert_eq!(subscribed["payload"]["unknown_devices"], json!(["ghost"]), "joined, but flagged");
    assert_eq!(subscribed["payload"]["rooms"], json!(["device:d1", "device:ghost", "global"]));
    send(&mut ws, json!({"type": "subscribe", "request_id": 2, "payload": {"rooms": ["global"]}})).await;
    assert!(next_of(&mut ws, "subscribed").await["payload"].get("unknown_devices").is_none());
}

#[tokio::test]
async fn history_returns_the_last_publications_of_a_room_for_a_chart() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    for seq in 1..=5 {
        post_reading(&addr, "d1", seq, 20.0 + seq as f64).await;
    }
    let mut ws = connect(&addr, "").await;
    send(
        &mut ws,
        json!({"type": "history", "room": "device:d1", "request_id": "h", "payload": {"limit": 3}}),
    )
    .await;
    let history = next_of(&mut ws, "history").await;
    assert_eq!((history["room"].as_str(), history["request_id"].as_str()), (Some("device:d1"), Some("h")));
    let publications = history["payload"]["publications"].as_array().unwrap();
    let seqs: Vec<u64> = publications.iter().map(|p| p["payload"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5], "the last three, oldest first");
    assert_eq!(publications[2]["type"], "telemetry");
    assert_eq!(publications[2]["offsets"], json!({"device:d1": 5, "global": 5}));
    let position = &history["payload"]["position"];
    assert_eq!(position["offset"], 5);
    // Subscribing from that position misses nothing in between, and
    // nothing comes twice.
    post_reading(&addr, "d1", 6, 26.0).await;
    let since = json!({"device:d1": {"offset": 5, "epoch": position["epoch"]}});
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["device:d1"], "since": since}})).await;
    assert_eq!(next_of(&mut ws, "subscribed").await["payload"]["recovered"], true);
    assert_eq!(next_of(&mut ws, "telemetry").await["payload"]["seq"], 6);
    // The default limit, and what is refused.
    send(&mut ws, json!({"type": "history", "room": "device:d1"})).await;
    assert_eq!(next_of(&mut ws, "history").await["payload"]["publications"].as_array().unwrap().len(), 6);
    for (room, limit) in
        [("device:d1", json!(0)), ("device:d1", json!(501)), ("device:d1", json!("3")), ("nowhere", json!(1))]
    {
        send(&mut ws, json!({"type": "history", "room": room, "request_id": 9, "payload": {"limit": limit}}))
            .await;
        assert_eq!(next_of(&mut ws, "error").await["request_id"], 9, "{room} {limit}");
    }
    let (_app, addr) = start(&["--no-simulator", "--no-history"]).await;
    let mut ws = connect(&addr, "").await;
    send(&mut ws, json!({"type": "history", "room": "device:d1"})).await;
    assert!(next_of(&mut ws, "error").await["payload"]["message"].as_str().unwrap().contains("no history"));
}

#[tokio::test]
async fn a_command_without_a_broker_is_refused_with_its_request_id() {
    let (_app, addr) = start(&["--no-simulator"]).await;
    let mut ws = connect(&addr, "").await;
    send(
        &mut ws,
        json!({"type": "command", "request_id": "c1", "payload": {"device_id": "d1", "name": "reboot"}}),
    )
    .await;
    let error = next_of(&mut ws, "error").await;
    assert_eq!(error["request_id"], "c1");
    assert!(error["payload"]["message"].as_str().unwrap().contains("--mqtt"), "{error}");
}
