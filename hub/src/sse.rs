//! Server-Sent Events: `GET /events?rooms=a,b` streams the same envelopes
//! as /ws, and `POST /send` carries the client's side (docs/protocol.md).
//!
//! An SSE stream is a hub member like a WebSocket ([`Hub::attach`](sabai::hub::Hub::attach)): same
//! rooms, recovery and bounded queue. Each event that moves the client's
//! position has an `id:` that encodes where it stands in every room
//! (offset and epoch), so `Last-Event-ID` on a reconnect recovers from
//! the same history as a WebSocket's `since`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use sabai::hub::{codes, Attached, ConnId, Delivery, Position, Subscription, Taken};
use sabai::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::http::{admit, json_response, plain, Body, Credentials};
use crate::protocol::{self, envelope, subscribed_payload};
use crate::{App, DropConnection};

/// Longest `id:` (and so `Last-Event-ID`) the server writes or reads.
pub const MAX_ID: usize = 1024;

/// A comment line this often keeps proxies from closing an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A reader that takes nothing for this long is cut off.
const STALLED: Duration = Duration::from_secs(30);

/// After a stream ends, its connection gets this long to deliver what
/// is buffered before it is dropped.
const LINGER: Duration = Duration::from_secs(10);

/// Events written per wake-up; the channel to hyper holds a few such
/// chunks, so a reader that stops reading backs up into the hub's queue.
const BATCH: usize = 64;

/// An epoch that no room has: a `since` with it is never recovered, so a
/// token that cannot be read gives `recovered: false` for its rooms.
const NO_EPOCH: &str = "-";

/// An SSE client's session: its hub connection, and a lock that keeps its
/// POSTs in order.
pub struct Session {
    pub conn: ConnId,
    pub order: Arc<tokio::sync::Mutex<()>>,
}

/// Where a client stands in each room: `v1.` + base64url(JSON
/// `{"room": [offset, "epoch"]}`).
pub fn encode_id(positions: &BTreeMap<String, Position>) -> String {
    let map: serde_json::Map<String, Value> =
        positions.iter().map(|(room, at)| (room.clone(), json!([at.offset, &*at.epoch]))).collect();
    format!("v1.{}", URL_SAFE_NO_PAD.encode(Value::Object(map).to_string()))
}

