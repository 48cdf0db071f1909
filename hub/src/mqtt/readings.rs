//! What devices send, checked and put in the design's shapes: telemetry
//! `{device_id, timestamp, fields, tags, seq?}`, device_status
//! `{device_id, status, timestamp}` and alert `{alert_id, device_id,
//! rule_name, severity, field, value, threshold, timestamp}`
//! (docs/protocol.md). Anything else is [`Malformed`], by kind, and never
//! reaches a room.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::topic::Kind;

/// Fields a reading may carry.
const MAX_FIELDS: usize = 64;
/// Tags a reading may carry.
const MAX_TAGS: usize = 32;
/// Longest field or tag name, tag value, rule name, severity.
const MAX_NAME: usize = 64;
const MAX_TAG_VALUE: usize = 256;

/// Why a message was dropped. Each kind is counted in /metrics
/// (`sabai_hub_mqtt_malformed_total{kind=…}`) and logged once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The topic matches no pattern, or its device id cannot be one.
    BadTopic,
    /// Over `--mqtt-max-payload`.
    TooLarge,
    NotUtf8,
    NotJson,
    /// JSON, but not the shape of its kind (a field that is not a number,
    /// a device_id that is not the topic's, a bad timestamp...).
    BadShape,
    /// Not in the `--device-registry` of a strict registry.
    UnknownDevice,
}

impl Malformed {
    pub const ALL: [Malformed; 6] = [
        Malformed::BadTopic,
        Malformed::TooLarge,
        Malformed::NotUtf8,
        Malformed::NotJson,
        Malformed::BadShape,
        Malformed::UnknownDevice,
    ];

    /// Its label in /metrics and the logs.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::BadTopic => "bad_topic",
            Malformed::TooLarge => "too_large",
            Malformed::NotUtf8 => "not_utf8",
            Malformed::NotJson => "not_json",
            Malformed::BadShape => "bad_shape",
            Malformed::UnknownDevice => "unknown_device",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A message, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    Telemetry {
        device_id: String,
        timestamp: String,
        /// Names to finite numbers.
        fields: Map<String, Value>,
        tags: Map<String, Value>,
        seq: Option<u64>,
    },
    Status {
        device_id: String,
        online: bool,
        timestamp: String,
    },
    /// A device's own alert, as the design shapes it.
    Alert {
        payload: Value,
    },
}

impl Reading {
    /// The payload of its envelope.
    pub fn payload(&self) -> Value {
        match self {
            Reading::Telemetry { device_id, timestamp, fields, tags, seq } => {
                let mut payload =
                    json!({ "device_id": device_id, "timestamp": timestamp, "fields": fields, "tags": tags });
                if let Some(seq) = seq {
                    payload["seq"] = json!(seq);
                }
                payload
            }
            Reading::Status { device_id, online, timestamp } => json!({
                "device_id": device_id,
                "status": if *online { "online" } else { "offline" },
                "timestamp": timestamp,
            }),
            Reading::Alert { payload } => payload.clone(),
        }
    }
}

