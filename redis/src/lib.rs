//! # sabai-redis
//!
//! A Redis engine for [`sabai`]'s room hub: several hub nodes (processes)
//! share rooms, history and presence through one Redis.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sabai::hub::{HistoryPolicy, Hub, HubConfig};
//! use sabai_redis::{RedisConfig, RedisEngine};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(RedisEngine::connect(RedisConfig::new("redis://127.0.0.1:6379/")).await?);
//! let config = HubConfig::default().history("chat:", HistoryPolicy::new(100, Duration::from_secs(300)));
//! let hub = Hub::with_engine(config, engine.clone());
//! // Serve connections as with any hub; `engine.stats()` feeds /metrics.
//! # let _ = hub;
//! # Ok(()) }
//! ```
//!
//! How it works (the README has the whole picture):
//!
//! - **Publish**: one Lua script per publication assigns the offsets, writes
//!   the history and PUBLISHes to every room's channel in one atomic step
//!   (scripts run by SHA1, and are loaded again after a Redis restart;
//!   [`Keys`] has the layout). Publications are queued in call order to one task that
//!   sends them as pipelines, so one caller's publications keep their order.
//! - **Subscribe**: one pub/sub connection; a node subscribes to a room's
//!   channel while it has members there. A node delivers its own
//!   publications when Redis hands them back, so every node sees one order.
//! - **Gaps**: a reader tracks each room's last offset; a gap (lost
//!   messages, a reconnect) is filled from the history, or the room is
//!   reset when the history cannot fill it or its epoch changed.
//! - **Presence**: per room, a hash of `<node>|<user>` → connections with
//!   an expiry per entry, refreshed by each node, so a dead node's entries
//!   expire.
//!
//! Delivery guarantees: within a room's history, exactly once and in order
//! on every node; without history (or while Redis is unreachable), at most
//! once.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod codec;
mod config;
mod conn;
mod keys;
mod presence;
mod publisher;
mod reader;
mod scripts;
mod stats;
mod subscriber;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use redis::{Client, Value};
use sabai::hub::{
    BoxFuture, ClusterStats, Engine, EngineError, HistoryPolicy, HistoryRead, Node, Outgoing, Placement,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

pub use config::{Backoff, RedisConfig};
pub use keys::Keys;
pub use stats::RedisStats;

use conn::Commands;
use scripts::Scripts;
use stats::Counters;
use subscriber::Room;

/// An [`Engine`] that shares rooms through Redis. See the crate docs.
///
/// Dropping it (with the [`Hub`](sabai::hub::Hub) that holds it) stops its
/// tasks and closes its connections; [`shutdown`](Self::shutdown) first
/// removes this node's presence entries at once instead of letting them
/// expire.
#[derive(Debug)]
pub struct RedisEngine {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the engine's tasks share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) node: OnceLock<Node>,
    pub(crate) client: Client,
    pub(crate) commands: Commands,
    pub(crate) scripts: Scripts,
    /// The rooms this node has members in, and what the reader knows of them.
    pub(crate) rooms: Mutex<HashMap<String, Room>>,
    /// Wakes the task that owns the pub/sub sink: the rooms changed.
    pub(crate) rooms_changed: Notify,
    /// The pub/sub connection is up and every room is subscribed.
    pub(crate) subscribed: AtomicBool,
    /// The pub/sub connection was lost and no new one is up yet.
    pub(crate) lost: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) seq: AtomicU64,
    pub(crate) publisher: mpsc::UnboundedSender<publisher::Job>,
    pub(crate) presence: mpsc::UnboundedSender<presence::Op>,
}

impl Inner {
    pub(crate) fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.get()
    }

    fn is_ready(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst) && !self.commands.is_down()
    }
}

