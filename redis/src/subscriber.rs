//! The pub/sub connection: which room channels this node is subscribed
//! to, and how the connection comes back after it was lost.
//!
//! [`subscribe`] is called under the hub's lock on every join, so it only
//! records the room and wakes the task that owns the pub/sub sink; that
//! task brings Redis's subscriptions in line with the rooms wanted
//! (SUBSCRIBE what is missing, UNSUBSCRIBE what is no longer wanted), and
//! each subscribe future resolves once Redis confirmed its room. The same
//! task PINGs the connection, so a Redis that stopped answering is noticed
//! even without a closed socket.
//!
//! When the connection drops, the node is not ready until a new one has
//! every room subscribed again; the reader then brings every room it knew
//! up to date from its history (see [`reader`](crate::reader)).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{PubSub, PubSubSink};
use redis::{Client, Value};
use sabai::hub::{BoxFuture, EngineError, Position};
use tokio::sync::oneshot;
use tokio::time::timeout;

pub(crate) use crate::reader::{learn, read_history};

use crate::config::RedisConfig;
use crate::conn::{describe, is_permanent, Commands, Failure};
use crate::scripts::Scripts;
use crate::stats::Counters;
use crate::{presence, reader, ready, Inner};

/// How often the pub/sub connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE command.
const CHUNK: usize = 1000;

/// A room this node has members in.
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// Redis confirmed the subscription on the current connection.
    pub(crate) confirmed: bool,
    /// Subscribe futures waiting for that.
    waiters: Vec<oneshot::Sender<()>>,
    /// Where this node's delivery of the room stands: the last position
    /// handed to the hub, or, before any, the position the room's first
    /// history read found (every member has what came before it).
    pub(crate) at: Option<Position>,
    /// The room's meta TTL, learned from the hub's history reads (for a
    /// meta this node has to make again after Redis lost it).
    pub(crate) meta_ttl: Option<Duration>,
}

/// This node has members in `room`: see the module docs.
pub(crate) fn subscribe(inner: &Arc<Inner>, room: &str) -> BoxFuture<Result<(), EngineError>> {
    let confirmed = {
        let mut rooms = inner.rooms();
        let fresh = !rooms.contains_key(room);
        let entry = rooms.entry(room.to_owned()).or_default();
        if entry.confirmed {
            return ready(Ok(()));
        }
        if fresh {
            inner.rooms_changed.notify_one();
        }
        if inner.lost.load(Ordering::SeqCst) {
            // Subscribed when the connection is back; no use waiting for that.
            let url = inner.config.redacted_url();
            let reason = format!("lost Redis at {url}: the room is subscribed when it is back");
            return ready(Err(EngineError::Unavailable { reason, delivered_locally: false }));
        }
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        rx
    };
    let wait = inner.config.command_timeout;
    let inner = inner.clone();
    Box::pin(async move {
        match timeout(wait, confirmed).await {
            // Err: the room was dropped meanwhile; nobody needs it.
            Ok(_) => Ok(()),
            Err(_) => Err(EngineError::Unavailable {
                reason: format!(
                    "Redis at {} did not confirm the subscription within {wait:?}",
                    inner.config.redacted_url()
                ),
                delivered_locally: false,
            }),
        }
    })
}

/// This node's last member of `room` left.
pub(crate) fn unsubscribe(inner: &Inner, room: &str) {
    if inner.rooms().remove(room).is_some() {
        inner.rooms_changed.notify_one();
    }
}

/// The first connection to Redis, made by `connect`: the commands
/// connection answers, the scripts are loaded, and a pub/sub connection
/// is open. `Err((error, permanent))`: waiting will not help.
pub(crate) async fn first_contact(
    client: &Client,
    commands: &Commands,
    scripts: &Scripts,
    config: &RedisConfig,
) -> Result<PubSub, (EngineError, bool)> {
    let url = config.redacted_url();
    let wait = config.command_timeout;
    let unreachable = |reason: String, permanent: bool| {
        (EngineError::Unavailable { reason, delivered_locally: false }, permanent)
    };
    let connection_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(wait))
        .set_response_timeout(Some(wait));
    let connect = client.get_multiplexed_async_connection_with_config(&connection_config);
    match timeout(wait, connect).await {
        Ok(Ok(connection)) => commands.adopt(connection),
        Ok(Err(error)) if is_permanent(&error) => {
            return Err((EngineError::Broker(describe(&error, &url)), true));
        }
        Ok(Err(error)) => return Err(unreachable(describe(&error, &url), false)),
        Err(_) => {
            return Err(unreachable(format!("cannot reach Redis at {url}: no answer within {wait:?}"), false))
        }
    }
    for script in scripts.all() {
        match commands.load(script).await {
            Ok(()) => {}
            Err(Failure::Unreachable(reason)) => return Err(unreachable(reason, false)),
            // Redis answered, and said no (NOAUTH, NOPERM...): waiting will not change that.
            Err(Failure::Server(error)) => return Err((EngineError::Broker(describe(&error, &url)), true)),
        }
    }
    match timeout(wait, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(unreachable(describe(&error, &url), is_permanent(&error))),
        Err(_) => Err(unreachable(format!("cannot reach Redis at {url}: no answer within {wait:?}"), false)),
    }
}

