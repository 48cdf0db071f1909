//! Presence across nodes, and the node registry behind `cluster()`.
//!
//! This node's own entries live here, in one task: joins and leaves
//! (reported by the hub under its lock, so they only queue) change the
//! local counts, and the task writes the changed entries to Redis, each
//! as an absolute count (so a write that failed is repaired by the next).
//! Every third of the presence TTL it rewrites all of them with a new
//! expiry, with this node's registry entry: the entries of a node that
//! died expire, and entries lost in a Redis restart come back.
//!
//! Reading removes the expired entries first (Redis 7.0 has no per-field
//! TTL, hence the sorted set of expiry times) and sums the counts per
//! user across nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use redis::Value;
use sabai::hub::{ClusterStats, EngineError, Node};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, timeout, MissedTickBehavior};

use crate::conn::{evalsha, is_noscript};
use crate::{bulk, millis, Inner};

/// What the presence task is asked to do.
#[derive(Debug)]
pub(crate) enum Op {
    Join(String, String),
    Leave(String, String),
    /// Rewrite every entry now (Redis came back).
    Refresh,
    /// Answer once everything asked before is written (or failed).
    Flush(oneshot::Sender<()>),
    /// Remove this node's entries and stop refreshing them.
    Remove(oneshot::Sender<()>),
}

/// The presence task.
pub(crate) async fn run(inner: Arc<Inner>, mut ops: mpsc::UnboundedReceiver<Op>) {
    let mut local: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    let mut stopped = false;
    let mut tick = interval(inner.config.presence_ttl / 3);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        let refresh_all = tokio::select! {
            _ = tick.tick() => true,
            n = ops.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    return;
                }
                false
            }
        };
        let mut refresh_all = refresh_all && !stopped;
        let mut dirty: HashSet<(String, String)> = HashSet::new();
        let mut answers = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Join(room, user) => {
                    *local.entry(room.clone()).or_default().entry(user.clone()).or_default() += 1;
                    dirty.insert((room, user));
                }
                Op::Leave(room, user) => {
                    if let Some(users) = local.get_mut(&room) {
                        if let Some(count) = users.get_mut(&user) {
                            *count = count.saturating_sub(1);
                            if *count == 0 {
                                users.remove(&user);
                            }
                        }
                        if users.is_empty() {
                            local.remove(&room);
                        }
                    }
                    dirty.insert((room, user));
                }
                Op::Refresh => refresh_all = !stopped,
                Op::Flush(answer) => answers.push(answer),
                Op::Remove(answer) => {
                    stopped = true;
                    refresh_all = false;
                    remove_all(&inner, &local).await;
                    local.clear();
                    answers.push(answer);
                }
            }
        }
        if !stopped {
            if refresh_all {
                write_all(&inner, &local).await;
            } else if !dirty.is_empty() {
                write_dirty(&inner, &local, dirty).await;
            }
        }
        for answer in answers {
            let _ = answer.send(());
        }
    }
}

/// Entries to write: field and count ("" removes the entry).
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// This node's field for a user.
fn field(inner: &Inner, user: &str) -> Vec<u8> {
    format!("{}|{user}", inner.config.node_id).into_bytes()
}

/// One presence_set call: keys and (ttl, field, count ...) arguments.
fn set_call(inner: &Inner, keys: [String; 2], pairs: Pairs) -> redis::Cmd {
    let mut args = vec![millis(inner.config.presence_ttl)];
    for (field, count) in pairs {
        args.extend([field, count]);
    }
    evalsha(&inner.scripts.presence_set, &keys, &args)
}

fn room_keys(inner: &Inner, room: &str) -> [String; 2] {
    [inner.keys.presence(room), inner.keys.presence_expiry(room)]
}

/// The count to write: "" removes the entry.
fn count(local: &HashMap<String, BTreeMap<String, u64>>, room: &str, user: &str) -> Vec<u8> {
    local.get(room).and_then(|users| users.get(user)).map(|c| c.to_string().into_bytes()).unwrap_or_default()
}

async fn write_dirty(
    inner: &Inner,
    local: &HashMap<String, BTreeMap<String, u64>>,
    dirty: HashSet<(String, String)>,
) {
    let mut per_room: HashMap<String, Pairs> = HashMap::new();
    for (room, user) in dirty {
        let count = count(local, &room, &user);
        per_room.entry(room).or_default().push((field(inner, &user), count));
    }
    let calls =
        per_room.into_iter().map(|(room, pairs)| set_call(inner, room_keys(inner, &room), pairs)).collect();
    run_calls(inner, calls).await;
}

