//! The HTTP side: demo pages, /stats, /rooms, POST /publish, /metrics, and
//! the /ws upgrade handed to sabai.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use sabai::handshake::{Accept, Reject};
use sabai::hub::Publish;
use serde_json::{json, Value};

use crate::auth::{self, Identity};
use crate::limits::Open;
use crate::protocol::{self, envelope};
use crate::{App, Client};

/// The body of every response: whole (pages, JSON) or a stream (/events).
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest POST /publish body.
const MAX_PUBLISH_BODY: usize = 64 * 1024;

pub async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    // Plain requests share a bounded number of places; the long-lived
    // ones (/ws, /events) are bounded by the hub's connection places.
    let _place = match path.as_str() {
        "/ws" | "/events" => None,
        _ => match app.requests.clone().try_acquire_owned() {
            Ok(place) => Some(place),
            Err(_) => {
                tracing::warn!(path, "too many requests at once");
                return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "too many requests at once"));
            }
        },
    };
    let response = match (req.method(), path.as_str()) {
        (_, "/ws") => websocket(app, req),
        (&Method::GET, "/") => page("text/html", include_str!("static/index.html")),
        (&Method::GET, "/chat") => page("text/html", include_str!("static/chat.html")),
        (&Method::GET, "/dashboard") => page("text/html", include_str!("static/dashboard.html")),
        (&Method::GET, "/client.js") => page("text/javascript", include_str!("static/client.js")),
        (&Method::GET, "/client.d.ts") => page("application/typescript", include_str!("static/client.d.ts")),
        (&Method::GET, "/style.css") => page("text/css", include_str!("static/style.css")),
        (&Method::GET, "/stats") => json_response(StatusCode::OK, stats(&app).await),
        (&Method::GET, "/rooms") => json_response(StatusCode::OK, rooms(&app).await),
        (&Method::GET, "/devices") => json_response(StatusCode::OK, app.devices.list()),
        (&Method::GET, "/metrics") => page("text/plain; version=0.0.4", &metrics(&app)),
        (&Method::POST, "/publish") => publish(&app, req).await,
        (&Method::GET, "/events") => crate::sse::events(app, req).await,
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => ready(&app),
        (&Method::POST, "/send") => crate::sse::send(app, req).await,
        (_, "/admin") => crate::admin::route(&app, req).await,
        (_, admin) if admin.starts_with("/admin/") => crate::admin::route(&app, req).await,
        (
            _,
            "/" | "/chat" | "/dashboard" | "/stats" | "/rooms" | "/metrics" | "/publish" | "/events"
            | "/send" | "/healthz" | "/readyz" | "/devices",
        ) => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

pub fn page(content_type: &'static str, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    let value = format!("{content_type}; charset=utf-8");
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    response
}

pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = page("text/plain", text);
    *response.status_mut() = status;
    response
}

pub fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    let mut response = page("application/json", &value.to_string());
    *response.status_mut() = status;
    response
}

/// The upgrade, through `sabai::hyper`: sabai's handshake checks, a place
/// in the hub (or 503), the token and Origin, then the 101 (with
/// permessage-deflate when configured and offered) and the connection
/// served on its own task.
fn websocket(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    websocket_upgrade(app, req).map(|body: Full<Bytes>| body.boxed())
}

