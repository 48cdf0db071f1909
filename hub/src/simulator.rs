//! A few simulated devices, so the dashboard is alive the moment it opens.
//! Each second every online device publishes telemetry to `device:<id>`,
//! `group:<group>` and `global` (one publication to the three rooms, so a
//! dashboard in all three gets it once); now and then a device drops
//! offline for a while (`device_status`), and a value crossing its
//! threshold raises an `alert`. Each reading carries the device's `seq`,
//! so a client can check that it missed none.

use std::time::Duration;

use sabai::hub::{Hub, Publish};
use serde_json::json;

use crate::protocol::{envelope, now};

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

pub async fn run(hub: Hub) {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Wobble(seed | 1);
    let mut devices = devices();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for device in &mut devices {
            for text in step(device, &mut rng) {
                // A node that cannot reach Redis still delivers locally;
                // the error is counted by the engine.
                let _ = hub.publish_with(to_rooms(device, text)).await;
            }
        }
    }
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

fn status(device: &Device, online: bool) -> String {
    let status = if online { "online" } else { "offline" };
    let payload = json!({ "device_id": device.id, "status": status, "timestamp": now() });
    envelope("device_status", Some(&format!("device:{}", device.id)), payload, None)
}

/// What a device says this second (nothing while offline).
fn step(device: &mut Device, rng: &mut Wobble) -> Vec<String> {
    let room = format!("device:{}", device.id);
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
    let mut said = vec![envelope("telemetry", Some(&room), payload, None)];
    // Alert on the rising edge only, not every second above the line.
    let over = device.temperature > TEMPERATURE_ALERT || device.humidity > HUMIDITY_ALERT;
    if over && !device.alerting {
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
        said.push(envelope("alert", Some(&room), payload, None));
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
