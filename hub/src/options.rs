//! Flags, their environment variables, an optional TOML file, and the
//! defaults: flags win over variables, variables over the file, the file
//! over the defaults.
//!
//! The doc comments on [`Options`] are the `--help` text (clap reads them
//! verbatim), so they are written for a terminal, not for rustdoc: its
//! markdown lints would read `[:PASSWORD@]` as a link and `<node id>` as
//! HTML. Escaping them would put the escapes in `--help`.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags, rustdoc::bare_urls)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sabai::hub::{HistoryPolicy, HubConfig, RateLimit, SlowConsumer};
use sabai::DeflateConfig;
use serde::Deserialize;

/// Messages shorter than this go uncompressed by default: without context
/// takeover (which the hub always asks for), a short JSON message shrinks
/// by only a few bytes. The simulator's telemetry (about 210 bytes) goes
/// down to about 145.
const DEFLATE_THRESHOLD: usize = 128;

/// Data messages one connection may send per second, sustained. A person
/// chatting sends a few a second at most (typing notices included), the
/// browser client a ping every 30 s: 50 is ten times what a real client
/// needs, and a flood is cut within its burst.
const RATE: f64 = 50.0;

/// Messages at once above the rate: a page that reconnects sends its
/// subscribe, a presence request and what the user typed meanwhile.
const RATE_BURST: u32 = 100;

/// Payload bytes one connection may send per second, with one second's
/// worth at once: 32 messages of the default largest size (8 KiB) a
/// second. A bigger `--max-message` raises the burst to one message of
/// that size.
const RATE_BYTES: u64 = 256 * 1024;

/// The history rooms keep unless told otherwise: enough for a reconnect
/// or a node restart to lose nothing.
const DEFAULT_HISTORY: [&str; 4] =
    ["chat:=200/86400", "device:=300/3600", "group:=1000/3600", "global=2000/3600"];

