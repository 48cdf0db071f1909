//! Command-line flags and their defaults.

use std::net::SocketAddr;
use std::time::Duration;

use sabai::hub::{HistoryPolicy, HubConfig, SlowConsumer};
use sabai::DeflateConfig;

/// Messages shorter than this go uncompressed by default: without context
/// takeover (which the hub always asks for), a short JSON message shrinks
/// by only a few bytes. The simulator's telemetry (about 210 bytes) goes
/// down to about 145.
const DEFLATE_THRESHOLD: usize = 128;

pub const USAGE: &str = "\
sabai-hub: sabai's room hub with a chat and an IoT dashboard

usage: sabai-hub [flags]

  --addr ADDR             listen address (default 127.0.0.1:8090)
  --token TOKEN           require ?token=TOKEN or 'Authorization: Bearer TOKEN' on /ws
  --publish-key KEY       require 'X-Publish-Key: KEY' on POST /publish
  --allow-origin ORIGIN   allow this browser Origin on /ws (repeatable; default:
                          the server's own http://127.0.0.1:PORT and http://localhost:PORT)
  --any-origin            allow every Origin
  --max-connections N     connections at once; more get 503 (default 10000)
  --max-per-user N        connections per user; more get close 4029 (default 8)
  --queue N               outbound queue per connection, in messages (default 256)
  --drop-oldest           when a queue is full, drop its oldest message
                          (default: close the slow connection, 4008)
  --ping-interval SECS    server ping interval (default 54)
  --pong-timeout SECS     close a connection silent this long, 4001 (default 60)
  --idle-timeout SECS     close a connection that sent no message this long, 4000 (default off)
  --max-message BYTES     largest inbound message; over it close 1009 (default 8192)
  --deflate, --no-deflate accept permessage-deflate from clients that offer it,
                          as browsers do, or not (default: --deflate)
  --deflate-threshold N   send messages shorter than N bytes uncompressed (default 128)
  --history PREFIX=N[/SECS]
                          rooms starting with PREFIX keep their last N publications,
                          for SECS after the last one (repeatable; the longest prefix
                          wins; default: chat:=200/86400 device:=300/3600
                          group:=1000/3600 global=2000/3600)
  --no-history            no room keeps a history (no offsets, no recovery)
  --node-id ID            this node's name in the cluster (default: random)
  --redis URL             share rooms, history and presence with other nodes through
                          Redis: redis://[:PASSWORD@]HOST:PORT[/DB] or rediss:// (TLS)
                          (default: none, one node on the memory engine)
  --redis-ca FILE         the CA certificate (PEM) of a rediss:// server
  --redis-wait            wait for Redis at start (default: exit with an error)
  --no-simulator          do not publish simulated device telemetry
  --help                  this text
";

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub publish_key: Option<String>,
    pub origins: Vec<String>,
    pub any_origin: bool,
    pub simulator: bool,
    pub node: String,
    pub redis: Option<String>,
    pub redis_ca: Option<std::path::PathBuf>,
    pub redis_wait: bool,
    pub hub: HubConfig,
}

/// The history rooms keep unless told otherwise: enough for a reconnect
/// or a node restart to lose nothing.
fn default_history(config: HubConfig) -> HubConfig {
    let hour = Duration::from_secs(3600);
    config
        .history("chat:", HistoryPolicy::new(200, 24 * hour))
        .history("device:", HistoryPolicy::new(300, hour))
        .history("group:", HistoryPolicy::new(1000, hour))
        .history("global", HistoryPolicy::new(2000, hour))
}

