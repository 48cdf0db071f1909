//! The JSON room protocol, version 1 (docs/protocol.md), spoken over /ws
//! and over SSE with POST /send.
//!
//! Every message is an envelope `{v, type, room?, payload?, timestamp,
//! request_id?}`; publications in rooms with history also carry `offset`
//! and `offsets`, added when a publication is rendered (see [`render`]).
//! Bad input gets an `error`; the connection stays open.

use std::collections::BTreeMap;
use std::time::SystemTime;

use sabai::hub::{ConnId, Hub, HubEvent, Position, Publication, Publish, Subscribed, Subscription};
use std::sync::Arc;

use sabai::Message;

use crate::App;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The protocol version this server speaks.
pub const VERSION: u64 = 1;

/// Rooms one connection may be in at once.
const MAX_ROOMS: usize = 64;

/// Longest epoch a client may send back (ours are 16 to 20 characters).
const MAX_EPOCH: usize = 64;

/// Now, in RFC 3339 (UTC, milliseconds).
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A server envelope as JSON text.
pub fn envelope(kind: &str, room: Option<&str>, payload: Value, request_id: Option<&Value>) -> String {
    let mut out = Map::new();
    out.insert("v".into(), json!(VERSION));
    out.insert("type".into(), json!(kind));
    if let Some(room) = room {
        out.insert("room".into(), json!(room));
    }
    out.insert("payload".into(), payload);
    out.insert("timestamp".into(), json!(now()));
    if let Some(id) = request_id {
        out.insert("request_id".into(), id.clone());
    }
    Value::Object(out).to_string()
}

/// How a publication goes out: its envelope (published without offsets)
/// with `offset` (in its first room) and `offsets` (in every room with
/// history) added. Runs once per publication on each node.
pub fn render(publication: &Publication) -> Message {
    let Some(text) = publication.message.as_text() else { return publication.message.clone() };
    let placed: Vec<(&str, u64)> = publication
        .rooms
        .iter()
        .filter_map(|p| p.position.as_ref().map(|at| (p.room.as_str(), at.offset)))
        .collect();
    let Some(body) = text.strip_suffix('}').filter(|_| !placed.is_empty()) else {
        return publication.message.clone();
    };
    let mut out = String::with_capacity(text.len() + 32 * placed.len());
    out.push_str(body);
    if let Some(first) = publication.rooms.first().and_then(|p| p.position.as_ref()) {
        out.push_str(&format!(",\"offset\":{}", first.offset));
    }
    out.push_str(",\"offsets\":{");
    for (i, (room, offset)) in placed.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*room).to_string());
        out.push_str(&format!(":{offset}"));
    }
    out.push_str("}}");
    Message::text(out)
}

/// Room names of the demo: `global`, `device:<id>`, `group:<id>`,
/// `chat:<id>`, where an id is 1 to 64 letters, digits, `-` or `_`.
pub fn check_room(room: &str) -> Result<(), String> {
    if room == "global" {
        return Ok(());
    }
    let Some((kind, id)) = room.split_once(':') else {
        return Err(format!("unknown room {room:?}: use global, device:<id>, group:<id> or chat:<id>"));
    };
    let id_ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match kind {
        "device" | "group" | "chat" if id_ok => Ok(()),
        "device" | "group" | "chat" => Err(format!("bad room id in {room:?}: 1-64 of A-Z a-z 0-9 - _")),
        _ => Err(format!("unknown room kind {kind:?}")),
    }
}

#[derive(Deserialize)]
struct Inbound {
    v: Option<Value>,
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    #[serde(default)]
    payload: Value,
    request_id: Option<Value>,
}

/// The greeting sent when a connection is admitted.
pub fn connected(hub: &Hub, conn: ConnId, node: &str) -> String {
    let payload =
        json!({ "connection_id": conn.0, "user": hub.user_of(conn), "node": node, "server_time": now() });
    envelope("connected", None, payload, None)
}