/// Rewrites every entry of this node, and its registry entry.
async fn write_all(inner: &Inner, local: &HashMap<String, BTreeMap<String, u64>>) {
    let mut calls: Vec<redis::Cmd> = local
        .iter()
        .map(|(room, users)| {
            let pairs =
                users.iter().map(|(user, n)| (field(inner, user), n.to_string().into_bytes())).collect();
            set_call(inner, room_keys(inner, room), pairs)
        })
        .collect();
    let connections = inner.node().map_or(0, Node::connections);
    let registry = vec![(inner.config.node_id.clone().into_bytes(), connections.to_string().into_bytes())];
    calls.push(set_call(inner, [inner.keys.nodes(), inner.keys.nodes_expiry()], registry));
    run_calls(inner, calls).await;
}

async fn remove_all(inner: &Inner, local: &HashMap<String, BTreeMap<String, u64>>) {
    let mut calls: Vec<redis::Cmd> = local
        .iter()
        .map(|(room, users)| {
            let pairs = users.keys().map(|user| (field(inner, user), Vec::new())).collect();
            set_call(inner, room_keys(inner, room), pairs)
        })
        .collect();
    let registry = vec![(inner.config.node_id.clone().into_bytes(), Vec::new())];
    calls.push(set_call(inner, [inner.keys.nodes(), inner.keys.nodes_expiry()], registry));
    run_calls(inner, calls).await;
}

/// Sends the calls as one pipeline, loading the script once on NOSCRIPT.
/// A failure is left to the next refresh.
async fn run_calls(inner: &Inner, calls: Vec<redis::Cmd>) {
    for chunk in calls.chunks(512) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for call in chunk {
            pipe.add_command(call.clone());
        }
        let Ok(answers) = inner.commands.pipeline(&pipe).await else { return };
        if answers.iter().any(is_noscript) && inner.commands.load(&inner.scripts.presence_set).await.is_ok() {
            let _ = inner.commands.pipeline(&pipe).await;
        }
    }
}

/// Runs presence_read on a hash and its expiry set: field → count.
async fn read_entries(inner: &Inner, keys: [String; 2]) -> Result<Vec<(String, u64)>, EngineError> {
    let answer: Value = inner
        .commands
        .eval(&inner.scripts.presence_read, &keys, &[])
        .await
        .map_err(|f| f.into_engine_error())?;
    let Value::Array(items) = answer else {
        return Err(EngineError::Broker("unexpected answer to the presence script".into()));
    };
    let entries = items.chunks(2).filter_map(|pair| {
        let field = String::from_utf8(bulk(pair.first()?).to_vec()).ok()?;
        let count = std::str::from_utf8(bulk(pair.get(1)?)).ok()?.parse().ok()?;
        Some((field, count))
    });
    Ok(entries.collect())
}

/// Waits (bounded) until this node's earlier joins and leaves are written,
/// so that a node reads its own presence changes.
async fn flush(inner: &Inner) {
    let (done, written) = oneshot::channel();
    if inner.presence.send(Op::Flush(done)).is_ok() {
        let _ = timeout(inner.config.command_timeout * 2, written).await;
    }
}

/// Who is in `room` on every node: each user with its connections, sorted.
pub(crate) async fn read(inner: Arc<Inner>, room: String) -> Result<Vec<(String, u64)>, EngineError> {
    flush(&inner).await;
    let mut users: BTreeMap<String, u64> = BTreeMap::new();
    for (field, count) in read_entries(&inner, room_keys(&inner, &room)).await? {
        // "<node>|<user>": node ids have no '|', user names may.
        if let Some((_, user)) = field.split_once('|') {
            *users.entry(user.to_owned()).or_default() += count;
        }
    }
    Ok(users.into_iter().filter(|(_, n)| *n > 0).collect())
}

/// Nodes alive and their connections; this node's from the hub itself.
pub(crate) async fn cluster(inner: Arc<Inner>) -> Result<ClusterStats, EngineError> {
    let entries = read_entries(&inner, [inner.keys.nodes(), inner.keys.nodes_expiry()]).await?;
    let others: Vec<u64> =
        entries.into_iter().filter(|(node, _)| *node != inner.config.node_id).map(|(_, n)| n).collect();
    let mut stats = ClusterStats::default();
    stats.nodes = others.len() as u64 + 1;
    stats.connections = others.iter().sum::<u64>() + inner.node().map_or(0, Node::connections);
    Ok(stats)
}
