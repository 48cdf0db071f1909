//! Topic patterns (`devices/+/telemetry`) and the device id and kind of a
//! message's topic.
//!
//! A pattern has exactly one `+` level, the device id, and no `#`; the
//! kind of its messages is its last level (`telemetry`, `status`,
//! `alert`), or named after `=` (`sensors/+/data=telemetry`). A topic's id
//! becomes part of room names (`device:<id>`), so it must be what a room id
//! may be: 1 to 64 of `A-Z a-z 0-9 - _`. Anything else (a `+` or `#` a
//! broker let through, an empty level, a space, a colon, non-ASCII) is
//! refused, never mapped.

use std::fmt;

/// What a message on a topic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Status,
    Alert,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        match name {
            "telemetry" => Some(Kind::Telemetry),
            "status" => Some(Kind::Status),
            "alert" => Some(Kind::Alert),
            _ => None,
        }
    }

    /// The envelope type of its messages.
    pub fn envelope_type(self) -> &'static str {
        match self {
            Kind::Telemetry => "telemetry",
            Kind::Status => "device_status",
            Kind::Alert => "alert",
        }
    }
}

/// One subscription pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    levels: Vec<String>,
    /// Which level is the device id.
    id_at: usize,
    pub kind: Kind,
}

/// The defaults of `--mqtt-topic`.
pub const DEFAULT_PATTERNS: [&str; 3] = ["devices/+/telemetry", "devices/+/status", "devices/+/alert"];

impl Pattern {
    /// `FILTER` or `FILTER=KIND`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (filter, kind) = match text.rsplit_once('=') {
            Some((filter, kind)) => (filter, Some(kind)),
            None => (text, None),
        };
        let levels: Vec<String> = filter.split('/').map(str::to_owned).collect();
        let ids: Vec<usize> = (0..levels.len()).filter(|&i| levels[i] == "+").collect();
        if ids.len() != 1 {
            return Err(format!("{text:?}: a topic pattern needs exactly one + level (the device id)"));
        }
        if levels.iter().any(|l| l != "+" && (l.contains('+') || l.contains('#'))) {
            return Err(format!("{text:?}: + must be a whole level, and # is not supported"));
        }
        if filter.starts_with('$') {
            return Err(format!("{text:?}: topics starting with $ are the broker's"));
        }
        let kind_name = kind.unwrap_or(levels.last().map(String::as_str).unwrap_or_default());
        let kind = Kind::parse(kind_name).ok_or_else(|| {
            format!("{text:?}: the kind (last level, or after =) must be telemetry, status or alert")
        })?;
        Ok(Pattern { levels, id_at: ids[0], kind })
    }

    /// The filter to subscribe to.
    pub fn filter(&self) -> String {
        self.levels.join("/")
    }

    /// The device id in `topic`, if the topic matches: `Ok(None)` when it
    /// does not, `Err` when it does but its id cannot be a device's.
    fn id_in<'t>(&self, topic: &'t str) -> Result<Option<&'t str>, String> {
        let levels: Vec<&str> = topic.split('/').collect();
        if levels.len() != self.levels.len() {
            return Ok(None);
        }
        let literal_ok =
            self.levels.iter().zip(&levels).enumerate().all(|(i, (p, t))| i == self.id_at || p == t);
        if !literal_ok {
            return Ok(None);
        }
        let id = levels[self.id_at];
        check_id(id)?;
        Ok(Some(id))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter())
    }
}

/// A device id: what a room id may be.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).collect();
        Err(format!("device id {shown:?} is not 1 to 64 of A-Z a-z 0-9 - _"))
    }
}

/// Why a topic was not mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// No pattern matches it.
    NoMatch,
    /// A pattern matches, but its id cannot be a device's.
    BadId(String),
}

/// The kind and device id of a message on `topic`: the first pattern
/// that matches decides.
pub fn route<'t>(patterns: &[Pattern], topic: &'t str) -> Result<(Kind, &'t str), Unmapped> {
    let mut bad = None;
    for pattern in patterns {
        match pattern.id_in(topic) {
            Ok(Some(id)) => return Ok((pattern.kind, id)),
            Ok(None) => {}
            Err(why) => bad = bad.or(Some(why)),
        }
    }
    Err(bad.map_or(Unmapped::NoMatch, Unmapped::BadId))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Pattern> {
        DEFAULT_PATTERNS.iter().map(|p| Pattern::parse(p).unwrap()).collect()
    }

    #[test]
    fn the_default_topics_give_the_kind_and_the_id() {
        let patterns = defaults();
        assert_eq!(route(&patterns, "devices/greenhouse-1/telemetry"), Ok((Kind::Telemetry, "greenhouse-1")));
        assert_eq!(route(&patterns, "devices/A_b-9/status"), Ok((Kind::Status, "A_b-9")));
        assert_eq!(route(&patterns, "devices/x/alert"), Ok((Kind::Alert, "x")));
        let longest = "d".repeat(64);
        assert_eq!(
            route(&patterns, &format!("devices/{longest}/telemetry")),
            Ok((Kind::Telemetry, &*longest))
        );
    }

    #[test]
    fn odd_ids_are_refused_never_mapped() {
        // Brokers refuse wildcards in published topics, so these are
        // checked here rather than through a broker.
        let patterns = defaults();
        for odd in [
            "devices/+/telemetry",
            "devices/#/telemetry",
            "devices//telemetry",
            "devices/a b/telemetry",
            "devices/device:x/telemetry",
            "devices/global:1/status",
            "devices/../telemetry",
            "devices/x.y/telemetry",
            "devices/ห้อง/telemetry",
            "devices/tab\there/telemetry",
            "devices/nul\0/telemetry",
            &format!("devices/{}/telemetry", "d".repeat(65)),
        ] {
            assert!(matches!(route(&patterns, odd), Err(Unmapped::BadId(_))), "{odd:?}");
        }
        for other in [
            "devices/x",
            "devices/x/telemetry/extra",
            "devices/x/telemetry/",
            "/devices/x/telemetry",
            "Devices/x/telemetry",
            "devices/x/command",
            "devices/x/TELEMETRY",
            "",
            "$SYS/broker/uptime",
        ] {
            assert_eq!(route(&patterns, other), Err(Unmapped::NoMatch), "{other:?}");
        }
    }

    #[test]
    fn patterns_name_their_kind_and_need_one_plus() {
        let custom = Pattern::parse("site/plant-7/+/data=telemetry").unwrap();
        assert_eq!((custom.kind, custom.filter().as_str()), (Kind::Telemetry, "site/plant-7/+/data"));
        assert_eq!(route(&[custom], "site/plant-7/pump-2/data"), Ok((Kind::Telemetry, "pump-2")));
        for bad in [
            "devices/x/telemetry",
            "devices/+/+/telemetry",
            "devices/#",
            "devices/+/data",
            "devices/+/telemetry=logs",
            "devices/a+/telemetry",
            "$share/g/devices/+/telemetry",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