/// Handles one message from a client (over /ws or POST /send).
pub async fn handle(app: Arc<App>, conn: ConnId, message: Message) {
    let hub = &app.hub;
    let reply = match message.as_text() {
        None => Err(("binary messages are not part of the protocol".to_owned(), None)),
        Some(text) => match serde_json::from_str::<Inbound>(text) {
            Err(e) => Err((format!("invalid JSON envelope: {e}"), None)),
            Ok(inbound) => {
                let id = inbound.request_id.clone();
                dispatch(&app, conn, inbound).await.map_err(|why| (why, id))
            }
        },
    };
    match reply {
        Ok(Some(text)) => {
            hub.send_to(conn, text);
        }
        Ok(None) => {}
        Err((why, id)) => {
            hub.send_to(conn, envelope("error", None, json!({ "message": why }), id.as_ref()));
        }
    }
}

async fn dispatch(app: &App, conn: ConnId, inbound: Inbound) -> Result<Option<String>, String> {
    let hub = &app.hub;
    if inbound.v.as_ref().is_some_and(|v| v.as_u64() != Some(VERSION)) {
        return Err(format!(
            "unsupported protocol version {}: this server speaks {VERSION}",
            inbound.v.unwrap_or_default()
        ));
    }
    let id = inbound.request_id.as_ref();
    match inbound.kind.as_str() {
        "ping" => Ok(Some(envelope("pong", None, json!({ "server_time": now() }), id))),
        "subscribe" => subscribe(app, conn, &inbound.payload, id).await.map(|()| None),
        "refresh" => refresh(app, conn, &inbound.payload).map(|expires| {
            let payload =
                json!({ "expires_at": expires.map(|at| humantime::format_rfc3339_seconds(at).to_string()) });
            Some(envelope("refreshed", None, payload, id))
        }),
        "unsubscribe" => {
            for room in room_list(&inbound.payload)? {
                hub.leave(conn, &room).map_err(|e| e.to_string())?;
            }
            let now_in = hub.rooms_of(conn).unwrap_or_default();
            Ok(Some(envelope("unsubscribed", None, json!({ "rooms": now_in }), id)))
        }
        "publish" => {
            let room = chat_room(app, conn, inbound.room.as_deref())?;
            let text = inbound.payload.get("text").and_then(Value::as_str).unwrap_or_default().trim();
            if text.is_empty() {
                return Err("publish needs payload.text".into());
            }
            let payload = json!({ "text": text, "user": hub.user_of(conn), "connection_id": conn.0 });
            let published = hub.publish(room, envelope("message", Some(room), payload, None)).await;
            let placed = published.map_err(|e| format!("not published: {e}"))?;
            Ok(id.map(|id| {
                envelope("published", Some(room), json!({ "offsets": offsets(&placed) }), Some(id))
            }))
        }
        "typing" => {
            let room = chat_room(app, conn, inbound.room.as_deref())?;
            let typing = inbound.payload.get("typing").and_then(Value::as_bool).unwrap_or(true);
            let user = hub.user_of(conn);
            let payload = json!({ "user": user, "typing": typing });
            let notice =
                Publish::new(envelope("typing", Some(room), payload, None)).to(room).ephemeral().except(conn);
            // The latest state wins: a reader's queue holds one typing
            // notice per user and room, however fast they are sent.
            let notice = notice.coalesce(coalescing_key("typing", room, user.as_deref(), conn));
            // Fire and forget: a typing notice that does not arrive is harmless.
            drop(hub.publish_with(notice));
            Ok(None)
        }
        "presence" => {
            let room = inbound.room.as_deref().ok_or("presence needs a room")?;
            check_room(room)?;
            allowed(app, conn, room)?;
            let users = hub.presence(room).await.map_err(|e| e.to_string())?;
            let users: Vec<Value> =
                users.iter().map(|(u, n)| json!({ "user": u, "connections": n })).collect();
            Ok(Some(envelope("presence", Some(room), json!({ "users": users }), id)))
        }
        "command" => crate::mqtt::command(app, conn, &inbound.payload)
            .map(|sent| Some(envelope("command_sent", None, sent, id))),
        "history" => history(app, conn, inbound.room.as_deref(), &inbound.payload)
            .await
            .map(|(room, payload)| Some(envelope("history", Some(&room), payload, id))),
        other => Err(format!("unknown message type {other:?}")),
    }
}

