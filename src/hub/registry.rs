//! The hub's indexes: connections → rooms, rooms → connections, users →
//! connections. Plain data under one lock; every change keeps the three
//! consistent, and removing a connection cleans all of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::config::ConnId;
use super::engine::{Placement, Position};
use super::info::Transport;
use super::outbox::{Delivery, Outbox};

/// A connection's place in one room.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    /// The last position delivered to it in this room (rooms with history).
    pub(crate) last: Option<Position>,
    /// Joined, and its history is being read: publications wait in
    /// [`Member::held`] until the replay is queued.
    pub(crate) recovering: bool,
    /// The room was reset while it recovered: it cannot say "recovered".
    pub(crate) reset: bool,
}

/// A connection's rooms, sorted by name: a short list, since a connection
/// is in a few rooms, and each name shared with the registry's index of
/// rooms rather than copied. (A `BTreeMap` spent a 600-byte node on the
/// first room of every connection.)
#[derive(Debug, Default)]
pub(crate) struct Rooms(Vec<(Arc<str>, Membership)>);

impl Rooms {
    fn find(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(name, _)| (**name).cmp(room))
    }

    pub(crate) fn get(&self, room: &str) -> Option<&Membership> {
        self.find(room).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_mut(&mut self, room: &str) -> Option<&mut Membership> {
        self.find(room).ok().map(|i| &mut self.0[i].1)
    }

    pub(crate) fn contains_key(&self, room: &str) -> bool {
        self.find(room).is_ok()
    }

    /// Adds a room it is not in yet.
    fn insert(&mut self, room: Arc<str>, membership: Membership) {
        if let Err(i) = self.find(&room) {
            self.0.insert(i, (room, membership));
        }
    }

    pub(crate) fn remove(&mut self, room: &str) -> Option<Membership> {
        let i = self.find(room).ok()?;
        let (_, membership) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(membership)
    }

    /// The names, sorted.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| &**name)
    }

    pub(crate) fn into_keys(self) -> impl Iterator<Item = String> {
        self.0.into_iter().map(|(name, _)| name.to_string())
    }
}

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) user: Option<String>,
    pub(crate) rooms: Rooms,
    pub(crate) outbox: Arc<Outbox>,
    /// Rooms recovering now.
    pub(crate) recovering: usize,
    /// Deliveries held back while a room recovers, in order.
    pub(crate) held: Vec<Delivery>,
    /// When it was admitted, for operators.
    pub(crate) connected_at: SystemTime,
    pub(crate) transport: Transport,
}

impl Member {
    /// Whether it already has this publication: some room of it in which
    /// this member has seen its offset or a later one (rooms deliver in
    /// order, so that is exact).
    pub(crate) fn has_seen(&self, rooms: &[Placement]) -> bool {
        rooms.iter().any(|placement| {
            let (Some(at), Some(membership)) = (&placement.position, self.rooms.get(&placement.room)) else {
                return false;
            };
            membership.last.as_ref().is_some_and(|last| last.epoch == at.epoch && at.offset <= last.offset)
        })
    }

    /// Records that this publication was queued for it.
    pub(crate) fn advance(&mut self, rooms: &[Placement]) {
        for placement in rooms {
            if let (Some(at), Some(membership)) = (&placement.position, self.rooms.get_mut(&placement.room)) {
                membership.last = Some(at.clone());
            }
        }
    }

    /// Whether any of these rooms is recovering for it.
    pub(crate) fn is_recovering_any(&self, rooms: &[Placement]) -> bool {
        self.recovering > 0 && rooms.iter().any(|p| self.rooms.get(&p.room).is_some_and(|m| m.recovering))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) conns: HashMap<ConnId, Member>,
    pub(crate) rooms: HashMap<Arc<str>, BTreeSet<ConnId>>,
    /// A user's connections, in no order. Usually a few, so a list (a set
    /// kept a 100-byte node per user); leaving scans it.
    pub(crate) users: HashMap<String, Vec<ConnId>>,
}

/// What a join did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Already a member.
    Already,
    /// A new member of a room that had members here.
    Member,
    /// The room's first member on this node.
    First,
}

