//! Hub internals that the TCP tests cannot see.

use std::sync::Arc;

use super::outbox::{Next, Outbox};
use super::{ConnId, Hub, HubConfig, Publish, SlowConsumer};

async fn member(hub: &Hub, id: u64, room: &str) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(8, SlowConsumer::Close));
    hub.registry().insert(ConnId(id), None, outbox.clone());
    hub.join(ConnId(id), room).await.unwrap();
    outbox
}

async fn members(hub: &Hub, ids: std::ops::RangeInclusive<u64>, room: &str) -> Vec<Arc<Outbox>> {
    let mut outboxes = Vec::new();
    for id in ids {
        outboxes.push(member(hub, id, room).await);
    }
    outboxes
}

#[tokio::test]
async fn fan_out_shares_one_encoded_frame() {
    let hub = Hub::new(HubConfig::default());
    let outboxes = members(&hub, 1..=3, "global").await;
    hub.publish("global", "{\"type\":\"telemetry\"}").await.unwrap();
    let mut frames = Vec::new();
    for outbox in &outboxes {
        match outbox.next(10, usize::MAX).await {
            Next::Frames(mut taken) => frames.push(taken.remove(0).message().clone()),
            Next::Close(..) => panic!("unexpected close"),
        }
    }
    // Same bytes at the same address: encoded once, not copied per member.
    let first = frames[0].frame().as_ptr();
    assert!(frames.iter().all(|f| f.frame().as_ptr() == first));
    assert_eq!(frames[0].frame()[..2], [0x81, 20]);
}

#[cfg(feature = "deflate")]
#[tokio::test]
async fn fan_out_compresses_once_for_every_member() {
    let hub = Hub::new(HubConfig { deflate: Some(crate::DeflateConfig::default()), ..HubConfig::default() });
    let outboxes = members(&hub, 1..=3, "global").await;
    let json = "{\"type\":\"telemetry\",\"temperature\":21.5}".repeat(20);
    hub.publish("global", json).await.unwrap();
    let mut compressed = Vec::new();
    for outbox in &outboxes {
        match outbox.next(10, usize::MAX).await {
            // What each member's writer sends to a deflate connection.
            Next::Frames(taken) => compressed.push(taken[0].message().compressed_frame(15).unwrap().clone()),
            Next::Close(..) => panic!("unexpected close"),
        }
    }
    // Compressed by the first, the same bytes for the others.
    assert!(compressed.iter().all(|c| c.as_ptr() == compressed[0].as_ptr()));
    assert_eq!(compressed[0][0], 0xc1); // FIN, RSV1 (RFC 7692 §6), text
}

#[cfg(feature = "deflate")]
#[test]
fn hub_connections_always_agree_to_no_context_takeover() {
    assert_eq!(Hub::new(HubConfig::default()).websocket_config().protocol.deflate, None);
    let config = HubConfig { deflate: Some(crate::DeflateConfig::default()), ..HubConfig::default() };
    let deflate = Hub::new(config).websocket_config().protocol.deflate.unwrap();
    // RFC 7692 §7.1.1.1: the server may name it unasked; the hub always does.
    assert!(deflate.server_no_context_takeover);
}

#[tokio::test]
async fn publish_except_skips_the_sender() {
    let hub = Hub::new(HubConfig::default());
    let a = member(&hub, 1, "chat").await;
    let b = member(&hub, 2, "chat").await;
    hub.publish_with(Publish::new("typing").to("chat").except(ConnId(1))).await.unwrap();
    hub.publish("chat", "said").await.unwrap();
    assert_eq!(texts(&a).await, ["said"]);
    assert_eq!(texts(&b).await, ["typing", "said"]);
}

