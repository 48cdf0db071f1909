//! The JSON telemetry workload of the permessage-deflate benches
//! (`benches/deflate.rs`, `benches/deflate_vs_node.rs`), generated
//! deterministically: a fixed-seed SplitMix64 gives the same messages on
//! every run.

/// SplitMix64: a fixed seed gives the same messages on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One sensor reading, as a JSON object. `full` adds every optional field
/// (the batches carry them all).
fn reading(rng: &mut Rng, ts: u64, full: bool) -> (u64, String) {
    let device = 1 + rng.below(200);
    let temperature = 1500 + rng.below(1500); // 15.00-29.99 °C
    let humidity = 250 + rng.below(500); // 25.0-74.9 %
    let battery = 5 + rng.below(96);
    let mut s = format!(
        "{{\"device_id\":\"dev-{device:04}\",\"temperature\":{}.{:02},\"humidity\":{}.{},\"battery\":{battery},\"ts\":{ts}",
        temperature / 100,
        temperature % 100,
        humidity / 10,
        humidity % 10,
    );
    if full || rng.below(2) == 0 {
        let rssi = 40 + rng.below(50);
        s.push_str(&format!(",\"rssi\":-{rssi},\"fw\":\"2.4.{}\"", rng.below(4)));
    }
    if full || rng.below(3) == 0 {
        let (lat, lon) = (137_000 + rng.below(2000), 1_004_000 + rng.below(2000));
        s.push_str(&format!(
            ",\"location\":{{\"lat\":{}.{:04},\"lon\":{}.{:04},\"floor\":{}}}",
            lat / 10_000,
            lat % 10_000,
            lon / 10_000,
            lon % 10_000,
            rng.below(12),
        ));
    }
    let status = match rng.below(10) {
        0 => "warning",
        1 if battery < 20 => "battery_low",
        _ => "ok",
    };
    if full || status != "ok" {
        s.push_str(&format!(",\"status\":\"{status}\""));
    }
    if full {
        let (pressure, co2) = (9800 + rng.below(400), 400 + rng.below(800));
        s.push_str(&format!(
            ",\"pressure\":{}.{},\"co2\":{co2},\"sensor\":\"bme280\",\"uptime_s\":{}",
            pressure / 10,
            pressure % 10,
            rng.below(10_000_000),
        ));
    }
    s.push('}');
    (device, s)
}

/// 1000 single readings, each in its room envelope.
pub fn small_messages() -> Vec<String> {
    let mut rng = Rng(42);
    let mut ts = 1_795_000_000_000u64; // ms since the epoch, late 2026
    (0..1000)
        .map(|_| {
            ts += rng.below(50);
            let (device, r) = reading(&mut rng, ts, false);
            format!(
                "{{\"type\":\"telemetry\",\"room\":\"device:{device}\",\"payload\":{r},\"timestamp\":{}}}",
                ts + 1 + rng.below(5)
            )
        })
        .collect()
}

/// 64 batches of 64 full readings each.
pub fn batch_messages() -> Vec<String> {
    let mut rng = Rng(7);
    let mut ts = 1_795_000_000_000u64;
    (0..64)
        .map(|n| {
            let readings: Vec<String> = (0..64)
                .map(|_| {
                    ts += rng.below(20);
                    reading(&mut rng, ts, true).1
                })
                .collect();
            format!(
                "{{\"type\":\"telemetry_batch\",\"room\":\"site:7\",\"seq\":{n},\"count\":64,\"readings\":[{}],\"timestamp\":{}}}",
                readings.join(","),
                ts + 3
            )
        })
        .collect()
}
