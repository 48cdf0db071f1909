//! The MQTT bridge (`--mqtt mqtt://host:port`, or `mqtts://` over TLS,
//! [`tls`]): devices publish to a broker, the bridge subscribes (QoS 1) to the topic patterns, checks
//! each message, and publishes it through the hub as ONE publication to
//! the rooms `device:<id>`, `group:<group>` and `global`, so history,
//! offsets, the Redis engine and "once per connection" all apply.
//!
//! - **Reconnects.** The client's session is clean: after a broker restart
//!   (or any lost connection) the bridge reconnects with backoff (0.2 s
//!   doubling to 5 s) and subscribes again on every CONNACK.
//! - **Several nodes.** Each node has its own client id; with
//!   `--mqtt-share GROUP` they subscribe to `$share/GROUP/<pattern>`, so the
//!   broker hands each message to one of them and each reading enters the
//!   hub once. A second, non-shared connection (`<client id>-devices`, QoS
//!   0) then feeds this node's device list (`GET /devices`) with every
//!   device's status and readings, retained statuses included, and
//!   publishes nothing.
//! - **Duplicates.** A reading whose (device_id, seq) this node already
//!   published within `--mqtt-dedup-window` (a QoS 1 redelivery) is dropped
//!   and counted.
//! - **Bad input** is counted per kind ([`readings::Malformed`]) in
//!   /metrics, logged once per kind, and never reaches a room.
//! - **Retained messages** (a device's last status, kept by the broker)
//!   update the device list only: they are old news, not events.
//! - **Commands** from clients go to `devices/<id>/command` with QoS 1
//!   ([`command`]).
//! - **Alerts**: `--alert-rule`s are evaluated on every reading
//!   ([`crate::alerts`]).

pub mod readings;
pub mod tls;
pub mod topic;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use sabai::hub::{ConnId, Publish};
use serde_json::{json, Value};

use crate::alerts::Alerts;
use crate::protocol::envelope;
use crate::App;
use readings::{Malformed, Reading};
use topic::Pattern;

/// The largest packet read from the broker. A payload over
/// `--mqtt-max-payload` but under this is read and counted as too large;
/// one over this ends the connection (once: the session is clean, so it
/// is not sent again) and is counted the same way.
const MAX_PACKET: usize = 4 * 1024 * 1024;

/// The largest packet the bridge sends (a command).
const MAX_OUTGOING: usize = 256 * 1024;

/// Reconnection backoff.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Recent seqs kept per device for the duplicate window.
const WINDOW_PER_DEVICE: usize = 4096;

/// A broker's address, from `--mqtt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// (user, password)
    pub credentials: Option<(String, String)>,
    /// `mqtts://`
    pub tls: bool,
}

/// The bridge's settings, resolved from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub patterns: Vec<Pattern>,
    pub share: Option<String>,
    pub dedup_window: Duration,
    pub max_payload: usize,
    /// With `{id}` where the device id goes.
    pub command_topic: String,
    /// `--simulate-mqtt`: the simulator's devices publish to the broker.
    pub simulate: bool,
    pub keep_alive: Duration,
    /// `mqtts://`: the TLS configuration ([`tls::client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` (port 1883 by default), or
    /// `mqtts://` for TLS (port 8883 by default).
    pub fn parse_url(url: &str) -> Result<Broker, String> {
        let (rest, tls, default_port) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (rest, false, 1883),
            (_, Some(rest)) => (rest, true, 8883),
            _ => return Err("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]".into()),
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((user, address)) => {
                let (name, password) = user.split_once(':').unwrap_or((user, ""));
                (Some((name.to_owned(), password.to_owned())), address)
            }
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || !port.is_empty() => {
                (host, port.parse::<u16>().map_err(|_| format!("bad port {port:?}"))?)
            }
            _ => (address, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err("expected mqtt://HOST[:PORT]".into());
        }
        Ok(Broker { host: host.to_owned(), port, credentials, tls })
    }

    /// The broker's address without credentials, for logs.
    pub fn shown(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// What to subscribe to: the patterns, shared when `--mqtt-share`.
    fn filters(&self, shared: bool) -> Vec<String> {
        let share = self.share.as_ref().filter(|_| shared);
        self.patterns
            .iter()
            .map(|p| match share {
                Some(group) => format!("$share/{group}/{}", p.filter()),
                None => p.filter(),
            })
            .collect()
    }

    /// The client's options, with this client id.
    pub fn client_options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_PACKET, MAX_OUTGOING);
        options.set_inflight(100);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        if let Some(config) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config.clone())));
        }
        options
    }
}

