//! How a [`RedisEngine`](crate::RedisEngine) connects, names its keys,
//! and retries.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The settings of a [`RedisEngine`](crate::RedisEngine).
///
/// ```
/// use std::time::Duration;
/// use sabai_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:secret@127.0.0.1:6379/")
///     .prefix("chat:")
///     .presence_ttl(Duration::from_secs(20))
///     .wait_for_redis(true);
/// assert_eq!(config.redacted_url(), "redis://:***@127.0.0.1:6379/");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (the
    /// server's certificate checked against [`ca_file`](Self::ca_file), or
    /// the system's roots if there is none).
    pub url: String,
    /// A PEM file of the certificate authorities to trust for `rediss://`
    /// instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Put before every key and channel name (`sabai:`), so that several
    /// applications can share one Redis.
    pub prefix: String,
    /// This node's name in presence entries and publication ids: 1 to 64
    /// visible ASCII characters, no `|`. Random by default.
    pub node_id: String,
    /// Presence entries (and this node's entry in the node registry)
    /// expire this long after the node last refreshed them (30 s); the
    /// node refreshes them every third of it.
    pub presence_ttl: Duration,
    /// How long to wait between attempts to reach Redis.
    pub backoff: Backoff,
    /// Every command, connection attempt and subscription waits at most
    /// this long (2 s); past it, Redis counts as unreachable.
    pub command_timeout: Duration,
    /// [`connect`](crate::RedisEngine::connect) waits (retrying with
    /// [`backoff`](Self::backoff)) until Redis answers, instead of failing
    /// at once. A refused password still fails at once.
    pub wait_for_redis: bool,
    /// The most publications fetched from a room's history to fill one gap
    /// (1 000); a larger gap resets the room instead (see
    /// [`Node::reset`](sabai::hub::Node::reset)).
    pub fill_limit: usize,
}

impl RedisConfig {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            ca_file: None,
            prefix: "sabai:".into(),
            node_id: random_node_id(),
            presence_ttl: Duration::from_secs(30),
            backoff: Backoff::default(),
            command_timeout: Duration::from_secs(2),
            wait_for_redis: false,
            fill_limit: 1000,
        }
    }

    /// Trusts the certificate authorities in this PEM file (`rediss://`).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> RedisConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the key and channel prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisConfig {
        self.prefix = prefix.into();
        self
    }

    /// Names this node (see [`node_id`](Self::node_id) for what is allowed).
    pub fn node_id(mut self, id: impl Into<String>) -> RedisConfig {
        self.node_id = id.into();
        self
    }

    /// Sets how long presence entries outlive their last refresh.
    pub fn presence_ttl(mut self, ttl: Duration) -> RedisConfig {
        self.presence_ttl = ttl;
        self
    }

    /// Sets the reconnect backoff.
    pub fn backoff(mut self, backoff: Backoff) -> RedisConfig {
        self.backoff = backoff;
        self
    }

    /// Sets the timeout of every Redis call.
    pub fn command_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.command_timeout = timeout;
        self
    }

    /// Waits for Redis at start instead of failing.
    pub fn wait_for_redis(mut self, wait: bool) -> RedisConfig {
        self.wait_for_redis = wait;
        self
    }

    /// Sets the largest gap filled from history.
    pub fn fill_limit(mut self, limit: usize) -> RedisConfig {
        self.fill_limit = limit;
        self
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// Checks what the engine relies on: a usable node id and timers.
    pub(crate) fn check(&self) -> Result<(), String> {
        let id = &self.node_id;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'|') {
            return Err(format!("node id {id:?}: 1 to 64 visible ASCII characters, no '|'"));
        }
        if self.presence_ttl < Duration::from_millis(30) {
            return Err("presence_ttl must be at least 30 ms".into());
        }
        if self.command_timeout.is_zero() {
            return Err("command_timeout must not be zero".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("ca_file", &self.ca_file)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("presence_ttl", &self.presence_ttl)
            .field("backoff", &self.backoff)
            .field("command_timeout", &self.command_timeout)
            .field("wait_for_redis", &self.wait_for_redis)
            .field("fill_limit", &self.fill_limit)
            .finish()
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn random_node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Exponential backoff with jitter between attempts to reach Redis: the
/// `n`th wait is drawn from `[d/2, d]` where `d = min(initial × 2ⁿ, max)`
/// ("equal jitter"), so that nodes that lost Redis together do not all
/// come back in the same millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first wait (100 ms).
    pub initial: Duration,
    /// The longest wait (5 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial) }
    }

    /// The wait before attempt `attempt + 1` (0: after the first failure).
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://user:p@ss@h:1"), "rediss://user:***@h:1");
        assert_eq!(redact("redis://h:1/a@b"), "redis://h:1/a@b");
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        let config = RedisConfig::new("redis://:hunter2@localhost");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let backoff = Backoff::default();
        for attempt in 0..30 {
            let full = Duration::from_millis(100).saturating_mul(1 << attempt.min(20)).min(backoff.max);
            let delay = backoff.delay(attempt);
            assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(RedisConfig::new("redis://h").check().is_ok());
        for bad in ["", "a|b", "with space", &"x".repeat(65)] {
            assert!(RedisConfig::new("redis://h").node_id(bad).check().is_err(), "{bad:?}");
        }
        assert_ne!(RedisConfig::new("u").node_id, RedisConfig::new("u").node_id, "random by default");
    }
}