fn offsets(placed: &[sabai::hub::Placement]) -> Value {
    let map: Map<String, Value> =
        placed.iter().filter_map(|p| Some((p.room.clone(), json!(p.position.as_ref()?.offset)))).collect();
    Value::Object(map)
}

/// `subscribe`: joins every room (all or nothing for the checks),
/// recovering those with a `since`; the `subscribed` reply is queued
/// before the replay. A chat room's joiner then gets `online_users`.
async fn subscribe(app: &App, conn: ConnId, payload: &Value, id: Option<&Value>) -> Result<(), String> {
    let hub = &app.hub;
    let rooms = room_list(payload)?;
    for room in &rooms {
        allowed(app, conn, room)?;
    }
    let mut since = since_map(payload.get("since"))?;
    if let Some(stray) = since.keys().find(|room| !rooms.contains(room)) {
        return Err(format!("payload.since names {stray:?}, which is not in payload.rooms"));
    }
    let current = hub.rooms_of(conn).map_or(0, |r| r.len());
    let new = rooms.iter().filter(|r| !hub.rooms_of(conn).unwrap_or_default().contains(r)).count();
    if current + new > MAX_ROOMS {
        return Err(format!("at most {MAX_ROOMS} rooms per connection"));
    }
    let requests: Vec<Subscription> = rooms
        .iter()
        .map(|room| {
            let mut request = Subscription::new(room.clone());
            request.since = since.remove(room);
            request
        })
        .collect();
    let unknown = unknown_devices(app, &rooms)?;
    let reply = |outcome: &[Subscribed], rooms: &[String]| {
        let mut payload = subscribed_payload(rooms, outcome);
        if !unknown.is_empty() {
            payload["unknown_devices"] = json!(unknown);
        }
        Some(Message::text(envelope("subscribed", None, payload, id)))
    };
    let outcome = hub.subscribe(conn, &requests, reply).await.map_err(|e| e.to_string())?;
    for joined in outcome.iter().filter(|s| s.joined && s.room.starts_with("chat:")) {
        // The joiner gets the whole list; the others got user_joined.
        if let Ok(users) = hub.presence(&joined.room).await {
            let users: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
            hub.send_to(conn, envelope("online_users", Some(&joined.room), json!({ "users": users }), None));
        }
    }
    Ok(())
}

/// The ids of the `device:` rooms among `rooms` that name no device this
/// node knows (`subscribed` lists them in `unknown_devices`: the rooms are
/// joined, a device may appear later). With a strict device registry a
/// device outside it can never appear: an error, and nothing is joined.
pub fn unknown_devices(app: &App, rooms: &[String]) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    for id in rooms.iter().filter_map(|room| room.strip_prefix("device:")) {
        if !app.devices.allows(id) {
            return Err(format!("unknown device {id:?}: not in the device registry"));
        }
        if !app.devices.is_known(id) {
            unknown.push(id.to_owned());
        }
    }
    Ok(unknown)
}

/// Most publications one `history` request returns.
const MAX_HISTORY: u64 = 500;

