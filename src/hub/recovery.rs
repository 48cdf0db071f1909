//! Subscribing with recovery: history reads shared by every connection
//! that waits for the same room, and the replay merged into one order.
//!
//! A connection (re)joining a room with history is held: publications for
//! it wait in its `held` list while the room's history is read, then the
//! replay is queued, then what was held, skipping what the replay already
//! gave (see `Member::has_seen`). The read starts after the connection was
//! held, so nothing falls between the two: no gap and no duplicate at the
//! seam between replay and live.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::config::{ConnId, HubError, HubEvent};
use super::engine::{EngineError, HistoryPolicy, HistoryRead, Position};
use super::outbox::Delivery;
use super::registry::Joined;
use super::stats::Counters;
use super::Hub;
use crate::Message;

/// A room to join, and where the client's copy of it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The room's name.
    pub room: String,
    /// The last position the client has: the publications after it are
    /// replayed before live ones, if the history still has them.
    pub since: Option<Position>,
}

impl Subscription {
    /// Join `room` and take only live publications (no `since`).
    pub fn new(room: impl Into<String>) -> Subscription {
        Subscription { room: room.into(), since: None }
    }

    /// Recover from this position.
    pub fn since(mut self, position: Position) -> Subscription {
        self.since = Some(position);
        self
    }
}

/// The outcome of one room of a [`Hub::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscribed {
    /// The room's name.
    pub room: String,
    /// `false`: it was already a member; nothing changed.
    pub joined: bool,
    /// In a room with history: where its stream stands for this
    /// connection once the replay is queued (`None` if the engine could
    /// not be read).
    pub position: Option<Position>,
    /// With `since`: `Some(true)` if every publication after it was
    /// replayed, `Some(false)` if the history no longer reaches back that
    /// far, its epoch changed, or `since` is ahead of the room: the client
    /// must reload its state.
    pub recovered: Option<bool>,
}

impl Hub {
    /// Joins a connection to rooms, recovering what it missed where it
    /// says where it stands (`since`). Publications to these rooms reach
    /// it from the moment this returns; in a room with history it gets,
    /// in order: the message `reply` makes from the outcome (for example
    /// the protocol's "subscribed"), the publications after `since`, then
    /// live ones, with no gap and no duplicate between the two. A
    /// publication in several of its rooms comes once.
    ///
    /// `reply` gets the outcome and every room the connection is in now;
    /// it runs under the hub's lock, so it must not call the hub.
    ///
    /// Every name is checked before any room is joined.
    ///
    /// Cancel safety: if dropped midway, the connection stays in the rooms
    /// it joined, live, without a replay.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        rooms: &[Subscription],
        reply: impl FnOnce(&[Subscribed], &[String]) -> Option<Message>,
    ) -> Result<Vec<Subscribed>, HubError> {
        let config = &self.shared.config;
        for subscription in rooms {
            (config.room_validator)(&subscription.room).map_err(HubError::InvalidRoom)?;
        }
        let mut outcome = Vec::with_capacity(rooms.len());
        let mut ready = Vec::new();
        let mut events = Vec::new();
        let mut guard = Unhold { hub: self, conn, rooms: Vec::new() };
        {
            let mut registry = self.registry();
            let user = registry.conns.get(&conn).ok_or(HubError::UnknownConnection)?.user.clone();
            for subscription in rooms {
                let room = &subscription.room;
                let policy = config.history_for(room);
                let joined =
                    registry.join(conn, room, policy.is_some()).ok_or(HubError::UnknownConnection)?;
                let last =
                    registry.conns.get(&conn).and_then(|m| m.rooms.get(room)).and_then(|m| m.last.clone());
                outcome.push(Subscribed {
                    room: room.clone(),
                    joined: joined != Joined::Already,
                    position: last,
                    recovered: None,
                });
                if joined == Joined::Already {
                    continue;
                }
                ready.push(self.shared.engine.subscribe(room));
                self.shared.engine.presence_join(room, user.as_deref());
                events.push(HubEvent::Joined { conn, user: user.clone(), room: room.clone() });
                if policy.is_some() {
                    guard.rooms.push(room.clone());
                }
            }
        }
        for event in events {
            self.emit(event);
        }
        // Publications to the rooms reach this node from here on, so a
        // history read after this point leaves no gap.
        for subscribed in ready {
            // A failed subscription is retried by the engine; the reads
            // below fail too, and say so.
            let _ = subscribed.await;
        }
        let mut replays = Vec::new();
        for (i, subscription) in rooms.iter().enumerate() {
            if !outcome[i].joined {
                continue;
            }
            if let Some(policy) = config.history_for(&subscription.room) {
                let since = subscription.since.as_ref().map(|s| s.offset);
                replays.push((i, self.read_history(&subscription.room, since, policy).await));
            }
        }
        guard.rooms.clear();
        self.finish(conn, rooms, &mut outcome, replays, reply)?;
        Ok(outcome)
    }

    /// Queues the reply, the merged replay and what was held, in one step.
    fn finish(
        &self,
        conn: ConnId,
        rooms: &[Subscription],
        outcome: &mut [Subscribed],
        replays: Vec<(usize, Result<Arc<Replay>, EngineError>)>,
        reply: impl FnOnce(&[Subscribed], &[String]) -> Option<Message>,
    ) -> Result<(), HubError> {
        let mut registry = self.registry();
        let member = registry.conns.get_mut(&conn).ok_or(HubError::UnknownConnection)?;
        let mut lists = Vec::new();
        for (i, replay) in replays {
            let room = &rooms[i].room;
            let Some(membership) = member.rooms.get_mut(room).filter(|m| m.recovering) else { continue };
            membership.recovering = false;
            member.recovering -= 1;
            let since = rooms[i].since.as_ref();
            let (position, recovered) = match &replay {
                Ok(replay) => {
                    let recovered = since.map(|s| !membership.reset && replay.read.recovers(s));
                    (replay.read.position.clone(), recovered)
                }
                Err(_) => (None, since.map(|_| false)),
            };
            match (recovered, replay) {
                (Some(true), Ok(replay)) => {
                    let since = since.map(|s| s.offset).unwrap_or_default();
                    membership.last = rooms[i].since.clone();
                    let after =
                        replay.deliveries.iter().filter(|d| offset_in(d, room).is_some_and(|o| o > since));
                    lists.push((room.clone(), after.cloned().collect()));
                }
                _ => membership.last = position.clone(),
            }
            membership.reset = false;
            outcome[i].position = position;
            outcome[i].recovered = recovered;
        }
        let outbox = member.outbox.clone();
        let now_in: Vec<String> = member.rooms.keys().map(str::to_owned).collect();
        if let Some(message) = reply(outcome, &now_in) {
            self.queue(&outbox, Delivery::new(self.prepare(message), None), true);
        }
        for delivery in merge(lists) {
            if !member.has_seen(delivery.rooms()) {
                member.advance(delivery.rooms());
                self.queue(&outbox, delivery, true);
            }
        }
        if member.recovering == 0 {
            for delivery in std::mem::take(&mut member.held) {
                if delivery.is_recoverable() && member.has_seen(delivery.rooms()) {
                    continue;
                }
                member.advance(delivery.rooms());
                self.queue(&outbox, delivery, false);
            }
        }
        Ok(())
    }
}

