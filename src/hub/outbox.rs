//! A connection's bounded outbound queue. Publishers push without waiting;
//! the connection's writer takes from it. Memory per connection is bounded
//! by the capacity (the frames themselves are shared `Bytes`).
//!
//! A delivery may carry a coalescing key: pushed while another with the
//! same key is still queued (not yet taken by the writer), it replaces
//! that one in place, so the latest state wins and the queue holds at
//! most one delivery per key.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::config::{codes, SlowConsumer};
use super::engine::Placement;
use crate::proto::close::fit_reason;
use crate::{CloseCode, PreparedMessage};

/// One message queued for a connection: the frame, encoded once for every
/// recipient, and for a publication the rooms it went to with its offsets.
/// Cloning it clones one `Arc`: a publication fanned out to N connections
/// is held once, and each queue holds a pointer to it.
#[derive(Clone, Debug)]
pub struct Delivery(Arc<Shared>);

#[derive(Clone, Debug)]
struct Shared {
    message: PreparedMessage,
    rooms: Option<Arc<[Placement]>>,
    coalesce: Option<Arc<str>>,
}

impl Delivery {
    pub(crate) fn new(message: PreparedMessage, rooms: Option<Arc<[Placement]>>) -> Delivery {
        Delivery(Arc::new(Shared { message, rooms, coalesce: None }))
    }

    /// With a coalescing key (see the module docs). Set before the
    /// delivery is shared.
    pub(crate) fn coalescing(self, key: Option<Arc<str>>) -> Delivery {
        let Shared { message, rooms, .. } = Arc::unwrap_or_clone(self.0);
        Delivery(Arc::new(Shared { message, rooms, coalesce: key }))
    }

    /// Its coalescing key ([`Publish::coalesce`](super::Publish::coalesce)), if any.
    pub fn coalesce_key(&self) -> Option<&str> {
        self.0.coalesce.as_deref()
    }

    /// The message, framed (and perhaps compressed) once.
    pub fn message(&self) -> &PreparedMessage {
        &self.0.message
    }

    /// For a publication: its rooms and positions; empty for a message
    /// sent to one connection.
    pub fn rooms(&self) -> &[Placement] {
        self.0.rooms.as_deref().unwrap_or_default()
    }

    /// Whether it has an offset in some room: it can be recovered from
    /// history, so it is never dropped to make room.
    pub fn is_recoverable(&self) -> bool {
        self.rooms().iter().any(|p| p.position.is_some())
    }
}

/// A queued delivery: 16 bytes, what a connection's queue costs per
/// message it holds (a burst to 10,000 subscribers is that many items).
#[derive(Debug)]
struct Item {
    delivery: Delivery,
    /// Its number in this queue times two, plus one if it is replayed.
    /// Numbers increase from front to back: how a coalescing key finds its
    /// item. A replayed delivery does not count against the capacity (a
    /// recovery may replay a whole history at once).
    tag: u64,
}

impl Item {
    fn seq(&self) -> u64 {
        self.tag >> 1
    }

    fn replay(&self) -> bool {
        self.tag & 1 == 1
    }
}

/// The result of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Replaced a queued delivery with the same coalescing key.
    Replaced,
    /// Queued after dropping the oldest message.
    DroppedOldest,
    /// The queue was full: the connection is now being closed.
    Overflow,
    /// The connection is closing; nothing was queued.
    Closing,
}

/// What the writer does next.
#[derive(Debug)]
pub(crate) enum Next {
    Frames(Vec<Delivery>),
    Close(CloseCode, String),
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Item>,
    /// How many of `frames` are replayed.
    replayed: usize,
    /// The `seq` of the next item pushed.
    next_seq: u64,
    /// Coalescing keys of queued live items, and their `seq`: boxed, and
    /// only once a keyed delivery comes (most connections never get one).
    #[allow(clippy::box_collection)] // 8 bytes here where a map is 48
    keyed: Option<Box<HashMap<Arc<str>, u64>>>,
    /// Where the outbox is in its life: its one state beside the queue.
    life: Life,
    /// The writer, waiting in `next` or `aborted`. An outbox has one
    /// writer, so one slot does (a `Notify` cost every connection's task
    /// about 100 bytes per waiting future).
    waker: Option<Waker>,
}

