//! The room hub over loopback TCP with sabai clients: rooms, fan-out,
//! presence, slow consumers, heartbeats, limits and shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sabai::handshake::HandshakeError;
use sabai::hub::{codes, ConnId, Hub, HubConfig, HubEvent, RateLimit, SlowConsumer, Transport};
use sabai::{CloseCode, Error, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::{sleep, timeout, Instant};

/// A hub served on 127.0.0.1. A client's `?user=NAME` authenticates it as
/// NAME. Text "join:R", "leave:R" and "say:R:TEXT" (TEXT without a colon)
/// drive the hub.
async fn start(config: HubConfig) -> (Hub, String) {
    let hub = Hub::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = hub.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hub = server.clone();
            tokio::spawn(async move {
                let hook = |request: &sabai::handshake::Request| {
                    Ok(request.query().and_then(|q| q.strip_prefix("user=")).map(str::to_owned))
                };
                let Ok(accepted) = hub.accept(stream, hook).await else { return };
                accepted.serve(handle).await;
            });
        }
    });
    (hub, url)
}

async fn handle(hub: Hub, conn: ConnId, message: Message) {
    let text = message.as_text().unwrap_or_default();
    if let Some(room) = text.strip_prefix("join:") {
        let ok = hub.join(conn, room).await.is_ok();
        hub.send_to(conn, if ok { format!("joined {room}") } else { format!("refused {room}") });
    } else if let Some(room) = text.strip_prefix("leave:") {
        hub.leave(conn, room).unwrap();
        hub.send_to(conn, format!("left {room}"));
    } else if let Some((room, said)) = text.strip_prefix("say:").and_then(|t| t.rsplit_once(':')) {
        hub.publish(room, said.to_owned()).await.unwrap();
    } else if text == "hang" {
        // A handler that never returns: the connection's read loop is stuck.
        hub.send_to(conn, "hanging");
        std::future::pending::<()>().await;
    }
}

type Client = WebSocket<sabai::MaybeTlsStream>;

async fn client(url: &str) -> Client {
    sabai::connect(url).await.unwrap()
}

async fn user(url: &str, name: &str) -> Client {
    sabai::connect(&format!("{url}?user={name}")).await.unwrap()
}

async fn say<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    // `send` batches while received bytes wait unread; this client may not read next.
    ws.flush().await.unwrap();
}

/// The next text, within 5 s.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> String {
    let message = timeout(Duration::from_secs(5), ws.recv()).await.expect("no message in time");
    message.unwrap().expect("closed").as_text().unwrap().to_owned()
}

async fn join(ws: &mut Client, room: &str) {
    say(ws, &format!("join:{room}")).await;
    assert_eq!(next(ws).await, format!("joined {room}"));
}

/// Reads until the connection ends; returns the Close code the server sent.
async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Option<u16> {
    let end = timeout(Duration::from_secs(10), async { while let Ok(Some(_)) = ws.recv().await {} });
    end.await.expect("connection did not end");
    ws.close_frame().map(|frame| frame.code.0)
}

/// Waits (at most 5 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn publish_reaches_exactly_the_rooms_members() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut a, mut b, mut c) = (client(&url).await, client(&url).await, client(&url).await);
    join(&mut a, "device:1").await;
    join(&mut b, "device:1").await;
    join(&mut c, "global").await;
    assert_eq!(hub.rooms(), [("device:1".to_owned(), 2), ("global".to_owned(), 1)]);
    say(&mut a, "say:device:1:21.5").await;
    assert_eq!(next(&mut a).await, "21.5");
    assert_eq!(next(&mut b).await, "21.5");
    // c got nothing: its next message is the one sent to its own room.
    say(&mut c, "say:global:marker").await;
    assert_eq!(next(&mut c).await, "marker");
    // After leaving, b no longer receives the room's messages.
    say(&mut b, "leave:device:1").await;
    assert_eq!(next(&mut b).await, "left device:1");
    say(&mut a, "say:device:1:22.0").await;
    assert_eq!(next(&mut a).await, "22.0");
    hub.publish("device:1", "direct").await.unwrap();
    hub.publish("nobody-here", "lost").await.unwrap();
    assert_eq!(next(&mut a).await, "direct");
    assert_eq!(hub.broadcast("all"), 3);
    // b left device:1 and c was never in it: "all" is their next message.
    assert_eq!(next(&mut b).await, "all");
    assert_eq!(next(&mut c).await, "all");
    assert_eq!(next(&mut a).await, "all");
    let stats = hub.stats();
    assert_eq!((stats.connections, stats.rooms), (3, 2));
    assert!(stats.messages_in >= 7 && stats.messages_out >= 10, "{stats:?}");
}