fn websocket_upgrade(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let counted = limit_stream(&app, &req);
    let upgrade = match sabai::hyper::parse(req, &app.hub.websocket_config()) {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refusal,
    };
    let counted = match counted {
        Ok(counted) => counted,
        Err(refusal) => return upgrade.reject(refusal),
    };
    let slot = match app.hub.reserve() {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::warn!(status = refusal.status(), reason = refusal.message(), "handshake refused");
            return upgrade.reject(refusal);
        }
    };
    let request = upgrade.request();
    let credentials = Credentials {
        query: request.query(),
        authorization: request.header("Authorization"),
        origin: request.origin(),
        protocols: request.protocols().to_vec(),
        host: request.header("Host"),
        from_browser: request.header("Sec-Fetch-Site").is_some(),
    };
    // The real subprotocol is answered when offered; a `bearer.` entry
    // beside it never is (RFC 6455 §4.2.2: the answer is one of the offers).
    let offered = request.protocols().iter().any(|p| p == auth::SUBPROTOCOL);
    let admitted = match admit(&app, &credentials) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            tracing::warn!(
                status = refusal.status(),
                reason = refusal.message(),
                path = "/ws",
                "handshake refused"
            );
            return upgrade.reject(refusal);
        }
    };
    let accept = if offered { Accept::new().protocol(auth::SUBPROTOCOL) } else { Accept::new() };
    let (response, upgrading) = match upgrade.accept(accept) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal,
    };
    app.identify(slot.id(), admitted.identity);
    // Boxed: the upgrade's 144 bytes are freed once it is done, where the
    // task would keep them for the connection's life.
    let upgrading = Box::pin(upgrading);
    tokio::spawn(async move {
        // Counted against its address while it lives (a reference: a move
        // would hold it twice).
        let _counted = &counted;
        let conn = slot.id();
        let Ok(ws) = upgrading.await else { return app.forget(conn) };
        // The `connected` greeting is sent from the hub's Connected event.
        let serving = app.clone();
        let handler = move |_hub, conn, message| protocol::handle(serving.clone(), conn, message);
        app.hub.serve(slot, ws, Some(admitted.user), handler).await;
    });
    response
}

/// Ready for new clients: not draining, and the engine reaches its broker.
fn ready(app: &App) -> Response<Body> {
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !app.hub.engine().is_ready() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the engine cannot reach its broker");
    }
    plain(StatusCode::OK, "ready")
}

