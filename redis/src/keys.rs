//! Where a room lives in Redis: its keys and its channel.
//!
//! Every name is the prefix, a kind, and the room between braces:
//!
//! | name                            | type    | holds                                         |
//! |---------------------------------|---------|-----------------------------------------------|
//! | `{prefix}meta:{room}`           | hash    | `epoch`, `offset` (the last one given)        |
//! | `{prefix}stream:{room}`         | stream  | the history: entry `<offset>-0`, field `p`     |
//! | `{prefix}channel:{room}`        | channel | every publication to the room (PUBLISH)       |
//! | `{prefix}presence:{room}`       | hash    | `<node>\|<user>` → connections                |
//! | `{prefix}presence-exp:{room}`   | zset    | `<node>\|<user>` → expiry (ms, Redis clock)   |
//! | `{prefix}nodes`                 | hash    | node id → connections                         |
//! | `{prefix}nodes-exp`             | zset    | node id → expiry (ms, Redis clock)            |
//!
//! The braces are a Redis Cluster hash tag: a room's keys (and, with
//! sharded pub/sub, its channel) hash to one slot, so a script over one
//! room stays on one shard. The room name follows the kind, so no room's
//! names can collide with another's.

/// The names of one engine's keys and channels (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys { prefix: prefix.into() }
    }

    fn name(&self, kind: &str, room: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + kind.len() + room.len() + 3);
        name.push_str(&self.prefix);
        name.push_str(kind);
        name.push_str(":{");
        name.push_str(room);
        name.push('}');
        name
    }

    /// The room's offset and epoch (a hash).
    pub fn meta(&self, room: &str) -> String {
        self.name("meta", room)
    }

    /// The room's history (a stream).
    pub fn stream(&self, room: &str) -> String {
        self.name("stream", room)
    }

    /// The room's pub/sub channel.
    pub fn channel(&self, room: &str) -> String {
        self.name("channel", room)
    }

    /// Who is in the room (a hash of `<node>|<user>` → connections).
    pub fn presence(&self, room: &str) -> String {
        self.name("presence", room)
    }

    /// When each presence entry expires (a sorted set).
    pub fn presence_expiry(&self, room: &str) -> String {
        self.name("presence-exp", room)
    }

    /// The node registry (a hash of node id → connections).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// When each node's registry entry expires (a sorted set).
    pub fn nodes_expiry(&self) -> String {
        format!("{}nodes-exp", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_names_share_its_hash_tag() {
        let keys = Keys::new("sabai:");
        assert_eq!(keys.meta("device:7"), "sabai:meta:{device:7}");
        assert_eq!(keys.stream("device:7"), "sabai:stream:{device:7}");
        assert_eq!(keys.channel("device:7"), "sabai:channel:{device:7}");
        assert_eq!(keys.presence("chat"), "sabai:presence:{chat}");
        assert_eq!(keys.nodes(), "sabai:nodes");
        // Two rooms never share a name: the kind comes first.
        assert_ne!(keys.meta("a}:meta:{b"), keys.meta("a"));
    }
}