#[tokio::test]
async fn room_names_are_checked_by_the_application() {
    let config = HubConfig::default().room_validator(|room| match room.split_once(':') {
        Some(("device" | "group", id)) if !id.is_empty() => Ok(()),
        None if room == "global" => Ok(()),
        _ => Err(format!("unknown room {room}")),
    });
    let (_hub, url) = start(config).await;
    let mut a = client(&url).await;
    join(&mut a, "device:7").await;
    join(&mut a, "global").await;
    for bad in ["kitchen", "device:", "group"] {
        say(&mut a, &format!("join:{bad}")).await;
        assert_eq!(next(&mut a).await, format!("refused {bad}"));
    }
}

#[tokio::test]
async fn send_to_user_reaches_all_of_its_connections() {
    let (hub, url) = start(HubConfig::default()).await;
    let (mut ann1, mut ann2, mut bob) =
        (user(&url, "ann").await, user(&url, "ann").await, user(&url, "bob").await);
    eventually("three connections", || hub.connection_count() == 3).await;
    assert_eq!(hub.send_to_user("ann", "for ann"), 2);
    assert_eq!(next(&mut ann1).await, "for ann");
    assert_eq!(next(&mut ann2).await, "for ann");
    assert_eq!(hub.send_to_user("bob", "for bob"), 1);
    assert_eq!(next(&mut bob).await, "for bob");
    assert_eq!(hub.send_to_user("carol", "nobody"), 0);
}