async fn stats(app: &App) -> Value {
    let s = app.hub.stats();
    let codes: serde_json::Map<String, Value> =
        s.close_codes.iter().map(|(c, n)| (c.to_string(), json!(n))).collect();
    let cluster = match app.hub.cluster().await {
        Ok(c) => json!({ "nodes": c.nodes, "connections": c.connections }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let mut out = json!({
        "node": app.options.node,
        "engine": if app.redis.is_some() { "redis" } else { "memory" },
        "connections": s.connections,
        "connections_total": s.connections_total,
        "connections_refused": s.connections_refused,
        "rooms": s.rooms,
        "messages_in": s.messages_in,
        "bytes_in": s.bytes_in,
        "messages_out": s.messages_out,
        "bytes_out": s.bytes_out,
        "dropped_messages": s.dropped_messages,
        "slow_consumer_closes": s.slow_consumer_closes,
        "publications": s.publications,
        "history_reads": s.history_reads,
        "rate_limited": s.rate_limited,
        "coalesced": s.coalesced,
        "admin_refused": app.admin_refused.load(Ordering::Relaxed),
        "close_codes": codes,
        "uptime_seconds": app.started.elapsed().as_secs(),
        "cluster": cluster,
    });
    if let Some(bridge) = app.mqtt.get() {
        out["mqtt"] = bridge.stats();
    }
    if let Some(redis) = &app.redis {
        let r = redis.stats();
        out["redis"] = json!({
            "ready": r.ready,
            "publications": r.publications,
            "publish_errors": r.publish_errors,
            "delivered_locally": r.delivered_locally,
            "reconnects": r.reconnects,
            "gaps_filled": r.gaps_filled,
            "resets": r.resets,
            "pubsub_messages": r.pubsub_messages,
            "decode_errors": r.decode_errors,
            "history_reads": r.history_reads,
        });
    }
    out
}

/// Rooms with members on this node: members here, and users and
/// connections on every node (presence; anonymous connections count
/// nowhere but here).
async fn rooms(app: &App) -> Value {
    let mut rooms = Vec::new();
    for (room, members) in app.hub.rooms() {
        let mut entry = json!({ "room": room, "members": members });
        if let Ok(users) = app.hub.presence(&room).await {
            entry["cluster"] = json!({
                "users": users.len(),
                "connections": users.iter().map(|(_, n)| n).sum::<u64>(),
            });
        }
        rooms.push(entry);
    }
    json!({ "rooms": rooms })
}

/// Prometheus text exposition format, version 0.0.4.
fn metrics(app: &App) -> String {
    let s = app.hub.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP sabai_hub_{name} {help}\n# TYPE sabai_hub_{name} {kind}\nsabai_hub_{name} {value}"
        );
    };
    metric("connections", "gauge", "Open WebSocket connections.", s.connections);
    metric("rooms", "gauge", "Rooms with at least one member.", s.rooms);
    metric("connections_total", "counter", "Connections served.", s.connections_total);
    metric("connections_refused_total", "counter", "Handshakes refused with 503.", s.connections_refused);
    metric("messages_in_total", "counter", "Messages received from clients.", s.messages_in);
    metric("bytes_in_total", "counter", "Payload bytes received from clients.", s.bytes_in);
    metric("messages_out_total", "counter", "Messages written to clients.", s.messages_out);
    metric("bytes_out_total", "counter", "Frame bytes written to clients.", s.bytes_out);
    metric("dropped_messages_total", "counter", "Messages dropped for slow consumers.", s.dropped_messages);
    metric(
        "slow_consumer_closes_total",
        "counter",
        "Connections closed as slow consumers.",
        s.slow_consumer_closes,
    );
    metric(
        "publications_total",
        "counter",
        "Publications handed to the engine by this node.",
        s.publications,
    );
    metric(
        "history_reads_total",
        "counter",
        "History reads (shared by the connections waiting for one room).",
        s.history_reads,
    );
    metric(
        "rate_limited_total",
        "counter",
        "Connections closed for sending over the rate limit (1008).",
        s.rate_limited,
    );
    metric(
        "coalesced_total",
        "counter",
        "Deliveries that replaced a queued one with the same key (typing, presence).",
        s.coalesced,
    );
    metric(
        "admin_refused_total",
        "counter",
        "Admin API requests refused for a missing or wrong key.",
        app.admin_refused.load(Ordering::Relaxed),
    );
    if let Some(redis) = &app.redis {
        let r = redis.stats();
        metric("redis_ready", "gauge", "1 while the Redis engine reaches Redis.", u64::from(r.ready));
        metric(
            "redis_publish_errors_total",
            "counter",
            "Publications Redis could not take (delivered on this node only).",
            r.publish_errors,
        );
        metric("redis_reconnects_total", "counter", "Reconnections of the Redis pub/sub link.", r.reconnects);
        metric(
            "redis_gaps_filled_total",
            "counter",
            "Gaps in a room's stream filled from its history.",
            r.gaps_filled,
        );
        metric(
            "redis_resets_total",
            "counter",
            "Rooms reset: history lost or unable to fill a gap.",
            r.resets,
        );
        metric(
            "redis_pubsub_messages_total",
            "counter",
            "Messages received on the pub/sub link.",
            r.pubsub_messages,
        );
        metric(
            "redis_decode_errors_total",
            "counter",
            "Pub/sub messages that could not be decoded.",
            r.decode_errors,
        );
    }
    if let Some(bridge) = app.mqtt.get() {
        bridge.metrics(&mut out);
    }
    let _ = writeln!(out, "# HELP sabai_hub_close_codes_total Connections ended, by close code.");
    let _ = writeln!(out, "# TYPE sabai_hub_close_codes_total counter");
    for (code, n) in &s.close_codes {
        let _ = writeln!(out, "sabai_hub_close_codes_total{{code=\"{code}\"}} {n}");
    }
    out
}

/// A request's body, at most `limit` bytes, read within the request
/// timeout; else the 413 or 408 to answer.
pub async fn read_body(app: &App, req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    let reading = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(app.options.request_timeout, reading).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(_)) => Err(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": format!("body over {limit} bytes") }),
        )),
        Err(_) => {
            tracing::warn!(timeout_s = app.options.request_timeout.as_secs_f64(), "request body too slow");
            Err(json_response(
                StatusCode::REQUEST_TIMEOUT,
                json!({ "error": "the body did not arrive in time" }),
            ))
        }
    }
}