/// Reads an id back; `None` for anything that is not one we could have
/// written (too long, not base64url, not the JSON shape).
pub fn decode_id(id: &str) -> Option<BTreeMap<String, Position>> {
    if id.len() > MAX_ID {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(id.strip_prefix("v1.")?).ok()?;
    let Value::Object(map) = serde_json::from_slice(&json).ok()? else { return None };
    let mut out = BTreeMap::new();
    for (room, at) in map {
        let [offset, epoch] = at.as_array()?.as_slice() else { return None };
        out.insert(room, Position::new(offset.as_u64()?, epoch.as_str()?));
    }
    Some(out)
}

/// `GET /events?rooms=a,b`.
pub async fn events(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let counted = match crate::http::limit_stream(&app, &req) {
        Ok(counted) => counted,
        Err(refusal) => return refused(refusal.status(), refusal.message()),
    };
    let credentials = Credentials::of(&req);
    let admitted = match admit(&app, &credentials) {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal.status(), refusal.message()),
    };
    let rooms: Vec<String> = credentials
        .query("rooms")
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    if rooms.len() > 64 {
        return plain(StatusCode::BAD_REQUEST, "at most 64 rooms");
    }
    if let Some(why) = rooms.iter().find_map(|room| protocol::check_room(room).err()) {
        return plain(StatusCode::BAD_REQUEST, &why);
    }
    // A strict device registry refuses rooms of devices outside it.
    if let Err(why) = protocol::unknown_devices(&app, &rooms) {
        return plain(StatusCode::BAD_REQUEST, &why);
    }
    let last_id = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let last_id = last_id.or_else(|| credentials.query("last_event_id"));
    let slot = match app.hub.reserve() {
        Ok(slot) => slot,
        Err(refusal) => return refused(refusal.status(), refusal.message()),
    };
    let conn = slot.id();
    app.identify(conn, admitted.identity);
    let member = match app.hub.attach(slot, Some(admitted.user)) {
        Ok(member) => member,
        Err(why) => {
            app.forget(conn);
            return plain(StatusCode::TOO_MANY_REQUESTS, &why.to_string());
        }
    };
    let session = format!("{:032x}", rand::random::<u128>());
    app.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(session.clone(), Session { conn: member.id(), order: Arc::default() });
    let (tx, rx) = mpsc::channel(4);
    let drop_connection = req.extensions().get::<DropConnection>().cloned();
    let stream = Stream {
        app: app.clone(),
        member,
        session,
        positions: BTreeMap::new(),
        tx,
        drop_connection,
        counted,
    };
    tokio::spawn(stream.run(rooms, last_id));
    let mut response = Response::new(ChannelBody(rx).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn refused(status: u16, why: &str) -> Response<Body> {
    tracing::warn!(status, reason = why, "SSE request refused");
    plain(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), why)
}

/// One SSE stream: its member, and what the client has seen.
struct Stream {
    app: Arc<App>,
    member: Attached,
    session: String,
    positions: BTreeMap<String, Position>,
    tx: mpsc::Sender<Bytes>,
    drop_connection: Option<DropConnection>,
    /// Its place in its address's count.
    counted: Vec<Arc<crate::limits::Open>>,
}

impl Stream {
    async fn run(mut self, rooms: Vec<String>, last_id: Option<String>) {
        let requests = self.requests(rooms, last_id.as_deref());
        let hub = self.app.hub.clone();
        let conn = self.member.id();
        if !requests.is_empty() {
            let asked: Vec<String> = requests.iter().map(|r| r.room.clone()).collect();
            let unknown = protocol::unknown_devices(&self.app, &asked).unwrap_or_default();
            let reply = |outcome: &[sabai::hub::Subscribed], rooms: &[String]| {
                let mut payload = subscribed_payload(rooms, outcome);
                if !unknown.is_empty() {
                    payload["unknown_devices"] = json!(unknown);
                }
                Some(Message::text(envelope("subscribed", None, payload, None)))
            };
            // The response is out already; its events start once the
            // rooms are joined (and the replay queued).
            if let Err(why) = hub.subscribe(conn, &requests, reply).await {
                hub.send_to(conn, envelope("error", None, json!({ "message": why.to_string() }), None));
            }
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let linger = loop {
            let chunk = tokio::select! {
                taken = self.member.next(BATCH) => match taken {
                    Taken::Deliveries(deliveries) => self.write(&deliveries),
                    // A slow reader: its buffered events would never drain.
                    Taken::Closed(code, _) if code == codes::SLOW_CONSUMER => break Duration::ZERO,
                    // Shutdown or a close: end the response; the client reconnects.
                    _ => break LINGER,
                },
                _ = heartbeat.tick() => Bytes::from_static(b": ping\n\n"),
                () = self.tx.closed() => break Duration::ZERO,
            };
            self.member.wrote(chunk.len());
            tokio::select! {
                sent = tokio::time::timeout(STALLED, self.tx.send(chunk)) => match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break Duration::ZERO,
                },
                () = self.member.aborted() => {
                    // Takes the close, so the hub counts its code.
                    let _ = self.member.next(1).await;
                    break Duration::ZERO;
                }
            }
        };
        self.app.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.session);
        let Stream { member, tx, drop_connection, counted, .. } = self;
        // Leave the hub and end the body now; the connection itself goes
        // once what is buffered had its chance to be read.
        drop((member, tx, counted));
        tokio::time::sleep(linger).await;
        if let Some(connection) = drop_connection {
            connection.now();
        }
    }

    /// The rooms to join, with the positions the client's last id gives.
    fn requests(&mut self, rooms: Vec<String>, last_id: Option<&str>) -> Vec<Subscription> {
        let known = last_id.map(|id| decode_id(id).ok_or(()));
        rooms
            .into_iter()
            .map(|room| {
                let since = match &known {
                    None => None,
                    Some(Ok(positions)) => positions.get(&room).cloned(),
                    // An id we cannot read: these rooms are not recovered.
                    Some(Err(())) => Some(Position::new(0, NO_EPOCH)),
                };
                if let Some(at) = since.as_ref().filter(|at| &*at.epoch != NO_EPOCH) {
                    self.positions.insert(room.clone(), at.clone());
                }
                Subscription { since, ..Subscription::new(room) }
            })
            .collect()
    }

    /// The events for these deliveries, as one chunk.
    fn write(&mut self, deliveries: &[Delivery]) -> Bytes {
        let mut out = String::new();
        for delivery in deliveries {
            let Ok(text) = std::str::from_utf8(delivery.message().payload()) else { continue };
            let mut moved = false;
            for placement in delivery.rooms() {
                if let Some(at) = &placement.position {
                    self.positions.insert(placement.room.clone(), at.clone());
                    moved = true;
                }
            }
            let mut text = text.to_owned();
            if delivery.rooms().is_empty() {
                // Replies and notices: a `subscribed` moves the position,
                // `connected` carries the session key.
                if let Ok(mut envelope) = serde_json::from_str::<Value>(&text) {
                    match envelope["type"].as_str() {
                        Some("subscribed") => moved |= self.note_subscribed(&envelope["payload"]),
                        Some("connected") => {
                            envelope["payload"]["session"] = json!(self.session);
                            text = envelope.to_string();
                        }
                        _ => {}
                    }
                }
            }
            if moved {
                let id = encode_id(&self.positions);
                if id.len() <= MAX_ID {
                    out.push_str("id: ");
                    out.push_str(&id);
                    out.push('\n');
                }
            }
            // JSON text has no raw line breaks: one data line per event.
            out.push_str("data: ");
            out.push_str(&text);
            out.push_str("\n\n");
        }
        Bytes::from(out)
    }

    /// Takes the positions of a `subscribed` payload; whether any changed.
    fn note_subscribed(&mut self, payload: &Value) -> bool {
        let Some(positions) = payload["positions"].as_object() else { return false };
        let mut moved = false;
        for (room, at) in positions {
            if let (Some(offset), Some(epoch)) = (at["offset"].as_u64(), at["epoch"].as_str()) {
                self.positions.insert(room.clone(), Position::new(offset, epoch));
                moved = true;
            }
        }
        moved
    }
}

