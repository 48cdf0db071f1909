//! The admin page and its API, on when `--admin-key` is given (else every
//! /admin path answers 404):
//!
//! - `GET /admin`: the page (static/admin.html). It asks for the key once
//!   and keeps it in the tab's sessionStorage.
//! - `GET /admin/api/connections`: this node's connections (user, rooms,
//!   queue depth, traffic, since), its rooms with their members here and
//!   presence on every node, and the cluster's counts.
//! - `POST /admin/api/disconnect` `{connection_id, code?, reason?}`:
//!   closes that connection at once, by default with 1013 (try again
//!   later) "Disconnected by an operator".
//!
//! The API needs `Authorization: Bearer KEY`; a missing or wrong key gets
//! 401, is counted (`admin_refused` in /stats and /metrics) and logged,
//! without the key. Keys are compared in constant time ([`same_key`]).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use sabai::hub::{ConnId, Transport};
use sabai::proto::MAX_CLOSE_REASON;
use sabai::CloseCode;
use serde_json::{json, Value};

use crate::http::{json_response, page, plain, read_body, Body};
use crate::App;

/// What an operator's disconnect sends by default: 1013, try again later.
/// Clients reconnect after their backoff and recover, so a disconnect
/// clears a stuck or misplaced connection without locking its user out.
/// Not 1008: the browser client takes a policy violation as "do not come
/// back as is" and stops; an operator who means that passes `code: 1008`.
pub const DISCONNECT_CODE: CloseCode = CloseCode::TRY_AGAIN_LATER;
pub const DISCONNECT_REASON: &str = "Disconnected by an operator";

/// Largest disconnect request body.
const MAX_BODY: usize = 4096;