/// sabai-hub: sabai's room hub with a chat and an IoT dashboard.
///
/// Every flag can also come from its environment variable (shown with the
/// flag) or from a TOML file (`--config`) whose keys are the flags'
/// names without dashes in front (`max-connections = 100`, `history =
/// ["chat:=50/600"]`). Flags win over variables, variables over the file.
#[derive(Parser, Debug, Default, Deserialize)]
#[command(name = "sabai-hub", version)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Args {
    /// A TOML file of settings: keys are the flags' names (`queue = 64`).
    #[arg(long, env = "SABAI_HUB_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8090].
    #[arg(long, env = "SABAI_HUB_ADDR", value_name = "ADDR")]
    addr: Option<SocketAddr>,
    /// Require ?token=TOKEN or 'Authorization: Bearer TOKEN' on /ws, /events and /send.
    #[arg(long, env = "SABAI_HUB_TOKEN")]
    token: Option<String>,
    /// Require 'X-Publish-Key: KEY' on POST /publish.
    #[arg(long, env = "SABAI_HUB_PUBLISH_KEY", value_name = "KEY")]
    publish_key: Option<String>,
    /// Also accept pages from this Origin (repeatable); the server's own
    /// pages, on every address it listens on, always are.
    #[arg(
        long = "allow-origin",
        env = "SABAI_HUB_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default)]
    allow_origin: Vec<String>,
    /// The Origin users reach this server's pages at, when that is not one
    /// of its own addresses (behind a proxy: https://hub.example.com).
    /// Repeatable.
    #[arg(
        long = "public-origin",
        env = "SABAI_HUB_PUBLIC_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default)]
    public_origin: Vec<String>,
    /// Allow every Origin.
    #[arg(long, env = "SABAI_HUB_ANY_ORIGIN")]
    #[serde(default)]
    any_origin: bool,
    /// Connections at once; more get 503 [default: 10000].
    #[arg(long, env = "SABAI_HUB_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Connections per user; more get close 4029 [default: 8].
    #[arg(long, env = "SABAI_HUB_MAX_PER_USER", value_name = "N")]
    max_per_user: Option<usize>,
    /// Outbound queue per connection, in messages [default: 256].
    #[arg(long, env = "SABAI_HUB_QUEUE", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    queue: Option<u32>,
    /// When a queue is full, drop its oldest message that has no offset
    /// [default: close the slow connection, 4008].
    #[arg(long, env = "SABAI_HUB_DROP_OLDEST")]
    #[serde(default)]
    drop_oldest: bool,
    /// Server ping interval [default: 54].
    #[arg(long, env = "SABAI_HUB_PING_INTERVAL", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    ping_interval: Option<Duration>,
    /// Close a connection silent this long, 4002 [default: 60].
    #[arg(long, env = "SABAI_HUB_PONG_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    pong_timeout: Option<Duration>,
    /// Close a connection that sent no message this long, 4000 [default: off].
    #[arg(long, env = "SABAI_HUB_IDLE_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    idle_timeout: Option<Duration>,
    /// Largest inbound message; over it close 1009 [default: 8192].
    #[arg(long, env = "SABAI_HUB_MAX_MESSAGE", value_name = "BYTES")]
    max_message: Option<usize>,
    /// Accept permessage-deflate from clients that offer it, as browsers do (the default).
    #[arg(long, env = "SABAI_HUB_DEFLATE", overrides_with = "no_deflate")]
    #[serde(default)]
    deflate: bool,
    /// Do not accept permessage-deflate.
    #[arg(long, env = "SABAI_HUB_NO_DEFLATE", overrides_with = "deflate")]
    #[serde(default)]
    no_deflate: bool,
    /// Send messages shorter than N bytes uncompressed [default: 128].
    #[arg(long, env = "SABAI_HUB_DEFLATE_THRESHOLD", value_name = "N")]
    deflate_threshold: Option<usize>,
    /// Rooms starting with PREFIX keep their last N publications, for SECS
    /// after the last one (repeatable; the longest prefix wins) [default:
    /// chat:=200/86400 device:=300/3600 group:=1000/3600 global=2000/3600].
    #[arg(long, env = "SABAI_HUB_HISTORY", value_name = "PREFIX=N[/SECS]", value_delimiter = ',', value_parser = history_rule)]
    #[serde(default, deserialize_with = "de_history")]
    history: Vec<(String, HistoryPolicy)>,
    /// No room keeps a history (no offsets, no recovery).
    #[arg(long, env = "SABAI_HUB_NO_HISTORY")]
    #[serde(default)]
    no_history: bool,
    /// This node's name in the cluster [default: random].
    #[arg(long, env = "SABAI_HUB_NODE_ID", value_name = "ID", value_parser = node_id)]
    node_id: Option<String>,
    /// Share rooms, history and presence with other nodes through Redis:
    /// redis://[:PASSWORD@]HOST:PORT[/DB] or rediss:// (TLS) [default:
    /// none, one node on the memory engine].
    #[arg(long, env = "SABAI_HUB_REDIS", value_name = "URL", value_parser = redis_url)]
    redis: Option<String>,
    /// The CA certificate (PEM) of a rediss:// server.
    #[arg(long, env = "SABAI_HUB_REDIS_CA", value_name = "FILE")]
    redis_ca: Option<PathBuf>,
    /// Wait for Redis at start [default: exit with an error].
    #[arg(long, env = "SABAI_HUB_REDIS_WAIT")]
    #[serde(default)]
    redis_wait: bool,
    /// Do not publish simulated device telemetry.
    #[arg(long, env = "SABAI_HUB_NO_SIMULATOR")]
    #[serde(default)]
    no_simulator: bool,
    /// Time to send a request's head, and its body [default: 10].
    #[arg(long, env = "SABAI_HUB_REQUEST_TIMEOUT", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    request_timeout: Option<Duration>,
    /// Plain HTTP requests in progress at once; more get 503 [default: 256].
    #[arg(long, env = "SABAI_HUB_MAX_REQUESTS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_requests: Option<u32>,
    /// Check JWTs (HS256) with this secret (at least 32 bytes): the
    /// user is the token's sub, and ?user= is ignored.
    #[arg(long, env = "SABAI_HUB_JWT_SECRET", value_name = "SECRET")]
    jwt_secret: Option<String>,
    /// Check JWTs with this public key (PEM), for RS256 or ES256.
    #[arg(long, env = "SABAI_HUB_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// The one algorithm tokens may use: HS256, RS256 or ES256 [default:
    /// HS256 with --jwt-secret, RS256 with --jwt-public-key].
    #[arg(long, env = "SABAI_HUB_JWT_ALG", value_name = "ALG")]
    jwt_alg: Option<String>,
    /// Tokens must name this audience (aud).
    #[arg(long, env = "SABAI_HUB_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Tokens must name this issuer (iss).
    #[arg(long, env = "SABAI_HUB_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Clock skew allowed on exp and nbf [default: 5].
    #[arg(long, env = "SABAI_HUB_JWT_LEEWAY", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    jwt_leeway: Option<Duration>,
    /// Print an HS256 token for this user (with --jwt-secret) and exit:
    /// for trying the server out, not for production.
    #[arg(long, value_name = "SUB", requires = "jwt_secret")]
    #[serde(skip)]
    mint_token: Option<String>,
    /// Rooms the minted token allows (patterns like chat:*, repeatable) [default: every room].
    #[arg(long, value_name = "PATTERN", requires = "mint_token", value_delimiter = ',')]
    #[serde(skip)]
    mint_rooms: Vec<String>,
    /// How long the minted token is valid [default: 3600].
    #[arg(long, value_name = "SECS", requires = "mint_token", value_parser = seconds)]
    #[serde(skip)]
    mint_ttl: Option<Duration>,
    /// New WebSockets and SSE streams per second from one address; more get 429 [default: 20].
    #[arg(long, env = "SABAI_HUB_IP_RATE", value_name = "N", value_parser = positive)]
    #[serde(default)]
    ip_rate: Option<f64>,
    /// How many of those one address may open at once before the rate applies [default: 50].
    #[arg(long, env = "SABAI_HUB_IP_BURST", value_name = "N", value_parser = positive)]
    #[serde(default)]
    ip_burst: Option<f64>,
    /// TCP connections open at once from one address; more are closed at once [default: 200].
    #[arg(long, env = "SABAI_HUB_IP_MAX_OPEN", value_name = "N")]
    ip_max_open: Option<usize>,
    /// Apply the per-address limits to loopback addresses too [default: they are exempt].
    #[arg(long, env = "SABAI_HUB_LIMIT_LOOPBACK")]
    #[serde(default)]
    limit_loopback: bool,
    /// A reverse proxy (address or CIDR, repeatable) whose X-Forwarded-For
    /// names the client for the per-address limits.
    #[arg(long, env = "SABAI_HUB_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = cidr)]
    #[serde(default, deserialize_with = "de_cidrs")]
    trusted_proxy: Vec<ipnet::IpNet>,
    /// Serve TLS (https, wss) with this certificate chain (PEM).
    #[arg(long, env = "SABAI_HUB_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SABAI_HUB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Logs as JSON lines (default: text); RUST_LOG sets the level [default: info].
    #[arg(long, env = "SABAI_HUB_LOG_JSON")]
    #[serde(default)]
    log_json: bool,
    /// Data messages a connection may send per second; faster: close 1008
    /// [default: 50].
    #[arg(long, env = "SABAI_HUB_RATE", value_name = "MESSAGES_PER_SEC", value_parser = rate)]
    #[serde(default, deserialize_with = "de_rate")]
    rate: Option<f64>,
    /// Messages a connection may send at once above --rate [default: 100].
    #[arg(long, env = "SABAI_HUB_RATE_BURST", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: Option<u32>,
    /// Payload bytes a connection may send per second, one second's worth
    /// at once [default: 262144].
    #[arg(long, env = "SABAI_HUB_RATE_BYTES", value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    rate_bytes: Option<u64>,
    /// No per-connection rate limit.
    #[arg(long, env = "SABAI_HUB_NO_RATE_LIMIT")]
    #[serde(default)]
    no_rate_limit: bool,
    /// Serve the admin page (/admin) and its API, which need
    /// 'Authorization: Bearer KEY' [default: none: /admin answers 404].
    #[arg(long, env = "SABAI_HUB_ADMIN_KEY", value_name = "KEY", value_parser = admin_key)]
    #[serde(default, deserialize_with = "de_admin_key")]
    admin_key: Option<String>,
    /// Bridge this MQTT broker into the rooms: mqtt://[USER[:PASSWORD]@]HOST[:PORT],
    /// or mqtts:// for TLS [default: none]. The built-in simulator then
    /// publishes only with --simulate-mqtt.
    #[arg(long, env = "SABAI_HUB_MQTT", value_name = "URL")]
    mqtt: Option<String>,
    /// The CA certificates (PEM) to trust for an mqtts:// broker, instead
    /// of the system's roots.
    #[arg(long, env = "SABAI_HUB_MQTT_CA", value_name = "FILE")]
    mqtt_ca: Option<PathBuf>,
    /// The bridge's MQTT client id, one per node [default: sabai-hub-<node id>].
    #[arg(long, env = "SABAI_HUB_MQTT_CLIENT_ID", value_name = "ID")]
    mqtt_client_id: Option<String>,
    /// MQTT user name (or in the URL).
    #[arg(long, env = "SABAI_HUB_MQTT_USERNAME", value_name = "USER")]
    mqtt_username: Option<String>,
    /// MQTT password (or in the URL).
    #[arg(long, env = "SABAI_HUB_MQTT_PASSWORD", value_name = "PASSWORD")]
    mqtt_password: Option<String>,
    /// A topic pattern to bridge, with one + level for the device id; its
    /// last level (or =KIND) says telemetry, status or alert (repeatable)
    /// [default: devices/+/telemetry devices/+/status devices/+/alert].
    #[arg(
        long = "mqtt-topic",
        env = "SABAI_HUB_MQTT_TOPIC",
        value_name = "PATTERN[=KIND]",
        value_delimiter = ','
    )]
    #[serde(default)]
    mqtt_topic: Vec<String>,
    /// Subscribe as $share/GROUP/<pattern>: the nodes of one group share the
    /// messages, each entering the hub once [default: every node gets all].
    #[arg(long, env = "SABAI_HUB_MQTT_SHARE", value_name = "GROUP")]
    mqtt_share: Option<String>,
    /// A reading whose (device_id, seq) came this recently is a redelivery, dropped [default: 30].
    #[arg(long, env = "SABAI_HUB_MQTT_DEDUP_WINDOW", value_name = "SECS", value_parser = seconds)]
    #[serde(default, deserialize_with = "de_seconds")]
    mqtt_dedup_window: Option<Duration>,
    /// Larger MQTT payloads are dropped and counted [default: 65536].
    #[arg(long, env = "SABAI_HUB_MQTT_MAX_PAYLOAD", value_name = "BYTES")]
    mqtt_max_payload: Option<usize>,
    /// Where commands go, {id} for the device id [default: devices/{id}/command].
    #[arg(long, env = "SABAI_HUB_MQTT_COMMAND_TOPIC", value_name = "TOPIC")]
    mqtt_command_topic: Option<String>,
    /// The simulator's devices publish to the --mqtt broker (device → MQTT →
    /// hub), with the alert rules temperature>30 and humidity>80 unless
    /// --alert-rule gives others.
    #[arg(long, env = "SABAI_HUB_SIMULATE_MQTT")]
    #[serde(default)]
    simulate_mqtt: bool,
    /// The known devices and their groups (TOML, or JSON for *.json);
    /// `strict = true` in it refuses the others (docs/hub.md).
    #[arg(long, env = "SABAI_HUB_DEVICE_REGISTRY", value_name = "FILE")]
    device_registry: Option<PathBuf>,
    /// Raise an alert when a reading crosses FIELD>THRESHOLD[:SEVERITY]
    /// (also >=, <, <=; repeatable), on the rising edge.
    #[arg(long = "alert-rule", env = "SABAI_HUB_ALERT_RULE", value_name = "RULE", value_delimiter = ',')]
    #[serde(default)]
    alert_rule: Vec<String>,
}

