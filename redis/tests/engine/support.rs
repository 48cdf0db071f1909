//! Hub nodes on a real Redis, and WebSocket clients of them.
//!
//! A client speaks a tiny text protocol to its node:
//! - `sub ROOM[@OFFSET@EPOCH],...` subscribes (recovering since that
//!   position); the node answers `subscribed ROOM|RECOVERED|POSITION;...`;
//! - `pub ROOM,... TEXT` publishes TEXT to the rooms (an error comes back
//!   as `error ...`); `pubx` does too, except to this connection;
//! - `leave ROOM` leaves.
//!
//! Publications reach clients rendered as `TEXT ROOM=OFFSET ...` (rooms
//! with an offset only).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sabai::handshake::ClientRequest;
use sabai::hub::{
    ConnId, HistoryPolicy, Hub, HubConfig, HubEvent, Position, Publish, Subscribed, Subscription,
};
use sabai::{Message, WebSocket, WebSocketConfig};
use sabai_redis::testing::RedisServer;
use sabai_redis::{Backoff, RedisConfig, RedisEngine};
use tokio::io::DuplexStream;
use tokio::time::{sleep, timeout, Instant};

/// The engine settings of the tests: short timers.
pub fn engine_config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::new(redis.url())
        .command_timeout(Duration::from_secs(1))
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(400)))
        .presence_ttl(Duration::from_secs(3))
}

/// Every room keeps 10 000 publications for 10 minutes.
pub fn policy() -> HistoryPolicy {
    HistoryPolicy::new(10_000, Duration::from_secs(600))
}

/// History everywhere, room offsets in what clients receive, and queues
/// long enough for the bursts of the tests.
pub fn hub_config() -> HubConfig {
    let mut config = HubConfig::default().history("", policy()).render(|p| {
        let mut text = p.message.as_text().unwrap_or_default().to_owned();
        for placement in &p.rooms {
            if let Some(at) = &placement.position {
                text += &format!(" {}={}", placement.room, at.offset);
            }
        }
        Message::text(text)
    });
    config.queue_capacity = 10_000;
    config
}

/// One hub node with its Redis engine.
pub struct TestNode {
    pub hub: Hub,
    pub engine: Arc<RedisEngine>,
    pub events: Arc<Mutex<Vec<HubEvent>>>,
}

pub async fn node(redis: &RedisServer) -> TestNode {
    node_with(engine_config(redis), hub_config()).await
}

pub async fn node_with(config: RedisConfig, hub_config: HubConfig) -> TestNode {
    let engine = Arc::new(RedisEngine::connect(config).await.expect("the engine connects"));
    let hub = Hub::with_engine(hub_config, engine.clone());
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    hub.on_event(move |_, event| log.lock().unwrap().push(event.clone()));
    TestNode { hub, engine, events }
}

impl TestNode {
    /// A WebSocket client of this node (over an in-memory pipe), as `user`.
    pub async fn client(&self, user: Option<&str>) -> Client {
        let (near, far) = tokio::io::duplex(256 * 1024);
        let hub = self.hub.clone();
        let user = user.map(str::to_owned);
        tokio::spawn(async move {
            let Ok(accepted) = hub.accept(far, move |_| Ok(user)).await else { return };
            accepted.serve(handle).await;
        });
        let request = ClientRequest::new("node", "/");
        let (ws, _) = sabai::client(near, request, &WebSocketConfig::default()).await.expect("handshake");
        Client { ws }
    }

    /// The room events seen so far.
    pub fn resets(&self, room: &str) -> Vec<Position> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                HubEvent::RoomReset { room: r, position } if r == room => Some(position.clone()),
                _ => None,
            })
            .collect()
    }

    /// The room's position in Redis (reading it makes it if need be).
    pub async fn position(&self, room: &str) -> Position {
        let read = self.hub.engine().history(room, None, &policy()).await.expect("history read");
        read.position.expect("a position")
    }
}

async fn handle(hub: Hub, conn: ConnId, message: Message) {
    let text = message.as_text().unwrap_or_default().to_owned();
    if let Some(spec) = text.strip_prefix("sub ") {
        let subs: Vec<Subscription> = spec.split(',').map(parse_subscription).collect();
        let _ =
            hub.subscribe(conn, &subs, |outcome, _| Some(Message::text(render_subscribed(outcome)))).await;
    } else if let Some((command, rest)) = text.split_once(' ').filter(|(c, _)| *c == "pub" || *c == "pubx") {
        let (rooms, said) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut publish = Publish::new(said.to_owned()).rooms(rooms.split(','));
        if command == "pubx" {
            publish = publish.except(conn);
        }
        if let Err(error) = hub.publish_with(publish).await {
            hub.send_to(conn, format!("error {error}"));
        }
    } else if let Some(room) = text.strip_prefix("leave ") {
        let _ = hub.leave(conn, room);
    }
}

fn parse_subscription(spec: &str) -> Subscription {
    let mut parts = spec.splitn(3, '@');
    let room = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (Some(offset), Some(epoch)) => {
            Subscription::new(room).since(Position::new(offset.parse().unwrap_or(u64::MAX), epoch))
        }
        _ => Subscription::new(room),
    }
}

fn render_subscribed(outcome: &[Subscribed]) -> String {
    let parts: Vec<String> = outcome
        .iter()
        .map(|s| {
            let recovered = match s.recovered {
                Some(true) => "true",
                Some(false) => "false",
                None => "-",
            };
            let position =
                s.position.as_ref().map(|p| format!("{}@{}", p.offset, p.epoch)).unwrap_or("-".into());
            format!("{}|{recovered}|{position}", s.room)
        })
        .collect();
    format!("subscribed {}", parts.join(";"))
}

/// What a client learned from a subscribe, per room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub room: String,
    pub recovered: Option<bool>,
    pub position: Option<Position>,
}

pub struct Client {
    ws: WebSocket<DuplexStream>,
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
        self.ws.flush().await.expect("flush");
    }

    /// The next text, within 10 s.
    pub async fn next(&mut self) -> String {
        self.try_next(Duration::from_secs(10)).await.expect("no message in time")
    }

    /// The next text, if one comes within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<String> {
        let message = timeout(wait, self.ws.recv()).await.ok()?;
        Some(message.expect("receive").expect("closed").as_text().expect("text").to_owned())
    }

    /// Nothing arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(text) = self.try_next(wait).await {
            panic!("unexpected message: {text:?}");
        }
    }

    /// Subscribes (see the module docs for `spec`) and returns the outcome.
    pub async fn subscribe(&mut self, spec: &str) -> Vec<Outcome> {
        self.send(&format!("sub {spec}")).await;
        let reply = self.next().await;
        let Some(rest) = reply.strip_prefix("subscribed ") else {
            panic!("expected the subscribe reply, got {reply:?}")
        };
        rest.split(';')
            .map(|part| {
                let fields: Vec<&str> = part.split('|').collect();
                let recovered = match fields[1] {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                };
                let position = fields[2].split_once('@').map(|(o, e)| Position::new(o.parse().unwrap(), e));
                Outcome { room: fields[0].to_owned(), recovered, position }
            })
            .collect()
    }

    /// Joins rooms without recovery; returns their positions.
    pub async fn join(&mut self, rooms: &str) -> Vec<Outcome> {
        self.subscribe(rooms).await
    }

    pub async fn publish(&mut self, rooms: &str, text: &str) {
        self.send(&format!("pub {rooms} {text}")).await;
    }
}

/// Waits (at most 10 s) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 10 s) until an async check holds.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}
