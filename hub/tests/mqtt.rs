//! The MQTT bridge against a real broker (Debian's mosquitto, started by
//! the test on a free port) and real `sabai-hub` processes: readings
//! published with `mosquitto_pub` reach WebSocket subscribers once per
//! connection; a broker restart mid-stream; commands arriving on
//! `devices/<id>/command` (seen by `mosquitto_sub`); malformed payloads
//! counted and never fanned out; two nodes on one Redis sharing the
//! subscription; a QoS 1 redelivery dropped by the window; alert rules;
//! the simulator speaking MQTT.

mod support;

use std::time::{Duration, Instant};

use sabai_redis::testing::RedisServer;
use serde_json::{json, Value};
use support::broker::Mosquitto;
use support::{http, next, next_of, send, Node, Ws};

/// A node bridging this broker.
fn node(broker: &Mosquitto, extra: &[&str]) -> Node {
    let url = broker.url();
    let mut flags = vec!["--no-simulator", "--mqtt", &url];
    flags.extend_from_slice(extra);
    Node::start(&flags)
}

async fn stats(node: &Node) -> Value {
    serde_json::from_str(&http(&node.addr, "GET", "/stats", "").await.1).unwrap()
}

/// Waits (at most 20 s) until the node's bridge is connected and
/// subscribed, and has connected `connects` times.
async fn bridged(node: &Node, connects: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mqtt = stats(node).await["mqtt"].clone();
        if mqtt["connected"] == true && mqtt["connects"].as_u64() >= Some(connects) {
            return;
        }
        assert!(Instant::now() < deadline, "the bridge did not connect: {mqtt}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client in these rooms; the `subscribed` reply.
async fn member(node: &Node, rooms: &[&str]) -> (Ws, Value) {
    let mut ws = sabai::connect(&node.ws_url()).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": rooms}})).await;
    let subscribed = next_of(&mut ws, "subscribed").await;
    (ws, subscribed)
}

fn reading(seq: u64, temperature: f64) -> Vec<u8> {
    json!({"fields": {"temperature": temperature}, "tags": {"group": "lab"}, "seq": seq})
        .to_string()
        .into_bytes()
}

/// The telemetry envelopes a client gets until (and with) the one of `last_seq`.
async fn readings_until(ws: &mut Ws, last_seq: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let envelope = next_of(ws, "telemetry").await;
        let seq = envelope["payload"]["seq"].as_u64();
        got.push(envelope);
        if seq == Some(last_seq) {
            return got;
        }
    }
}

fn seqs(envelopes: &[Value]) -> Vec<u64> {
    envelopes.iter().map(|e| e["payload"]["seq"].as_u64().unwrap()).collect()
}

/// A metric's value in /metrics text.
fn metric(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn a_reading_reaches_every_matching_room_once_per_connection() {
    let broker = Mosquitto::start();
    let hub = node(&broker, &[]);
    bridged(&hub, 1).await;
    let (mut device_only, _) = member(&hub, &["device:d1"]).await;
    let (mut all_three, subscribed) =
        member(&hub, &["device:d1", "group:lab", "global", "device:nobody"]).await;
    assert_eq!(subscribed["payload"]["unknown_devices"], json!(["d1", "nobody"]), "none known yet");
    let (mut global, _) = member(&hub, &["global"]).await;
    let (mut elsewhere, _) = member(&hub, &["device:d2"]).await;

    broker.publish("devices/d1/telemetry", &reading(1, 21.5));
    // Then a marker: whatever came before it came once or not at all.
    broker.publish("devices/d1/telemetry", &reading(2, 21.6));
    broker.publish("devices/d2/telemetry", &reading(1, 9.0));
    for ws in [&mut device_only, &mut all_three, &mut global] {
        let got = readings_until(ws, 2).await;
        assert_eq!(seqs(&got), [1, 2], "each reading once, in order");
        let first = &got[0];
        assert_eq!((first["v"].as_u64(), first["room"].as_str()), (Some(1), Some("device:d1")));
        let payload = &first["payload"];
        assert_eq!(payload["device_id"], "d1");
        assert_eq!(payload["fields"], json!({"temperature": 21.5}));
        assert_eq!(payload["tags"], json!({"group": "lab"}));
        assert!(humantime::parse_rfc3339(payload["timestamp"].as_str().unwrap()).is_ok(), "{payload}");
        assert_eq!(first["offsets"], json!({"device:d1": 1, "group:lab": 1, "global": 1}), "one publication");
    }
    let other = next_of(&mut elsewhere, "telemetry").await;
    assert_eq!(other["payload"]["device_id"], "d2", "device:d2 got nothing of d1");

    let devices: Value = serde_json::from_str(&http(&hub.addr, "GET", "/devices", "").await.1).unwrap();
    let d1 = devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == "d1").unwrap().clone();
    assert_eq!(
        (d1["group"].as_str(), d1["status"].as_str(), d1["last_seq"].as_u64()),
        (Some("lab"), Some("online"), Some(2))
    );
    let (_, subscribed) = member(&hub, &["device:d1", "device:nobody"]).await;
    assert_eq!(subscribed["payload"]["unknown_devices"], json!(["nobody"]));

    // A retained status: into the device list, not into the rooms.
    broker.publish_with("devices/d3/status", b"offline", &["-r"]);
    broker.publish("devices/d1/telemetry", &reading(3, 21.7));
    let got = readings_until(&mut global, 3).await;
    assert_eq!(seqs(&got), [1, 3], "d2's reading, then d1's third");
    assert_eq!(got[0]["payload"]["device_id"], "d2");
    let late = node(&broker, &[]);
    bridged(&late, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list: Value = serde_json::from_str(&http(&late.addr, "GET", "/devices", "").await.1).unwrap();
        if list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device_id"] == "d3" && d["status"] == "offline")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the retained status never reached /devices: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats(&late).await["mqtt"]["retained"], 1);
}

#[tokio::test]
async fn the_bridge_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let hub = node(&broker, &[]);
    bridged(&hub, 1).await;
    let (mut ws, _) = member(&hub, &["global"]).await;
    for seq in 1..=3 {
        broker.publish("devices/d1/telemetry", &reading(seq, 20.0));
    }
    assert_eq!(seqs(&readings_until(&mut ws, 3).await), [1, 2, 3]);
    // Killed mid-stream and started again with nothing kept: the bridge
    // must notice, reconnect, and subscribe again.
    broker.restart();
    bridged(&hub, 2).await;
    for seq in 4..=6 {
        broker.publish("devices/d1/telemetry", &reading(seq, 20.0));
    }
    assert_eq!(seqs(&readings_until(&mut ws, 6).await), [4, 5, 6]);
    let mqtt = stats(&hub).await["mqtt"].clone();
    assert!(mqtt["connection_errors"].as_u64() >= Some(1), "{mqtt}");
    assert_eq!(mqtt["duplicates"], 0);
}

#[tokio::test]
async fn a_command_from_a_websocket_client_arrives_on_the_device_topic() {
    let broker = Mosquitto::start();
    let hub = node(&broker, &[]);
    bridged(&hub, 1).await;
    let commands = broker.subscribe("devices/+/command");
    let (mut ws, _) = member(&hub, &["global"]).await;
    let command = |device: &str, id: &str| {
        json!({"type": "command", "request_id": id,
               "payload": {"device_id": device, "name": "set_fan", "args": {"speed": 3}}})
    };
    send(&mut ws, command("d1", "c0")).await;
    let refused = next_of(&mut ws, "error").await;
    assert_eq!(refused["request_id"], "c0");
    assert!(refused["payload"]["message"].as_str().unwrap().contains("unknown device"), "{refused}");
    broker.publish("devices/d1/telemetry", &reading(1, 20.0));
    next_of(&mut ws, "telemetry").await;
    send(&mut ws, command("d1", "c1")).await;
    let sent = next_of(&mut ws, "command_sent").await;
    assert_eq!(sent["request_id"], "c1");
    assert_eq!(sent["payload"]["topic"], "devices/d1/command");
    let (topic, payload) = commands.next();
    assert_eq!(topic, "devices/d1/command");
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!((payload["name"].as_str(), payload["args"].clone()), (Some("set_fan"), json!({"speed": 3})));
    assert_eq!(payload["command_id"], sent["payload"]["command_id"]);
    assert_eq!(payload["device_id"], "d1");
}

#[tokio::test]
async fn with_jwt_only_a_commands_claim_lets_a_user_command_a_device() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    let broker = Mosquitto::start();
    let hub = node(&broker, &["--jwt-secret", SECRET]);
    bridged(&hub, 1).await;
    let commands = broker.subscribe("devices/+/command");
    broker.publish("devices/d1/telemetry", &reading(1, 20.0));
    broker.publish("devices/d2/telemetry", &reading(1, 20.0));
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
    let token = |claims: Value| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
    };
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let try_command = |token: String, device: &'static str| {
        let url = format!("{}?token={token}", hub.ws_url());
        async move {
            let mut ws = sabai::connect(&url).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                send(
                    &mut ws,
                    json!({"type": "command", "request_id": 1,
                    "payload": {"device_id": device, "name": "reboot"}}),
                )
                .await;
                let answer = loop {
                    let envelope = next(&mut ws).await.unwrap();
                    if envelope["request_id"] == 1 {
                        break envelope;
                    }
                };
                let unknown =
                    answer["payload"]["message"].as_str().is_some_and(|m| m.contains("unknown device"));
                // The readings that make the devices known may still be on their way.
                if !unknown || Instant::now() > deadline {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let none = try_command(token(json!({"sub": "ann", "exp": exp})), "d1").await;
    assert_eq!(none["type"], "error");
    assert!(none["payload"]["message"].as_str().unwrap().contains("no commands claim"), "{none}");
    let claim = token(json!({"sub": "bob", "exp": exp, "commands": ["device:d1"]}));
    let other = try_command(claim.clone(), "d2").await;
    assert_eq!(other["type"], "error", "{other}");
    let sent = try_command(claim, "d1").await;
    assert_eq!(sent["type"], "command_sent", "{sent}");
    let (topic, payload) = commands.next();
    assert_eq!(topic, "devices/d1/command");
    assert_eq!(serde_json::from_str::<Value>(&payload).unwrap()["user"], "bob");
}

#[tokio::test]
async fn malformed_payloads_are_counted_logged_once_and_never_fanned_out() {
    let broker = Mosquitto::start();
    let dir = std::env::temp_dir().join(format!("sabai-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = dir.join("devices.toml");
    std::fs::write(&registry, "strict = true\n[devices.d1]\ngroup = \"lab\"\n").unwrap();
    let hub = node(&broker, &["--device-registry", registry.to_str().unwrap(), "--log-json"]);
    bridged(&hub, 1).await;
    let (mut ws, subscribed) = member(&hub, &["global"]).await;
    assert!(subscribed["payload"].get("unknown_devices").is_none());
    let big = format!(r#"{{"fields":{{"t":1}},"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let cases: [(&str, &[u8]); 8] = [
        ("devices/d1/telemetry", b"not json"),
        ("devices/d1/telemetry", b"{also not json"),
        ("devices/d1/telemetry", big.as_bytes()),
        ("devices/d1/telemetry", br#"{"fields":{"temperature":"hot"}}"#),
        ("devices/d1/telemetry", br#"{"fields":{"temperature":20},"seq":"one"}"#),
        ("devices/intruder/telemetry", br#"{"fields":{"temperature":20}}"#),
        ("devices/d1/telemetry", b"{\"fields\":{\"t\":\xff\xfe}}"),
        ("devices/d1/status", b"{\"status\":\"asleep\"}"),
    ];
    for (topic, payload) in cases {
        broker.publish(topic, payload);
    }
    broker.publish("devices/d1/telemetry", &reading(1, 20.0));
    let first = next_of(&mut ws, "telemetry").await;
    assert_eq!(first["payload"]["seq"], 1, "nothing malformed came before the good reading: {first}");
    let (_, metrics) = http(&hub.addr, "GET", "/metrics", "").await;
    let kind = |k: &str| metric(&metrics, &format!("sabai_hub_mqtt_malformed_total{{kind=\"{k}\"}}"));
    assert_eq!(kind("not_json"), 2);
    assert_eq!(kind("too_large"), 1);
    assert_eq!(kind("bad_shape"), 3);
    assert_eq!(kind("unknown_device"), 1);
    assert_eq!(kind("not_utf8"), 1);
    assert_eq!(metric(&metrics, "sabai_hub_mqtt_connected"), 1, "still connected: nothing broke the bridge");
    assert_eq!(metric(&metrics, "sabai_hub_mqtt_connects_total"), 1, "and never reconnected");
    let logs = hub.logs();
    let logged = |k: &str| {
        logs.iter().filter(|l| l.contains("malformed MQTT") && l.contains(&format!("\"{k}\""))).count()
    };
    for k in ["not_json", "too_large", "bad_shape", "unknown_device", "not_utf8"] {
        assert_eq!(logged(k), 1, "{k} logged once");
    }
    // A strict registry refuses subscriptions to devices outside it.
    let mut ws2 = sabai::connect(&hub.ws_url()).await.unwrap();
    send(&mut ws2, json!({"type": "subscribe", "request_id": 5, "payload": {"rooms": ["device:intruder"]}}))
        .await;
    let error = next_of(&mut ws2, "error").await;
    assert!(error["payload"]["message"].as_str().unwrap().contains("unknown device"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_qos1_redelivery_of_the_same_seq_is_dropped_by_the_window() {
    let broker = Mosquitto::start();
    let hub = node(&broker, &[]);
    bridged(&hub, 1).await;
    let (mut ws, _) = member(&hub, &["device:d1"]).await;
    broker.publish("devices/d1/telemetry", &reading(1, 20.0));
    // The device did not see the broker's PUBACK and sent seq 1 again;
    // then it goes on.
    broker.publish("devices/d1/telemetry", &reading(1, 20.0));
    broker.publish("devices/d1/telemetry", &reading(2, 20.1));
    assert_eq!(seqs(&readings_until(&mut ws, 2).await), [1, 2]);
    let (_, metrics) = http(&hub.addr, "GET", "/metrics", "").await;
    assert_eq!(metric(&metrics, "sabai_hub_mqtt_duplicates_total"), 1);
}

#[tokio::test]
async fn alert_rules_raise_an_alert_on_the_rising_edge_pointing_at_the_reading() {
    let broker = Mosquitto::start();
    let hub = node(&broker, &["--alert-rule", "temperature>30:critical"]);
    bridged(&hub, 1).await;
    let (mut ws, _) = member(&hub, &["group:lab"]).await;
    let lines: Vec<String> = [25.0, 31.0, 32.5, 29.0, 33.0]
        .iter()
        .enumerate()
        .map(|(i, t)| String::from_utf8(reading(i as u64 + 1, *t)).unwrap())
        .collect();
    broker.publish_lines("devices/d1/telemetry", &lines);
    let mut alerts = Vec::new();
    let mut last = 0;
    while last < 5 {
        let envelope = next(&mut ws).await.unwrap();
        match envelope["type"].as_str() {
            Some("telemetry") => last = envelope["payload"]["seq"].as_u64().unwrap(),
            Some("alert") => alerts.push(envelope),
            _ => {}
        }
    }
    // The alert of the last reading follows it.
    while alerts.len() < 2 {
        alerts.push(next_of(&mut ws, "alert").await);
    }
    let first = &alerts[0]["payload"];
    assert_eq!(alerts[0]["room"], "device:d1");
    assert_eq!(
        (first["rule_name"].as_str(), first["severity"].as_str(), first["field"].as_str()),
        (Some("temperature > 30"), Some("critical"), Some("temperature"))
    );
    assert_eq!((first["value"].as_f64(), first["threshold"].as_f64()), (Some(31.0), Some(30.0)));
    assert_eq!((first["device_id"].as_str(), first["seq"].as_u64()), (Some("d1"), Some(2)));
    assert!(first["alert_id"].is_string() && first["timestamp"].is_string());
    assert_eq!(alerts[1]["payload"]["seq"], 5, "32.5 was still over; 33 after 29 is a new edge");
}

#[tokio::test]
async fn two_nodes_sharing_the_subscription_put_each_reading_in_the_hub_once() {
    const READINGS: u64 = 60;
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let url = redis.url();
    let flags = ["--redis", url.as_str(), "--mqtt-share", "hubs"];
    let (a, b) = (node(&broker, &flags), node(&broker, &flags));
    bridged(&a, 1).await;
    bridged(&b, 1).await;
    let mut clients = Vec::new();
    for n in [&a, &b] {
        clients.push(member(n, &["global"]).await.0);
        clients.push(member(n, &["device:d1", "group:lab", "global"]).await.0);
    }
    let lines: Vec<String> =
        (1..=READINGS).map(|seq| String::from_utf8(reading(seq, 20.0)).unwrap()).collect();
    broker.publish_lines("devices/d1/telemetry", &lines);
    for ws in &mut clients {
        // Two nodes publish into Redis side by side: seqs may come in
        // another order than sent, but each once.
        let mut got = Vec::new();
        while got.len() < READINGS as usize {
            got.push(next_of(ws, "telemetry").await);
        }
        let mut seen = seqs(&got);
        seen.sort_unstable();
        assert_eq!(seen, (1..=READINGS).collect::<Vec<_>>(), "every seq once on every connection");
        let offsets: Vec<u64> = got.iter().map(|e| e["offsets"]["global"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (1..=READINGS).collect::<Vec<_>>(), "one publication each, in one order");
    }
    let published = |s: &Value| s["mqtt"]["published"].as_u64().unwrap();
    let (sa, sb) = (stats(&a).await, stats(&b).await);
    assert_eq!(published(&sa) + published(&sb), READINGS, "each reading entered the hub once");
    assert!(
        published(&sa) > 0 && published(&sb) > 0,
        "the broker shared them: {} and {}",
        published(&sa),
        published(&sb)
    );
    // Each node's device list still has every reading (its own connection).
    for n in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list: Value = serde_json::from_str(&http(&n.addr, "GET", "/devices", "").await.1).unwrap();
            if list["devices"][0]["last_seq"] == READINGS {
                break;
            }
            assert!(Instant::now() < deadline, "{list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_simulator_speaks_mqtt_device_to_broker_to_hub() {
    let broker = Mosquitto::start();
    let telemetry = broker.subscribe("devices/+/telemetry");
    let url = broker.url();
    let hub = Node::start(&["--mqtt", &url, "--simulate-mqtt"]);
    let (topic, payload) = telemetry.next();
    assert!(topic.starts_with("devices/") && topic.ends_with("/telemetry"), "{topic}");
    let on_the_broker: Value = serde_json::from_str(&payload).unwrap();
    assert!(on_the_broker["fields"]["temperature"].is_number(), "{on_the_broker}");
    let (mut ws, _) = member(&hub, &["device:greenhouse-1"]).await;
    let reading = next_of(&mut ws, "telemetry").await;
    assert_eq!(reading["payload"]["device_id"], "greenhouse-1");
    assert_eq!(reading["offsets"].as_object().unwrap().len(), 3, "device, group and global");
    let mqtt = stats(&hub).await["mqtt"].clone();
    assert!(mqtt["published"].as_u64() > Some(0), "through the bridge: {mqtt}");
}