/// The IoT side's settings: the MQTT bridge, the device registry, alert rules.
#[derive(Debug, Clone, Default)]
pub struct Iot {
    pub mqtt: Option<crate::mqtt::Settings>,
    pub device_registry: Option<PathBuf>,
    pub alert_rules: Vec<crate::alerts::Rule>,
}

/// What the server runs with, resolved.
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
    pub redis_ca: Option<PathBuf>,
    pub redis_wait: bool,
    pub log_json: bool,
    pub request_timeout: Duration,
    /// `--tls-cert`, `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub ip_limits: crate::limits::IpLimitSettings,
    pub jwt: crate::auth::JwtSettings,
    /// `--mint-token`: (user, rooms, valid for).
    pub mint: Option<(String, Vec<String>, Duration)>,
    pub max_requests: usize,
    /// `--admin-key`: the admin page and API are on when set.
    pub admin_key: Option<String>,
    pub hub: HubConfig,
    /// `--mqtt*`, `--device-registry`, `--alert-rule`.
    pub iot: Iot,
}

impl Options {
    /// Parses the command line (its first item is the program's name) and
    /// the environment; reads the `--config` file if one is named.
    pub fn parse<I, T>(args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        let file = match &args.config {
            None => Args::default(),
            Some(path) => read_file(path)?,
        };
        let args = args.over(file);
        let invalid = |why: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, why + "\n");
        let iot = args.iot().map_err(invalid)?;
        let mut options = args.resolve();
        options.iot = iot;
        if let Some(mqtt) = options.iot.mqtt.as_mut().filter(|m| m.client_id.is_empty()) {
            mqtt.client_id = format!("sabai-hub-{}", options.node);
        }
        Ok(options)
    }
}

