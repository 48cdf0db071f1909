//! Threshold rules on incoming telemetry (`--alert-rule
//! 'temperature>30:warning'`): a reading whose field crosses a rule's
//! threshold raises an `alert`, once, on the rising edge; the device must
//! go back under the line before that rule alerts again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Above => value > threshold,
            Op::AtLeast => value >= threshold,
            Op::Below => value < threshold,
            Op::AtMost => value <= threshold,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::AtLeast => ">=",
            Op::Below => "<",
            Op::AtMost => "<=",
        }
    }
}

/// `FIELD OP THRESHOLD[:SEVERITY]`, OP one of `>`, `>=`, `<`, `<=`;
/// severity `warning` when not given. Its name is `FIELD OP THRESHOLD`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub field: String,
    op: Op,
    pub threshold: f64,
    pub severity: String,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        let bad = |why: &str| {
            format!("alert rule {text:?}: {why} (expected FIELD>THRESHOLD[:SEVERITY], e.g. temperature>30:warning)")
        };
        let (condition, severity) = match text.rsplit_once(':') {
            Some((condition, severity)) => (condition, severity.trim()),
            None => (text, "warning"),
        };
        let at = condition.find(['<', '>']).ok_or_else(|| bad("no < or >"))?;
        let (field, rest) = condition.split_at(at);
        let (op, threshold) = match rest.as_bytes() {
            [b'>', b'=', ..] => (Op::AtLeast, &rest[2..]),
            [b'<', b'=', ..] => (Op::AtMost, &rest[2..]),
            [b'>', ..] => (Op::Above, &rest[1..]),
            _ => (Op::Below, &rest[1..]),
        };
        let field = field.trim();
        if field.is_empty() || field.len() > 64 {
            return Err(bad("the field name must be 1 to 64 bytes"));
        }
        let threshold: f64 = threshold.trim().parse().map_err(|_| bad("the threshold is not a number"))?;
        if !threshold.is_finite() {
            return Err(bad("the threshold is not a finite number"));
        }
        let severity_ok = !severity.is_empty()
            && severity.len() <= 32
            && severity.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !severity_ok {
            return Err(bad("the severity must be a word (info, warning, critical...)"));
        }
        Ok(Rule { field: field.to_owned(), op, threshold, severity: severity.to_owned() })
    }

    /// `temperature > 30`.
    pub fn name(&self) -> String {
        format!("{} {} {}", self.field, self.op.symbol(), self.threshold)
    }
}

/// The rules and, per device and rule, whether it is over the line now.
#[derive(Debug, Default)]
pub struct Alerts {
    rules: Vec<Rule>,
    over: Mutex<HashSet<(String, usize)>>,
    raised: AtomicU64,
    /// Makes alert ids unique across nodes.
    node: String,
}

impl Alerts {
    pub fn new(rules: Vec<Rule>, node: &str) -> Alerts {
        Alerts { rules, node: node.to_owned(), ..Alerts::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Alerts raised so far.
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// The alert payloads a reading raises: one per rule it newly
    /// crosses. Each names the reading (`timestamp`, and `seq` when the
    /// reading has one) so a chart can point at it.
    pub fn evaluate(
        &self,
        device_id: &str,
        fields: &Map<String, Value>,
        timestamp: &str,
        seq: Option<u64>,
    ) -> Vec<Value> {
        let mut raised = Vec::new();
        if self.rules.is_empty() {
            return raised;
        }
        let mut over = self.over.lock().unwrap_or_else(|p| p.into_inner());
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(value) = fields.get(&rule.field).and_then(Value::as_f64) else { continue };
            let key = (device_id.to_owned(), i);
            if !rule.op.holds(value, rule.threshold) {
                over.remove(&key);
                continue;
            }
            if !over.insert(key) {
                continue;
            }
            let n = self.raised.fetch_add(1, Ordering::Relaxed) + 1;
            let mut alert = json!({
                "alert_id": format!("{}-{n}", self.node),
                "device_id": device_id,
                "rule_name": rule.name(),
                "severity": rule.severity,
                "field": rule.field,
                "value": value,
                "threshold": rule.threshold,
                "timestamp": timestamp,
            });
            if let Some(seq) = seq {
                alert["seq"] = json!(seq);
            }
            raised.push(alert);
        }
        // Bounded: a flood of device ids forgets who was over the line
        // (each may alert once more) rather than growing without end.
        if over.len() > 100_000 {
            over.clear();
        }
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_their_operator_and_severity() {
        let rule = Rule::parse("temperature>30:warning").unwrap();
        assert_eq!(
            (rule.field.as_str(), rule.threshold, rule.severity.as_str()),
            ("temperature", 30.0, "warning")
        );
        assert_eq!(rule.name(), "temperature > 30");
        assert_eq!(Rule::parse(" battery <= 15.5 : critical ").unwrap().name(), "battery <= 15.5");
        assert_eq!(Rule::parse("humidity>=80").unwrap().severity, "warning");
        for bad in ["temperature", ">30", "t>x", "t>30:", "t>30:very bad", "t>inf", "t=30"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_alert_is_raised_on_the_rising_edge_only() {
        let alerts =
            Alerts::new(vec![Rule::parse("t>30:critical").unwrap(), Rule::parse("b<10").unwrap()], "n1");
        let reading = |t: f64| {
            let fields = json!({"t": t, "b": 50}).as_object().unwrap().clone();
            alerts.evaluate("d", &fields, "2026-01-01T00:00:00.000Z", Some(t as u64))
        };
        assert!(reading(29.0).is_empty());
        let raised = reading(31.5);
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0],
            json!({"alert_id": "n1-1", "device_id": "d", "rule_name": "t > 30", "severity": "critical",
                   "field": "t", "value": 31.5, "threshold": 30.0,
                   "timestamp": "2026-01-01T00:00:00.000Z", "seq": 31})
        );
        assert!(reading(33.0).is_empty(), "still over: no second alert");
        assert!(reading(30.0).is_empty());
        assert_eq!(reading(30.5).len(), 1, "back under, then over again");
        let other = alerts.evaluate("e", json!({"t": 40}).as_object().unwrap(), "x", None);
        assert_eq!(other.len(), 1, "each device has its own edge");
        assert!(other[0].get("seq").is_none());
        assert_eq!(alerts.raised(), 3);
    }
}