/// `POST /send`: one envelope from an SSE client, handled as if it came
/// on its stream; the reply, if any, goes to the stream.
pub async fn send(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if let Err(refusal) = admit(&app, &Credentials::of(&req)) {
        return refused(refusal.status(), refusal.message());
    }
    let session = req.headers().get("x-sabai-session").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let found = {
        let sessions = app.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(session).map(|s| (s.conn, s.order.clone()))
    };
    let Some((conn, order)) = found else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": "unknown or ended session: reconnect" }),
        );
    };
    let limit = app.hub.config().max_message_size;
    let body = match crate::http::read_body(&app, req, limit).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return json_response(StatusCode::BAD_REQUEST, json!({ "error": "the body is not UTF-8" }));
    };
    if serde_json::from_str::<Value>(&text).map_or(true, |v| !v.is_object()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "the body must be one JSON envelope" }),
        );
    }
    // One at a time per session, as on a WebSocket.
    let _in_order = order.lock().await;
    protocol::handle(app.clone(), conn, Message::text(text)).await;
    json_response(StatusCode::ACCEPTED, json!({ "ok": true }))
}

/// A response body fed by a channel: ends when the sender is dropped;
/// dropping it (the client went away) closes the channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_anything_else_is_refused() {
        let mut positions = BTreeMap::new();
        positions.insert("chat:lobby".to_owned(), Position::new(12, "17332412345678"));
        positions.insert("global".to_owned(), Position::new(977, "e2"));
        let id = encode_id(&positions);
        assert!(id.starts_with("v1.") && id.len() < 200, "{id}");
        assert_eq!(decode_id(&id), Some(positions));
        let long = format!("v1.{}", "A".repeat(100 * 1024));
        for bad in ["", "v1.", "v2.e30", "v1.!!!", "v1.W10", &long, "v1.eyJhIjoxfQ"] {
            assert_eq!(decode_id(bad), None, "{bad:.40}");
        }
        let negative = format!("v1.{}", URL_SAFE_NO_PAD.encode(r#"{"r":[-1,"e"]}"#));
        assert_eq!(decode_id(&negative), None);
    }
}
