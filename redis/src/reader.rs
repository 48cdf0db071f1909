//! The reader: hands the publications arriving on the pub/sub connection
//! to the hub ([`Node::deliver`](sabai::hub::Node::deliver)) in order, once
//! each, and fills the gaps.
//!
//! - A publication to several rooms arrives once per room channel this
//!   node is subscribed to; the copies are contiguous (the script
//!   published them one after the other), and a set of recent publication
//!   ids drops all but the first.
//! - For every room it follows, the reader knows where delivery stands
//!   (`Room::at`). A publication whose offset is past the next one in the
//!   same epoch means messages were lost (Redis drops pub/sub messages for
//!   a connection it closed, and a reconnect misses what was published
//!   meanwhile): the missing ones are read from the room's history
//!   (XRANGE by offset) and delivered first. If the history no longer has
//!   them, or the epoch changed, the room is reset
//!   ([`Node::reset`](sabai::hub::Node::reset)) and delivery goes on.
//! - A publication whose offsets were all delivered already (it came
//!   back from the history first) is skipped.
//! - After a reconnect, every room with a known position is brought up to
//!   its current position the same way, before the first new message.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use redis::Value;
use sabai::hub::{EngineError, HistoryPolicy, HistoryRead, Position, Publication};

use crate::codec::{self, PublicationId};
use crate::stats::Counters;
use crate::{bulk, millis, Inner};

/// Publication ids remembered to drop the extra copies of a publication.
const RECENT: usize = 1024;
/// Nested fills (a filled publication with a gap in another room) at most.
const MAX_DEPTH: u32 = 4;
/// The meta TTL of a room made again after Redis lost it, before the hub
/// said what the room's policy is (`HistoryPolicy::new`'s default).
const DEFAULT_META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The ids of the last publications delivered.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<PublicationId>,
    set: HashSet<PublicationId>,
}

impl Recent {
    /// Whether `id` is new (and remembers it).
    fn first(&mut self, id: PublicationId) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() == RECENT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }
}

/// Reads the pub/sub connection until it ends. After a reconnect,
/// `recover` brings every known room up to date first.
pub(crate) async fn read(inner: &Inner, mut stream: PubSubStream, recover: bool) {
    if recover {
        recover_rooms(inner).await;
    }
    let mut recent = Recent::default();
    while let Some(message) = stream.next().await {
        Counters::add(&inner.counters.pubsub_messages, 1);
        match codec::decode(message.get_payload_bytes(), &inner.config.node_id) {
            Ok(decoded) => {
                if recent.first(decoded.id) {
                    handle(inner, decoded.publication, 0).await;
                }
            }
            Err(_) => Counters::add(&inner.counters.decode_errors, 1),
        }
    }
}

/// Brings every room with a known position up to its current one.
async fn recover_rooms(inner: &Inner) {
    let known: Vec<(String, Duration)> = inner
        .rooms()
        .iter()
        .filter(|(_, room)| room.at.is_some())
        .map(|(name, room)| (name.clone(), room.meta_ttl.unwrap_or(DEFAULT_META_TTL)))
        .collect();
    for (room, meta_ttl) in known {
        // Unreadable now: the next publication will show the gap.
        if let Ok(HistoryRead { position: Some(now), .. }) =
            read_history(inner, &room, None, 1, meta_ttl).await
        {
            catch_up(inner, &room, &now, 0).await;
        }
    }
}

type Step<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Delivers one publication after what it needs, unless it was delivered.
fn handle(inner: &Inner, publication: Arc<Publication>, depth: u32) -> Step<'_> {
    Box::pin(async move {
        for placement in &publication.rooms {
            let Some(at) = &placement.position else { continue };
            let behind =
                inner.rooms().get(&placement.room).and_then(|r| r.at.clone()).is_some_and(|known| {
                    known.epoch != at.epoch || at.offset > known.offset.saturating_add(1)
                });
            if behind {
                let before = Position::new(at.offset.saturating_sub(1), at.epoch.clone());
                catch_up(inner, &placement.room, &before, depth).await;
            }
        }
        if was_delivered(inner, &publication) {
            return;
        }
        if let Some(node) = inner.node() {
            node.deliver(publication.clone());
        }
        advance(inner, &publication);
    })
}

/// Brings a room's delivery up to `target` (inclusive): from the history,
/// or by a reset where it cannot.
async fn catch_up(inner: &Inner, room: &str, target: &Position, depth: u32) {
    let Some(mut at) = inner.rooms().get(room).and_then(|r| r.at.clone()) else { return };
    if at.epoch != target.epoch {
        // The history this node knew is gone: the new one starts at 0.
        at = Position::new(0, target.epoch.clone());
        reset(inner, room, at.clone());
    }
    if target.offset > at.offset {
        fill(inner, room, at.offset + 1, target.offset, &target.epoch, depth).await;
    }
}