#[tokio::test]
async fn disconnect_cleans_every_index_and_reports_presence() {
    let (hub, url) = start(HubConfig::default()).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    hub.on_event(move |_, event| seen.lock().unwrap().push(event.clone()));
    let mut ann = user(&url, "ann").await;
    let mut bob = user(&url, "bob").await;
    join(&mut ann, "chat:lobby").await;
    join(&mut ann, "chat:dev").await;
    join(&mut bob, "chat:lobby").await;
    assert_eq!(hub.users_in("chat:lobby"), ["ann", "bob"]);
    ann.close(CloseCode::NORMAL, "bye").await.unwrap();
    eventually("ann gone", || hub.connection_count() == 1).await;
    assert_eq!(hub.users_in("chat:lobby"), ["bob"]);
    assert_eq!(hub.rooms(), [("chat:lobby".to_owned(), 1)]);
    assert_eq!(hub.send_to_user("ann", "x"), 0);
    let events = events.lock().unwrap().clone();
    let ann_events: Vec<&HubEvent> = events
        .iter()
        .filter(|e| match e {
            HubEvent::Connected { user, .. }
            | HubEvent::Joined { user, .. }
            | HubEvent::Left { user, .. }
            | HubEvent::Disconnected { user, .. } => user.as_deref() == Some("ann"),
            _ => false,
        })
        .collect();
    let kinds: Vec<String> = ann_events
        .iter()
        .map(|e| match e {
            HubEvent::Connected { .. } => "connected".to_owned(),
            HubEvent::Joined { room, .. } => format!("joined {room}"),
            HubEvent::Left { room, .. } => format!("left {room}"),
            HubEvent::Disconnected { code, .. } => format!("disconnected {code:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "connected",
            "joined chat:lobby",
            "joined chat:dev",
            "left chat:dev",
            "left chat:lobby",
            "disconnected Some(CloseCode(1000))"
        ]
    );
    assert_eq!(hub.stats().close_codes.get(&1000), Some(&1));
}

/// Publishes large messages to a client that does not read, until `done`.
async fn flood(hub: &Hub, room: &str, mut done: impl FnMut(&Hub) -> bool) -> usize {
    let payload = "x".repeat(60 * 1024);
    let mut sent = 0;
    while !done(hub) {
        assert!(sent < 5_000, "policy never acted");
        hub.publish(room, format!("{sent:06}{payload}")).await.unwrap();
        sent += 1;
        if sent % 16 == 0 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    sent
}

#[tokio::test]
async fn slow_consumer_is_closed_by_default() {
    let mut config = HubConfig::default();
    config.queue_capacity = 8;
    let (hub, url) = start(config).await;
    let mut slow = client(&url).await;
    join(&mut slow, "feed").await;
    // The client stops reading; the hub must not buffer without bound.
    flood(&hub, "feed", |hub| hub.stats().slow_consumer_closes == 1).await;
    assert_eq!(close_code(&mut slow).await, Some(codes::SLOW_CONSUMER.0));
    eventually("slow consumer removed", || hub.connection_count() == 0).await;
    assert_eq!(hub.stats().close_codes.get(&codes::SLOW_CONSUMER.0), Some(&1));
}

#[tokio::test]
async fn slow_consumer_can_lose_the_oldest_messages_instead() {
    let mut config = HubConfig::default();
    config.queue_capacity = 8;
    config.slow_consumer = SlowConsumer::DropOldest;
    let (hub, url) = start(config).await;
    let mut slow = client(&url).await;
    join(&mut slow, "feed").await;
    let sent = flood(&hub, "feed", |hub| hub.stats().dropped_messages >= 20).await;
    hub.publish("feed", "last").await.unwrap();
    // Still open; what arrives is in order, has gaps, and ends with the newest.
    let mut previous = -1i64;
    let mut received = 0;
    loop {
        let text = next(&mut slow).await;
        if text == "last" {
            break;
        }
        let n: i64 = text[..6].parse().unwrap();
        assert!(n > previous, "out of order: {n} after {previous}");
        previous = n;
        received += 1;
    }
    assert!(received < sent, "nothing was dropped: {received} of {sent}");
    assert_eq!(hub.stats().slow_consumer_closes, 0);
    assert_eq!(hub.connection_count(), 1);
}

fn fast_heartbeat() -> HubConfig {
    let mut config = HubConfig::default();
    config.ping_interval = Duration::from_millis(50);
    config.pong_timeout = Duration::from_millis(500);
    config.close_timeout = Duration::from_millis(500);
    config
}

#[tokio::test]
async fn heartbeat_timeout_closes_a_silent_client() {
    let (hub, url) = start(fast_heartbeat()).await;
    let mut silent = client(&url).await;
    let mut alive = client(&url).await;
    // `alive` keeps reading, so its library answers the Pings.
    let keeper = tokio::spawn(async move {
        let _ = timeout(Duration::from_millis(1500), alive.recv()).await;
        alive
    });
    // `silent` reads nothing, so no Pong goes back.
    sleep(Duration::from_millis(1500)).await;
    let mut alive = keeper.await.unwrap();
    assert_eq!(close_code(&mut silent).await, Some(codes::HEARTBEAT_TIMEOUT.0));
    eventually("silent client removed", || hub.connection_count() == 1).await;
    assert_eq!(hub.send_to_user("nobody", "x"), 0);
    assert!(hub.broadcast("still here") == 1);
    assert_eq!(next(&mut alive).await, "still here");
}

// A client that stops reading in the middle of a burst, while the queue is
// still under its capacity: the hub's write is stuck, no more publishes come
// to trip the slow-consumer policy, and the heartbeat must still end it.
#[tokio::test]
async fn a_client_that_stops_reading_mid_burst_is_ended_by_the_heartbeat() {
    let (hub, url) = start(fast_heartbeat()).await;
    let mut stalled = client(&url).await;
    join(&mut stalled, "feed").await;
    let payload = "x".repeat(60 * 1024);
    // 12 MB: more than loopback's socket buffers hold, less than the
    // default queue of 256 messages.
    assert_eq!(hub.members("feed").len(), 1);
    for _ in 0..200 {
        hub.publish("feed", payload.clone()).await.unwrap();
    }
    eventually("stalled client removed", || hub.connection_count() == 0).await;
    assert_eq!(hub.stats().close_codes.get(&codes::HEARTBEAT_TIMEOUT.0), Some(&1));
    assert_eq!(hub.stats().slow_consumer_closes, 0);
    drop(stalled);
}

#[tokio::test]
async fn idle_timeout_closes_with_4000() {
    let mut config = fast_heartbeat();
    config.idle_timeout = Some(Duration::from_millis(300));
    let (_hub, url) = start(config).await;
    let mut quiet = client(&url).await;
    // It answers Pings (it reads) but never sends a message.
    assert_eq!(close_code(&mut quiet).await, Some(codes::IDLE_TIMEOUT.0));
}

#[tokio::test]
async fn per_user_limit_closes_with_4029() {
    let mut config = HubConfig::default();
    config.max_connections_per_user = Some(2);
    let (hub, url) = start(config).await;
    let mut first = user(&url, "ann").await;
    let _second = user(&url, "ann").await;
    eventually("two connections", || hub.connection_count() == 2).await;
    let mut third = user(&url, "ann").await;
    assert_eq!(close_code(&mut third).await, Some(4029));
    assert_eq!(third.close_frame().unwrap().reason, "Too many connections");
    let _bob = user(&url, "bob").await;
    eventually("bob admitted", || hub.connection_count() == 3).await;
    join(&mut first, "still:fine").await;
}

#[tokio::test]
async fn max_connections_refuses_the_handshake_with_503() {
    let mut config = HubConfig::default();
    config.max_connections = 2;
    let (hub, url) = start(config).await;
    let _a = client(&url).await;
    let mut b = client(&url).await;
    match sabai::connect(&url).await {
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(503))) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(hub.stats().connections_refused, 1);
    // A place frees up when a connection ends.
    b.close(CloseCode::NORMAL, "").await.unwrap();
    eventually("b gone", || hub.connection_count() == 1).await;
    let mut c = client(&url).await;
    join(&mut c, "room").await;
}

#[tokio::test]
async fn inbound_messages_over_the_limit_close_with_1009() {
    let (_hub, url) = start(HubConfig::default()).await;
    let mut ws = client(&url).await;
    join(&mut ws, "ok").await; // under 8 KiB is fine
    ws.send(Message::text("x".repeat(8 * 1024 + 1))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn graceful_shutdown_closes_everyone_with_1001_and_refuses_newcomers() {
    let (hub, url) = start(HubConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = client(&url).await;
        join(&mut ws, "lobby").await;
        clients.push(ws);
    }
    // The clients read (and so answer the Close) on their own tasks.
    let readers: Vec<_> =
        clients.into_iter().map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await })).collect();
    assert!(hub.shutdown(Duration::from_secs(5)).await, "connections left after shutdown");
    for reader in readers {
        assert_eq!(reader.await.unwrap(), Some(1001));
    }
    assert_eq!(hub.connection_count(), 0);
    assert!(matches!(
        sabai::connect(&url).await,
        Err(Error::Handshake(HandshakeError::UnexpectedStatus(503)))
    ));
    assert_eq!(hub.stats().close_codes.get(&1001), Some(&3));
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_never_answers() {
    let mut config = HubConfig::default();
    config.close_timeout = Duration::from_millis(200);
    let (hub, url) = start(config).await;
    let _mute = client(&url).await; // never reads, never answers the Close
    eventually("connected", || hub.connection_count() == 1).await;
    let started = Instant::now();
    let all_gone = hub.shutdown(Duration::from_secs(5)).await;
    // The hub gives up on it after its close timeout, well within the wait.
    assert!(all_gone);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hub.connection_count(), 0);
}

