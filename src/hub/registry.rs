//! The hub's indexes: connections → rooms, rooms → connections, users →
//! connections. Plain data under one lock; every change keeps the three
//! consistent, and removing a connection cleans all of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::config::ConnId;
use super::outbox::Outbox;

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) user: Option<String>,
    pub(crate) rooms: BTreeSet<String>,
    pub(crate) outbox: Arc<Outbox>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) conns: HashMap<ConnId, Member>,
    pub(crate) rooms: HashMap<String, BTreeSet<ConnId>>,
    pub(crate) users: HashMap<String, BTreeSet<ConnId>>,
}

impl Registry {
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, BTreeSet::len)
    }

    pub(crate) fn insert(&mut self, id: ConnId, user: Option<String>, outbox: Arc<Outbox>) {
        if let Some(user) = &user {
            self.users.entry(user.clone()).or_default().insert(id);
        }
        self.conns.insert(id, Member { user, rooms: BTreeSet::new(), outbox });
    }

    /// Removes a connection from every index; returns it with its rooms.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Member> {
        let member = self.conns.remove(&id)?;
        for room in &member.rooms {
            self.leave_index(room, id);
        }
        if let Some(user) = &member.user {
            if let Some(set) = self.users.get_mut(user) {
                set.remove(&id);
                if set.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        Some(member)
    }

    /// `None`: no such connection; `Some(false)`: already a member.
    pub(crate) fn join(&mut self, id: ConnId, room: &str) -> Option<bool> {
        let member = self.conns.get_mut(&id)?;
        if !member.rooms.insert(room.to_owned()) {
            return Some(false);
        }
        self.rooms.entry(room.to_owned()).or_default().insert(id);
        Some(true)
    }

    /// `None`: no such connection; `Some(false)`: was not a member.
    pub(crate) fn leave(&mut self, id: ConnId, room: &str) -> Option<bool> {
        let member = self.conns.get_mut(&id)?;
        if !member.rooms.remove(room) {
            return Some(false);
        }
        self.leave_index(room, id);
        Some(true)
    }

    fn leave_index(&mut self, room: &str, id: ConnId) {
        if let Some(set) = self.rooms.get_mut(room) {
            set.remove(&id);
            // Empty rooms do not linger.
            if set.is_empty() {
                self.rooms.remove(room);
            }
        }
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
        for (id, room) in [(1, "a"), (1, "b"), (2, "a"), (3, "b")] {
            assert_eq!(registry.join(ConnId(id), room), Some(true));
        }
        assert_eq!(registry.join(ConnId(1), "a"), Some(false));
        assert_eq!(registry.user_connections("ann"), 2);
        let member = registry.remove(ConnId(1)).unwrap();
        assert_eq!(member.rooms.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(registry.user_connections("ann"), 1);
        assert_eq!(registry.room_members("a").map(|(id, _)| id).collect::<Vec<_>>(), [ConnId(2)]);
        registry.remove(ConnId(2));
        registry.remove(ConnId(3));
        assert!(registry.conns.is_empty() && registry.rooms.is_empty() && registry.users.is_empty());
        assert_eq!(registry.join(ConnId(1), "a"), None);
        assert!(registry.remove(ConnId(1)).is_none());
    }

    #[test]
    fn leaving_the_last_member_removes_the_room() {
        let mut registry = Registry::default();
        registry.insert(ConnId(7), None, outbox());
        registry.join(ConnId(7), "global");
        assert_eq!(registry.leave(ConnId(7), "global"), Some(true));
        assert_eq!(registry.leave(ConnId(7), "global"), Some(false));
        assert!(registry.rooms.is_empty());
    }
}
