//! The memory engine: one node, no setup. Publications are delivered as
//! they are published; history and presence live in this process and die
//! with it (a restart starts new epochs, so clients learn that their
//! history is gone).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::time::{Duration, Instant};

use super::{
    BoxFuture, ClusterStats, Engine, EngineError, HistoryPolicy, HistoryRead, Node, Outgoing, Placement,
    Position, Publication,
};

/// Rooms idle past their `meta_ttl` are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The default engine of a [`Hub`](crate::hub::Hub): see the module docs.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    node: OnceLock<Node>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Stream>,
    presence: HashMap<String, BTreeMap<String, u64>>,
    swept: Option<Instant>,
}

/// One room's history.
#[derive(Debug)]
struct Stream {
    epoch: Arc<str>,
    offset: u64,
    kept: VecDeque<Arc<Publication>>,
    last_publish: Instant,
    policy: HistoryPolicy,
}

impl Stream {
    fn new(policy: &HistoryPolicy, now: Instant) -> Stream {
        Stream {
            epoch: new_epoch(),
            offset: 0,
            kept: VecDeque::new(),
            last_publish: now,
            policy: policy.clone(),
        }
    }

    fn position(&self) -> Position {
        Position { offset: self.offset, epoch: self.epoch.clone() }
    }

    /// Drops the history once `ttl` has passed since the last publication.
    fn expire(&mut self, now: Instant) {
        if now.duration_since(self.last_publish) >= self.policy.ttl {
            self.kept.clear();
        }
    }
}

/// A random epoch: a restarted process never reuses one.
fn new_epoch() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

impl MemoryEngine {
    /// An engine for this node alone, with no rooms yet.
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The room's stream, made (new epoch) or renewed if its meta expired.
    fn stream(&mut self, room: &str, policy: &HistoryPolicy, now: Instant) -> &mut Stream {
        self.sweep(now);
        let stream = self.rooms.entry(room.to_owned()).or_insert_with(|| Stream::new(policy, now));
        if now.duration_since(stream.last_publish) >= stream.policy.meta_ttl {
            *stream = Stream::new(policy, now);
        }
        stream.policy = policy.clone();
        stream.expire(now);
        stream
    }

    /// Forgets rooms whose offset and epoch have expired.
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|at| now.duration_since(at) < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        self.rooms.retain(|_, s| now.duration_since(s.last_publish) < s.policy.meta_ttl);
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(value))
}

impl Engine for MemoryEngine {
    fn attach(&self, node: Node) {
        let _ = self.node.set(node);
    }

    fn publish(&self, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut rooms = Vec::with_capacity(outgoing.rooms.len());
        for (room, policy) in &outgoing.rooms {
            let position = policy.as_ref().map(|policy| {
                let stream = state.stream(room, policy, now);
                stream.offset += 1;
                stream.last_publish = now;
                stream.position()
            });
            rooms.push(Placement { room: room.clone(), position });
        }
        let publication = Arc::new(Publication {
            message: outgoing.message,
            rooms,
            except: outgoing.except,
            coalesce: outgoing.coalesce,
        });
        for (room, policy) in &outgoing.rooms {
            if let Some(stream) = policy.as_ref().and_then(|_| state.rooms.get_mut(room)) {
                stream.kept.push_back(publication.clone());
                while stream.kept.len() > stream.policy.size {
                    stream.kept.pop_front();
                }
            }
        }
        // Delivered under the engine's lock: offsets and delivery in one
        // order, whatever the number of publishing threads.
        if let Some(node) = self.node.get() {
            node.deliver(publication.clone());
        }
        drop(state);
        ready(Ok(publication.rooms.clone()))
    }

    fn subscribe(&self, _room: &str) -> BoxFuture<Result<(), EngineError>> {
        ready(Ok(()))
    }

    fn unsubscribe(&self, _room: &str) {}

    fn history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> BoxFuture<Result<HistoryRead, EngineError>> {
        let mut state = self.lock();
        let stream = state.stream(room, policy, Instant::now());
        let publications = match since {
            None => Vec::new(),
            Some(since) => stream
                .kept
                .iter()
                .filter(|p| p.offset(room).is_some_and(|o| o > since))
                .take(policy.size)
                .cloned()
                .collect(),
        };
        let earliest = stream.kept.front().and_then(|p| p.offset(room));
        ready(Ok(HistoryRead { position: Some(stream.position()), publications, earliest }))
    }

    fn presence_join(&self, room: &str, user: Option<&str>) {
        if let Some(user) = user {
            *self.lock().presence.entry(room.to_owned()).or_default().entry(user.to_owned()).or_default() +=
                1;
        }
    }

