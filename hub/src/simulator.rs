//! A few simulated devices, so the dashboard is alive the moment it opens.
//! Each second every online device publishes telemetry to `device:<id>`,
//! `group:<group>` and `global` (one publication to the three rooms, so a
//! dashboard in all three gets it once); now and then a device drops
//! offline for a while (`device_status`), and a value crossing its
//! threshold raises an `alert`. Each reading carries the device's `seq`,
//! so a client can check that it missed none.
//!
//! With `--simulate-mqtt` the same devices publish to the MQTT broker
//! instead (`devices/<id>/telemetry`, and `devices/<id>/status` retained),
//! and reach the rooms through the bridge, which raises the alerts from
//! its rules: device → MQTT → hub → browser.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use sabai::hub::Publish;
use serde_json::{json, Value};

use crate::devices::Entry;
use crate::protocol::{envelope, now};
use crate::App;

pub const TEMPERATURE_ALERT: f64 = 30.0;
pub const HUMIDITY_ALERT: f64 = 80.0;

struct Device {
    id: &'static str,
    name: &'static str,
    group: &'static str,
    temperature: f64,
    humidity: f64,
    battery: f64,
    /// Seconds until it comes back, while offline.
    offline_for: u32,
    alerting: bool,
    /// Readings sent so far.
    seq: u64,
    alerts: u64,
}

/// xorshift64*: plenty for wobbling numbers, no dependency.
struct Wobble(u64);

impl Wobble {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn step(&mut self, size: f64) -> f64 {
        (self.unit() - 0.5) * 2.0 * size
    }
}

fn devices() -> Vec<Device> {
    let d = |id, name, group, temperature, humidity| Device {
        id,
        name,
        group,
        temperature,
        humidity,
        battery: 100.0,
        offline_for: 0,
        alerting: false,
        seq: 0,
        alerts: 0,
    };
    vec![
        d("greenhouse-1", "Greenhouse north", "greenhouse", 27.0, 70.0),
        d("greenhouse-2", "Greenhouse south", "greenhouse", 28.5, 74.0),
        d("server-room", "Server room", "building", 22.0, 40.0),
        d("cold-store", "Cold store", "building", 4.0, 60.0),
        d("office", "Office", "building", 21.0, 45.0),
    ]
}

/// What a simulated device says: a message of a kind, and its payload.
struct Said {
    kind: &'static str,
    payload: Value,
}

fn seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |d| d.as_nanos() as u64) | 1
}

/// Publishes into the hub (no broker).
pub async fn run(app: Arc<App>) {
    let mut rng = Wobble(seed());
    let mut devices = devices();
    for device in &devices {
        let entry = Entry { group: Some(device.group.into()), name: Some(device.name.into()) };
        app.devices.register(device.id, entry);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for device in &mut devices {
            for said in step(device, &mut rng, true) {
                app.devices.observe(said.kind, &said.payload);
                let text = envelope(said.kind, Some(&format!("device:{}", device.id)), said.payload, None);
                // A node that cannot reach Redis still delivers locally;
                // the error is counted by the engine.
                let _ = app.hub.publish_with(to_rooms(device, text)).await;
            }
        }
    }
}

/// Publishes to the broker, as devices would (`--simulate-mqtt`):
/// readings with QoS 1, statuses retained. Reconnects on its own (its
/// client's event loop is polled here).
pub async fn run_mqtt(settings: crate::mqtt::Settings) {
    let id = format!("{}-simulator", settings.client_id);
    let (client, mut eventloop) = AsyncClient::new(settings.client_options(&id), 256);
    tokio::spawn(async move {
        loop {
            if let Err(why) = eventloop.poll().await {
                tracing::debug!(reason = %why, "simulator: MQTT connection lost");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let mut rng = Wobble(seed());
    let mut devices = devices();
    for device in &devices {
        let online = json!({ "device_id": device.id, "status": "online", "timestamp": now() });
        let _ = client.publish(status_topic(device), QoS::AtLeastOnce, true, online.to_string()).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for device in &mut devices {
            for said in step(device, &mut rng, false) {
                let (topic, retain) = match said.kind {
                    "device_status" => (status_topic(device), true),
                    _ => (format!("devices/{}/telemetry", device.id), false),
                };
                // try_: a broker that is down must not stall the devices.
                let _ = client.try_publish(topic, QoS::AtLeastOnce, retain, said.payload.to_string());
            }
        }
    }
}

fn status_topic(device: &Device) -> String {
    format!("devices/{}/status", device.id)
}

/// One publication to the device's three rooms: its envelope names the
/// device's room, and it carries an offset in each room with history.
fn to_rooms(device: &Device, text: String) -> Publish {
    Publish::new(text).rooms([
        format!("device:{}", device.id),
        format!("group:{}", device.group),
        "global".to_owned(),
    ])
}

fn status(device: &Device, online: bool) -> Said {
    let status = if online { "online" } else { "offline" };
    Said {
        kind: "device_status",
        payload: json!({ "device_id": device.id, "status": status, "timestamp": now() }),
    }
}

/// What a device says this second (nothing while offline).
/// `alerts`: raise its own alerts (into the hub; over MQTT the bridge's
/// rules do).
fn step(device: &mut Device, rng: &mut Wobble, alerts: bool) -> Vec<Said> {
    if device.offline_for > 0 {
        device.offline_for -= 1;
        return if device.offline_for == 0 { vec![status(device, true)] } else { Vec::new() };
    }
    // About once in three minutes per device: drop out for 5 to 15 s.
    if rng.unit() < 1.0 / 180.0 {
        device.offline_for = 5 + (rng.unit() * 10.0) as u32;
        return vec![status(device, false)];
    }
    device.temperature = (device.temperature + rng.step(0.6)).clamp(-10.0, 40.0);
    device.humidity = (device.humidity + rng.step(1.5)).clamp(5.0, 99.0);
    device.battery = (device.battery - rng.unit() * 0.05).max(0.0);
    device.seq += 1;
    let payload = json!({
        "device_id": device.id,
        "timestamp": now(),
        "fields": {
            "temperature": (device.temperature * 10.0).round() / 10.0,
            "humidity": (device.humidity * 10.0).round() / 10.0,
            "battery": device.battery.round(),
        },
        "tags": { "group": device.group, "name": device.name },
        "seq": device.seq,
    });
    let mut said = vec![Said { kind: "telemetry", payload }];
    // Alert on the rising edge only, not every second above the line.
    let over = device.temperature > TEMPERATURE_ALERT || device.humidity > HUMIDITY_ALERT;
    if over && !device.alerting && alerts {
        let (field, value, threshold) = if device.temperature > TEMPERATURE_ALERT {
            ("temperature", device.temperature, TEMPERATURE_ALERT)
        } else {
            ("humidity", device.humidity, HUMIDITY_ALERT)
        };
        device.alerts += 1;
        let payload = json!({
            "alert_id": format!("{}-{}", device.id, device.alerts),
            "device_id": device.id,
            "rule_name": format!("{field} above {threshold}"),
            "severity": "warning",
            "field": field,
            "value": (value * 10.0).round() / 10.0,
            "threshold": threshold,
            "timestamp": now(),
        });
        said.push(Said { kind: "alert", payload });
    }
    device.alerting = over;
    said
}

#[cfg(test)]
mod tests {
    use super::Wobble;

    #[test]
    fn wobble_stays_in_the_unit_interval() {
        let mut rng = Wobble(42);
        let values: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.iter().any(|v| *v < 0.1) && values.iter().any(|v| *v > 0.9));
    }
}