/// `history`: the last `payload.limit` (default 100, at most 500)
/// publications of a room with history, oldest first, each as its
/// envelope (with `offset` and `offsets`), and the room's position. For
/// seeding a chart; it joins nothing (subscribe for what follows, with
/// `since` at the position given, to miss nothing in between).
async fn history(
    app: &App,
    conn: ConnId,
    room: Option<&str>,
    payload: &Value,
) -> Result<(String, Value), String> {
    let room = room.ok_or("history needs a room")?;
    check_room(room)?;
    allowed(app, conn, room)?;
    let limit = match payload.get("limit") {
        None | Some(Value::Null) => 100,
        Some(limit) => limit
            .as_u64()
            .filter(|n| (1..=MAX_HISTORY).contains(n))
            .ok_or(format!("payload.limit must be 1 to {MAX_HISTORY}"))?,
    };
    let policy = app.hub.config().history_for(room).ok_or(format!("{room:?} keeps no history"))?.clone();
    let engine = app.hub.engine();
    let now = engine.history(room, None, &policy).await.map_err(|e| format!("history unavailable: {e}"))?;
    let position = now.position.ok_or("history unavailable")?;
    let since = position.offset.saturating_sub(limit);
    let read =
        engine.history(room, Some(since), &policy).await.map_err(|e| format!("history unavailable: {e}"))?;
    let skip = read.publications.len().saturating_sub(limit as usize);
    let publications: Vec<Value> = read
        .publications
        .iter()
        .skip(skip)
        .filter_map(|p| serde_json::from_str(render(p).as_text()?).ok())
        .collect();
    let at = read.position.unwrap_or(position);
    let payload = json!({
        "publications": publications,
        "position": { "offset": at.offset, "epoch": &*at.epoch },
    });
    Ok((room.to_owned(), payload))
}

/// The payload of `subscribed`: the connection's rooms, the position of
/// each room of the request that keeps history, and whether they were
/// recovered.
pub fn subscribed_payload(rooms: &[String], outcome: &[Subscribed]) -> Value {
    let mut positions = Map::new();
    let mut all_recovered = None;
    for subscribed in outcome {
        let Some(at) = &subscribed.position else { continue };
        let mut position = json!({ "offset": at.offset, "epoch": &*at.epoch });
        if let Some(recovered) = subscribed.recovered {
            position["recovered"] = json!(recovered);
            all_recovered = Some(all_recovered.unwrap_or(true) && recovered);
        }
        positions.insert(subscribed.room.clone(), position);
    }
    for subscribed in outcome.iter().filter(|s| s.position.is_none() && s.recovered == Some(false)) {
        all_recovered = Some(false);
        positions.insert(subscribed.room.clone(), json!({ "recovered": false }));
    }
    let mut payload = json!({ "rooms": rooms, "positions": positions });
    if let Some(recovered) = all_recovered {
        payload["recovered"] = json!(recovered);
    }
    payload
}

fn room_list(payload: &Value) -> Result<Vec<String>, String> {
    let rooms =
        payload.get("rooms").and_then(Value::as_array).ok_or("payload.rooms must be a list of room names")?;
    if rooms.is_empty() || rooms.len() > MAX_ROOMS {
        return Err(format!("payload.rooms must name 1 to {MAX_ROOMS} rooms"));
    }
    let rooms: Option<Vec<String>> = rooms.iter().map(|r| r.as_str().map(str::to_owned)).collect();
    let mut rooms = rooms.ok_or("room names are strings")?;
    // Each name once, in the order given.
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|room| seen.insert(room.clone()));
    // All or nothing: check every name before joining any.
    for room in &rooms {
        check_room(room)?;
    }
    Ok(rooms)
}

/// `payload.since`: `{room: {offset, epoch}}`, every entry checked.
fn since_map(since: Option<&Value>) -> Result<BTreeMap<String, Position>, String> {
    let Some(since) = since.filter(|s| !s.is_null()) else { return Ok(BTreeMap::new()) };
    let since = since.as_object().ok_or("payload.since must be an object of room: {offset, epoch}")?;
    if since.len() > MAX_ROOMS {
        return Err(format!("payload.since may name at most {MAX_ROOMS} rooms"));
    }
    let mut out = BTreeMap::new();
    for (room, at) in since {
        let bad = || {
            format!(
                "payload.since[{room:?}] must be {{\"offset\": a whole number >= 0, \"epoch\": a string}}"
            )
        };
        let offset = at.get("offset").and_then(Value::as_u64).ok_or_else(bad)?;
        let epoch = at.get("epoch").and_then(Value::as_str).ok_or_else(bad)?;
        if epoch.len() > MAX_EPOCH {
            return Err(format!("payload.since[{room:?}].epoch is over {MAX_EPOCH} bytes"));
        }
        out.insert(room.clone(), Position::new(offset, epoch));
    }
    Ok(out)
}