/// `PREFIX=N[/SECS]`.
fn history_rule(value: &str) -> Result<(String, HistoryPolicy), String> {
    let bad = || format!("--history: expected PREFIX=N or PREFIX=N/SECS, got {value:?}");
    let (prefix, rest) = value.split_once('=').ok_or_else(bad)?;
    let (size, ttl) = match rest.split_once('/') {
        Some((size, secs)) => (size, seconds("--history", secs)?),
        None => (rest, Duration::from_secs(3600)),
    };
    let size: usize = size.parse().map_err(|_| bad())?;
    if size == 0 || size > 1_000_000 {
        return Err(format!("--history: N must be 1 to 1000000, got {size}"));
    }
    Ok((prefix.to_owned(), HistoryPolicy::new(size, ttl)))
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut hub = default_history(HubConfig::default());
        hub.max_connections_per_user = Some(8);
        hub.deflate = Some(deflate_default());
        let mut custom_history = false;
        let mut options = Options {
            addr: "127.0.0.1:8090".parse().map_err(|_| "bad default address")?,
            token: None,
            publish_key: None,
            origins: Vec::new(),
            any_origin: false,
            simulator: true,
            node: format!("{:08x}", rand::random::<u32>()),
            redis: None,
            redis_ca: None,
            redis_wait: false,
            hub,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => options.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
                "--token" => options.token = Some(value()?),
                "--publish-key" => options.publish_key = Some(value()?),
                "--allow-origin" => options.origins.push(value()?),
                "--any-origin" => options.any_origin = true,
                "--max-connections" => options.hub.max_connections = number(&flag, &value()?)?,
                "--max-per-user" => options.hub.max_connections_per_user = Some(number(&flag, &value()?)?),
                "--queue" => options.hub.queue_capacity = number(&flag, &value()?)?.max(1),
                "--drop-oldest" => options.hub.slow_consumer = SlowConsumer::DropOldest,
                "--ping-interval" => options.hub.ping_interval = seconds(&flag, &value()?)?,
                "--pong-timeout" => options.hub.pong_timeout = seconds(&flag, &value()?)?,
                "--idle-timeout" => options.hub.idle_timeout = Some(seconds(&flag, &value()?)?),
                "--max-message" => options.hub.max_message_size = number(&flag, &value()?)?,
                "--deflate" => {
                    options.hub.deflate = options.hub.deflate.take().or_else(|| Some(deflate_default()))
                }
                "--no-deflate" => options.hub.deflate = None,
                "--deflate-threshold" => {
                    let threshold = number(&flag, &value()?)?;
                    if let Some(deflate) = options.hub.deflate.as_mut() {
                        deflate.threshold = threshold;
                    }
                }
                "--history" => {
                    if !std::mem::replace(&mut custom_history, true) {
                        options.hub.history.clear();
                    }
                    let (prefix, policy) = history_rule(&value()?)?;
                    options.hub = options.hub.history(prefix, policy);
                }
                "--no-history" => options.hub.history.clear(),
                "--node-id" => {
                    let id = value()?;
                    if id.is_empty()
                        || id.len() > 64
                        || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
                    {
                        return Err(format!(
                            "--node-id: 1 to 64 printable characters without '|', got {id:?}"
                        ));
                    }
                    options.node = id;
                }
                "--redis" => {
                    let url = value()?;
                    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                        return Err("--redis: expected redis://… or rediss://…".into());
                    }
                    options.redis = Some(url);
                }
                "--redis-ca" => options.redis_ca = Some(value()?.into()),
                "--redis-wait" => options.redis_wait = true,
                "--no-simulator" => options.simulator = false,
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(options)
    }
}

fn deflate_default() -> DeflateConfig {
    let mut deflate = DeflateConfig::default();
    deflate.threshold = DEFLATE_THRESHOLD;
    deflate
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value.parse().map_err(|_| format!("{flag}: expected a whole number, got {value:?}"))
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs < 1e6 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{flag}: expected seconds, got {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_bind_loopback_with_the_simulator_on() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.addr.to_string(), "127.0.0.1:8090");
        assert!(options.simulator && options.token.is_none());
        assert_eq!(options.hub.queue_capacity, 256);
        assert_eq!(options.hub.deflate.as_ref().map(|d| d.threshold), Some(DEFLATE_THRESHOLD));
    }

    #[test]
    fn rooms_keep_a_history_by_default_and_flags_replace_it() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.hub.history_for("chat:lobby").map(|p| p.size), Some(200));
        assert_eq!(options.hub.history_for("global").map(|p| p.size), Some(2000));
        let custom = parse(&["--history", "chat:=10/60", "--history", "chat:vip=5"]).unwrap();
        assert_eq!(custom.hub.history_for("chat:lobby").map(|p| (p.size, p.ttl.as_secs())), Some((10, 60)));
        assert_eq!(custom.hub.history_for("chat:vip").map(|p| p.size), Some(5), "longest prefix wins");
        assert!(custom.hub.history_for("global").is_none(), "--history replaces the defaults");
        assert!(parse(&["--no-history"]).unwrap().hub.history_for("chat:a").is_none());
        for bad in ["chat:", "chat:=0", "chat:=x", "chat:=5/-1", "=5/"] {
            assert!(parse(&["--history", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--node-id", "a|b"]).is_err());
        assert_eq!(parse(&["--node-id", "n1"]).unwrap().node, "n1");
    }

    #[test]
    fn deflate_is_on_unless_turned_off() {
        assert_eq!(parse(&["--deflate-threshold", "64"]).unwrap().hub.deflate.unwrap().threshold, 64);
        assert!(parse(&["--no-deflate"]).unwrap().hub.deflate.is_none());
        assert!(parse(&["--no-deflate", "--deflate"]).unwrap().hub.deflate.is_some());
        assert!(parse(&["--no-deflate", "--deflate-threshold", "64"]).unwrap().hub.deflate.is_none());
        assert!(parse(&["--deflate-threshold", "x"]).is_err());
    }

    #[test]
    fn flags_set_their_values_and_bad_ones_are_refused() {
        let options =
            parse(&["--no-simulator", "--queue", "4", "--ping-interval", "0.5", "--token", "t"]).unwrap();
        assert!(!options.simulator);
        assert_eq!(options.hub.queue_capacity, 4);
        assert_eq!(options.hub.ping_interval, Duration::from_millis(500));
        assert_eq!(options.token.as_deref(), Some("t"));
        assert!(parse(&["--queue"]).is_err());
        assert!(parse(&["--queue", "many"]).is_err());
        assert!(parse(&["--ping-interval", "-1"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