impl Registry {
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, Vec::len)
    }

    pub(crate) fn insert(&mut self, id: ConnId, user: Option<String>, outbox: Arc<Outbox>) {
        if let Some(user) = &user {
            self.users.entry(user.clone()).or_default().push(id);
        }
        let member = Member {
            user,
            rooms: Rooms::default(),
            outbox,
            recovering: 0,
            held: Vec::new(),
            connected_at: SystemTime::now(),
            transport: Transport::WebSocket,
        };
        self.conns.insert(id, member);
    }

    /// Removes a connection from every index; returns it, and the rooms
    /// that have no member left.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<(Member, Vec<String>)> {
        let member = self.conns.remove(&id)?;
        let emptied =
            member.rooms.keys().filter(|room| self.leave_index(room, id)).map(str::to_owned).collect();
        if let Some(user) = &member.user {
            if let Some(ids) = self.users.get_mut(user) {
                if let Some(i) = ids.iter().position(|&c| c == id) {
                    ids.swap_remove(i);
                }
                if ids.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        Some((member, emptied))
    }

    /// `None`: no such connection.
    pub(crate) fn join(&mut self, id: ConnId, room: &str, recovering: bool) -> Option<Joined> {
        let member = self.conns.get_mut(&id)?;
        if member.rooms.contains_key(room) {
            return Some(Joined::Already);
        }
        // One copy of the name, shared by the index and its members.
        let name = self.rooms.get_key_value(room).map_or_else(|| Arc::from(room), |(name, _)| name.clone());
        member.rooms.insert(name.clone(), Membership { recovering, ..Membership::default() });
        member.recovering += usize::from(recovering);
        let members = self.rooms.entry(name).or_default();
        members.insert(id);
        Some(if members.len() == 1 { Joined::First } else { Joined::Member })
    }

    /// `None`: no such connection; `Some(None)`: was not a member;
    /// `Some(Some(emptied))`: left, and whether the room is now empty here.
    pub(crate) fn leave(&mut self, id: ConnId, room: &str) -> Option<Option<bool>> {
        let member = self.conns.get_mut(&id)?;
        let Some(membership) = member.rooms.remove(room) else { return Some(None) };
        if membership.recovering {
            member.recovering -= 1;
        }
        Some(Some(self.leave_index(room, id)))
    }

    /// Whether the room is now empty (and gone).
    fn leave_index(&mut self, room: &str, id: ConnId) -> bool {
        let Some(set) = self.rooms.get_mut(room) else { return false };
        set.remove(&id);
        // Empty rooms do not linger.
        let empty = set.is_empty();
        if empty {
            self.rooms.remove(room);
        }
        empty
    }

    pub(crate) fn room_members(&self, room: &str) -> impl Iterator<Item = (ConnId, &Member)> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conns.get(id).map(|member| (*id, member)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SlowConsumer;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(4, SlowConsumer::Close))
    }

    #[test]
    fn removing_a_connection_cleans_every_index() {
        let mut registry = Registry::default();
        registry.insert(ConnId(1), Some("ann".into()), outbox());
        registry.insert(ConnId(2), Some("ann".into()), outbox());
        registry.insert(ConnId(3), None, outbox());
        let joins: Vec<_> = [(1, "a"), (1, "b"), (2, "a"), (3, "b")]
            .iter()
            .map(|(id, r)| registry.join(ConnId(*id), r, false))
            .collect();
        assert_eq!(
            joins,
            [Some(Joined::First), Some(Joined::First), Some(Joined::Member), Some(Joined::Member)]
        );
        assert_eq!(registry.join(ConnId(1), "a", false), Some(Joined::Already));
        assert_eq!(registry.user_connections("ann"), 2);
        let (member, emptied) = registry.remove(ConnId(1)).unwrap();
        assert_eq!(member.rooms.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(emptied.is_empty());
        assert_eq!(registry.user_connections("ann"), 1);
        assert_eq!(registry.room_members("a").map(|(id, _)| id).collect::<Vec<_>>(), [ConnId(2)]);
        assert_eq!(registry.remove(ConnId(2)).unwrap().1, ["a"]);
        assert_eq!(registry.remove(ConnId(3)).unwrap().1, ["b"]);
        assert!(registry.conns.is_empty() && registry.rooms.is_empty() && registry.users.is_empty());
        assert_eq!(registry.join(ConnId(1), "a", false), None);
        assert!(registry.remove(ConnId(1)).is_none());
    }

    #[test]
    fn leaving_the_last_member_removes_the_room() {
        let mut registry = Registry::default();
        registry.insert(ConnId(7), None, outbox());
        registry.join(ConnId(7), "global", true);
        assert_eq!(registry.conns[&ConnId(7)].recovering, 1);
        assert_eq!(registry.leave(ConnId(7), "global"), Some(Some(true)));
        assert_eq!(registry.conns[&ConnId(7)].recovering, 0);
        assert_eq!(registry.leave(ConnId(7), "global"), Some(None));
        assert!(registry.rooms.is_empty());
    }

    #[test]
    fn a_member_has_seen_what_any_of_its_rooms_delivered() {
        let mut registry = Registry::default();
        registry.insert(ConnId(1), None, outbox());
        registry.join(ConnId(1), "d", false);
        registry.join(ConnId(1), "g", false);
        let at =
            |room: &str, offset| Placement { room: room.into(), position: Some(Position::new(offset, "e")) };
        let member = registry.conns.get_mut(&ConnId(1)).unwrap();
        member.advance(&[at("d", 4), at("g", 40)]);
        assert!(member.has_seen(&[at("d", 4), at("g", 40)]));
        assert!(member.has_seen(&[at("x", 1), at("g", 39)]), "g 39 came before g 40");
        assert!(!member.has_seen(&[at("d", 5), at("g", 41)]));
        let other_epoch = Placement { room: "d".into(), position: Some(Position::new(1, "new")) };
        assert!(!member.has_seen(&[other_epoch]), "a new epoch starts over");
    }
}