/// Clients may only publish to chat rooms they are in; devices' rooms are
/// written by the server (simulator, POST /publish).
fn chat_room<'a>(app: &App, conn: ConnId, room: Option<&'a str>) -> Result<&'a str, String> {
    let hub = &app.hub;
    let room = room.ok_or("this message needs a room")?;
    allowed(app, conn, room)?;
    if !room.starts_with("chat:") {
        return Err(format!("clients may not publish to {room:?}"));
    }
    if !hub.rooms_of(conn).unwrap_or_default().iter().any(|r| r == room) {
        return Err(format!("subscribe to {room:?} first"));
    }
    Ok(room)
}

/// Whether the connection's token (if any) allows this room.
fn allowed(app: &App, conn: ConnId, room: &str) -> Result<(), String> {
    match app.identity(conn) {
        Some(identity) if !identity.may(room) => Err(format!("your token does not allow {room:?}")),
        _ => Ok(()),
    }
}

/// `refresh` with `payload.token`: a fresh token for the same user keeps
/// the connection past the old one's expiry (and takes its rooms claim).
/// Without JWT there is nothing to refresh.
fn refresh(app: &App, conn: ConnId, payload: &Value) -> Result<Option<SystemTime>, String> {
    let jwt = app.jwt.as_ref().ok_or("this server does not use tokens")?;
    let token = payload.get("token").and_then(Value::as_str).ok_or("refresh needs payload.token")?;
    let identity = jwt.verify(token).map_err(|why| why.to_string())?;
    let user = app.hub.user_of(conn);
    if user.as_deref() != Some(identity.user.as_str()) {
        return Err("a refresh token must be for the same user".into());
    }
    let expires = identity.expires;
    app.identify(conn, Some(identity));
    Ok(expires)
}

/// The hub's events: the `connected` greeting, presence deltas for chat
/// rooms (to every node, not replayed), and the notice that a room's
/// history was lost.
pub fn on_event(node: &str, hub: &Hub, event: &HubEvent) {
    let (kind, conn, user, room) = match event {
        HubEvent::Connected { conn, user } => {
            tracing::info!(conn = conn.0, user = user.as_deref(), "connection opened");
            hub.send_to(*conn, connected(hub, *conn, node));
            return;
        }
        HubEvent::Disconnected { conn, user, code } => {
            let code = code.map_or(1006, |c| c.0);
            if code == sabai::hub::codes::SLOW_CONSUMER.0 {
                tracing::warn!(conn = conn.0, user = user.as_deref(), code, "slow consumer closed");
            } else {
                tracing::info!(conn = conn.0, user = user.as_deref(), code, "connection closed");
            }
            return;
        }
        HubEvent::Joined { conn, user, room } => ("user_joined", conn, user, room),
        HubEvent::Left { conn, user, room } => ("user_left", conn, user, room),
        HubEvent::RateLimited { conn, user } => {
            tracing::warn!(conn = conn.0, user = user.as_deref(), code = 1008, "rate limit: closing");
            return;
        }
        HubEvent::RoomReset { room, position } => {
            tracing::warn!(
                room = room.as_str(),
                epoch = &*position.epoch,
                offset = position.offset,
                "room history lost: members told to reload"
            );
            let outcome = json!({ "offset": position.offset, "epoch": &*position.epoch, "recovered": false });
            let payload =
                json!({ "rooms": [room], "positions": { room.as_str(): outcome }, "recovered": false });
            hub.send_local(room, envelope("subscribed", None, payload, None));
            return;
        }
        _ => return,
    };
    if !room.starts_with("chat:") {
        return;
    }
    let payload = json!({ "user": user, "connection_id": conn.0 });
    let notice =
        Publish::new(envelope(kind, Some(room), payload, None)).to(room.as_str()).ephemeral().except(*conn);
    // Join/leave churn leaves one pending state per user in each queue.
    let notice = notice.coalesce(coalescing_key("presence", room, user.as_deref(), *conn));
    drop(hub.publish_with(notice));
}