#[tokio::test]
async fn coalesced_publications_replace_what_a_member_still_has_queued() {
    let hub = Hub::new(HubConfig::default());
    let a = member(&hub, 1, "chat").await; // a queue of 8
    let typing =
        |i: usize| Publish::new(format!("ann typing {i}")).to("chat").ephemeral().coalesce("typing|ann");
    for i in 0..100 {
        hub.publish_with(typing(i)).await.unwrap();
        if i == 50 {
            hub.publish("chat", "said").await.unwrap();
        }
    }
    hub.publish_with(Publish::new("bob typing").to("chat").coalesce("typing|bob")).await.unwrap();
    // The latest of ann's, where her first stood; nothing overflowed.
    assert_eq!(texts(&a).await, ["ann typing 99", "said", "bob typing"]);
    assert_eq!(hub.stats().coalesced, 99);
    assert_eq!(hub.stats().slow_consumer_closes, 0);
    // Taken by the writer: the next one is queued anew.
    hub.publish_with(typing(100)).await.unwrap();
    assert_eq!(texts(&a).await, ["ann typing 100"]);
}

#[tokio::test]
async fn attached_members_are_listed_and_can_be_disconnected() {
    use super::{Taken, Transport};
    let hub = Hub::new(HubConfig::default());
    let mut attached = hub.attach(hub.reserve().unwrap(), Some("sse".into())).unwrap();
    let id = attached.id();
    hub.join(id, "r").await.unwrap();
    hub.send_to(id, "hi");
    let info = hub.connection(id).unwrap();
    assert_eq!((info.transport, info.queued, info.rooms), (Transport::Attached, 1, vec!["r".to_owned()]));
    assert_eq!(info.user.as_deref(), Some("sse"));
    assert!(matches!(attached.next(10).await, Taken::Deliveries(d) if d.len() == 1));
    attached.wrote(7);
    let info = hub.connection(id).unwrap();
    assert_eq!((info.queued, info.messages_out, info.bytes_out), (0, 1, 7));
    hub.send_to(id, "dropped by the disconnect");
    assert!(hub.disconnect(id, crate::CloseCode(4000), "bye"));
    assert!(matches!(attached.next(10).await, Taken::Closed(crate::CloseCode(4000), _)));
    assert_eq!(hub.connections().len(), 1, "listed until it is dropped");
    drop(attached);
    assert!(hub.connections().is_empty());
}

/// What is queued for a member now.
async fn texts(outbox: &Outbox) -> Vec<String> {
    match tokio::time::timeout(std::time::Duration::from_secs(1), outbox.next(100, usize::MAX)).await {
        Ok(Next::Frames(taken)) => {
            taken.iter().map(|d| String::from_utf8(d.message().payload().to_vec()).unwrap()).collect()
        }
        Ok(Next::Close(code, _)) => vec![format!("close {}", code.0)],
        Err(_) => Vec::new(),
    }
}

// ----- history, offsets and recovery (memory engine) ---------------------

use super::{
    BoxFuture, ClusterStats, Engine, EngineError, HistoryPolicy, HistoryRead, MemoryEngine, Node, Outgoing,
    Placement, Position, Subscribed, Subscription,
};
use std::time::Duration;

fn keeping(size: usize) -> HubConfig {
    HubConfig::default().history("", HistoryPolicy::new(size, Duration::from_secs(600)))
}

/// Renders a publication as "text room=offset ...", so tests see offsets.
fn with_offsets(config: HubConfig) -> HubConfig {
    config.render(|p| {
        let mut text = p.message.as_text().unwrap_or_default().to_owned();
        for placement in &p.rooms {
            if let Some(at) = &placement.position {
                text += &format!(" {}={}", placement.room, at.offset);
            }
        }
        crate::Message::text(text)
    })
}

async fn position(hub: &Hub, room: &str) -> Position {
    let policy = hub.config().history_for(room).unwrap().clone();
    hub.engine().history(room, None, &policy).await.unwrap().position.unwrap()
}

