//! The devices this node knows: those of the `--device-registry` file,
//! the simulator's, and every device whose status or telemetry reached
//! it (over MQTT, from the simulator, or through POST /publish). `GET
//! /devices` lists them; `subscribe` says which `device:` rooms name none
//! of them; a strict registry refuses the others.
//!
//! The registry file is TOML, or JSON when its name ends in `.json`:
//!
//! ```toml
//! strict = true            # devices not listed here are refused
//! [devices.greenhouse-1]
//! group = "greenhouse"     # its group: room group:greenhouse
//! name = "Greenhouse north"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{json, Value};

/// Devices remembered at most (those of the registry file always are):
/// a flood of made-up ids cannot grow the list without bound.
const MAX_DEVICES: usize = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    devices: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub group: Option<String>,
    pub name: Option<String>,
}

/// What is known of one device.
#[derive(Clone, Debug, Default)]
struct Device {
    group: Option<String>,
    name: Option<String>,
    /// From the registry file (or the simulator), not only seen.
    registered: bool,
    online: Option<bool>,
    last_seen: Option<SystemTime>,
    last_seq: Option<u64>,
}

/// The devices a node knows.
#[derive(Debug, Default)]
pub struct Devices {
    strict: bool,
    known: Mutex<HashMap<String, Device>>,
}

impl Devices {
    /// The devices of a registry file, or none.
    pub fn load(path: Option<&Path>) -> Result<Devices, String> {
        let Some(path) = path else { return Ok(Devices::default()) };
        let what = |e: String| format!("--device-registry {}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| what(e.to_string()))?;
        let file: RegistryFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| what(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| what(e.to_string()))?
        };
        let devices = Devices { strict: file.strict, known: Mutex::default() };
        for (id, entry) in file.devices {
            crate::mqtt::topic::check_id(&id).map_err(what)?;
            if let Some(group) = &entry.group {
                crate::mqtt::topic::check_id(group).map_err(|_| {
                    what(format!("group {group:?} of {id:?} is not 1 to 64 of A-Z a-z 0-9 - _"))
                })?;
            }
            devices.register(&id, entry);
        }
        Ok(devices)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Device>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a device that is known before it says anything.
    pub fn register(&self, id: &str, entry: Entry) {
        let mut known = self.lock();
        let device = known.entry(id.to_owned()).or_default();
        device.registered = true;
        device.group = entry.group.or(device.group.take());
        device.name = entry.name.or(device.name.take());
    }

    /// Whether devices missing from the registry are refused.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Whether a message from (or a command to) this device may pass.
    pub fn allows(&self, id: &str) -> bool {
        !self.strict || self.lock().get(id).is_some_and(|d| d.registered)
    }

    pub fn is_known(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Its group: the registry's, else the one its readings' tags named.
    pub fn group_of(&self, id: &str, tagged: Option<&str>) -> Option<String> {
        let known = self.lock();
        let registered = known.get(id).filter(|d| d.registered).and_then(|d| d.group.clone());
        registered.or(tagged.map(str::to_owned)).or_else(|| known.get(id).and_then(|d| d.group.clone()))
    }

    /// A reading or a status arrived (a retained status too).
    pub fn saw(
        &self,
        id: &str,
        group: Option<&str>,
        online: Option<bool>,
        seq: Option<u64>,
        name: Option<&str>,
    ) {
        let mut known = self.lock();
        if !known.contains_key(id) && known.len() >= MAX_DEVICES {
            return;
        }
        let device = known.entry(id.to_owned()).or_default();
        device.last_seen = Some(SystemTime::now());
        if let Some(online) = online {
            device.online = Some(online);
        } else {
            // A reading comes from a device that is on.
            device.online = Some(true);
            device.last_seq = seq.or(device.last_seq);
        }
        if !device.registered || device.group.is_none() {
            if let Some(group) = group {
                device.group = Some(group.to_owned());
            }
        }
        if device.name.is_none() {
            device.name = name.map(str::to_owned);
        }
    }

    /// Learns from an envelope's payload on its way into the rooms.
    pub fn observe(&self, kind: &str, payload: &Value) {
        let Some(id) = payload["device_id"].as_str() else { return };
        if crate::mqtt::topic::check_id(id).is_err() {
            return;
        }
        let tags = &payload["tags"];
        match kind {
            "telemetry" => {
                self.saw(id, tags["group"].as_str(), None, payload["seq"].as_u64(), tags["name"].as_str())
            }
            "device_status" => {
                let online = payload["status"].as_str().map(|s| s == "online");
                self.saw(id, None, online.or(Some(false)), None, None)
            }
            _ => {}
        }
    }

    /// `GET /devices`: every device, by id.
    pub fn list(&self) -> Value {
        let known = self.lock();
        let mut ids: Vec<&String> = known.keys().collect();
        ids.sort();
        let devices: Vec<Value> = ids
            .into_iter()
            .map(|id| {
                let d = &known[id];
                json!({
                    "device_id": id,
                    "group": d.group,
                    "name": d.name,
                    "status": d.online.map(|on| if on { "online" } else { "offline" }),
                    "last_seen": d.last_seen.map(crate::mqtt::readings::format_time),
                    "last_seq": d.last_seq,
                    "registered": d.registered,
                })
            })
            .collect();
        json!({ "devices": devices, "strict": self.strict })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_file_names_groups_and_may_be_strict() {
        let dir = std::env::temp_dir().join(format!("sabai-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("devices.toml");
        std::fs::write(&toml, "strict = true\n[devices.gh-1]\ngroup = \"greenhouse\"\nname = \"North\"\n")
            .unwrap();
        let devices = Devices::load(Some(&toml)).unwrap();
        assert!(devices.strict() && devices.allows("gh-1") && !devices.allows("gh-2"));
        assert_eq!(
            devices.group_of("gh-1", Some("elsewhere")).as_deref(),
            Some("greenhouse"),
            "the file wins"
        );
        let json = dir.join("devices.json");
        std::fs::write(&json, r#"{"devices": {"x": {"group": "lab"}}}"#).unwrap();
        let devices = Devices::load(Some(&json)).unwrap();
        assert!(!devices.strict() && devices.allows("never-seen"));
        for bad in
            [r#"{"devices": {"a b": {}}}"#, r#"{"devices": {"x": {"group": "a:b"}}}"#, r#"{"strickt": true}"#]
        {
            std::fs::write(&json, bad).unwrap();
            assert!(Devices::load(Some(&json)).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readings_and_statuses_fill_the_list() {
        let devices = Devices::default();
        assert!(!devices.is_known("d1"));
        devices.observe(
            "telemetry",
            &json!({"device_id": "d1", "seq": 4, "tags": {"group": "lab"}, "fields": {}}),
        );
        devices.observe("device_status", &json!({"device_id": "d2", "status": "offline"}));
        let list = devices.list();
        assert_eq!(list["devices"][0]["device_id"], "d1");
        assert_eq!(list["devices"][0]["last_seq"], 4);
        assert_eq!(list["devices"][0]["group"], "lab");
        assert_eq!(list["devices"][0]["status"], "online");
        assert_eq!(list["devices"][1]["status"], "offline");
        assert_eq!(
            devices.group_of("d1", None).as_deref(),
            Some("lab"),
            "remembered for statuses and alerts"
        );
    }
}