/// The coalescing key of a user's typing or presence in a room (an
/// anonymous connection is its own user).
fn coalescing_key(kind: &str, room: &str, user: Option<&str>, conn: ConnId) -> String {
    match user {
        Some(user) => format!("{kind}|{room}|u:{user}"),
        None => format!("{kind}|{room}|c:{conn}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sabai::hub::Placement;

    #[test]
    fn room_names_follow_the_demo_layout() {
        for good in ["global", "device:sensor-1", "group:greenhouse", "chat:lobby"] {
            assert_eq!(check_room(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "globe",
            "device:",
            "device:a b",
            "kitchen:1",
            "chat:<script>",
            &format!("chat:{}", "x".repeat(65)),
        ] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn envelopes_carry_version_type_room_rfc3339_timestamp_and_request_id() {
        let text = envelope("pong", Some("chat:a"), json!({}), Some(&json!(7)));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((value["v"].as_u64(), value["type"].as_str()), (Some(1), Some("pong")));
        assert_eq!(value["room"], "chat:a");
        assert_eq!(value["request_id"], 7);
        let stamp = value["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert!(stamp.ends_with('Z') && stamp.len() == "2026-12-03T15:33:57.123Z".len(), "{stamp}");
        let bare: Value = serde_json::from_str(&envelope("x", None, json!(null), None)).unwrap();
        assert!(bare.get("room").is_none() && bare.get("request_id").is_none());
    }

    #[test]
    fn rendering_adds_the_offsets_of_every_room_with_history() {
        let at = |room: &str, offset: Option<u64>| Placement {
            room: room.into(),
            position: offset.map(|o| Position::new(o, "e")),
        };
        let text = envelope("telemetry", Some("device:x"), json!({"seq": 1}), None);
        let publication = Publication {
            message: Message::text(text.clone()),
            rooms: vec![at("device:x", Some(41)), at("chat:no-history", None), at("global", Some(977))],
            except: None,
            coalesce: None,
        };
        let rendered: Value = serde_json::from_str(render(&publication).as_text().unwrap()).unwrap();
        assert_eq!(rendered["offset"], 41);
        assert_eq!(rendered["offsets"], json!({"device:x": 41, "global": 977}));
        assert_eq!(rendered["payload"]["seq"], 1);
        let plain = Publication { rooms: vec![at("chat:a", None)], ..publication };
        assert_eq!(render(&plain).as_text(), Some(text.as_str()), "no offsets, no change");
    }

    #[test]
    fn since_is_checked_entry_by_entry() {
        let ok = since_map(Some(&json!({"chat:a": {"offset": 3, "epoch": "e1"}}))).unwrap();
        assert_eq!(ok["chat:a"], Position::new(3, "e1"));
        assert!(since_map(None).unwrap().is_empty());
        assert!(since_map(Some(&Value::Null)).unwrap().is_empty());
        for bad in [
            json!([1]),
            json!({"chat:a": 3}),
            json!({"chat:a": {"offset": -1, "epoch": "e"}}),
            json!({"chat:a": {"offset": 1.5, "epoch": "e"}}),
            json!({"chat:a": {"offset": "12", "epoch": "e"}}),
            json!({"chat:a": {"offset": 1e30, "epoch": "e"}}),
            json!({"chat:a": {"offset": 1}}),
            json!({"chat:a": {"offset": 1, "epoch": 5}}),
            json!({"chat:a": {"offset": 1, "epoch": "e".repeat(65)}}),
        ] {
            assert!(since_map(Some(&bad)).is_err(), "{bad}");
        }
        // The largest offset is a valid number: the hub answers recovered: false.
        assert!(since_map(Some(&json!({"r": {"offset": u64::MAX, "epoch": "e"}}))).is_ok());
    }
}