async fn subscribe(hub: &Hub, id: u64, subs: &[Subscription]) -> Vec<Subscribed> {
    let reply = |outcome: &[Subscribed], _: &[String]| {
        Some(crate::Message::text(format!("subscribed {}", outcome.len())))
    };
    hub.subscribe(ConnId(id), subs, reply).await.unwrap()
}

fn new_member(hub: &Hub, id: u64, capacity: usize) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(capacity, SlowConsumer::Close));
    hub.registry().insert(ConnId(id), None, outbox.clone());
    outbox
}

#[tokio::test]
async fn a_publication_to_several_rooms_comes_once_with_every_offset() {
    let hub = Hub::new(with_offsets(keeping(10)));
    let both = new_member(&hub, 1, 8);
    subscribe(&hub, 1, &[Subscription::new("device:1"), Subscription::new("global")]).await;
    let device_only = member(&hub, 2, "device:1").await;
    hub.publish("global", "before").await.unwrap();
    let placed = hub.publish_with(Publish::new("reading").rooms(["device:1", "global"])).await.unwrap();
    let offsets: Vec<_> = placed.iter().map(|p| p.position.as_ref().unwrap().offset).collect();
    assert_eq!(offsets, [1, 2]);
    assert_eq!(texts(&both).await, ["subscribed 2", "before global=1", "reading device:1=1 global=2"]);
    assert_eq!(texts(&device_only).await, ["reading device:1=1 global=2"]);
}

#[tokio::test]
async fn ephemeral_publications_carry_no_offset() {
    let hub = Hub::new(with_offsets(keeping(10)));
    let a = member(&hub, 1, "chat:a").await;
    hub.publish_with(Publish::new("typing").to("chat:a").ephemeral()).await.unwrap();
    hub.publish("chat:a", "said").await.unwrap();
    assert_eq!(texts(&a).await, ["typing", "said chat:a=1"]);
    let read = hub.engine().history("chat:a", Some(0), &HistoryPolicy::new(10, Duration::from_secs(600)));
    assert_eq!(read.await.unwrap().publications.len(), 1, "typing is not in the history");
}

#[tokio::test]
async fn subscribing_since_a_position_replays_what_was_missed_then_goes_live() {
    let hub = Hub::new(with_offsets(keeping(100)));
    for i in 1..=5 {
        hub.publish("chat:a", format!("m{i}")).await.unwrap();
    }
    let at = position(&hub, "chat:a").await;
    assert_eq!(at.offset, 5);
    let outbox = new_member(&hub, 1, 8);
    let since = Position::new(2, at.epoch.clone());
    let outcome = subscribe(&hub, 1, &[Subscription::new("chat:a").since(since)]).await;
    assert_eq!((outcome[0].recovered, outcome[0].position.clone()), (Some(true), Some(at.clone())));
    hub.publish("chat:a", "m6").await.unwrap();
    assert_eq!(
        texts(&outbox).await,
        ["subscribed 1", "m3 chat:a=3", "m4 chat:a=4", "m5 chat:a=5", "m6 chat:a=6"],
        "the reply, the replay in order, then live"
    );
}

#[tokio::test]
async fn a_position_history_cannot_reach_is_not_recovered() {
    let hub = Hub::new(with_offsets(keeping(3)));
    for i in 1..=6 {
        hub.publish("r", format!("m{i}")).await.unwrap();
    }
    let epoch = position(&hub, "r").await.epoch;
    let cases = [
        Position::new(1, epoch.clone()),    // 2 and 3 are gone
        Position::new(9, epoch.clone()),    // ahead of the room
        Position::new(4, "someone else's"), // another epoch
        Position::new(u64::MAX, epoch.clone()),
    ];
    for (id, since) in (1..).zip(cases) {
        let outbox = new_member(&hub, id, 8);
        let outcome = subscribe(&hub, id, &[Subscription::new("r").since(since.clone())]).await;
        assert_eq!(outcome[0].recovered, Some(false), "{since}");
        assert_eq!(outcome[0].position.as_ref().unwrap().offset, 6);
        assert_eq!(texts(&outbox).await, ["subscribed 1"], "no replay for {since}");
    }
    hub.publish("r", "m7").await.unwrap();
    let outbox = new_member(&hub, 9, 8);
    let outcome = subscribe(&hub, 9, &[Subscription::new("r").since(Position::new(4, epoch))]).await;
    assert_eq!(outcome[0].recovered, Some(true), "5 is still kept");
    assert_eq!(texts(&outbox).await, ["subscribed 1", "m5 r=5", "m6 r=6", "m7 r=7"]);
}