/// The bridge's counters (`sabai_hub_mqtt_*` in /metrics, `mqtt` in /stats).
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub published: AtomicU64,
    pub retained: AtomicU64,
    pub duplicates: AtomicU64,
    pub publish_errors: AtomicU64,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    pub commands: AtomicU64,
    pub alerts: AtomicU64,
    malformed: [AtomicU64; 6],
    logged: [AtomicBool; 6],
}

/// (device_id, seq) pairs published lately.
struct Window {
    span: Duration,
    seen: HashMap<String, VecDeque<(u64, Instant)>>,
}

impl Window {
    /// Whether this reading is new (and remembers it).
    fn first_time(&mut self, device: &str, seq: u64, now: Instant) -> bool {
        let span = self.span;
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, list| list.back().is_some_and(|(_, at)| now.duration_since(*at) <= span));
        }
        let list = self.seen.entry(device.to_owned()).or_default();
        while list.front().is_some_and(|(_, at)| now.duration_since(*at) > span) {
            list.pop_front();
        }
        if list.iter().any(|(s, _)| *s == seq) {
            return false;
        }
        if list.len() >= WINDOW_PER_DEVICE {
            list.pop_front();
        }
        list.push_back((seq, now));
        true
    }
}

/// The running bridge.
pub struct Bridge {
    pub settings: Settings,
    client: AsyncClient,
    connected: AtomicBool,
    pub counters: Counters,
    window: Mutex<Window>,
    pub alerts: Alerts,
}

/// What a connection's messages are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Into the hub (and the device list).
    Bridge,
    /// The device list only (the non-shared connection beside a shared one).
    Devices,
}

/// Starts the bridge (and, with `--mqtt-share`, the device-list
/// connection); they run until the app is gone.
pub fn start(app: &Arc<App>, settings: Settings, alerts: Alerts) -> Arc<Bridge> {
    let (client, eventloop) = AsyncClient::new(settings.client_options(&settings.client_id), 1024);
    let bridge = Arc::new(Bridge {
        window: Mutex::new(Window { span: settings.dedup_window, seen: HashMap::new() }),
        settings,
        client: client.clone(),
        connected: AtomicBool::new(false),
        counters: Counters::default(),
        alerts,
    });
    tracing::info!(broker = %bridge.settings.shown(), client_id = %bridge.settings.client_id,
        topics = ?bridge.settings.filters(true), "MQTT bridge starting");
    tokio::spawn(run(Arc::downgrade(app), bridge.clone(), client, eventloop, Mode::Bridge));
    if bridge.settings.share.is_some() {
        let id = format!("{}-devices", bridge.settings.client_id);
        let (client, eventloop) = AsyncClient::new(bridge.settings.client_options(&id), 64);
        tokio::spawn(run(Arc::downgrade(app), bridge.clone(), client, eventloop, Mode::Devices));
    }
    bridge
}