    fn presence_leave(&self, room: &str, user: Option<&str>) {
        let Some(user) = user else { return };
        let mut state = self.lock();
        let Some(users) = state.presence.get_mut(room) else { return };
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
        }
        if users.is_empty() {
            state.presence.remove(room);
        }
    }

    fn presence(&self, room: &str) -> BoxFuture<Result<Vec<(String, u64)>, EngineError>> {
        let users = self.lock().presence.get(room).map(|u| u.iter().map(|(k, v)| (k.clone(), *v)).collect());
        ready(Ok(users.unwrap_or_default()))
    }

    fn cluster(&self) -> BoxFuture<Result<ClusterStats, EngineError>> {
        let connections = self.node.get().map_or(0, Node::connections);
        ready(Ok(ClusterStats { nodes: 1, connections }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn outgoing(text: &str, rooms: &[(&str, Option<HistoryPolicy>)]) -> Outgoing {
        Outgoing {
            message: Message::text(text),
            rooms: rooms.iter().map(|(r, p)| (r.to_string(), p.clone())).collect(),
            except: None,
            coalesce: None,
        }
    }

    async fn placed(engine: &MemoryEngine, out: Outgoing) -> Vec<Option<u64>> {
        let rooms = engine.publish(out).await.unwrap();
        rooms.iter().map(|p| p.position.as_ref().map(|p| p.offset)).collect()
    }

    #[tokio::test]
    async fn offsets_count_per_room_and_a_multi_room_publication_gets_one_in_each() {
        let engine = MemoryEngine::new();
        let keep = Some(HistoryPolicy::new(10, Duration::from_secs(60)));
        assert_eq!(placed(&engine, outgoing("a", &[("d", keep.clone())])).await, [Some(1)]);
        let both = outgoing("b", &[("d", keep.clone()), ("g", keep.clone()), ("x", None)]);
        assert_eq!(placed(&engine, both).await, [Some(2), Some(1), None]);
        let read = engine.history("d", Some(0), keep.as_ref().unwrap()).await.unwrap();
        assert_eq!(read.position.as_ref().unwrap().offset, 2);
        assert_eq!(read.earliest, Some(1));
        let texts: Vec<_> = read.publications.iter().map(|p| p.message.as_text().unwrap()).collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(read.publications[1].offset("g"), Some(1));
    }

    #[tokio::test]
    async fn history_keeps_the_last_size_and_reports_what_it_cannot_recover() {
        let engine = MemoryEngine::new();
        let policy = HistoryPolicy::new(3, Duration::from_secs(60));
        for i in 0..5 {
            engine.publish(outgoing(&i.to_string(), &[("r", Some(policy.clone()))])).await.unwrap();
        }
        let read = engine.history("r", Some(1), &policy).await.unwrap();
        assert_eq!(read.earliest, Some(3));
        let epoch = read.position.clone().unwrap().epoch;
        assert!(!read.recovers(&Position::new(1, epoch.clone())), "offset 2 is gone");
        assert!(read.recovers(&Position::new(2, epoch.clone())));
        assert!(read.recovers(&Position::new(5, epoch.clone())));
        assert!(!read.recovers(&Position::new(6, epoch)), "a future offset");
        assert!(!read.recovers(&Position::new(5, "another epoch")));
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_after_its_ttl_and_the_epoch_after_its_meta_ttl() {
        let engine = MemoryEngine::new();
        let policy = HistoryPolicy::new(10, Duration::from_secs(5)).meta_ttl(Duration::from_secs(60));
        engine.publish(outgoing("a", &[("r", Some(policy.clone()))])).await.unwrap();
        let before = engine.history("r", Some(0), &policy).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        let later = engine.history("r", Some(0), &policy).await.unwrap();
        assert_eq!(later.position, before.position, "offset and epoch outlive the history");
        assert!(later.publications.is_empty() && later.earliest.is_none());
        assert!(!later.recovers(&Position::new(0, before.position.clone().unwrap().epoch)));
        tokio::time::advance(Duration::from_secs(60)).await;
        let renewed = engine.history("r", None, &policy).await.unwrap().position.unwrap();
        assert_eq!(renewed.offset, 0);
        assert_ne!(Some(renewed.epoch), before.position.map(|p| p.epoch));
    }

    #[tokio::test]
    async fn presence_counts_connections_per_user() {
        let engine = MemoryEngine::new();
        engine.presence_join("r", Some("ann"));
        engine.presence_join("r", Some("ann"));
        engine.presence_join("r", Some("bob"));
        engine.presence_join("r", None);
        assert_eq!(engine.presence("r").await.unwrap(), [("ann".into(), 2), ("bob".into(), 1)]);
        engine.presence_leave("r", Some("ann"));
        engine.presence_leave("r", Some("bob"));
        assert_eq!(engine.presence("r").await.unwrap(), [("ann".into(), 1)]);
        engine.presence_leave("r", Some("ann"));
        assert!(engine.presence("r").await.unwrap().is_empty());
    }
}