#[tokio::test]
async fn recovering_two_rooms_gives_a_shared_publication_once_in_both_orders() {
    let hub = Hub::new(with_offsets(keeping(100)));
    let both = |text: &str| Publish::new(text.to_owned()).rooms(["d", "g"]);
    hub.publish_with(both("x0")).await.unwrap(); // d=1 g=1: seen before
    let (d0, g0) = (position(&hub, "d").await, position(&hub, "g").await);
    hub.publish("d", "a").await.unwrap(); // d=2
    hub.publish_with(both("b")).await.unwrap(); // d=3 g=2
    hub.publish("g", "c").await.unwrap(); // g=3
    hub.publish_with(both("d")).await.unwrap(); // d=4 g=4
    let outbox = new_member(&hub, 1, 8);
    let subs = [Subscription::new("g").since(g0), Subscription::new("d").since(d0)];
    let outcome = subscribe(&hub, 1, &subs).await;
    assert!(outcome.iter().all(|s| s.recovered == Some(true)), "{outcome:?}");
    assert_eq!(texts(&outbox).await, ["subscribed 2", "a d=2", "b d=3 g=2", "c g=3", "d d=4 g=4"]);
}

#[tokio::test]
async fn replay_then_a_room_already_live_does_not_repeat_what_it_gave() {
    let hub = Hub::new(with_offsets(keeping(100)));
    let outbox = new_member(&hub, 1, 8);
    subscribe(&hub, 1, &[Subscription::new("d")]).await;
    let g0 = position(&hub, "g").await;
    hub.publish_with(Publish::new("both").rooms(["d", "g"])).await.unwrap();
    hub.publish("g", "only g").await.unwrap();
    assert_eq!(texts(&outbox).await, ["subscribed 1", "both d=1 g=1"]);
    subscribe(&hub, 1, &[Subscription::new("g").since(g0)]).await;
    assert_eq!(texts(&outbox).await, ["subscribed 1", "only g g=2"], "'both' came live through d");
}