/// One connection's loop: poll, subscribe on every CONNACK, hand messages
/// on, back off after errors.
async fn run(app: Weak<App>, bridge: Arc<Bridge>, client: AsyncClient, mut eventloop: EventLoop, mode: Mode) {
    let mut retry = FIRST_RETRY;
    let mut down_since: Option<Instant> = None;
    let (filters, qos) = match mode {
        Mode::Bridge => (bridge.settings.filters(true), QoS::AtLeastOnce),
        Mode::Devices => (bridge.settings.filters(false), QoS::AtMostOnce),
    };
    loop {
        let event = eventloop.poll().await;
        let Some(app) = app.upgrade() else { return };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                retry = FIRST_RETRY;
                let subscriptions = filters.iter().map(|f| SubscribeFilter::new(f.clone(), qos));
                if let Err(why) = client.try_subscribe_many(subscriptions) {
                    tracing::error!(reason = %why, "MQTT subscribe could not be queued");
                }
                if mode == Mode::Bridge {
                    bridge.counters.connects.fetch_add(1, Ordering::Relaxed);
                    let was_down = down_since.take().map(|at| at.elapsed().as_secs_f64());
                    tracing::info!(broker = %bridge.settings.shown(), down_s = was_down, "MQTT connected; subscribing");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    tracing::error!(refused, topics = ?filters, "the broker refused MQTT subscriptions");
                }
                if mode == Mode::Bridge {
                    // Connected and subscribed: readings flow from here on.
                    bridge.connected.store(true, Ordering::SeqCst);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => handle(&app, &bridge, &publish, mode),
            Ok(_) => {}
            Err(error) => {
                if mode == Mode::Bridge {
                    bridge.connected.store(false, Ordering::SeqCst);
                    bridge.counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                    if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                    )) = &error
                    {
                        bridge.malformed(
                            Malformed::TooLarge,
                            "?",
                            &format!("a {size}-byte packet, over {MAX_PACKET}"),
                        );
                    }
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        let (broker, hint) = (bridge.settings.shown(), tls::hint(&error));
                        if bridge.counters.connects.load(Ordering::Relaxed) == 0 {
                            tracing::warn!(%broker, reason = %error, hint, "MQTT connection failed; retrying");
                        } else {
                            tracing::warn!(%broker, reason = %error, hint, "MQTT connection lost; reconnecting");
                        }
                    } else {
                        tracing::debug!(reason = %error, "MQTT reconnect failed");
                    }
                }
                drop(app);
                // A little jitter, so nodes that lost one broker do not
                // all come back in the same millisecond.
                let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                tokio::time::sleep(retry + jitter).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// One message from the broker.
fn handle(app: &Arc<App>, bridge: &Arc<Bridge>, publish: &rumqttc::Publish, mode: Mode) {
    let into_hub = mode == Mode::Bridge && !publish.retain;
    let count = mode == Mode::Bridge;
    if count {
        bridge.counters.received.fetch_add(1, Ordering::Relaxed);
    }
    let malformed = |kind: Malformed, why: &str| {
        if count {
            bridge.malformed(kind, &publish.topic, why);
        }
    };
    let (kind, id) = match topic::route(&bridge.settings.patterns, &publish.topic) {
        Ok(routed) => routed,
        Err(topic::Unmapped::BadId(why)) => return malformed(Malformed::BadTopic, &why),
        Err(topic::Unmapped::NoMatch) => return malformed(Malformed::BadTopic, "no topic pattern matches"),
    };
    let node = &app.options.node;
    let alert_id = || format!("{node}-d{}", rand::random::<u32>());
    let reading = match readings::parse(kind, id, &publish.payload, bridge.settings.max_payload, alert_id) {
        Ok(reading) => reading,
        Err((kind, why)) => return malformed(kind, &why),
    };
    if !app.devices.allows(id) {
        return malformed(Malformed::UnknownDevice, "not in the strict --device-registry");
    }
    if let (true, Reading::Telemetry { seq: Some(seq), .. }) = (into_hub, &reading) {
        let fresh =
            bridge.window.lock().unwrap_or_else(|p| p.into_inner()).first_time(id, *seq, Instant::now());
        if !fresh {
            bridge.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let payload = reading.payload();
    let tagged = payload["tags"]["group"].as_str().filter(|g| topic::check_id(g).is_ok());
    let group = app.devices.group_of(id, tagged);
    // Beside a shared subscription the device-list connection sees every
    // message, in the broker's order: it alone feeds the list.
    if mode == Mode::Devices || bridge.settings.share.is_none() {
        app.devices.observe(kind.envelope_type(), &payload);
    }
    if !into_hub {
        // Beside a shared subscription only the device-list connection
        // gets retained messages: counted there.
        if publish.retain && (mode == Mode::Devices || bridge.settings.share.is_none()) {
            bridge.counters.retained.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let rooms = rooms(id, group.as_deref());
    bridge.publish(app, kind.envelope_type(), &rooms, payload);
    if let Reading::Telemetry { device_id, timestamp, fields, seq, .. } = &reading {
        for alert in bridge.alerts.evaluate(device_id, fields, timestamp, *seq) {
            bridge.counters.alerts.fetch_add(1, Ordering::Relaxed);
            bridge.publish(app, "alert", &rooms, alert);
        }
    }
}

/// A device's rooms: its own, its group's (when it has one), `global`.
pub fn rooms(id: &str, group: Option<&str>) -> Vec<String> {
    let mut rooms = vec![format!("device:{id}")];
    rooms.extend(group.map(|g| format!("group:{g}")));
    rooms.push("global".to_owned());
    rooms
}

impl Bridge {
    /// Whether the bridge is connected to its broker, and subscribed, now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// One publication to the device's rooms; its order is fixed here,
    /// its outcome counted when the engine answers.
    fn publish(self: &Arc<Self>, app: &App, kind: &str, rooms: &[String], payload: Value) {
        let text = envelope(kind, Some(&rooms[0]), payload, None);
        let publishing = app.hub.publish_with(Publish::new(text).rooms(rooms.iter().cloned()));
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let bridge = self.clone();
        tokio::spawn(async move {
            if publishing.await.is_err() {
                bridge.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Counts a dropped message; logs the first of each kind.
    fn malformed(&self, kind: Malformed, topic: &str, why: &str) {
        self.counters.malformed[kind.index()].fetch_add(1, Ordering::Relaxed);
        if !self.counters.logged[kind.index()].swap(true, Ordering::Relaxed) {
            let topic: String = topic.chars().take(200).collect();
            let why: String = why.chars().take(300).collect();
            tracing::warn!(
                kind = kind.name(),
                topic,
                reason = why,
                "malformed MQTT message dropped (logged once per kind; counted in sabai_hub_mqtt_malformed_total)"
            );
        }
    }

    /// How many messages of this kind were dropped.
    pub fn malformed_count(&self, kind: Malformed) -> u64 {
        self.counters.malformed[kind.index()].load(Ordering::Relaxed)
    }

    /// Publishes a command to the device's command topic, QoS 1.
    fn send_command(&self, device_id: &str, message: &Value) -> Result<String, String> {
        if !self.is_connected() {
            return Err("the MQTT broker cannot be reached now; the command was not sent".into());
        }
        let topic = self.settings.command_topic.replace("{id}", device_id);
        let sent = self.client.try_publish(topic.clone(), QoS::AtLeastOnce, false, message.to_string());
        sent.map_err(|why| format!("the command could not be queued: {why}"))?;
        self.counters.commands.fetch_add(1, Ordering::Relaxed);
        Ok(topic)
    }

    /// The `mqtt` object of /stats.
    pub fn stats(&self) -> Value {
        let c = &self.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let malformed: serde_json::Map<String, Value> =
            Malformed::ALL.iter().map(|k| (k.name().to_owned(), json!(self.malformed_count(*k)))).collect();
        json!({
            "broker": self.settings.shown(),
            "client_id": self.settings.client_id,
            "connected": self.is_connected(),
            "received": get(&c.received),
            "published": get(&c.published),
            "retained": get(&c.retained),
            "duplicates": get(&c.duplicates),
            "publish_errors": get(&c.publish_errors),
            "connects": get(&c.connects),
            "connection_errors": get(&c.connection_errors),
            "commands": get(&c.commands),
            "alerts": get(&c.alerts),
            "malformed": malformed,
        })
    }

    /// Its lines of /metrics.
    pub fn metrics(&self, out: &mut String) {
        let c = &self.counters;
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP sabai_hub_mqtt_{name} {help}\n# TYPE sabai_hub_mqtt_{name} {kind}\nsabai_hub_mqtt_{name} {value}"
            );
        };
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        metric(
            "connected",
            "gauge",
            "1 while the MQTT bridge is connected to its broker.",
            u64::from(self.is_connected()),
        );
        metric("received_total", "counter", "MQTT messages received by the bridge.", get(&c.received));
        metric(
            "published_total",
            "counter",
            "Publications the bridge made into the hub (alerts included).",
            get(&c.published),
        );
        metric(
            "retained_total",
            "counter",
            "Retained messages taken into the device list only.",
            get(&c.retained),
        );
        metric(
            "duplicates_total",
            "counter",
            "Readings dropped as repeats of a (device_id, seq) in the window.",
            get(&c.duplicates),
        );
        metric(
            "publish_errors_total",
            "counter",
            "Bridge publications the engine failed to take.",
            get(&c.publish_errors),
        );
        metric("connects_total", "counter", "Connections made to the broker.", get(&c.connects));
        metric(
            "connection_errors_total",
            "counter",
            "Broker connections lost or failed.",
            get(&c.connection_errors),
        );
        metric("commands_total", "counter", "Commands published to devices.", get(&c.commands));
        metric("alerts_total", "counter", "Alerts raised by --alert-rule.", get(&c.alerts));
        let _ = writeln!(out, "# HELP sabai_hub_mqtt_malformed_total MQTT messages dropped, by kind.");
        let _ = writeln!(out, "# TYPE sabai_hub_mqtt_malformed_total counter");
        for kind in Malformed::ALL {
            let _ = writeln!(
                out,
                "sabai_hub_mqtt_malformed_total{{kind=\"{}\"}} {}",
                kind.name(),
                self.malformed_count(kind)
            );
        }
    }
}

/// `command` from a client: `payload: {device_id, name, args}`. Checks who
/// may command that device, then publishes `{command_id, device_id, name,
/// args, user, timestamp}` to its command topic (QoS 1). The answer is the
/// payload of `command_sent`.
///
/// Who may: with JWT, a token whose `commands` claim names the device's
/// room (`device:42`, `device:*`); without JWT, anyone, but only on a
/// server that listens on a loopback address (the local demo).
pub fn command(app: &App, conn: ConnId, payload: &Value) -> Result<Value, String> {
    let bridge = app.mqtt.get().ok_or("commands need an MQTT broker (--mqtt)")?;
    let device_id = payload["device_id"].as_str().ok_or("command needs payload.device_id")?;
    topic::check_id(device_id)?;
    let name = payload["name"].as_str().filter(|n| !n.is_empty() && n.len() <= 64);
    let name = name.ok_or("command needs payload.name, 1 to 64 bytes")?;
    let args = match &payload["args"] {
        Value::Null => json!({}),
        args => args.clone(),
    };
    match (&app.jwt, app.identity(conn)) {
        (Some(_), Some(identity)) if identity.may_command(device_id) => {}
        (Some(_), Some(identity)) if identity.commands.is_none() => {
            return Err("your token has no commands claim: commands are refused".into())
        }
        (Some(_), _) => return Err(format!("your token does not allow commands to device:{device_id}")),
        (None, _) if app.options.addr.ip().is_loopback() => {}
        (None, _) => {
            return Err(
                "commands need JWT (a token with a commands claim) on a server reachable from other machines"
                    .into(),
            )
        }
    }
    if !app.devices.is_known(device_id) || !app.devices.allows(device_id) {
        return Err(format!("unknown device {device_id:?} (see GET /devices)"));
    }
    let command_id = format!("{}-c{}", app.options.node, rand::random::<u32>());
    let message = json!({
        "command_id": command_id,
        "device_id": device_id,
        "name": name,
        "args": args,
        "user": app.hub.user_of(conn),
        "timestamp": crate::protocol::now(),
    });
    let topic = bridge.send_command(device_id, &message)?;
    Ok(json!({ "command_id": command_id, "device_id": device_id, "name": name, "topic": topic }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_port_and_credentials() {
        let broker = |host: &str, port, credentials: Option<(&str, &str)>, tls| Broker {
            host: host.into(),
            port,
            credentials: credentials.map(|(u, p)| (u.into(), p.into())),
            tls,
        };
        assert_eq!(
            Settings::parse_url("mqtt://127.0.0.1:1884").unwrap(),
            broker("127.0.0.1", 1884, None, false)
        );
        assert_eq!(Settings::parse_url("mqtt://broker").unwrap(), broker("broker", 1883, None, false));
        assert_eq!(
            Settings::parse_url("mqtt://hub:s3cret@broker:1883/").unwrap(),
            broker("broker", 1883, Some(("hub", "s3cret")), false)
        );
        assert_eq!(Settings::parse_url("mqtt://[::1]:1883").unwrap().host, "::1");
        assert_eq!(Settings::parse_url("mqtts://broker").unwrap(), broker("broker", 8883, None, true));
        assert_eq!(
            Settings::parse_url("mqtts://hub:pw@broker:18883").unwrap(),
            broker("broker", 18883, Some(("hub", "pw")), true)
        );
        for bad in ["http://x", "mqtt://", "mqtt://x:port", "mqtts://", "mqtt://x/y", "ssl://x"] {
            assert!(Settings::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_window_drops_a_seq_seen_lately_only() {
        let mut window = Window { span: Duration::from_secs(30), seen: HashMap::new() };
        let t0 = Instant::now();
        assert!(window.first_time("d", 1, t0));
        assert!(window.first_time("d", 2, t0));
        assert!(!window.first_time("d", 1, t0 + Duration::from_secs(1)), "a redelivery");
        assert!(window.first_time("e", 1, t0), "another device's seq 1");
        assert!(
            window.first_time("d", 1, t0 + Duration::from_secs(31)),
            "after the window: a restarted device"
        );
    }

    #[test]
    fn rooms_are_the_device_its_group_and_global() {
        assert_eq!(rooms("d1", Some("lab")), ["device:d1", "group:lab", "global"]);
        assert_eq!(rooms("d1", None), ["device:d1", "global"]);
    }
}