/// POST /publish `{room | rooms, type, payload}`: a backend injects an
/// event, as one publication to every room named.
async fn publish(app: &App, req: Request<Incoming>) -> Response<Body> {
    // A backend shows the publish key, or a token whose rooms allow the
    // publication; with neither configured, /publish is open (loopback demo).
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let by_key =
        app.options.publish_key.as_ref().is_some_and(|key| header("x-publish-key") == Some(key.as_str()));
    let bearer = header("authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::to_owned);
    let by_token = match (&app.jwt, bearer) {
        (Some(jwt), Some(token)) => Some(jwt.verify(&token)),
        _ => None,
    };
    let guarded = app.options.publish_key.is_some() || app.jwt.is_some();
    let identity = match (by_token, by_key) {
        (_, true) => None,
        (Some(Ok(identity)), false) => Some(identity),
        (Some(Err(why)), false) => {
            tracing::warn!(path = "/publish", reason = %why, "publish refused");
            return json_response(StatusCode::UNAUTHORIZED, json!({ "error": why.to_string() }));
        }
        (None, false) if guarded => {
            tracing::warn!(path = "/publish", "missing or wrong X-Publish-Key or token");
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({ "error": "missing or wrong X-Publish-Key or token" }),
            );
        }
        (None, false) => None,
    };
    let body = match read_body(app, req, MAX_PUBLISH_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": format!("invalid JSON: {e}") }))
        }
    };
    let rooms: Option<Vec<&str>> = match (request.get("room"), request.get("rooms")) {
        (Some(Value::String(room)), None) => Some(vec![room.as_str()]),
        (None, Some(Value::Array(rooms))) if (1..=16).contains(&rooms.len()) => {
            rooms.iter().map(Value::as_str).collect()
        }
        _ => None,
    };
    let kind = request.get("type").and_then(Value::as_str).filter(|k| !k.is_empty() && k.len() <= 64);
    let (Some(rooms), Some(kind)) = (rooms, kind) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "type (a string) and room (a string) or rooms (1 to 16 strings) are required" }),
        );
    };
    if let Some(why) = rooms.iter().find_map(|room| protocol::check_room(room).err()) {
        return json_response(StatusCode::BAD_REQUEST, json!({ "error": why }));
    }
    if let Some(room) = identity.as_ref().and_then(|id| rooms.iter().find(|room| !id.may(room))) {
        let why = format!("your token does not allow {room:?}");
        return json_response(StatusCode::FORBIDDEN, json!({ "error": why }));
    }
    let payload = request.get("payload").cloned().unwrap_or(Value::Null);
    app.devices.observe(kind, &payload);
    let text = envelope(kind, Some(rooms[0]), payload, None);
    match app.hub.publish_with(Publish::new(text).rooms(rooms)).await {
        Ok(placed) => {
            let offsets: serde_json::Map<String, Value> = placed
                .iter()
                .filter_map(|p| Some((p.room.clone(), json!(p.position.as_ref()?.offset))))
                .collect();
            json_response(StatusCode::OK, json!({ "offsets": offsets }))
        }
        Err(error) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": error.to_string() })),
    }
}

/// The per-address checks of a new WebSocket or SSE stream: what it keeps
/// (its place in its address's count) while it lives, or the 429.
pub fn limit_stream<B>(app: &App, req: &Request<B>) -> Result<Vec<Arc<Open>>, Reject> {
    let Some(client) = req.extensions().get::<Client>() else { return Ok(Vec::new()) };
    let limits = &app.ip_limits;
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = limits.client_ip(client.peer, forwarded);
    let refuse = |why: crate::limits::Limited| {
        tracing::warn!(ip = %ip, reason = %why, "per-address limit");
        Reject::new(429).header("Retry-After", "1").body(why.to_string())
    };
    limits.handshake(ip).map_err(refuse)?;
    let mut counted = vec![client.open.clone()];
    if limits.is_trusted(client.peer) {
        // Behind a proxy the TCP count is the proxy's: count the client here.
        counted.push(Arc::new(limits.open(ip).map_err(refuse)?));
    }
    Ok(counted)
}