/// The pub/sub task: keeps a connection subscribed to every room wanted,
/// reads it, and makes a new one when it is lost.
pub(crate) async fn run(inner: Arc<Inner>, first: PubSub) {
    let mut connection = Some(first);
    let mut attempt = 0;
    let mut lost_one = false;
    loop {
        let pubsub = match connection.take() {
            Some(pubsub) => pubsub,
            None => {
                tokio::time::sleep(inner.config.backoff.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
                match timeout(inner.config.command_timeout, inner.client.get_async_pubsub()).await {
                    Ok(Ok(pubsub)) => pubsub,
                    _ => continue,
                }
            }
        };
        let (mut sink, stream) = pubsub.split();
        let mut subscribed = HashSet::new();
        if reconcile(&inner, &mut sink, &mut subscribed).await.is_err() {
            continue;
        }
        attempt = 0;
        inner.subscribed.store(true, Ordering::SeqCst);
        inner.lost.store(false, Ordering::SeqCst);
        if lost_one {
            Counters::add(&inner.counters.reconnects, 1);
            // Entries lost with Redis's data come back now, not at the next refresh.
            let _ = inner.presence.send(presence::Op::Refresh);
        }
        tokio::select! {
            () = keep(&inner, &mut sink, &mut subscribed) => {}
            () = reader::read(&inner, stream, lost_one) => {}
        }
        inner.subscribed.store(false, Ordering::SeqCst);
        inner.lost.store(true, Ordering::SeqCst);
        inner.commands.forget();
        for room in inner.rooms().values_mut() {
            room.confirmed = false;
        }
        lost_one = true;
    }
}

/// Keeps the connection's subscriptions in line with the rooms, and
/// checks that it answers. Returns when the connection is lost.
async fn keep(inner: &Inner, sink: &mut PubSubSink, subscribed: &mut HashSet<String>) {
    loop {
        tokio::select! {
            () = inner.rooms_changed.notified() => {
                if reconcile(inner, sink, subscribed).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(PING_EVERY) => {
                match timeout(inner.config.command_timeout, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }
}

/// SUBSCRIBEs the rooms wanted and not subscribed, UNSUBSCRIBEs the
/// others, and confirms the rooms to their waiters. `Err`: the connection
/// is lost.
async fn reconcile(inner: &Inner, sink: &mut PubSubSink, subscribed: &mut HashSet<String>) -> Result<(), ()> {
    let wait = inner.config.command_timeout;
    let (add, remove) = {
        let mut rooms = inner.rooms();
        let add: Vec<String> = rooms.keys().filter(|r| !subscribed.contains(*r)).cloned().collect();
        let remove: Vec<String> = subscribed.iter().filter(|r| !rooms.contains_key(*r)).cloned().collect();
        // Left and joined again before the UNSUBSCRIBE went out: still subscribed.
        for (name, room) in rooms.iter_mut() {
            if subscribed.contains(name) && !room.confirmed {
                confirm(room);
            }
        }
        (add, remove)
    };
    for chunk in remove.chunks(CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|r| inner.keys.channel(r)).collect();
        match timeout(wait, sink.unsubscribe(&channels)).await {
            Ok(Ok(())) => {
                for room in chunk {
                    subscribed.remove(room);
                }
            }
            _ => return Err(()),
        }
    }
    for chunk in add.chunks(CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|r| inner.keys.channel(r)).collect();
        match timeout(wait, sink.subscribe(&channels)).await {
            Ok(Ok(())) => {}
            _ => return Err(()),
        }
        subscribed.extend(chunk.iter().cloned());
        let mut rooms = inner.rooms();
        for room in chunk {
            if let Some(room) = rooms.get_mut(room) {
                confirm(room);
            }
        }
    }
    Ok(())
}

fn confirm(room: &mut Room) {
    room.confirmed = true;
    for waiter in room.waiters.drain(..) {
        let _ = waiter.send(());
    }
}