/// The memory engine, with history reads that wait until released and
/// read the history only then: what is published meanwhile is both held
/// and in the replay, and must come once, after the replay.
#[derive(Debug)]
struct SlowReads {
    inner: Arc<MemoryEngine>,
    gate: Arc<tokio::sync::Semaphore>,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Engine for SlowReads {
    fn attach(&self, node: Node) {
        self.inner.attach(node)
    }
    fn publish(&self, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>> {
        self.inner.publish(outgoing)
    }
    fn subscribe(&self, room: &str) -> BoxFuture<Result<(), EngineError>> {
        self.inner.subscribe(room)
    }
    fn unsubscribe(&self, room: &str) {
        self.inner.unsubscribe(room)
    }
    fn history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> BoxFuture<Result<HistoryRead, EngineError>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (gate, inner, room, policy) =
            (self.gate.clone(), self.inner.clone(), room.to_owned(), policy.clone());
        Box::pin(async move {
            // Each read takes a permit for good.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            inner.history(&room, since, &policy).await
        })
    }
    fn presence_join(&self, room: &str, user: Option<&str>) {
        self.inner.presence_join(room, user)
    }
    fn presence_leave(&self, room: &str, user: Option<&str>) {
        self.inner.presence_leave(room, user)
    }
    fn presence(&self, room: &str) -> BoxFuture<Result<Vec<(String, u64)>, EngineError>> {
        self.inner.presence(room)
    }
    fn cluster(&self) -> BoxFuture<Result<ClusterStats, EngineError>> {
        self.inner.cluster()
    }
}

fn slow_hub(size: usize) -> (Hub, Arc<tokio::sync::Semaphore>, Arc<std::sync::atomic::AtomicUsize>) {
    let engine = SlowReads {
        inner: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        reads: Arc::default(),
    };
    let (gate, reads) = (engine.gate.clone(), engine.reads.clone());
    (Hub::with_engine(with_offsets(keeping(size)), Arc::new(engine)), gate, reads)
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn publications_during_a_recovery_come_after_the_replay_once() {
    let (hub, gate, reads) = slow_hub(100);
    for i in 1..=3 {
        hub.publish("r", format!("m{i}")).await.unwrap();
    }
    let epoch = {
        gate.add_permits(1);
        position(&hub, "r").await.epoch
    };
    let outbox = new_member(&hub, 1, 8);
    let recovering = tokio::spawn({
        let hub = hub.clone();
        async move { subscribe(&hub, 1, &[Subscription::new("r").since(Position::new(1, epoch))]).await }
    });
    until("the read to start", || reads.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
    hub.publish("r", "m4").await.unwrap();
    hub.publish("r", "m5").await.unwrap();
    let early = texts(&outbox).await;
    assert!(early.is_empty(), "held while the history is read: {early:?}");
    gate.add_permits(1);
    let outcome = recovering.await.unwrap();
    assert_eq!(outcome[0].recovered, Some(true));
    hub.publish("r", "m6").await.unwrap();
    assert_eq!(texts(&outbox).await, ["subscribed 1", "m2 r=2", "m3 r=3", "m4 r=4", "m5 r=5", "m6 r=6"]);
}

#[tokio::test]
async fn many_connections_recovering_at_once_share_the_history_reads() {
    let (hub, gate, reads) = slow_hub(1000);
    for i in 1..=50 {
        hub.publish("r", format!("m{i}")).await.unwrap();
    }
    gate.add_permits(1);
    let epoch = position(&hub, "r").await.epoch;
    let before = reads.load(std::sync::atomic::Ordering::SeqCst);
    let mut tasks = Vec::new();
    for id in 1..=200u64 {
        let outbox = new_member(&hub, id, 8);
        let since = Position::new(id % 50, epoch.clone());
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = subscribe(&hub, id, &[Subscription::new("r").since(since)]).await;
            (id, outbox, outcome)
        }));
    }
    let waiting = || hub.registry().conns.values().filter(|m| m.recovering > 0).count();
    until("every subscribe to wait", || waiting() == 200).await;
    gate.add_permits(1000);
    for task in tasks {
        let (id, outbox, outcome) = task.await.unwrap();
        assert_eq!(outcome[0].recovered, Some(true));
        let got = texts(&outbox).await;
        let expected: Vec<String> = std::iter::once("subscribed 1".to_owned())
            .chain((id % 50 + 1..=50).map(|i| format!("m{i} r={i}")))
            .collect();
        assert_eq!(got, expected, "connection {id}");
    }
    let made = reads.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(made <= 3, "{made} history reads for 200 recoveries");
}

#[tokio::test]
async fn a_slow_consumer_in_a_room_with_history_is_closed_even_under_drop_oldest() {
    let mut config = keeping(100);
    config.slow_consumer = SlowConsumer::DropOldest;
    config.queue_capacity = 2;
    let hub = Hub::new(config);
    let outbox = Arc::new(Outbox::new(2, SlowConsumer::DropOldest));
    hub.registry().insert(ConnId(1), None, outbox.clone());
    hub.join(ConnId(1), "r").await.unwrap();
    for i in 0..3 {
        hub.publish("r", format!("m{i}")).await.unwrap();
    }
    assert_eq!(texts(&outbox).await, ["close 4008"]);
    assert_eq!(hub.stats().slow_consumer_closes, 1);
}

