//! The JSON room protocol spoken over /ws.
//!
//! Every message is an envelope `{type, room?, payload?, timestamp,
//! request_id?}`. Client to server: `subscribe` / `unsubscribe` (with
//! `payload.rooms`), `ping`, `publish` (to `chat:` rooms only), `typing`.
//! Server to client: `connected`, `subscribed`, `unsubscribed`, `pong`,
//! `error`, and the application's events (`message`, `typing`,
//! `user_joined`, `user_left`, `online_users`, `telemetry`,
//! `device_status`, `alert`). Bad input gets an `error`; the connection
//! stays open.

use std::time::{SystemTime, UNIX_EPOCH};

use sabai::hub::{ConnId, Hub, HubEvent};
use sabai::Message;
use serde::Deserialize;
use serde_json::{json, Value};

/// Rooms one connection may be in at once.
const MAX_ROOMS: usize = 64;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A server envelope as JSON text.
pub fn envelope(kind: &str, room: Option<&str>, payload: Value, request_id: Option<&Value>) -> String {
    let mut out = json!({ "type": kind, "payload": payload, "timestamp": now_ms() });
    if let Some(room) = room {
        out["room"] = json!(room);
    }
    if let Some(id) = request_id {
        out["request_id"] = id.clone();
    }
    out.to_string()
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
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    #[serde(default)]
    payload: Value,
    request_id: Option<Value>,
}

/// The greeting sent when a connection is admitted.
pub fn connected(hub: &Hub, conn: ConnId) -> String {
    let payload = json!({ "connection_id": conn.0, "user": hub.user_of(conn), "server_time": now_ms() });
    envelope("connected", None, payload, None)
}

/// Handles one message from a client.
pub fn handle(hub: &Hub, conn: ConnId, message: Message) {
    let reply = match message.as_text() {
        None => Err(("binary messages are not part of the protocol".to_owned(), None)),
        Some(text) => match serde_json::from_str::<Inbound>(text) {
            Err(e) => Err((format!("invalid JSON envelope: {e}"), None)),
            Ok(inbound) => {
                let id = inbound.request_id.clone();
                dispatch(hub, conn, inbound).map_err(|why| (why, id))
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

fn dispatch(hub: &Hub, conn: ConnId, inbound: Inbound) -> Result<Option<String>, String> {
    let id = inbound.request_id.as_ref();
    match inbound.kind.as_str() {
        "ping" => Ok(Some(envelope("pong", None, json!({ "server_time": now_ms() }), id))),
        "subscribe" | "unsubscribe" => {
            let rooms = room_list(&inbound.payload)?;
            let subscribe = inbound.kind == "subscribe";
            if subscribe {
                let current = hub.rooms_of(conn).map_or(0, |r| r.len());
                if current + rooms.len() > MAX_ROOMS {
                    return Err(format!("at most {MAX_ROOMS} rooms per connection"));
                }
            }
            for room in &rooms {
                let done = if subscribe { hub.join(conn, room) } else { hub.leave(conn, room) };
                done.map_err(|e| e.to_string())?;
            }
            let kind = if subscribe { "subscribed" } else { "unsubscribed" };
            let now_in = hub.rooms_of(conn).unwrap_or_default();
            Ok(Some(envelope(kind, None, json!({ "rooms": now_in }), id)))
        }
        "publish" => {
            let room = chat_room(hub, conn, inbound.room.as_deref())?;
            let text = inbound.payload.get("text").and_then(Value::as_str).unwrap_or_default().trim();
            if text.is_empty() {
                return Err("publish needs payload.text".into());
            }
            let payload = json!({ "text": text, "user": hub.user_of(conn), "connection_id": conn.0 });
            hub.publish(room, envelope("message", Some(room), payload, None));
            Ok(None)
        }
        "typing" => {
            let room = chat_room(hub, conn, inbound.room.as_deref())?;
            let typing = inbound.payload.get("typing").and_then(Value::as_bool).unwrap_or(true);
            let payload = json!({ "user": hub.user_of(conn), "typing": typing });
            let notice = hub.prepare(envelope("typing", Some(room), payload, None));
            hub.publish_except(room, Some(conn), &notice);
            Ok(None)
        }
        other => Err(format!("unknown message type {other:?}")),
    }
}

fn room_list(payload: &Value) -> Result<Vec<String>, String> {
    let rooms =
        payload.get("rooms").and_then(Value::as_array).ok_or("payload.rooms must be a list of room names")?;
    if rooms.is_empty() || rooms.len() > MAX_ROOMS {
        return Err(format!("payload.rooms must name 1 to {MAX_ROOMS} rooms"));
    }
    let rooms: Option<Vec<String>> = rooms.iter().map(|r| r.as_str().map(str::to_owned)).collect();
    let rooms = rooms.ok_or("room names are strings")?;
    // All or nothing: check every name before joining any.
    for room in &rooms {
        check_room(room)?;
    }
    Ok(rooms)
}

/// Clients may only publish to chat rooms they are in; devices' rooms are
/// written by the server (simulator, POST /publish).
fn chat_room<'a>(hub: &Hub, conn: ConnId, room: Option<&'a str>) -> Result<&'a str, String> {
    let room = room.ok_or("this message needs a room")?;
    if !room.starts_with("chat:") {
        return Err(format!("clients may not publish to {room:?}"));
    }
    if !hub.rooms_of(conn).unwrap_or_default().iter().any(|r| r == room) {
        return Err(format!("subscribe to {room:?} first"));
    }
    Ok(room)
}

/// The hub's events: the `connected` greeting, and presence for chat
/// rooms (`user_joined` / `user_left` and the new `online_users` list).
pub fn on_event(hub: &Hub, event: &HubEvent) {
    let (kind, conn, user, room) = match event {
        HubEvent::Connected { conn, .. } => {
            hub.send_to(*conn, connected(hub, *conn));
            return;
        }
        HubEvent::Joined { conn, user, room } => ("user_joined", conn, user, room),
        HubEvent::Left { conn, user, room } => ("user_left", conn, user, room),
        _ => return,
    };
    if !room.starts_with("chat:") {
        return;
    }
    hub.publish(room, envelope(kind, Some(room), json!({ "user": user, "connection_id": conn.0 }), None));
    let online = hub.users_in(room);
    hub.publish(room, envelope("online_users", Some(room), json!({ "users": online }), None));
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn envelopes_carry_type_room_timestamp_and_request_id() {
        let text = envelope("pong", Some("chat:a"), json!({}), Some(&json!(7)));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "pong");
        assert_eq!(value["room"], "chat:a");
        assert_eq!(value["request_id"], 7);
        assert!(value["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        let bare: Value = serde_json::from_str(&envelope("x", None, json!(null), None)).unwrap();
        assert!(bare.get("room").is_none() && bare.get("request_id").is_none());
    }
}