impl RedisEngine {
    /// Connects to Redis: checks that it answers, loads the scripts, opens
    /// the pub/sub connection, and starts the engine's tasks (on the
    /// current tokio runtime). Fails with [`EngineError::Unavailable`]
    /// naming the URL (without its password) if Redis cannot be reached,
    /// unless [`RedisConfig::wait_for_redis`] is set: then it retries with
    /// the backoff until Redis answers. A refused password
    /// ([`EngineError::Broker`]) or an invalid configuration fails at once.
    ///
    /// Cancel safety: cancel-safe; nothing is started before it returns.
    pub async fn connect(config: RedisConfig) -> Result<RedisEngine, EngineError> {
        config
            .check()
            .map_err(|why| EngineError::Broker(format!("invalid Redis engine configuration: {why}")))?;
        pin_crypto_provider();
        let client = build_client(&config)?;
        let scripts = Scripts::new();
        let commands = Commands::new(client.clone(), &config);
        let mut attempt = 0;
        let pubsub = loop {
            match subscriber::first_contact(&client, &commands, &scripts, &config).await {
                Ok(pubsub) => break pubsub,
                Err((error, permanent)) if permanent || !config.wait_for_redis => return Err(error),
                Err(_) => {
                    tokio::time::sleep(config.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        let (publisher, jobs) = mpsc::unbounded_channel();
        let (presence, ops) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            keys: Keys::new(config.prefix.clone()),
            config,
            node: OnceLock::new(),
            client,
            commands,
            scripts,
            rooms: Mutex::new(HashMap::new()),
            rooms_changed: Notify::new(),
            subscribed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            counters: Counters::default(),
            // A random start: a node that restarts with the same id must not
            // reuse the ids of its last publications, which other nodes may
            // still remember (and would drop as copies).
            seq: AtomicU64::new(rand::random::<u64>() >> 1),
            publisher,
            presence,
        });
        let tasks = vec![
            tokio::spawn(publisher::run(inner.clone(), jobs)),
            tokio::spawn(subscriber::run(inner.clone(), pubsub)),
            tokio::spawn(presence::run(inner.clone(), ops)),
        ];
        Ok(RedisEngine { inner, tasks })
    }

    /// This node's id (in presence entries and publication ids).
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// The names of this engine's keys and channels.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The engine's counters.
    pub fn stats(&self) -> RedisStats {
        self.inner.counters.snapshot(self.inner.is_ready())
    }

    /// Removes this node's presence entries and its node registry entry
    /// now (rather than letting them expire), and stops refreshing them:
    /// for a node that drains before it exits. Bounded by the command
    /// timeout; if Redis cannot be reached the entries expire on their own.
    ///
    /// Cancel safety: cancel-safe; the removal, once queued, goes on.
    pub async fn shutdown(&self) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.inner.presence.send(presence::Op::Remove(done)).is_ok() {
            let _ = tokio::time::timeout(self.inner.config.command_timeout * 2, finished).await;
        }
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Installs rustls's `ring` provider as the process default, if no
/// provider is installed yet. rustls picks its provider from its crate
/// features only when exactly one is enabled; another crate in the same
/// program enabling `aws-lc-rs` would make every TLS connection panic
/// ("no process-level CryptoProvider available"). An installed default
/// avoids that whatever the features; one installed by the application
/// first is kept.
pub(crate) fn pin_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The redis-rs client for the URL, with the CA file for `rediss://`.
fn build_client(config: &RedisConfig) -> Result<Client, EngineError> {
    let url = config.redacted_url();
    let invalid = |e: redis::RedisError| EngineError::Broker(format!("invalid Redis URL {url}: {e}"));
    let Some(path) = &config.ca_file else { return Client::open(config.url.as_str()).map_err(invalid) };
    let pem = std::fs::read(path)
        .map_err(|e| EngineError::Broker(format!("cannot read the CA file {}: {e}", path.display())))?;
    let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
    Client::build_with_tls(config.url.as_str(), certificates).map_err(invalid)
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(value))
}

fn millis(duration: std::time::Duration) -> Vec<u8> {
    duration.as_millis().min(u64::MAX as u128).to_string().into_bytes()
}

impl Engine for RedisEngine {
    fn attach(&self, node: Node) {
        let _ = self.inner.node.set(node);
    }

    fn publish(&self, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>> {
        publisher::publish(&self.inner, outgoing)
    }

    fn subscribe(&self, room: &str) -> BoxFuture<Result<(), EngineError>> {
        subscriber::subscribe(&self.inner, room)
    }

    fn unsubscribe(&self, room: &str) {
        subscriber::unsubscribe(&self.inner, room)
    }

    fn history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> BoxFuture<Result<HistoryRead, EngineError>> {
        let (inner, room, policy) = (self.inner.clone(), room.to_owned(), policy.clone());
        Box::pin(async move {
            Counters::add(&inner.counters.history_reads, 1);
            let read = subscriber::read_history(&inner, &room, since, policy.size, policy.meta_ttl).await?;
            subscriber::learn(&inner, &room, &read, &policy);
            Ok(read)
        })
    }

    fn presence_join(&self, room: &str, user: Option<&str>) {
        if let Some(user) = user {
            let _ = self.inner.presence.send(presence::Op::Join(room.to_owned(), user.to_owned()));
        }
    }

    fn presence_leave(&self, room: &str, user: Option<&str>) {
        if let Some(user) = user {
            let _ = self.inner.presence.send(presence::Op::Leave(room.to_owned(), user.to_owned()));
        }
    }

    fn presence(&self, room: &str) -> BoxFuture<Result<Vec<(String, u64)>, EngineError>> {
        Box::pin(presence::read(self.inner.clone(), room.to_owned()))
    }

    fn cluster(&self) -> BoxFuture<Result<ClusterStats, EngineError>> {
        Box::pin(presence::cluster(self.inner.clone()))
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
}

/// A bulk string's bytes (empty for anything else).
pub(crate) fn bulk(value: &Value) -> &[u8] {
    match value {
        Value::BulkString(bytes) => bytes,
        _ => b"",
    }
}