/// The memory engine, with the node it was attached to kept, so a test
/// can call back into the hub as an engine would.
#[derive(Debug, Default)]
struct Attached {
    inner: MemoryEngine,
    node: std::sync::OnceLock<Node>,
}

impl Engine for Attached {
    fn attach(&self, node: Node) {
        let _ = self.node.set(node.clone());
        self.inner.attach(node)
    }
    fn publish(&self, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>> {
        self.inner.publish(outgoing)
    }
    fn subscribe(&self, room: &str) -> BoxFuture<Result<(), EngineError>> {
        self.inner.subscribe(room)
    }
    fn unsubscribe(&self, room: &str) {
        self.inner.unsubscribe(room)
    }
    fn history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> BoxFuture<Result<HistoryRead, EngineError>> {
        self.inner.history(room, since, policy)
    }
    fn presence_join(&self, room: &str, user: Option<&str>) {
        self.inner.presence_join(room, user)
    }
    fn presence_leave(&self, room: &str, user: Option<&str>) {
        self.inner.presence_leave(room, user)
    }
    fn presence(&self, room: &str) -> BoxFuture<Result<Vec<(String, u64)>, EngineError>> {
        self.inner.presence(room)
    }
    fn cluster(&self) -> BoxFuture<Result<ClusterStats, EngineError>> {
        self.inner.cluster()
    }
}

fn publication(text: &str, room: &str, at: Position) -> Arc<super::Publication> {
    let rooms = vec![Placement { room: room.into(), position: Some(at) }];
    Arc::new(super::Publication { message: crate::Message::text(text), rooms, except: None, coalesce: None })
}

#[tokio::test]
async fn a_reset_does_not_take_a_member_back_within_its_epoch() {
    let engine = Arc::new(Attached::default());
    let hub = Hub::with_engine(with_offsets(keeping(100)), engine.clone());
    let outbox = member(&hub, 1, "r").await;
    for i in 1..=3 {
        hub.publish("r", format!("m{i}")).await.unwrap();
    }
    assert_eq!(texts(&outbox).await, ["m1 r=1", "m2 r=2", "m3 r=3"]);
    let epoch = position(&hub, "r").await.epoch;
    // An engine that lost track of the room after offset 1 (a gap its
    // history could not fill) resets it there and delivers what follows:
    // this member already has 2 and 3.
    let node = engine.node.get().unwrap();
    node.reset("r", Position::new(1, epoch.clone()));
    for i in 2..=4 {
        node.deliver(publication(&format!("m{i}"), "r", Position::new(i, epoch.clone())));
    }
    assert_eq!(texts(&outbox).await, ["m4 r=4"], "no publication twice");
    // A new epoch starts over, whatever the offsets.
    node.reset("r", Position::new(0, "new"));
    node.deliver(publication("n1", "r", Position::new(1, "new")));
    assert_eq!(texts(&outbox).await, ["n1 r=1"]);
}

/// Every hub connection's task is mostly this future, for the
/// connection's whole life: what it grows by, every idle connection
/// costs (BENCHMARKS.md, "Memory per idle connection"). 880 bytes when
/// written (a test build), against 1,312 before its layers stopped
/// repeating their arguments, the outbox stopped waiting on a `Notify`
/// and a stuck write stopped waiting in an `async` select.
#[test]
fn a_connections_serving_future_stays_small() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = runtime.enter();
    let hub = Hub::new(HubConfig::default());
    let (io, _peer) = tokio::io::duplex(64);
    let ws = crate::WebSocket::from_connection(io, crate::Connection::server(crate::Config::default()));
    let slot = hub.reserve().unwrap();
    let serving = hub.serve(slot, ws, None, |_, _, _| async {});
    let size = std::mem::size_of_val(&serving);
    assert!(size <= 960, "the serving future is {size} bytes");
}