impl State {
    /// Registers the writer; called under the lock that `push` and
    /// `request` take to wake it, so no wake-up falls between.
    fn wait(&mut self, cx: &Context<'_>) {
        match &mut self.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// Where an outbox is in its life. Only `Outbox::request` and `Outbox::next`
/// change it.
#[derive(Debug, Default)]
enum Life {
    /// Deliveries are accepted.
    #[default]
    Open,
    /// A close was asked for: nothing more is accepted, and the Close goes
    /// out once what was queued has been taken.
    Closing(CloseCode, String),
    /// An abort was asked for: the queue was emptied and the Close goes out
    /// next.
    Aborting(CloseCode, String),
    /// The writer took the Close of a graceful close.
    Closed,
    /// The writer took the Close of an abort, or an abort came after it.
    Aborted,
}

impl State {
    /// Forgets the key of an item that leaves the queue.
    fn unkey(&mut self, item: &Item) {
        if let (Some(key), Some(keyed)) = (&item.delivery.0.coalesce, &mut self.keyed) {
            if keyed.get(key) == Some(&item.seq()) {
                keyed.remove(key);
            }
        }
    }
}

/// What one connection sent and was sent: atomics, added to by its own
/// loops (and the writer), read by [`Hub::connections`](super::Hub::connections).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Traffic {
    pub(crate) fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn sent(&self, messages: usize, bytes: u64) {
        self.messages_out.fetch_add(messages as u64, Relaxed);
        self.bytes_out.fetch_add(bytes, Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    policy: SlowConsumer,
    /// This connection's counters.
    pub(crate) traffic: Traffic,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, policy: SlowConsumer) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            policy,
            traffic: Traffic::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a delivery, or replaces the queued one with its coalescing key.
    pub(crate) fn push(&self, delivery: Delivery) -> Pushed {
        self.push_item(delivery, false)
    }

    /// Queues a replayed publication, beyond the capacity if need be
    /// (never coalesced: a replay is history, in order).
    pub(crate) fn push_replay(&self, delivery: Delivery) -> Pushed {
        self.push_item(delivery, true)
    }

    fn push_item(&self, delivery: Delivery, replay: bool) -> Pushed {
        let mut state = self.lock();
        if !matches!(state.life, Life::Open) {
            return Pushed::Closing;
        }
        if let Some(key) = delivery.0.coalesce.as_ref().filter(|_| !replay) {
            if let Some(&seq) = state.keyed.as_ref().and_then(|keyed| keyed.get(key)) {
                // Seqs increase from front to back, whatever was removed.
                if let Ok(index) = state.frames.binary_search_by_key(&seq, Item::seq) {
                    state.frames[index].delivery = delivery;
                    return Pushed::Replaced;
                }
            }
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let item = Item { delivery, tag: seq << 1 | u64::from(replay) };
        let mut pushed = Pushed::Queued;
        if !replay && state.frames.len() - state.replayed >= self.capacity {
            // Drop-oldest never drops what history could replay: a room
            // with history closes its slow consumer, which then recovers.
            let droppable = match self.policy {
                SlowConsumer::DropOldest => state.frames.iter().position(|i| !i.delivery.is_recoverable()),
                SlowConsumer::Close => None,
            };
            match droppable {
                Some(index) => {
                    if let Some(dropped) = state.frames.remove(index) {
                        state.unkey(&dropped);
                    }
                    pushed = Pushed::DroppedOldest;
                }
                None => {
                    // What is queued is dropped too: the peer gets the Close
                    // frame soon instead of after a backlog it cannot read.
                    drop(state);
                    self.abort(codes::SLOW_CONSUMER, "Slow consumer");
                    return Pushed::Overflow;
                }
            }
        }
        state.replayed += usize::from(replay);
        if let Some(key) = item.delivery.0.coalesce.as_ref().filter(|_| !replay) {
            state.keyed.get_or_insert_default().insert(key.clone(), seq);
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(item);
        // The writer takes everything queued when it runs: one wake-up for
        // a burst, not one per message. It waits only on an empty queue.
        let waker = if was_empty { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        pushed
    }

    /// Asks the writer to close after the frames already queued: what was
    /// accepted is delivered first. The first request's code wins. Returns
    /// whether this request set the code.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) -> bool {
        self.request(code, reason, false)
    }

    /// Asks the writer to close now, dropping what is queued: for a peer
    /// that does not read or answer (slow consumer, heartbeat, idle), where
    /// a backlog would only delay the Close. Turns an earlier graceful
    /// request into an abort but keeps its code. Returns whether this
    /// request set the code.
    pub(crate) fn abort(&self, code: CloseCode, reason: &str) -> bool {
        self.request(code, reason, true)
    }

    fn request(&self, code: CloseCode, reason: &str, abort: bool) -> bool {
        // RFC 6455 §5.5: a Close frame's reason is at most 123 bytes; a
        // longer one would make the writer fail to send the Close at all.
        let reason = fit_reason(reason);
        let mut state = self.lock();
        // The first request's code wins; an abort after a graceful close
        // still drops the backlog and wakes `aborted`.
        let (life, first) = match (mem::take(&mut state.life), abort) {
            (Life::Open, false) => (Life::Closing(code, reason.to_owned()), true),
            (Life::Open, true) => (Life::Aborting(code, reason.to_owned()), true),
            (Life::Closing(code, reason), true) => (Life::Aborting(code, reason), false),
            (Life::Closed, true) => (Life::Aborted, false),
            (life, _) => {
                state.life = life;
                return false;
            }
        };
        if abort {
            state.frames.clear();
            state.keyed = None;
            state.replayed = 0;
        }
        state.life = life;
        // The writer may wait in `next` or in `aborted`.
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        first
    }

    pub(crate) fn is_closing(&self) -> bool {
        !matches!(self.lock().life, Life::Open)
    }

    /// Deliveries queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Waits for frames (up to `max` of them and `max_bytes`, but at least
    /// one) or a close request. A close request is served once the queue is
    /// empty (at once for an abort, which emptied it).
    /// Cancel-safe: nothing is taken until it returns.
    pub(crate) async fn next(&self, max: usize, max_bytes: usize) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx, max, max_bytes)).await
    }

    fn poll_next(&self, cx: &Context<'_>, max: usize, max_bytes: usize) -> Poll<Next> {
        let mut state = self.lock();
        if state.frames.is_empty() {
            match mem::take(&mut state.life) {
                Life::Closing(code, reason) => {
                    state.life = Life::Closed;
                    return Poll::Ready(Next::Close(code, reason));
                }
                Life::Aborting(code, reason) => {
                    state.life = Life::Aborted;
                    return Poll::Ready(Next::Close(code, reason));
                }
                life => state.life = life,
            }
        }
        if state.frames.is_empty() {
            // Nothing queued: the writer is about to wait, maybe for long.
            // The queue's room from the last burst is freed (the next push
            // allocates afresh).
            state.frames = VecDeque::new();
            state.wait(cx);
            return Poll::Pending;
        }
        let mut bytes = 0;
        let n = state.frames.iter().take(max.max(1)).take_while(|i| {
            bytes += i.delivery.message().frame().len();
            bytes <= max_bytes
        });
        let n = n.count().max(1);
        let mut taken = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(item) = state.frames.pop_front() else { break };
            state.replayed -= usize::from(item.replay());
            state.unkey(&item);
            taken.push(item.delivery);
        }
        Poll::Ready(Next::Frames(taken))
    }

