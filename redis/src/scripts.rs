//! The Lua scripts the engine runs in Redis. A script runs atomically
//! (Redis "EVAL": no other command runs while it does), which is what
//! gives one order per room: offsets, the history write and the PUBLISH
//! happen in one step, and "PUBLISH within a script is delivered in
//! execution order" — messages published by a script reach a subscriber
//! before those of any later command, and in the order the script
//! published them.
//!
//! Scripts are called by their SHA1 (EVALSHA); a Redis that does not know
//! one (it restarted) answers NOSCRIPT, and the engine loads it again.
//!
//! Epochs come from `redis.call('TIME')` inside the script: a Redis that
//! restarted without persistence gives every room a new epoch, so clients
//! learn that the history they knew is gone. (Redis 7 replicates scripts
//! by their effects, so a script may read the clock before it writes.)

/// A script and its SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) source: &'static str,
    pub(crate) sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script { source, sha: redis::Script::new(source).get_hash().to_owned() }
    }
}

/// The engine's scripts.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) history: Script,
    pub(crate) presence_set: Script,
    pub(crate) presence_read: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            presence_set: Script::new(PRESENCE_SET),
            presence_read: Script::new(PRESENCE_READ),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 4] {
        [&self.publish, &self.history, &self.presence_set, &self.presence_read]
    }
}

/// One publication to one or more rooms. For each room with history: make
/// its meta if missing (a new epoch; a stale stream is dropped so that
/// offsets can start at 1 again), take the next offset, and, once every
/// offset is known, append the encoded publication to the stream with the
/// ID `<offset>-0` (so that XRANGE by offset is a direct seek), trimmed to
/// exactly `size` entries (MAXLEN without `~`), and renew both TTLs. Then
/// PUBLISH the same bytes to every room's channel. Returns offset and
/// epoch per room (empty strings for a room without history).
///
/// KEYS: room i's meta hash at 2i-1, its stream at 2i.
/// ARGV: head, tail, room count, then per room: name, channel, size (0:
/// no history), ttl in ms, meta ttl in ms.
const PUBLISH: &str = r"
local n = tonumber(ARGV[3])
local function ns(s) return #s .. ':' .. s .. ',' end
local parts, offsets, epochs = {ARGV[1]}, {}, {}
local fresh
for i = 1, n do
  local a = 3 + (i - 1) * 5
  local offset, epoch = '', ''
  if tonumber(ARGV[a + 3]) > 0 then
    local meta, stream = KEYS[2 * i - 1], KEYS[2 * i]
    epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
      if not fresh then
        local t = redis.call('TIME')
        fresh = t[1] .. string.format('%06d', tonumber(t[2]))
      end
      epoch = fresh
      redis.call('DEL', stream)
      redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    end
    offset = string.format('%d', redis.call('HINCRBY', meta, 'offset', 1))
  end
  offsets[i], epochs[i] = offset, epoch
  parts[#parts + 1] = ns(ARGV[a + 1]) .. ns(offset) .. ns(epoch)
end
parts[#parts + 1] = ARGV[2]
local encoded = table.concat(parts)
for i = 1, n do
  local a = 3 + (i - 1) * 5
  if offsets[i] ~= '' then
    local stream = KEYS[2 * i]
    redis.call('XADD', stream, 'MAXLEN', ARGV[a + 3], offsets[i] .. '-0', 'p', encoded)
    redis.call('PEXPIRE', stream, ARGV[a + 4])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[a + 5])
  end
end
for i = 1, n do
  redis.call('PUBLISH', ARGV[3 + (i - 1) * 5 + 2], encoded)
end
local out = {}
for i = 1, n do
  out[2 * i - 1] = offsets[i]
  out[2 * i] = epochs[i]
end
return out
";

/// A room's position, the oldest entry its history holds, and the entries
/// after `since` (at most `count`). Makes the meta if missing, so that an
/// empty room has an epoch. `since` at or past the room's offset reads
/// nothing, so a hostile `since` costs one seek at most.
///
/// KEYS: meta, stream. ARGV: since (empty: the position only), count,
/// meta ttl in ms (for a meta made here).
/// Returns {epoch, offset, earliest stream ID or '', {entries}}.
const HISTORY: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch, offset = meta[1], tonumber(meta[2]) or 0
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  offset = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local earliest, entries = '', {}
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then
  earliest = first[1][1]
  if ARGV[1] ~= '' and tonumber(ARGV[1]) < offset then
    local from = string.format('%d', tonumber(ARGV[1]) + 1) .. '-0'
    local got = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', ARGV[2])
    for i = 1, #got do entries[i] = got[i][2][2] end
  end
end
return {epoch, string.format('%d', offset), earliest, entries}
";

/// Sets this node's presence entries (or registry entry): each field to
/// its count with an expiry of now + ttl by Redis's clock, or removes it
/// (an empty count). Redis 7.0 has no per-field TTL, hence the sorted set of
/// expiry times beside the hash. The keys themselves outlive the last
/// refresh by twice the ttl, so a room nobody refreshes disappears.
///
/// KEYS: hash, expiry zset. ARGV: ttl in ms, then field, count pairs.
const PRESENCE_SET: &str = r"
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] ~= '' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], expires, ARGV[i])
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < 2 * ttl then redis.call('PEXPIRE', key, 2 * ttl) end
end
return 1
";

/// Removes the entries past their expiry, then returns the hash
/// (field, count, field, count ...).
///
/// KEYS: hash, expiry zset.
const PRESENCE_READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #expired, 500 do
  local chunk = {unpack(expired, i, math.min(i + 499, #expired))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
return redis.call('HGETALL', KEYS[1])
";