impl Args {
    /// The IoT settings, checked.
    fn iot(&self) -> Result<Iot, String> {
        let mut alert_rules: Vec<crate::alerts::Rule> =
            self.alert_rule.iter().map(|r| crate::alerts::Rule::parse(r)).collect::<Result<_, _>>()?;
        let Some(url) = &self.mqtt else {
            if self.mqtt_ca.is_some() {
                return Err("--mqtt-ca is for an mqtts:// broker: add --mqtt mqtts://HOST:PORT".into());
            }
            if self.simulate_mqtt {
                return Err("--simulate-mqtt needs a broker: --mqtt mqtt://HOST:PORT".into());
            }
            if !alert_rules.is_empty() {
                return Err(
                    "--alert-rule applies to readings from a broker: add --mqtt mqtt://HOST:PORT".into()
                );
            }
            return Ok(Iot { mqtt: None, device_registry: self.device_registry.clone(), alert_rules });
        };
        let broker = crate::mqtt::Settings::parse_url(url).map_err(|e| format!("--mqtt: {e}"))?;
        let credentials = match (&self.mqtt_username, &self.mqtt_password) {
            (Some(user), password) => Some((user.clone(), password.clone().unwrap_or_default())),
            (None, Some(_)) => return Err("--mqtt-password needs --mqtt-username".into()),
            (None, None) => broker.credentials,
        };
        // Read now: a missing or empty CA file stops the start, it is not
        // a connection error retried forever.
        let tls = match (broker.tls, &self.mqtt_ca) {
            (true, ca) => Some(crate::mqtt::tls::client_config(ca.as_deref())?),
            (false, Some(_)) => return Err("--mqtt-ca needs an mqtts:// broker in --mqtt".into()),
            (false, None) => None,
        };
        let patterns = if self.mqtt_topic.is_empty() {
            crate::mqtt::topic::DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect()
        } else {
            self.mqtt_topic.clone()
        };
        let patterns = patterns
            .iter()
            .map(|p| crate::mqtt::topic::Pattern::parse(p).map_err(|e| format!("--mqtt-topic {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(group) = &self.mqtt_share {
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err(format!("--mqtt-share {group:?}: a group name without / + #"));
            }
        }
        let command_topic = self.mqtt_command_topic.clone().unwrap_or("devices/{id}/command".into());
        if !command_topic.contains("{id}") || command_topic.contains(['+', '#']) {
            return Err(format!("--mqtt-command-topic {command_topic:?}: needs {{id}} and no wildcard"));
        }
        if self.simulate_mqtt && alert_rules.is_empty() {
            // The simulator's own thresholds, now raised by the bridge.
            alert_rules = ["temperature>30:warning", "humidity>80:warning"]
                .iter()
                .filter_map(|r| crate::alerts::Rule::parse(r).ok())
                .collect();
        }
        let max_payload = self.mqtt_max_payload.unwrap_or(64 * 1024);
        if max_payload == 0 || max_payload > 4 * 1024 * 1024 {
            return Err("--mqtt-max-payload: 1 to 4194304 bytes".into());
        }
        let mqtt = crate::mqtt::Settings {
            host: broker.host,
            port: broker.port,
            client_id: self.mqtt_client_id.clone().unwrap_or_default(),
            credentials,
            patterns,
            share: self.mqtt_share.clone(),
            dedup_window: self.mqtt_dedup_window.unwrap_or(Duration::from_secs(30)),
            max_payload,
            command_topic,
            simulate: self.simulate_mqtt,
            keep_alive: Duration::from_secs(15),
            tls,
        };
        Ok(Iot { mqtt: Some(mqtt), device_registry: self.device_registry.clone(), alert_rules })
    }
}

fn read_file(path: &PathBuf) -> Result<Args, clap::Error> {
    let invalid = |why: String| clap::Error::raw(clap::error::ErrorKind::ValueValidation, why + "\n");
    let text =
        std::fs::read_to_string(path).map_err(|e| invalid(format!("--config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| invalid(format!("--config {}: {e}", path.display())))
}

impl Args {
    /// These settings, with `file`'s where these have none.
    fn over(self, file: Args) -> Args {
        Args {
            config: self.config,
            addr: self.addr.or(file.addr),
            token: self.token.or(file.token),
            publish_key: self.publish_key.or(file.publish_key),
            allow_origin: if self.allow_origin.is_empty() { file.allow_origin } else { self.allow_origin },
            public_origin: if self.public_origin.is_empty() {
                file.public_origin
            } else {
                self.public_origin
            },
            any_origin: self.any_origin || file.any_origin,
            max_connections: self.max_connections.or(file.max_connections),
            max_per_user: self.max_per_user.or(file.max_per_user),
            queue: self.queue.or(file.queue),
            drop_oldest: self.drop_oldest || file.drop_oldest,
            ping_interval: self.ping_interval.or(file.ping_interval),
            pong_timeout: self.pong_timeout.or(file.pong_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_message: self.max_message.or(file.max_message),
            // A flag given decides; else the file's.
            deflate: self.deflate || (!self.no_deflate && file.deflate),
            no_deflate: self.no_deflate || (!self.deflate && file.no_deflate),
            deflate_threshold: self.deflate_threshold.or(file.deflate_threshold),
            history: if self.history.is_empty() { file.history } else { self.history },
            no_history: self.no_history || file.no_history,
            node_id: self.node_id.or(file.node_id),
            redis: self.redis.or(file.redis),
            redis_ca: self.redis_ca.or(file.redis_ca),
            redis_wait: self.redis_wait || file.redis_wait,
            no_simulator: self.no_simulator || file.no_simulator,
            log_json: self.log_json || file.log_json,
            request_timeout: self.request_timeout.or(file.request_timeout),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            ip_rate: self.ip_rate.or(file.ip_rate),
            ip_burst: self.ip_burst.or(file.ip_burst),
            ip_max_open: self.ip_max_open.or(file.ip_max_open),
            limit_loopback: self.limit_loopback || file.limit_loopback,
            trusted_proxy: if self.trusted_proxy.is_empty() {
                file.trusted_proxy
            } else {
                self.trusted_proxy
            },
            mint_token: self.mint_token,
            mint_rooms: self.mint_rooms,
            mint_ttl: self.mint_ttl,
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(file.jwt_public_key),
            jwt_alg: self.jwt_alg.or(file.jwt_alg),
            jwt_audience: self.jwt_audience.or(file.jwt_audience),
            jwt_issuer: self.jwt_issuer.or(file.jwt_issuer),
            jwt_leeway: self.jwt_leeway.or(file.jwt_leeway),
            max_requests: self.max_requests.or(file.max_requests),
            rate: self.rate.or(file.rate),
            rate_burst: self.rate_burst.or(file.rate_burst),
            rate_bytes: self.rate_bytes.or(file.rate_bytes),
            no_rate_limit: self.no_rate_limit || file.no_rate_limit,
            admin_key: self.admin_key.or(file.admin_key),
            mqtt: self.mqtt.or(file.mqtt),
            mqtt_ca: self.mqtt_ca.or(file.mqtt_ca),
            mqtt_client_id: self.mqtt_client_id.or(file.mqtt_client_id),
            mqtt_username: self.mqtt_username.or(file.mqtt_username),
            mqtt_password: self.mqtt_password.or(file.mqtt_password),
            mqtt_topic: if self.mqtt_topic.is_empty() { file.mqtt_topic } else { self.mqtt_topic },
            mqtt_share: self.mqtt_share.or(file.mqtt_share),
            mqtt_dedup_window: self.mqtt_dedup_window.or(file.mqtt_dedup_window),
            mqtt_max_payload: self.mqtt_max_payload.or(file.mqtt_max_payload),
            mqtt_command_topic: self.mqtt_command_topic.or(file.mqtt_command_topic),
            simulate_mqtt: self.simulate_mqtt || file.simulate_mqtt,
            device_registry: self.device_registry.or(file.device_registry),
            alert_rule: if self.alert_rule.is_empty() { file.alert_rule } else { self.alert_rule },
        }
    }

    fn resolve(self) -> Options {
        let mut hub = HubConfig::default();
        hub.max_connections_per_user = Some(self.max_per_user.unwrap_or(8));
        if let Some(n) = self.max_connections {
            hub.max_connections = n;
        }
        if let Some(n) = self.queue {
            hub.queue_capacity = n as usize;
        }
        if self.drop_oldest {
            hub.slow_consumer = SlowConsumer::DropOldest;
        }
        hub.ping_interval = self.ping_interval.unwrap_or(hub.ping_interval);
        hub.pong_timeout = self.pong_timeout.unwrap_or(hub.pong_timeout);
        hub.idle_timeout = self.idle_timeout.or(hub.idle_timeout);
        hub.max_message_size = self.max_message.unwrap_or(hub.max_message_size);
        if !self.no_deflate {
            let mut deflate = DeflateConfig::default();
            deflate.threshold = self.deflate_threshold.unwrap_or(DEFLATE_THRESHOLD);
            // RFC 7692 §7.1.1.2: the server may ask every client to compress
            // each message on its own. Clients send little here (a chat line,
            // a subscribe), and then no connection keeps an inflater (about
            // 54 KiB) between its messages.
            deflate.client_no_context_takeover = true;
            hub.deflate = Some(deflate);
        }
        let history = match (self.no_history, self.history.is_empty()) {
            (true, _) => Vec::new(),
            (false, true) => DEFAULT_HISTORY.iter().filter_map(|rule| history_rule(rule).ok()).collect(),
            (false, false) => self.history,
        };
        for (prefix, policy) in history {
            hub = hub.history(prefix, policy);
        }
        if !self.no_rate_limit {
            let limit = RateLimit::new(self.rate.unwrap_or(RATE), self.rate_burst.unwrap_or(RATE_BURST));
            hub = hub.rate_limit(limit.bytes(self.rate_bytes.unwrap_or(RATE_BYTES)));
        }
        Options {
            addr: self.addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8090))),
            token: self.token,
            publish_key: self.publish_key,
            origins: [self.public_origin, self.allow_origin].concat(),
            any_origin: self.any_origin,
            simulator: !self.no_simulator,
            node: self.node_id.unwrap_or_else(|| format!("{:08x}", rand::random::<u32>())),
            redis: self.redis,
            redis_ca: self.redis_ca,
            redis_wait: self.redis_wait,
            log_json: self.log_json,
            request_timeout: self.request_timeout.unwrap_or(Duration::from_secs(10)),
            tls: self.tls_cert.zip(self.tls_key),
            ip_limits: {
                let defaults = crate::limits::IpLimitSettings::default();
                crate::limits::IpLimitSettings {
                    rate: self.ip_rate.unwrap_or(defaults.rate),
                    burst: self.ip_burst.unwrap_or(defaults.burst),
                    max_open: self.ip_max_open.unwrap_or(defaults.max_open),
                    loopback: self.limit_loopback,
                    trusted: self.trusted_proxy,
                }
            },
            mint: self
                .mint_token
                .map(|user| (user, self.mint_rooms, self.mint_ttl.unwrap_or(Duration::from_secs(3600)))),
            jwt: crate::auth::JwtSettings {
                secret: self.jwt_secret,
                public_key: self.jwt_public_key,
                algorithm: self.jwt_alg,
                audience: self.jwt_audience,
                issuer: self.jwt_issuer,
                leeway: self.jwt_leeway.unwrap_or(Duration::from_secs(5)),
            },
            max_requests: self.max_requests.map_or(256, |n| n as usize),
            admin_key: self.admin_key,
            hub,
            iot: Iot::default(),
        }
    }
}

/// `PREFIX=N[/SECS]`.
fn history_rule(value: &str) -> Result<(String, HistoryPolicy), String> {
    let bad = || format!("expected PREFIX=N or PREFIX=N/SECS, got {value:?}");
    let (prefix, rest) = value.split_once('=').ok_or_else(bad)?;
    let (size, ttl) = match rest.split_once('/') {
        Some((size, secs)) => (size, seconds(secs)?),
        None => (rest, Duration::from_secs(3600)),
    };
    let size: usize = size.parse().map_err(|_| bad())?;
    if size == 0 || size > 1_000_000 {
        return Err(format!("N must be 1 to 1000000, got {size}"));
    }
    Ok((prefix.to_owned(), HistoryPolicy::new(size, ttl)))
}

fn seconds(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs < 1e6 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("expected seconds (more than 0, less than a million), got {value:?}")),
    }
}