/// What a request says about who sends it: the parts `admit` checks.
pub struct Credentials<'a> {
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// The subprotocols offered (a WebSocket handshake's).
    pub protocols: Vec<String>,
    /// The Host header, checked when a browser sends no Origin.
    pub host: Option<&'a str>,
    /// A `Sec-Fetch-Site` header came: a browser made the request.
    pub from_browser: bool,
}

/// Who `admit` let in.
pub struct Admitted {
    pub user: String,
    /// With JWT: what the token said.
    pub identity: Option<Identity>,
}

impl<'a> Credentials<'a> {
    /// The credentials of a plain HTTP request (/events, POST /send).
    pub fn of<B>(req: &'a Request<B>) -> Credentials<'a> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        Credentials {
            query: req.uri().query(),
            authorization: header("authorization"),
            origin: header("origin"),
            protocols: Vec::new(),
            host: header("host"),
            from_browser: header("sec-fetch-site").is_some(),
        }
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        query_param(self.query, key)
    }
}

/// A query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// A 401 for a refused token, saying why (never the token).
pub fn unauthorized(why: &str) -> Reject {
    Reject::unauthorized().header("WWW-Authenticate", "Bearer error=\"invalid_token\"").body(why)
}

/// Token and Origin checks at the handshake (and on /events and POST
/// /send). With JWT the user is the token's `sub`; without, it comes from
/// `?user=` (a claim, not an identity) or is a guest name.
pub fn admit(app: &App, request: &Credentials) -> Result<Admitted, Reject> {
    let options = &app.options;
    let query = |key: &str| request.query(key);
    let mut identity = None;
    if let Some(jwt) = &app.jwt {
        let token = auth::token_of(request.authorization, query("token"), &request.protocols);
        let verified = token.ok_or(auth::Refused::Missing).and_then(|token| jwt.verify(&token));
        identity = Some(verified.map_err(|why| unauthorized(&why.to_string()))?);
    } else if let Some(token) = &options.token {
        let bearer = request.authorization.and_then(|h| h.strip_prefix("Bearer "));
        let given = query("token").or_else(|| auth::token_of(None, None, &request.protocols));
        if bearer != Some(token.as_str()) && given.as_deref() != Some(token.as_str()) {
            return Err(Reject::unauthorized().body("missing or wrong token"));
        }
    }
    // RFC 6455 §10.2: browsers send Origin; only allowed pages may connect.
    if let Some(origin) = request.origin {
        if !options.any_origin && !options.origins.iter().any(|o| o == origin) {
            return Err(Reject::forbidden().body("origin not allowed"));
        }
    } else if request.from_browser && !options.any_origin {
        // A browser's same-origin GET (EventSource) carries no Origin: the
        // page's origin is then the Host it asked for, which a page on a
        // rebound DNS name cannot fake.
        let host = request.host.unwrap_or_default();
        let known = options
            .origins
            .iter()
            .any(|o| o.split_once("://").is_some_and(|(_, authority)| authority == host));
        if !known {
            return Err(Reject::forbidden().body("origin not allowed (Host)"));
        }
    }
    if let Some(identity) = identity {
        return Ok(Admitted { user: identity.user.clone(), identity: Some(identity) });
    }
    // Only control characters go: a Thai name keeps its tone marks
    // (combining characters, which are not "alphanumeric").
    let name: String =
        query("user").unwrap_or_default().chars().filter(|c| !c.is_control()).take(32).collect();
    let name = name.trim();
    if !name.is_empty() {
        return Ok(Admitted { user: name.to_owned(), identity: None });
    }
    // Each anonymous connection is its own guest.
    static GUESTS: AtomicU64 = AtomicU64::new(1);
    Ok(Admitted { user: format!("guest-{}", GUESTS.fetch_add(1, Ordering::Relaxed)), identity: None })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("ann%20lee"), "ann lee");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