    /// Resolves once an abort has been requested.
    pub(crate) async fn aborted(&self) {
        std::future::poll_fn(|cx| self.poll_aborted(cx)).await
    }

    pub(crate) fn poll_aborted(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if matches!(state.life, Life::Aborting(..) | Life::Aborted) {
            return Poll::Ready(());
        }
        state.wait(cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn frame(i: usize) -> Delivery {
        Delivery::new(PreparedMessage::new(&Message::text(i.to_string())), None)
    }

    /// A publication with an offset: history could replay it.
    fn recoverable(i: usize) -> Delivery {
        let position = Some(crate::hub::Position::new(i as u64, "e"));
        let rooms: Arc<[Placement]> = Arc::new([Placement { room: "r".into(), position }]);
        Delivery::new(PreparedMessage::new(&Message::text(i.to_string())), Some(rooms))
    }

    fn texts(next: Next) -> Vec<String> {
        match next {
            Next::Frames(frames) => {
                frames.iter().map(|f| String::from_utf8(f.message().payload().to_vec()).unwrap()).collect()
            }
            Next::Close(..) => panic!("expected frames"),
        }
    }

    #[test]
    fn a_queued_delivery_costs_sixteen_bytes_and_shares_its_frame() {
        // A burst to N subscribers is N items per message: their size is
        // most of a fan-out's memory (BENCHMARKS.md, uWebSockets' pub/sub).
        assert_eq!(mem::size_of::<Item>(), 16);
        let delivery = frame(7);
        let copy = delivery.clone();
        assert!(Arc::ptr_eq(&delivery.0, &copy.0));
        let item = Item { delivery: copy, tag: 41 << 1 | 1 };
        assert_eq!((item.seq(), item.replay()), (41, true));
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_within_capacity() {
        let outbox = Outbox::new(3, SlowConsumer::DropOldest);
        let pushed: Vec<Pushed> = (0..5).map(|i| outbox.push(frame(i))).collect();
        assert_eq!(pushed[..3], [Pushed::Queued; 3]);
        assert_eq!(pushed[3..], [Pushed::DroppedOldest; 2]);
        assert_eq!(outbox.len(), 3);
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["2", "3", "4"]);
    }

    #[tokio::test]
    async fn drop_oldest_never_drops_what_history_could_replay() {
        let outbox = Outbox::new(3, SlowConsumer::DropOldest);
        assert_eq!(outbox.push(recoverable(0)), Pushed::Queued);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(recoverable(2)), Pushed::Queued);
        assert_eq!(outbox.push(frame(3)), Pushed::DroppedOldest, "the plain message 1 makes room");
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["0", "2", "3"]);
        let outbox = Outbox::new(2, SlowConsumer::DropOldest);
        outbox.push(recoverable(0));
        outbox.push(recoverable(1));
        assert_eq!(outbox.push(frame(2)), Pushed::Overflow, "nothing may go: the consumer is closed");
    }