/// Checks a message of `kind` from device `id` (the topic's).
/// `alert_id` makes an id for a device alert that has none.
pub fn parse(
    kind: Kind,
    id: &str,
    bytes: &[u8],
    max: usize,
    alert_id: impl FnOnce() -> String,
) -> Result<Reading, (Malformed, String)> {
    if bytes.len() > max {
        return Err((Malformed::TooLarge, format!("{} bytes, over {max}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| (Malformed::NotUtf8, e.to_string()))?;
    // The bare words of a last will, as many devices send them.
    if kind == Kind::Status {
        if let Some(online) = bare_status(text) {
            return Ok(Reading::Status {
                device_id: id.to_owned(),
                online,
                timestamp: crate::protocol::now(),
            });
        }
    }
    let value: Value = serde_json::from_str(text).map_err(|e| (Malformed::NotJson, e.to_string()))?;
    let shape = |why: String| (Malformed::BadShape, why);
    let object = value.as_object().ok_or_else(|| shape("not a JSON object".into()))?;
    match object.get("device_id") {
        None => {}
        Some(Value::String(given)) if given == id => {}
        Some(other) => return Err(shape(format!("device_id {other} is not the topic's {id:?}"))),
    }
    let timestamp = timestamp(object.get("timestamp")).map_err(shape)?;
    match kind {
        Kind::Telemetry => {
            let fields = fields(object.get("fields")).map_err(shape)?;
            let tags = tags(object.get("tags")).map_err(shape)?;
            let seq = match object.get("seq") {
                None | Some(Value::Null) => None,
                Some(seq) => {
                    Some(seq.as_u64().ok_or_else(|| shape(format!("seq {seq} is not an integer >= 0")))?)
                }
            };
            Ok(Reading::Telemetry { device_id: id.to_owned(), timestamp, fields, tags, seq })
        }
        Kind::Status => {
            let status = object.get("status").and_then(Value::as_str).and_then(bare_status);
            let online = status.ok_or_else(|| shape("status must be \"online\" or \"offline\"".into()))?;
            Ok(Reading::Status { device_id: id.to_owned(), online, timestamp })
        }
        Kind::Alert => {
            let name = |key: &str, required: bool| -> Result<Value, (Malformed, String)> {
                match object.get(key) {
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => Ok(json!(s)),
                    None | Some(Value::Null) if !required => Ok(Value::Null),
                    other => {
                        Err(shape(format!("{key} must be a string of 1 to {MAX_NAME} bytes, not {other:?}")))
                    }
                }
            };
            let number = |key: &str| -> Result<Value, (Malformed, String)> {
                match object.get(key) {
                    None | Some(Value::Null) => Ok(Value::Null),
                    Some(Value::Number(n)) => Ok(Value::Number(n.clone())),
                    Some(other) => Err(shape(format!("{key} must be a number, not {other}"))),
                }
            };
            let given_id = name("alert_id", false)?;
            let payload = json!({
                "alert_id": if given_id.is_null() { json!(alert_id()) } else { given_id },
                "device_id": id,
                "rule_name": name("rule_name", true)?,
                "severity": name("severity", true)?,
                "field": name("field", false)?,
                "value": number("value")?,
                "threshold": number("threshold")?,
                "timestamp": timestamp,
            });
            Ok(Reading::Alert { payload })
        }
    }
}

fn bare_status(text: &str) -> Option<bool> {
    match text.trim() {
        "online" => Some(true),
        "offline" => Some(false),
        _ => None,
    }
}

/// RFC 3339 in UTC (`…Z`), or milliseconds since the Unix epoch; written
/// back as RFC 3339 with milliseconds. Absent: now.
fn timestamp(value: Option<&Value>) -> Result<String, String> {
    let at = match value {
        None | Some(Value::Null) => return Ok(crate::protocol::now()),
        Some(Value::String(text)) => humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("timestamp {text:?} is not RFC 3339 in UTC: {e}"))?,
        Some(Value::Number(ms)) => {
            // 2001 to 2286 in milliseconds: seconds or microseconds are refused.
            let ms = ms.as_u64().filter(|ms| (1_000_000_000_000..10_000_000_000_000).contains(ms));
            let ms = ms.ok_or("a numeric timestamp is milliseconds since 1970 (13 digits)")?;
            UNIX_EPOCH + Duration::from_millis(ms)
        }
        Some(other) => return Err(format!("timestamp {other} is neither RFC 3339 nor milliseconds")),
    };
    Ok(format_time(at))
}

/// RFC 3339, UTC, milliseconds: the envelopes' format.
pub fn format_time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn fields(value: Option<&Value>) -> Result<Map<String, Value>, String> {
    let fields = value.and_then(Value::as_object).ok_or("fields must be an object of name: number")?;
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return Err(format!("fields must have 1 to {MAX_FIELDS} entries"));
    }
    for (name, value) in fields {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(format!("field name {name:?} is not 1 to {MAX_NAME} bytes"));
        }
        if !value.as_f64().is_some_and(f64::is_finite) {
            return Err(format!("field {name:?} is {value}, not a number"));
        }
    }
    Ok(fields.clone())
}

fn tags(value: Option<&Value>) -> Result<Map<String, Value>, String> {
    let tags = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(tags)) => tags,
        Some(other) => return Err(format!("tags must be an object of name: string, not {other}")),
    };
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    for (name, value) in tags {
        let ok = value.as_str().is_some_and(|v| v.len() <= MAX_TAG_VALUE);
        if name.is_empty() || name.len() > MAX_NAME || !ok {
            return Err(format!("tag {name:?} must be a string of at most {MAX_TAG_VALUE} bytes"));
        }
    }
    Ok(tags.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(text: &str) -> Result<Reading, (Malformed, String)> {
        parse(Kind::Telemetry, "gh-1", text.as_bytes(), 4096, || "a1".into())
    }

    #[test]
    fn telemetry_in_the_designs_shape_is_kept_and_normalised() {
        let reading = telemetry(
            r#"{"device_id":"gh-1","timestamp":"2026-12-03T15:33:57Z","fields":{"temperature":28.7,"on":1},
                "tags":{"group":"greenhouse"},"seq":7,"extra":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(
            reading.payload(),
            json!({"device_id": "gh-1", "timestamp": "2026-12-03T15:33:57.000Z",
                   "fields": {"temperature": 28.7, "on": 1}, "tags": {"group": "greenhouse"}, "seq": 7})
        );
        // device_id from the topic, epoch milliseconds as RFC 3339, no seq.
        let bare = telemetry(r#"{"timestamp":1764776037123,"fields":{"t":1}}"#).unwrap().payload();
        assert_eq!(bare["device_id"], "gh-1");
        assert_eq!(bare["timestamp"], "2025-12-03T15:33:57.123Z");
        assert!(bare.get("seq").is_none() && bare["tags"] == json!({}));
    }

    #[test]
    fn each_kind_of_bad_input_is_named() {
        let kind = |text: &str| telemetry(text).unwrap_err().0;
        assert_eq!(kind("not json"), Malformed::NotJson);
        assert_eq!(kind("[1,2]"), Malformed::BadShape);
        for bad in [
            r#"{"fields":{"t":"28.7"}}"#,
            r#"{"fields":{"t":true}}"#,
            r#"{"fields":{}}"#,
            r#"{"fields":[1]}"#,
            r#"{}"#,
            r#"{"fields":{"t":1},"tags":{"g":5}}"#,
            r#"{"fields":{"t":1},"seq":-1}"#,
            r#"{"fields":{"t":1},"seq":"3"}"#,
            r#"{"fields":{"t":1},"device_id":"other"}"#,
            r#"{"fields":{"t":1},"timestamp":"yesterday"}"#,
            r#"{"fields":{"t":1},"timestamp":1764776037}"#,
        ] {
            assert_eq!(kind(bad), Malformed::BadShape, "{bad}");
        }
        let invalid = parse(Kind::Telemetry, "x", b"{\"fields\":{\"t\":1}}\xff", 4096, String::new);
        assert_eq!(invalid.unwrap_err().0, Malformed::NotUtf8);
        let big = format!(r#"{{"fields":{{"t":1}},"pad":"{}"}}"#, "x".repeat(5000));
        assert_eq!(kind(&big), Malformed::TooLarge);
    }

    #[test]
    fn statuses_take_json_or_the_bare_words() {
        let status = |text: &str| parse(Kind::Status, "d", text.as_bytes(), 4096, String::new);
        assert!(matches!(status("offline"), Ok(Reading::Status { online: false, .. })));
        assert!(matches!(status(r#"{"status":"online"}"#), Ok(Reading::Status { online: true, .. })));
        assert_eq!(status(r#"{"status":"sleeping"}"#).unwrap_err().0, Malformed::BadShape);
        assert_eq!(status("asleep").unwrap_err().0, Malformed::NotJson);
    }

    #[test]
    fn device_alerts_get_an_id_when_they_have_none() {
        let alert = |text: &str| parse(Kind::Alert, "d", text.as_bytes(), 4096, || "made-1".into());
        let payload = alert(r#"{"rule_name":"door open","severity":"critical"}"#).unwrap().payload();
        assert_eq!(
            (payload["alert_id"].as_str(), payload["device_id"].as_str()),
            (Some("made-1"), Some("d"))
        );
        assert_eq!(alert(r#"{"rule_name":"x"}"#).unwrap_err().0, Malformed::BadShape);
        assert_eq!(
            alert(r#"{"rule_name":"x","severity":"s","value":"high"}"#).unwrap_err().0,
            Malformed::BadShape
        );
    }
}
