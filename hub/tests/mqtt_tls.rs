//! The MQTT bridge over TLS (`--mqtt mqtts://…`, `--mqtt-ca`) against a
//! real mosquitto whose only listener speaks TLS, with a certificate made
//! at test time: a reading published over TLS reaches a WebSocket
//! subscriber; a broker certificate from a CA the hub does not trust is
//! refused with a clear log line, retried, and the hub keeps serving.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::broker::{unrelated_ca, Mosquitto};
use support::{http, next_of, send, Node};

fn node(broker: &Mosquitto, ca: Option<&std::path::Path>) -> Node {
    let url = broker.url();
    let mut flags = vec!["--no-simulator".to_owned(), "--mqtt".into(), url];
    if let Some(ca) = ca {
        flags.extend(["--mqtt-ca".into(), ca.to_string_lossy().into_owned()]);
    }
    Node::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn mqtt_stats(node: &Node) -> Value {
    let stats: Value = serde_json::from_str(&http(&node.addr, "GET", "/stats", "").await.1).unwrap();
    stats["mqtt"].clone()
}

/// Waits (at most 20 s) until `ready` holds of the bridge's stats.
async fn until(node: &Node, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mqtt = mqtt_stats(node).await;
        if ready(&mqtt) {
            return mqtt;
        }
        assert!(Instant::now() < deadline, "{what}: {mqtt}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reading_published_over_tls_reaches_a_websocket_subscriber() {
    let broker = Mosquitto::start_tls();
    assert!(broker.url().starts_with("mqtts://"));
    let hub = node(&broker, Some(&broker.ca_file()));
    let mqtt = until(&hub, "the bridge did not connect over TLS", |m| m["connected"] == true).await;
    assert_eq!(mqtt["broker"], broker.url());

    let mut ws = sabai::connect(&hub.ws_url()).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["device:d1"]}})).await;
    next_of(&mut ws, "subscribed").await;
    // mosquitto_pub over TLS too (--cafile): the broker has no plain port.
    let reading = json!({"fields": {"temperature": 21.5}, "tags": {"group": "lab"}, "seq": 1});
    broker.publish("devices/d1/telemetry", reading.to_string().as_bytes());
    let envelope = next_of(&mut ws, "telemetry").await;
    assert_eq!(envelope["room"], "device:d1");
    assert_eq!(envelope["payload"]["device_id"], "d1");
    assert_eq!(envelope["payload"]["fields"], json!({"temperature": 21.5}));
    assert_eq!(mqtt_stats(&hub).await["connection_errors"], 0);
}

#[tokio::test]
async fn a_broker_certificate_from_an_untrusted_ca_is_refused_clearly_and_retried() {
    let broker = Mosquitto::start_tls();
    let wrong = unrelated_ca(broker.dir());
    // One trusts the wrong CA; one the system's roots, which do not hold
    // the test's CA either.
    for ca in [Some(wrong.as_path()), None] {
        let hub = node(&broker, ca);
        // Backoff 0.2, 0.4, 0.8 s: three failures within about 2 s.
        let mqtt =
            until(&hub, "the bridge did not retry", |m| m["connection_errors"].as_u64() >= Some(3)).await;
        assert_eq!(
            (mqtt["connected"].as_bool(), mqtt["connects"].as_u64()),
            (Some(false), Some(0)),
            "{mqtt}"
        );

        // The hub keeps serving: HTTP, and WebSocket subscriptions.
        let mut ws = sabai::connect(&hub.ws_url()).await.unwrap();
        send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["device:d1"]}})).await;
        next_of(&mut ws, "subscribed").await;
        broker.publish("devices/d1/telemetry", br#"{"fields": {"t": 1}, "seq": 1}"#);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(mqtt_stats(&hub).await["received"], 0, "nothing came through the refused connection");

        let logs = hub.logs();
        let refused: Vec<&String> =
            logs.iter().filter(|l| l.contains("MQTT connection failed; retrying")).collect();
        assert_eq!(refused.len(), 1, "logged once per outage, not once per retry: {logs:#?}");
        let line = refused[0];
        assert!(
            line.contains("UnknownIssuer") && line.contains("--mqtt-ca"),
            "a clear reason and hint: {line}"
        );
        assert!(!logs.iter().any(|l| l.contains("panicked")), "{logs:#?}");
    }
}

#[test]
fn an_unreadable_mqtt_ca_stops_the_start_with_its_name() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sabai-hub"))
        .args(["--addr", "127.0.0.1:0", "--no-simulator", "--mqtt", "mqtts://127.0.0.1:1"])
        .args(["--mqtt-ca", "/nonexistent/sabai-ca.pem"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--mqtt-ca /nonexistent/sabai-ca.pem"), "{stderr}");
}