    #[tokio::test]
    async fn replayed_deliveries_do_not_count_against_the_capacity() {
        let outbox = Outbox::new(2, SlowConsumer::Close);
        for i in 0..5 {
            assert_eq!(outbox.push_replay(recoverable(i)), Pushed::Queued);
        }
        assert_eq!(outbox.push(frame(5)), Pushed::Queued);
        assert_eq!(outbox.push(frame(6)), Pushed::Queued);
        assert_eq!(outbox.push(frame(7)), Pushed::Overflow);
        let outbox = Outbox::new(2, SlowConsumer::Close);
        outbox.push_replay(recoverable(0));
        outbox.push(frame(1));
        assert_eq!(texts(outbox.next(1, usize::MAX).await), ["0"]);
        outbox.push(frame(2));
        assert_eq!(outbox.push(frame(3)), Pushed::Overflow, "taken replays are no longer counted");
    }

    #[tokio::test]
    async fn overflow_under_close_policy_requests_the_close_once() {
        let outbox = Outbox::new(2, SlowConsumer::Close);
        assert_eq!(outbox.push(frame(0)), Pushed::Queued);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(frame(2)), Pushed::Overflow);
        assert_eq!(outbox.push(frame(3)), Pushed::Closing);
        assert_eq!(outbox.len(), 0);
        assert!(!outbox.close(CloseCode::GOING_AWAY, "later request loses"));
        match outbox.next(10, usize::MAX).await {
            Next::Close(code, reason) => {
                assert_eq!((code, reason.as_str()), (codes::SLOW_CONSUMER, "Slow consumer"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_close_waits_for_what_was_queued_an_abort_does_not() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        outbox.push(frame(0));
        outbox.push(frame(1));
        assert!(outbox.close(CloseCode::GOING_AWAY, "bye"));
        assert_eq!(outbox.push(frame(2)), Pushed::Closing, "nothing accepted after a close");
        assert_eq!(texts(outbox.next(1, usize::MAX).await), ["0"]);
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["1"]);
        assert!(matches!(outbox.next(10, usize::MAX).await, Next::Close(CloseCode::GOING_AWAY, _)));

        // An abort after a graceful close drops the backlog, keeps the code.
        let outbox = Outbox::new(10, SlowConsumer::Close);
        outbox.push(frame(0));
        assert!(outbox.close(CloseCode::GOING_AWAY, "bye"));
        assert!(!outbox.abort(codes::HEARTBEAT_TIMEOUT, "Heartbeat timeout"));
        assert_eq!(outbox.len(), 0);
        assert!(matches!(outbox.next(10, usize::MAX).await, Next::Close(CloseCode::GOING_AWAY, _)));
    }

    #[tokio::test]
    async fn a_long_reason_is_cut_to_fit_a_close_frame_on_a_character_boundary() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        // 61 two-byte characters (122 bytes), then one more: 124 bytes.
        let reason = "é".repeat(62);
        assert!(outbox.close(CloseCode::GOING_AWAY, &reason));
        match outbox.next(10, usize::MAX).await {
            Next::Close(_, cut) => assert_eq!(cut, "é".repeat(61)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn aborted_wakes_on_abort_only() {
        let outbox = std::sync::Arc::new(Outbox::new(10, SlowConsumer::Close));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.aborted().await }
        });
        tokio::task::yield_now().await;
        outbox.push(frame(0));
        outbox.close(CloseCode::GOING_AWAY, "bye");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a graceful close is not an abort");
        outbox.abort(codes::IDLE_TIMEOUT, "Idle timeout");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn next_takes_at_most_max_and_wakes_on_push() {
        let outbox = std::sync::Arc::new(Outbox::new(10, SlowConsumer::Close));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { texts(outbox.next(2, usize::MAX).await) }
        });
        tokio::task::yield_now().await;
        for i in 0..3 {
            outbox.push(frame(i));
        }
        let first = waiter.await.unwrap();
        assert!(!first.is_empty() && first.len() <= 2);
        let rest = texts(outbox.next(2, usize::MAX).await);
        assert_eq!([first, rest].concat(), ["0", "1", "2"]);
    }