/// A history read, with its publications rendered once for every
/// connection that shares it.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) read: HistoryRead,
    pub(crate) deliveries: Vec<Delivery>,
}

type Waiter = oneshot::Sender<Result<Arc<Replay>, EngineError>>;

/// The reads waiting per room. A request joins the next read of its room
/// (never one already under way, which may have started before the
/// connection was held); that read goes back as far as its oldest waiter.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    rooms: Mutex<HashMap<String, Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<(Option<u64>, Waiter)>,
    reading: bool,
}

impl Hub {
    /// The room's history after `since` (or only its position), read once
    /// for every connection waiting for it at the time.
    pub(crate) async fn read_history(
        &self,
        room: &str,
        since: Option<u64>,
        policy: &HistoryPolicy,
    ) -> Result<Arc<Replay>, EngineError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rooms = self.shared.reads.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let queue = rooms.entry(room.to_owned()).or_default();
            queue.waiting.push((since, tx));
            !std::mem::replace(&mut queue.reading, true)
        };
        if start {
            // Its own task: a waiter that goes away must not stall the others.
            tokio::spawn(self.clone().reader(room.to_owned(), policy.clone()));
        }
        rx.await.unwrap_or(Err(EngineError::Closed))
    }

    /// Serves a room's queue until it is empty.
    async fn reader(self, room: String, policy: HistoryPolicy) {
        loop {
            let batch = {
                let mut rooms = self.shared.reads.rooms.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = rooms.get_mut(&room) else { return };
                if queue.waiting.is_empty() {
                    rooms.remove(&room);
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let since = batch.iter().filter_map(|(since, _)| *since).min();
            Counters::add(&self.shared.counters.history_reads, 1);
            let result = self.shared.engine.history(&room, since, &policy).await.map(|read| {
                let deliveries = read.publications.iter().map(|p| self.delivery(p)).collect();
                Arc::new(Replay { read, deliveries })
            });
            for (_, waiter) in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// If a subscribe is dropped while its rooms recover, they go live
/// without a replay rather than holding publications forever.
struct Unhold<'a> {
    hub: &'a Hub,
    conn: ConnId,
    rooms: Vec<String>,
}

impl Drop for Unhold<'_> {
    fn drop(&mut self) {
        if self.rooms.is_empty() {
            return;
        }
        let mut registry = self.hub.registry();
        let Some(member) = registry.conns.get_mut(&self.conn) else { return };
        for room in &self.rooms {
            if let Some(membership) = member.rooms.get_mut(room).filter(|m| m.recovering) {
                membership.recovering = false;
                member.recovering -= 1;
            }
        }
        if member.recovering == 0 {
            let outbox = member.outbox.clone();
            for delivery in std::mem::take(&mut member.held) {
                member.advance(delivery.rooms());
                self.hub.queue(&outbox, delivery, false);
            }
        }
    }
}

/// Merges the replays of several rooms (each `(room, its replay)`) into
/// one order that keeps every room's own order, with a publication that
/// is in several of them once.
pub(crate) fn merge(lists: Vec<(String, Vec<Delivery>)>) -> Vec<Delivery> {
    let mut lists: Vec<(String, VecDeque<Delivery>)> =
        lists.into_iter().map(|(r, l)| (r, l.into())).collect();
    let mut out = Vec::new();
    loop {
        // A head is next if no other head is before it in a room they
        // share. Rooms are written in one total order, so one always is;
        // the first head is the fallback for inconsistent input.
        let heads: Vec<&Delivery> = lists.iter().filter_map(|(_, l)| l.front()).collect();
        let next = lists
            .iter()
            .position(|(_, l)| l.front().is_some_and(|c| heads.iter().all(|h| !comes_before(h, c))))
            .or_else(|| lists.iter().position(|(_, l)| !l.is_empty()));
        let Some(delivery) = next.and_then(|i| lists[i].1.pop_front()) else { return out };
        // Being next, it heads every other list that has it.
        for (room, list) in &mut lists {
            let offset = offset_in(&delivery, room);
            if offset.is_some() && list.front().and_then(|h| offset_in(h, room)) == offset {
                list.pop_front();
            }
        }
        out.push(delivery);
    }
}

fn offset_in(delivery: &Delivery, room: &str) -> Option<u64> {
    delivery.rooms().iter().find(|p| p.room == room)?.position.as_ref().map(|p| p.offset)
}

/// Whether `a` is before `b` in some room they both have an offset in.
fn comes_before(a: &Delivery, b: &Delivery) -> bool {
    a.rooms().iter().any(|pa| {
        let Some(at_a) = &pa.position else { return false };
        b.rooms().iter().any(|pb| {
            pb.room == pa.room
                && pb
                    .position
                    .as_ref()
                    .is_some_and(|at_b| same_epoch(at_a, at_b) && at_a.offset < at_b.offset)
        })
    })
}

fn same_epoch(a: &Position, b: &Position) -> bool {
    a.epoch == b.epoch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Placement;
    use crate::{Message, PreparedMessage};

    /// A delivery named `name` at these (room, offset) places.
    fn at(name: &str, places: &[(&str, u64)]) -> Delivery {
        let rooms: Vec<Placement> = places
            .iter()
            .map(|(room, offset)| Placement {
                room: room.to_string(),
                position: Some(Position::new(*offset, "e")),
            })
            .collect();
        Delivery::new(PreparedMessage::new(&Message::text(name)), Some(rooms.into()))
    }

    fn merged(lists: Vec<(&str, Vec<Delivery>)>) -> Vec<String> {
        let lists = lists.into_iter().map(|(r, l)| (r.to_owned(), l)).collect();
        merge(lists).iter().map(|d| String::from_utf8(d.message().payload().to_vec()).unwrap()).collect()
    }

    #[test]
    fn a_publication_in_two_rooms_comes_once_and_both_orders_hold() {
        // Written in the order a, b, c, d, e: b and d went to both rooms.
        let device =
            vec![at("a", &[("d", 1)]), at("b", &[("d", 2), ("g", 1)]), at("d", &[("d", 3), ("g", 3)])];
        let global = vec![
            at("b", &[("d", 2), ("g", 1)]),
            at("c", &[("g", 2)]),
            at("d", &[("d", 3), ("g", 3)]),
            at("e", &[("g", 4)]),
        ];
        for lists in [vec![("g", global.clone()), ("d", device.clone())], vec![("d", device), ("g", global)]]
        {
            let out = merged(lists);
            assert_eq!(out.len(), 5, "{out:?}");
            let pos = |n: &str| out.iter().position(|x| x == n).unwrap();
            assert!(pos("a") < pos("b") && pos("b") < pos("d"), "device order: {out:?}");
            assert!(
                pos("b") < pos("c") && pos("c") < pos("d") && pos("d") < pos("e"),
                "global order: {out:?}"
            );
        }
    }

    #[test]
    fn one_room_comes_out_as_it_went_in() {
        let list = vec![at("a", &[("r", 1)]), at("b", &[("r", 2)]), at("c", &[("r", 3)])];
        assert_eq!(merged(vec![("r", list)]), ["a", "b", "c"]);
        assert!(merged(vec![("r", vec![]), ("s", vec![])]).is_empty());
    }
}