/// Every path under /admin.
pub async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    let Some(key) = app.options.admin_key.as_deref() else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/admin") => page("text/html", include_str!("static/admin.html")),
        (_, "/admin") => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (method, "/admin/api/connections" | "/admin/api/disconnect") => {
            let given = req.headers().get("authorization").map(|v| v.as_bytes());
            if let Err(why) = authorize(given, key) {
                app.admin_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path, reason = why, "admin request refused");
                let mut response = json_response(StatusCode::UNAUTHORIZED, json!({ "error": why }));
                response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            let mut response = match (method, path.as_str()) {
                (&Method::GET, "/admin/api/connections") => {
                    json_response(StatusCode::OK, connections(app).await)
                }
                (&Method::POST, "/admin/api/disconnect") => disconnect(app, req).await,
                _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Checks an `Authorization` header against the key; `Err` says why not
/// (never with the key).
fn authorize(header: Option<&[u8]>, key: &str) -> Result<(), &'static str> {
    let header = header.ok_or("missing admin key")?;
    let token = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
        .ok_or("missing admin key")?;
    if same_key(token, key.as_bytes()) {
        Ok(())
    } else {
        Err("wrong admin key")
    }
}

/// Whether `given` is `key`, in a time that depends on the length of
/// `given` only: every byte is compared, with no exit at the first that
/// differs, so the time taken does not tell an attacker how much of a
/// guess was right. (The `subtle` crate does the same; this is ten lines
/// and no dependency, and its `ct_eq` on slices also answers at once for
/// a length that differs.)
pub fn same_key(given: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    let mut differ = u8::from(given.len() != key.len());
    for (i, &byte) in given.iter().enumerate() {
        // black_box keeps the compiler from turning the loop into an early exit.
        differ |= std::hint::black_box(byte ^ key[i % key.len()]);
    }
    std::hint::black_box(differ) == 0
}

/// `GET /admin/api/connections`.
async fn connections(app: &App) -> Value {
    let now = SystemTime::now();
    let connections: Vec<Value> = app
        .hub
        .connections()
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id.0,
                "user": c.user,
                "rooms": c.rooms,
                "queued": c.queued,
                "messages_in": c.messages_in,
                "bytes_in": c.bytes_in,
                "messages_out": c.messages_out,
                "bytes_out": c.bytes_out,
                "connected_at": humantime::format_rfc3339_millis(c.connected_at).to_string(),
                "age_seconds": now.duration_since(c.connected_at).unwrap_or_default().as_secs(),
                "transport": match c.transport {
                    Transport::WebSocket => "websocket",
                    Transport::Attached => "sse",
                    _ => "other",
                },
            })
        })
        .collect();
    let mut rooms = Vec::new();
    for (room, members) in app.hub.rooms() {
        let presence = match app.hub.presence(&room).await {
            Ok(users) => json!(users
                .iter()
                .map(|(user, n)| json!({ "user": user, "connections": n }))
                .collect::<Vec<_>>()),
            Err(e) => json!({ "error": e.to_string() }),
        };
        rooms.push(json!({ "room": room, "members": members, "presence": presence }));
    }
    let cluster = match app.hub.cluster().await {
        Ok(c) => json!({ "nodes": c.nodes, "connections": c.connections }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let stats = app.hub.stats();
    json!({
        "node": app.options.node,
        "server_time": humantime::format_rfc3339_millis(now).to_string(),
        "connections": connections,
        "rooms": rooms,
        "cluster": cluster,
        "counters": {
            "rate_limited": stats.rate_limited,
            "coalesced": stats.coalesced,
            "slow_consumer_closes": stats.slow_consumer_closes,
            "admin_refused": app.admin_refused.load(Ordering::Relaxed),
        },
    })
}

/// `POST /admin/api/disconnect` `{connection_id, code?, reason?}`.
async fn disconnect(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(app, req, MAX_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let bad = |why: &str| json_response(StatusCode::BAD_REQUEST, json!({ "error": why }));
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body must be JSON: {\"connection_id\": n, \"code\"?: n, \"reason\"?: \"…\"}");
    };
    let Some(id) = request.get("connection_id").and_then(Value::as_u64) else {
        return bad("connection_id (a whole number) is required");
    };
    let code = match request.get("code") {
        None | Some(Value::Null) => DISCONNECT_CODE,
        Some(code) => match code.as_u64().and_then(|c| u16::try_from(c).ok()).map(CloseCode) {
            // 1000-1003 and 1007-1014 are the RFC's; 3000-4999 are for applications.
            Some(code) if code.is_valid() => code,
            _ => return bad("code must be a close code that may be sent: 1000-1003, 1007-1014 or 3000-4999"),
        },
    };
    let reason = match request.get("reason") {
        None | Some(Value::Null) => DISCONNECT_REASON,
        Some(Value::String(reason)) if reason.len() <= MAX_CLOSE_REASON => reason.as_str(),
        Some(_) => return bad("reason must be a string of at most 123 bytes"),
    };
    let conn = ConnId(id);
    let user = app.hub.user_of(conn);
    if !app.hub.disconnect(conn, code, reason) {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no open connection {id} on this node") }),
        );
    }
    tracing::info!(conn = id, user = user.as_deref(), code = code.0, "disconnected by an operator");
    json_response(StatusCode::OK, json!({ "disconnected": id, "code": code.0, "reason": reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_whole() {
        let key = b"k3y-0f-the-admin";
        assert!(same_key(key, key));
        for wrong in [
            &b""[..],
            b"x3y-0f-the-admin",
            b"k3y-0f-the-admiN",
            b"k3y-0f-the-admi",
            b"k3y-0f-the-admin!",
            b"k3y-0f-the-admink3y-0f-the-admin",
        ] {
            assert!(!same_key(wrong, key), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert!(!same_key(b"", b""), "an empty key opens nothing");
    }

    #[test]
    fn the_bearer_header_carries_the_key() {
        let key = "s3cret";
        assert_eq!(authorize(Some(b"Bearer s3cret"), key), Ok(()));
        assert_eq!(authorize(Some(b"bearer s3cret"), key), Ok(()));
        assert_eq!(authorize(None, key), Err("missing admin key"));
        assert_eq!(authorize(Some(b"Basic s3cret"), key), Err("missing admin key"));
        assert_eq!(authorize(Some(b"Bearer s3cre"), key), Err("wrong admin key"));
        assert_eq!(authorize(Some(b"Bearer  s3cret"), key), Err("wrong admin key"));
    }
}