fn positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(n),
        _ => Err(format!("expected a number above 0, got {value:?}")),
    }
}

fn cidr(value: &str) -> Result<ipnet::IpNet, String> {
    let parsed =
        value.parse::<ipnet::IpNet>().or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    parsed.map_err(|_| format!("expected an address or a CIDR block (10.0.0.0/8), got {value:?}"))
}

fn de_cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let values = Vec::<String>::deserialize(d)?;
    values.iter().map(|v| cidr(v).map_err(serde::de::Error::custom)).collect()
}

fn rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate < 1e9 => Ok(rate),
        _ => Err(format!("expected messages per second (more than 0), got {value:?}")),
    }
}

/// An admin key: 1 to 256 visible ASCII characters (it travels in a header).
fn admin_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the admin key is 1 to 256 visible ASCII characters".into());
    }
    Ok(key.to_owned())
}

fn node_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'|') {
        return Err(format!("1 to 64 printable characters without '|', got {id:?}"));
    }
    Ok(id.to_owned())
}

fn redis_url(url: &str) -> Result<String, String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("expected redis://… or rediss://…".into());
    }
    Ok(url.to_owned())
}

fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let secs = f64::deserialize(d)?;
    seconds(&secs.to_string()).map(Some).map_err(serde::de::Error::custom)
}