    fn keyed(text: &str, key: &str) -> Delivery {
        Delivery::new(PreparedMessage::new(&Message::text(text)), None).coalescing(Some(key.into()))
    }

    #[tokio::test]
    async fn a_delivery_with_a_queued_key_replaces_it_in_place() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(keyed("ann typing", "typing|ann")), Pushed::Queued);
        assert_eq!(outbox.push(frame(2)), Pushed::Queued);
        assert_eq!(outbox.push(keyed("bob typing", "typing|bob")), Pushed::Queued);
        assert_eq!(outbox.push(keyed("ann stopped", "typing|ann")), Pushed::Replaced);
        assert_eq!(outbox.push(frame(3)), Pushed::Queued);
        assert_eq!(outbox.push(keyed("ann typing again", "typing|ann")), Pushed::Replaced);
        assert_eq!(outbox.len(), 5, "one item per key");
        // The latest state, where the first one stood; the others in their order.
        assert_eq!(
            texts(outbox.next(10, usize::MAX).await),
            ["1", "ann typing again", "2", "bob typing", "3"]
        );
    }

    #[tokio::test]
    async fn a_taken_delivery_is_not_replaced_and_its_key_is_queued_anew() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        outbox.push(keyed("a1", "k"));
        outbox.push(frame(0));
        assert_eq!(texts(outbox.next(1, usize::MAX).await), ["a1"], "the writer took it");
        assert_eq!(outbox.push(keyed("a2", "k")), Pushed::Queued, "a new item, after the others");
        assert_eq!(outbox.push(keyed("a3", "k")), Pushed::Replaced);
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["0", "a3"]);
        assert_eq!(outbox.push(keyed("a4", "k")), Pushed::Queued);
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["a4"]);
    }

    #[tokio::test]
    async fn coalescing_keeps_a_full_queue_from_overflowing() {
        let outbox = Outbox::new(3, SlowConsumer::Close);
        outbox.push(frame(0));
        outbox.push(keyed("k0", "k"));
        outbox.push(frame(1));
        for i in 1..1000 {
            assert_eq!(outbox.push(keyed(&format!("k{i}"), "k")), Pushed::Replaced);
        }
        assert_eq!(outbox.push(frame(2)), Pushed::Overflow, "a delivery without a key still counts");
        // Drop-oldest forgets the key of what it drops.
        let outbox = Outbox::new(2, SlowConsumer::DropOldest);
        outbox.push(keyed("old", "k"));
        outbox.push(frame(0));
        assert_eq!(outbox.push(frame(1)), Pushed::DroppedOldest);
        assert_eq!(outbox.push(keyed("new", "k")), Pushed::DroppedOldest, "queued anew, not a replacement");
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["1", "new"]);
    }

    #[tokio::test]
    async fn replays_are_never_coalesced_and_an_abort_forgets_every_key() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        outbox.push_replay(keyed("r1", "k"));
        outbox.push_replay(keyed("r2", "k"));
        assert_eq!(outbox.push(keyed("live", "k")), Pushed::Queued);
        assert_eq!(texts(outbox.next(10, usize::MAX).await), ["r1", "r2", "live"]);
        outbox.push(keyed("x", "k"));
        outbox.abort(codes::IDLE_TIMEOUT, "Idle timeout");
        assert!(outbox.lock().keyed.as_ref().is_none_or(|keyed| keyed.is_empty()));
    }

    #[tokio::test]
    async fn next_respects_the_byte_budget_but_takes_one_at_least() {
        let outbox = Outbox::new(10, SlowConsumer::Close);
        for i in 10..14 {
            outbox.push(frame(i)); // 4-byte frames
        }
        assert_eq!(texts(outbox.next(10, 9).await), ["10", "11"]);
        assert_eq!(texts(outbox.next(10, 1).await), ["12"]);
    }
}