// The read loop is stuck in a handler that never returns, and the client
// never answers the Close: the write loop's wait (`WriteHalf::closed`) is
// bounded by the connection's close timeout all the same.
#[tokio::test]
async fn shutdown_is_bounded_when_a_handler_hangs() {
    let mut config = HubConfig::default();
    config.close_timeout = Duration::from_millis(200);
    let (hub, url) = start(config).await;
    let mut hung = client(&url).await;
    say(&mut hung, "hang").await;
    assert_eq!(next(&mut hung).await, "hanging");
    let started = Instant::now();
    assert!(hub.shutdown(Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn a_dropped_connection_task_still_cleans_the_indexes() {
    let hub = Hub::new(HubConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = hub.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let accepted = server.accept(stream, |_| Ok(Some("ann".into()))).await.unwrap();
        accepted.serve(handle).await
    });
    let mut ws = client(&url).await;
    join(&mut ws, "room").await;
    assert_eq!(hub.users_in("room"), ["ann"]);
    // The application's task is aborted (a cancelled future, a dropped runtime).
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!((hub.connection_count(), hub.rooms().len(), hub.send_to_user("ann", "x")), (0, 0, 0));
    assert_eq!(hub.stats().close_codes.get(&1006), Some(&1));
    // Its place is free again (shutdown waits for every place).
    assert!(hub.shutdown(Duration::from_secs(1)).await);
}

// ----- rate limits, coalescing, operators ----------------------------------

#[tokio::test]
async fn a_client_flooding_tiny_messages_is_closed_with_1008_and_the_hub_stays_bounded() {
    // The close timeout (5 s) leaves the flooder time to finish sending and
    // read the Close: a socket dropped with its input unread is reset.
    let config = HubConfig::default().rate_limit(RateLimit::new(100.0, 200).bytes(64 * 1024));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (hub, url) = start(config).await;
    let seen = events.clone();
    hub.on_event(move |_, event| {
        if let HubEvent::RateLimited { conn, .. } = event {
            seen.lock().unwrap().push(*conn);
        }
    });
    let mut reader = client(&url).await;
    join(&mut reader, "room").await;
    let mut flooder = user(&url, "flood").await;
    join(&mut flooder, "room").await;
    // 100,000 tiny messages, each a publication if the hub handled it; the
    // flooder never reads.
    let started = Instant::now();
    let mut sent = 0;
    for i in 0..100_000 {
        if flooder.send(Message::text("say:room:x")).await.is_err() {
            break;
        }
        if i % 1000 == 999 && flooder.flush().await.is_err() {
            break;
        }
        sent += 1;
        if i % 5000 == 0 {
            // Bounded while it floods: queues within their capacity.
            for conn in hub.connections() {
                assert!(conn.queued <= 256, "{conn:?}");
            }
        }
    }
    let _ = flooder.flush().await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(close_code(&mut flooder).await, Some(1008));
    assert_eq!(flooder.close_frame().map(|f| f.reason.to_string()), Some("Rate limit".into()));
    eventually("the flooder is gone", || hub.connection_count() == 1).await;
    let stats = hub.stats();
    assert_eq!((stats.rate_limited, stats.close_codes.get(&1008)), (1, Some(&1)));
    assert_eq!(events.lock().unwrap().len(), 1, "one RateLimited event");
    // What the handler ran for: the burst and what accrued while it flooded.
    let handled = stats.publications;
    let bound = 200 + (100.0 * (elapsed + 1.0)) as u64;
    assert!(handled <= bound, "{handled} publications from {sent} messages in {elapsed:.2} s");
    assert!(stats.messages_in >= handled, "{stats:?}");
    // The reader, innocent, is still served and its queue drains.
    let mut received = 0;
    loop {
        let text = next(&mut reader).await;
        if text == "after" {
            break;
        }
        assert_eq!(text, "x");
        received += 1;
        if received == handled {
            hub.publish("room", "after").await.unwrap();
        }
    }
    assert_eq!(hub.users_in("room"), Vec::<String>::new(), "the flooder left every index");
    assert_eq!(hub.connections()[0].queued, 0);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_runs_on_tokios_clock_a_steady_client_is_never_closed() {
    let hub = Hub::new(HubConfig::default().rate_limit(RateLimit::new(10.0, 5)));
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn({
        let hub = hub.clone();
        async move {
            let accepted = hub.accept(server_io, |_| Ok(None)).await.unwrap();
            let echo = |hub: Hub, conn, message| async move {
                hub.send_to(conn, message);
            };
            accepted.serve(echo).await
        }
    });
    let request = sabai::handshake::ClientRequest::new("hub", "/");
    let (mut ws, _) = sabai::client(client_io, request, &sabai::WebSocketConfig::default()).await.unwrap();
    // Ten a second for two (virtual) minutes: every one echoed.
    for i in 0..1200 {
        say(&mut ws, &i.to_string()).await;
        assert_eq!(next(&mut ws).await, i.to_string());
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hub.stats().rate_limited, 0);
    // A second later the bucket is full (5): five at once pass (no
    // virtual time passes while the hub works), the sixth is one too many.
    sleep(Duration::from_secs(1)).await;
    for i in 0..5 {
        say(&mut ws, &format!("burst {i}")).await;
        assert_eq!(next(&mut ws).await, format!("burst {i}"));
    }
    say(&mut ws, "one too many").await;
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(served.await.unwrap(), Some(CloseCode::POLICY_VIOLATION));
    assert_eq!(hub.stats().rate_limited, 1);
}

#[tokio::test]
async fn connections_are_listed_with_their_traffic_and_an_operator_can_disconnect_one() {
    let (hub, url) = start(HubConfig::default()).await;
    let before = std::time::SystemTime::now();
    let mut ann = user(&url, "ann").await;
    join(&mut ann, "chat:a").await;
    join(&mut ann, "chat:b").await;
    let mut bob = user(&url, "bob").await;
    join(&mut bob, "chat:a").await;
    say(&mut ann, "say:chat:a:hello").await;
    assert_eq!(next(&mut ann).await, "hello");
    assert_eq!(next(&mut bob).await, "hello");
    let list = hub.connections();
    assert_eq!(list.len(), 2);
    let (a, b) = (&list[0], &list[1]);
    assert!(a.id < b.id);
    assert_eq!((a.user.as_deref(), a.rooms.clone()), (Some("ann"), vec!["chat:a".into(), "chat:b".into()]));
    assert_eq!((b.user.as_deref(), b.rooms.clone()), (Some("bob"), vec!["chat:a".into()]));
    assert_eq!(a.transport, Transport::WebSocket);
    assert!(a.connected_at >= before && a.connected_at <= std::time::SystemTime::now());
    // ann sent 3 messages (two joins, one say); she got 3 (two replies, one publication).
    assert_eq!((a.messages_in, a.bytes_in), (3, ("join:chat:a".len() * 2 + "say:chat:a:hello".len()) as u64));
    eventually("ann's writer counted", || hub.connection(a.id).unwrap().messages_out == 3).await;
    let a = hub.connection(a.id).unwrap();
    assert!(a.bytes_out >= ("joined chat:a".len() * 2 + "hello".len() + 6) as u64, "{a:?}");
    assert_eq!(a.queued, 0);
    // Disconnected by an operator: at once, with the code given.
    assert!(hub.disconnect(b.id, CloseCode::POLICY_VIOLATION, "Disconnected by an operator"));
    assert_eq!(close_code(&mut bob).await, Some(1008));
    assert_eq!(bob.close_frame().unwrap().reason.to_string(), "Disconnected by an operator");
    eventually("bob is gone", || hub.connection(b.id).is_none()).await;
    assert!(!hub.disconnect(b.id, CloseCode::POLICY_VIOLATION, "again"), "gone already");
    assert_eq!(hub.connections().len(), 1);
}