fn de_rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = f64::deserialize(d)?;
    rate(&value.to_string()).map(Some).map_err(serde::de::Error::custom)
}

fn de_admin_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    admin_key(&String::deserialize(d)?).map(Some).map_err(serde::de::Error::custom)
}

fn de_history<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, HistoryPolicy)>, D::Error> {
    let rules = Vec::<String>::deserialize(d)?;
    rules.iter().map(|rule| history_rule(rule).map_err(serde::de::Error::custom)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::parse(std::iter::once("sabai-hub").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_bind_loopback_with_the_simulator_on() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.addr.to_string(), "127.0.0.1:8090");
        assert!(options.simulator && options.token.is_none());
        assert_eq!(options.hub.queue_capacity, 256);
        assert_eq!(options.hub.max_connections_per_user, Some(8));
        assert_eq!(options.hub.deflate.as_ref().map(|d| d.threshold), Some(DEFLATE_THRESHOLD));
    }

    #[test]
    fn connections_are_rate_limited_by_default_and_flags_change_it() {
        let limit = parse(&[]).unwrap().hub.rate_limit.unwrap();
        assert_eq!((limit.messages_per_sec, limit.burst), (50.0, 100));
        assert_eq!((limit.bytes_per_sec, limit.bytes_burst), (Some(256 * 1024), 256 * 1024));
        let custom = parse(&["--rate", "2.5", "--rate-burst", "5", "--rate-bytes", "1000"]).unwrap();
        let limit = custom.hub.rate_limit.unwrap();
        assert_eq!((limit.messages_per_sec, limit.burst, limit.bytes_per_sec), (2.5, 5, Some(1000)));
        assert!(parse(&["--no-rate-limit"]).unwrap().hub.rate_limit.is_none());
        for bad in [
            &["--rate", "0"][..],
            &["--rate", "-1"],
            &["--rate", "fast"],
            &["--rate-burst", "0"],
            &["--rate-bytes", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_admin_page_is_off_unless_a_key_is_given() {
        assert_eq!(parse(&[]).unwrap().admin_key, None);
        assert_eq!(
            parse(&["--admin-key", "k3y-0f-16-chars"]).unwrap().admin_key.as_deref(),
            Some("k3y-0f-16-chars")
        );
        for bad in ["", "has space", "tab\t", "é"] {
            assert!(parse(&["--admin-key", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deflate_is_on_unless_turned_off() {
        assert_eq!(parse(&["--deflate-threshold", "64"]).unwrap().hub.deflate.unwrap().threshold, 64);
        assert!(parse(&["--no-deflate"]).unwrap().hub.deflate.is_none());
        assert!(parse(&["--no-deflate", "--deflate"]).unwrap().hub.deflate.is_some(), "the last one wins");
        assert!(parse(&["--no-deflate", "--deflate-threshold", "64"]).unwrap().hub.deflate.is_none());
        assert!(parse(&["--deflate-threshold", "x"]).is_err());
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
    fn flags_set_their_values_and_bad_ones_are_refused() {
        let options =
            parse(&["--no-simulator", "--queue", "4", "--ping-interval", "0.5", "--token", "t"]).unwrap();
        assert!(!options.simulator);
        assert_eq!(options.hub.queue_capacity, 4);
        assert_eq!(options.hub.ping_interval, Duration::from_millis(500));
        assert_eq!(options.token.as_deref(), Some("t"));
        for bad in [
            &["--queue"][..],
            &["--queue", "many"],
            &["--queue", "0"],
            &["--ping-interval", "-1"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(parse(&["--redis", "http://x"]).is_err());
    }

    #[test]
    fn mqtt_flags_are_checked_and_resolved() {
        assert!(parse(&[]).unwrap().iot.mqtt.is_none());
        let options = parse(&["--mqtt", "mqtt://u:p@127.0.0.1:1884", "--node-id", "n1"]).unwrap();
        let mqtt = options.iot.mqtt.unwrap();
        assert_eq!(
            (mqtt.host.as_str(), mqtt.port, mqtt.client_id.as_str()),
            ("127.0.0.1", 1884, "sabai-hub-n1")
        );
        assert_eq!(mqtt.credentials, Some(("u".into(), "p".into())));
        assert_eq!(mqtt.patterns.len(), 3);
        assert_eq!(mqtt.dedup_window, Duration::from_secs(30));
        assert!(options.iot.alert_rules.is_empty());
        let simulated = parse(&["--mqtt", "mqtt://h", "--simulate-mqtt"]).unwrap();
        assert_eq!(simulated.iot.alert_rules.len(), 2, "the simulator's thresholds by default");
        let ruled =
            parse(&["--mqtt", "mqtt://h", "--alert-rule", "t>1:info", "--alert-rule", "b<5"]).unwrap();
        assert_eq!(ruled.iot.alert_rules.len(), 2);
        for bad in [
            &["--simulate-mqtt"][..],
            &["--alert-rule", "t>1"],
            &["--mqtt", "http://h"],
            &["--mqtt", "mqtt://h", "--mqtt-topic", "devices/#"],
            &["--mqtt", "mqtt://h", "--mqtt-share", "a/b"],
            &["--mqtt", "mqtt://h", "--mqtt-command-topic", "cmd"],
            &["--mqtt", "mqtt://h", "--alert-rule", "t"],
            &["--mqtt", "mqtt://h", "--mqtt-password", "p"],
            &["--mqtt", "mqtt://h", "--mqtt-max-payload", "0"],
            &["--mqtt-ca", "ca.pem"],
            &["--mqtt", "mqtt://h", "--mqtt-ca", "ca.pem"],
            &["--mqtt", "mqtts://h", "--mqtt-ca", "/nonexistent/ca.pem"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mqtts_takes_the_system_roots_or_the_mqtt_ca_of_flags_and_file() {
        let plain = parse(&["--mqtt", "mqtt://h"]).unwrap().iot.mqtt.unwrap();
        assert!(plain.tls.is_none());
        let secure = parse(&["--mqtt", "mqtts://h"]).unwrap().iot.mqtt.unwrap();
        assert_eq!((secure.port, secure.shown()), (8883, "mqtts://h:8883".to_owned()));
        assert!(secure.tls.is_some(), "the system's roots");
        // The file's mqtt-ca is read (and this one holds no certificate).
        let dir = std::env::temp_dir().join(format!("sabai-hub-mqtt-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (config, ca) = (dir.join("hub.toml"), dir.join("ca.pem"));
        std::fs::write(&ca, "no certificate here\n").unwrap();
        std::fs::write(&config, format!("mqtt = \"mqtts://h\"\nmqtt-ca = {:?}\n", ca.to_str().unwrap()))
            .unwrap();
        let why = parse(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
        assert!(why.contains("--mqtt-ca") && why.contains("ca.pem"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_config_file_fills_in_what_flags_leave_unset() {
        let dir = std::env::temp_dir().join(format!("sabai-hub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.toml");
        let toml = "addr = \"127.0.0.1:9999\"\nqueue = 7\nping-interval = 2.5\nhistory = [\"chat:=9/90\"]\n\
                    no-simulator = true\nallow-origin = [\"https://a.example\"]\n";
        std::fs::write(&path, toml).unwrap();
        let file = path.to_str().unwrap();
        let options = parse(&["--config", file, "--queue", "3"]).unwrap();
        assert_eq!(options.addr.to_string(), "127.0.0.1:9999");
        assert_eq!(options.hub.queue_capacity, 3, "a flag wins over the file");
        assert_eq!(options.hub.ping_interval, Duration::from_millis(2500));
        assert_eq!(options.hub.history_for("chat:x").map(|p| p.size), Some(9));
        assert!(!options.simulator);
        assert_eq!(options.origins, ["https://a.example"]);
        std::fs::write(&path, "qeueu = 7\n").unwrap();
        let error = parse(&["--config", file]).unwrap_err().to_string();
        assert!(error.contains("qeueu"), "a misspelt key is named: {error}");
        assert!(parse(&["--config", "/nonexistent/hub.toml"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
