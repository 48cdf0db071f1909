//! A few simulated devices, so the dashboard is alive the moment it opens.
//! Each second every online device publishes telemetry to `device:<id>`,
//! `group:<group>` and `global` (one encoded frame for all three rooms);
//! now and then a device drops offline for a while (`device_status`), and
//! a value crossing its threshold raises an `alert`.

use std::time::Duration;

use sabai::hub::Hub;
use serde_json::json;

use crate::protocol::{envelope, now_ms};

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
    let mut rng = Wobble(now_ms() | 1);
    let mut devices = devices();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for device in &mut devices {
            step(&hub, device, &mut rng);
        }
    }
}

fn to_rooms(hub: &Hub, device: &Device, text: String) {
    // One frame (and, with deflate, one compression) for all three rooms.
    let prepared = hub.prepare(text);
    for room in [format!("device:{}", device.id), format!("group:{}", device.group), "global".to_owned()] {
        hub.publish_prepared(&room, &prepared);
    }
}

fn status(hub: &Hub, device: &Device, online: bool) {
    let payload = json!({ "device": device.id, "name": device.name, "status": if online { "online" } else { "offline" } });
    to_rooms(hub, device, envelope("device_status", Some(&format!("device:{}", device.id)), payload, None));
}

fn step(hub: &Hub, device: &mut Device, rng: &mut Wobble) {
    let room = format!("device:{}", device.id);
    if device.offline_for > 0 {
        device.offline_for -= 1;
        if device.offline_for == 0 {
            status(hub, device, true);
        }
        return;
    }
    // About once in three minutes per device: drop out for 5 to 15 s.
    if rng.unit() < 1.0 / 180.0 {
        device.offline_for = 5 + (rng.unit() * 10.0) as u32;
        status(hub, device, false);
        return;
    }
    device.temperature = (device.temperature + rng.step(0.6)).clamp(-10.0, 40.0);
    device.humidity = (device.humidity + rng.step(1.5)).clamp(5.0, 99.0);
    device.battery = (device.battery - rng.unit() * 0.05).max(0.0);
    let payload = json!({
        "device": device.id,
        "name": device.name,
        "group": device.group,
        "temperature": (device.temperature * 10.0).round() / 10.0,
        "humidity": (device.humidity * 10.0).round() / 10.0,
        "battery": device.battery.round(),
    });
    to_rooms(hub, device, envelope("telemetry", Some(&room), payload, None));
    // Alert on the rising edge only, not every second above the line.
    let over = device.temperature > TEMPERATURE_ALERT || device.humidity > HUMIDITY_ALERT;
    if over && !device.alerting {
        let (metric, value, threshold) = if device.temperature > TEMPERATURE_ALERT {
            ("temperature", device.temperature, TEMPERATURE_ALERT)
        } else {
            ("humidity", device.humidity, HUMIDITY_ALERT)
        };
        let message = format!("{}: {metric} {value:.1} over {threshold}", device.name);
        let payload = json!({ "device": device.id, "metric": metric, "value": (value * 10.0).round() / 10.0, "threshold": threshold, "message": message });
        to_rooms(hub, device, envelope("alert", Some(&room), payload, None));
    }
    device.alerting = over;
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