/// Delivers offsets `from..=to` of a room from its history.
async fn fill(inner: &Inner, room: &str, from: u64, to: u64, epoch: &Arc<str>, depth: u32) {
    if depth >= MAX_DEPTH || to - from >= inner.config.fill_limit as u64 {
        return reset(inner, room, Position::new(to, epoch.clone()));
    }
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(inner.keys.stream(room)).arg(format!("{from}-0")).arg(format!("{to}-0"));
    let entries = match inner.commands.query::<Value>(&cmd).await {
        Ok(Value::Array(entries)) => entries,
        _ => return reset(inner, room, Position::new(to, epoch.clone())),
    };
    let publications: Vec<Arc<Publication>> =
        entries.iter().filter_map(|entry| decode_entry(inner, entry)).collect();
    // What the history holds must be a run of this epoch's offsets ending at `to`.
    let offsets: Vec<Option<u64>> = publications.iter().map(|p| offset_in(p, room, epoch)).collect();
    let first = offsets.first().copied().flatten();
    let run = first.is_some_and(|first| {
        offsets.iter().enumerate().all(|(i, o)| *o == Some(first + i as u64))
            && first + offsets.len() as u64 - 1 == to
    });
    match first {
        Some(first) if run && first == from => Counters::add(&inner.counters.gaps_filled, 1),
        Some(first) if run => reset(inner, room, Position::new(first - 1, epoch.clone())),
        _ => return reset(inner, room, Position::new(to, epoch.clone())),
    }
    for publication in publications {
        handle(inner, publication, depth + 1).await;
    }
}

/// The room's members on this node continue from `position`.
fn reset(inner: &Inner, room: &str, position: Position) {
    Counters::add(&inner.counters.resets, 1);
    if let Some(known) = inner.rooms().get_mut(room) {
        known.at = Some(position.clone());
    }
    if let Some(node) = inner.node() {
        node.reset(room, position);
    }
}

/// Whether every room of it that this node follows has delivered its offset.
fn was_delivered(inner: &Inner, publication: &Publication) -> bool {
    let rooms = inner.rooms();
    let mut known = 0;
    for placement in &publication.rooms {
        let Some(position) = &placement.position else { continue };
        let Some(at) = rooms.get(&placement.room).and_then(|r| r.at.as_ref()) else { continue };
        if at.epoch != position.epoch || position.offset > at.offset {
            return false;
        }
        known += 1;
    }
    known > 0
}

/// Records that a publication was delivered.
fn advance(inner: &Inner, publication: &Publication) {
    let mut rooms = inner.rooms();
    for placement in &publication.rooms {
        let (Some(position), Some(room)) = (&placement.position, rooms.get_mut(&placement.room)) else {
            continue;
        };
        let ahead =
            room.at.as_ref().is_some_and(|at| at.epoch == position.epoch && at.offset >= position.offset);
        if !ahead {
            room.at = Some(position.clone());
        }
    }
}

fn offset_in(publication: &Publication, room: &str, epoch: &Arc<str>) -> Option<u64> {
    let placement = publication.rooms.iter().find(|p| p.room == room)?;
    placement.position.as_ref().filter(|p| p.epoch == *epoch).map(|p| p.offset)
}

/// A stream entry (`[id, [field, value]]`) as a publication.
fn decode_entry(inner: &Inner, entry: &Value) -> Option<Arc<Publication>> {
    let Value::Array(parts) = entry else { return None };
    let Some(Value::Array(fields)) = parts.get(1) else { return None };
    decode_bytes(inner, bulk(fields.get(1)?))
}

fn decode_bytes(inner: &Inner, bytes: &[u8]) -> Option<Arc<Publication>> {
    match codec::decode(bytes, &inner.config.node_id) {
        Ok(decoded) => Some(decoded.publication),
        Err(_) => {
            Counters::add(&inner.counters.decode_errors, 1);
            None
        }
    }
}

/// Runs the history script (see `scripts::HISTORY`).
pub(crate) async fn read_history(
    inner: &Inner,
    room: &str,
    since: Option<u64>,
    count: usize,
    meta_ttl: Duration,
) -> Result<HistoryRead, EngineError> {
    let keys = [inner.keys.meta(room), inner.keys.stream(room)];
    let since = since.map(|s| s.to_string()).unwrap_or_default().into_bytes();
    let args = [since, count.max(1).to_string().into_bytes(), millis(meta_ttl)];
    let answer: Value =
        inner.commands.eval(&inner.scripts.history, &keys, &args).await.map_err(|f| f.into_engine_error())?;
    let malformed = || EngineError::Broker(format!("unexpected answer to the history script for {room:?}"));
    let Value::Array(parts) = answer else { return Err(malformed()) };
    let [epoch, offset, earliest, Value::Array(entries)] = parts.as_slice() else { return Err(malformed()) };
    let number = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<u64>().ok());
    let offset = number(bulk(offset)).ok_or_else(malformed)?;
    let epoch = std::str::from_utf8(bulk(epoch)).map_err(|_| malformed())?;
    // A stream ID is "<offset>-0".
    let earliest = bulk(earliest).split(|&b| b == b'-').next().and_then(number);
    let publications = entries.iter().filter_map(|entry| decode_bytes(inner, bulk(entry))).collect();
    Ok(HistoryRead { position: Some(Position::new(offset, epoch)), publications, earliest })
}

/// What a history read tells the reader about a room this node follows:
/// its policy's meta TTL, and, before any delivery, where it stands.
pub(crate) fn learn(inner: &Inner, room: &str, read: &HistoryRead, policy: &HistoryPolicy) {
    if let Some(known) = inner.rooms().get_mut(room) {
        known.meta_ttl = Some(policy.meta_ttl);
        if known.at.is_none() {
            known.at = read.position.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_drop_copies_and_forget_the_oldest() {
        let mut recent = Recent::default();
        let id = |seq| (Arc::<str>::from("n"), seq);
        assert!(recent.first(id(1)));
        assert!(!recent.first(id(1)));
        for seq in 2..=RECENT as u64 + 1 {
            assert!(recent.first(id(seq)));
        }
        assert_eq!(recent.order.len(), RECENT);
        assert!(recent.first(id(1)), "forgotten after {RECENT} newer ones");
    }
}
