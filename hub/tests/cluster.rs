//! Several hub nodes (real `sabai-hub` processes) on one real Redis:
//! cross-node delivery and presence, one order for every subscriber, a
//! node killed mid-stream with nothing lost or repeated, Redis restarted,
//! unreachable and lost.

mod support;

use std::time::Duration;

use sabai_redis::testing::{free_port, RedisServer};
use serde_json::{json, Value};
use support::{http, next, next_of, send, Follower, Node, Ws};

fn node(redis: &RedisServer, extra: &[&str]) -> Node {
    let url = redis.url();
    // Publishers here send as fast as they can: no per-connection rate
    // limit (tested in fairness.rs).
    let mut flags =
        vec!["--no-simulator", "--no-rate-limit", "--redis", &url, "--history", "chat:=20000/600"];
    flags.extend_from_slice(extra);
    Node::start(&flags)
}

async fn member(node: &Node, user: &str, room: &str) -> Ws {
    let mut ws = sabai::connect(&format!("{}?user={user}", node.ws_url())).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": [room]}})).await;
    next_of(&mut ws, "subscribed").await;
    ws
}

async fn publish(ws: &mut Ws, room: &str, text: &str, id: Value) {
    send(ws, json!({"type": "publish", "room": room, "payload": {"text": text}, "request_id": id})).await;
}

#[tokio::test]
async fn a_publication_on_one_node_reaches_the_other_and_so_does_presence() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut bob = member(&b, "bob", "chat:x").await;
    let mut ann = member(&a, "ann", "chat:x").await;
    let joined = next_of(&mut bob, "user_joined").await;
    assert_eq!(joined["payload"]["user"], "ann", "a join on A is seen on B");
    let online = next_of(&mut ann, "online_users").await;
    assert_eq!(online["payload"]["users"], json!(["ann", "bob"]), "the joiner sees both nodes' users");
    publish(&mut ann, "chat:x", "hello from A", json!(1)).await;
    let message = next_of(&mut bob, "message").await;
    assert_eq!(
        (message["payload"]["text"].as_str(), message["offset"].as_u64()),
        (Some("hello from A"), Some(1))
    );
    // The sender's node gets its own publication back once, from Redis;
    // the ack may come before or after it.
    let (mut own, mut ack) = (None, None);
    while own.is_none() || ack.is_none() {
        let envelope = next(&mut ann).await.unwrap();
        match envelope["type"].as_str() {
            Some("message") => assert!(own.replace(envelope).is_none(), "delivered twice"),
            Some("published") => ack = Some(envelope),
            _ => {}
        }
    }
    assert_eq!(own.unwrap()["payload"]["text"], "hello from A");
    assert_eq!(ack.unwrap()["payload"]["offsets"], json!({"chat:x": 1}));
    send(&mut bob, json!({"type": "presence", "room": "chat:x"})).await;
    let users = next_of(&mut bob, "presence").await["payload"]["users"].clone();
    assert_eq!(users, json!([{"user": "ann", "connections": 1}, {"user": "bob", "connections": 1}]));
    let (_, stats) = http(&b.addr, "GET", "/stats", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!((stats["cluster"]["nodes"].as_u64(), stats["engine"].as_str()), (Some(2), Some("redis")));
    drop(ann);
    assert_eq!(next_of(&mut bob, "user_left").await["payload"]["user"], "ann");
}

#[tokio::test]
async fn two_publishers_on_two_nodes_are_seen_in_one_order_everywhere() {
    const EACH: usize = 1000;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let urls = |first: &Node| vec![first.ws_url()];
    let mut followers = Vec::new();
    for n in [&a, &a, &b, &b] {
        followers.push(Follower::start(urls(n), &["chat:order"]).await);
    }
    let (mut pa, mut pb) = (member(&a, "pa", "chat:order").await, member(&b, "pb", "chat:order").await);
    let publishing = async {
        for i in 0..EACH {
            publish(&mut pa, "chat:order", &format!("a{i}"), json!(i)).await;
            publish(&mut pb, "chat:order", &format!("b{i}"), json!(i)).await;
        }
    };
    let reading = futures_join(
        followers.iter_mut().map(|f| f.follow(Duration::from_secs(60), |m| m.len() >= 2 * EACH)),
    );
    tokio::join!(publishing, reading);
    let first = followers[0].texts();
    assert_eq!(first.len(), 2 * EACH);
    for follower in &followers {
        assert_eq!(follower.texts(), first, "every subscriber, on either node, sees one order");
        let offsets: Vec<u64> = follower.messages.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (1..=2 * EACH as u64).collect::<Vec<_>>());
    }
    for prefix in ["a", "b"] {
        let own: Vec<&String> = first.iter().filter(|t| t.starts_with(prefix)).collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>(), "each publisher's order is kept");
    }
}

/// Runs futures to completion together (a tiny join_all).
async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[tokio::test]
async fn a_node_killed_mid_stream_loses_and_repeats_nothing_for_its_clients() {
    const TOTAL: usize = 10_000;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut followers = Vec::new();
    for (first, second) in [(&a, &b), (&a, &b), (&b, &a), (&b, &a)] {
        followers.push(Follower::start(vec![first.ws_url(), second.ws_url()], &["chat:stream"]).await);
    }
    // The publisher is on B; A dies with SIGKILL once a third is out.
    let mut publisher = member(&b, "publisher", "chat:stream").await;
    let killer_addr = a.addr.clone();
    let a = std::sync::Mutex::new(Some(a));
    let publishing = async {
        for i in 1..=TOTAL {
            publish(&mut publisher, "chat:stream", &i.to_string(), json!(i)).await;
            if i == TOTAL / 3 {
                if let Some(node) = a.lock().unwrap().take() {
                    node.signal("KILL");
                    drop(node);
                }
            }
        }
        // Every publication was taken by Redis: one ack each, no error.
        let mut acks = 0;
        while acks < TOTAL {
            let reply = next(&mut publisher).await.expect("publisher connection ended");
            match reply["type"].as_str() {
                Some("published") => acks += 1,
                Some("error") => panic!("publish failed: {reply}"),
                _ => {}
            }
        }
    };
    let reading =
        futures_join(followers.iter_mut().map(|f| f.follow(Duration::from_secs(120), |m| m.len() >= TOTAL)));
    tokio::join!(publishing, reading);
    let expected: Vec<String> = (1..=TOTAL).map(|i| i.to_string()).collect();
    for (i, follower) in followers.iter().enumerate() {
        assert_eq!(follower.texts(), expected, "follower {i}: every publication once, in order");
        if i < 2 {
            // It was on A, lost it mid-stream, and recovered on B.
            let at = follower.reconnected_at.first().copied();
            assert!(at.is_some_and(|n| n < TOTAL), "follower {i} reconnected after {at:?} messages");
            assert!(!follower.recoveries.is_empty(), "follower {i} never resubscribed");
            assert!(
                follower.recoveries.iter().all(|r| *r),
                "follower {i} recovered: {:?}",
                follower.recoveries
            );
        } else {
            assert!(follower.reconnected_at.is_empty(), "follower {i} was on B all along");
        }
    }
    assert!(http_refused(&killer_addr).await, "A is gone");
}

async fn http_refused(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn redis_restarted_loses_history_clients_are_told_and_delivery_resumes() {
    let mut redis = RedisServer::start();
    let a = node(&redis, &[]);
    let mut ann = member(&a, "ann", "chat:r").await;
    let before = next_of(&mut ann, "online_users").await;
    assert!(before.is_object());
    publish(&mut ann, "chat:r", "before", json!(1)).await;
    let first = next_of(&mut ann, "message").await;
    assert_eq!(first["offset"], 1);
    redis.restart();
    // The node notices its history is gone and says so, unasked.
    let reset = next_of(&mut ann, "subscribed").await;
    assert!(reset.get("request_id").is_none(), "{reset}");
    assert_eq!(reset["payload"]["recovered"], false);
    assert_eq!(reset["payload"]["positions"]["chat:r"]["recovered"], false);
    // Delivery goes on in the new epoch (the node may need a moment to resubscribe).
    let mut text = None;
    for attempt in 0..50 {
        publish(&mut ann, "chat:r", &format!("after {attempt}"), json!(attempt)).await;
        let reply = next(&mut ann).await.unwrap();
        if reply["type"] == "message" {
            text = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = text.expect("delivery did not resume");
    assert_eq!(after["offset"], 1, "a new epoch counts from 1: {after}");
}

#[tokio::test]
async fn redis_unreachable_at_start_is_a_clear_error_unless_told_to_wait() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sabai-hub"))
        .args(["--addr", "127.0.0.1:0", "--no-simulator", "--redis", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("--redis-wait"), "{stderr}");

    // With --redis-wait it starts once Redis is there.
    let waiting =
        std::thread::spawn(move || Node::start(&["--no-simulator", "--redis", &url, "--redis-wait"]));
    std::thread::sleep(Duration::from_millis(500));
    let _redis = RedisServer::start_with(sabai_redis::testing::ServerOptions::default().port(port));
    let node = waiting.join().unwrap();
    // Ready once its engine's connections are up, which may follow the
    // listening socket by a moment on a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http(&node.addr, "GET", "/readyz", "").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready after Redis came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_lost_mid_run_keeps_local_delivery_counts_errors_and_reconnects() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut ann = member(&a, "ann", "chat:l").await;
    let mut bob = member(&b, "bob", "chat:l").await;
    redis.stop();
    publish(&mut ann, "chat:l", "local only", json!("x")).await;
    assert_eq!(next_of(&mut ann, "message").await["payload"]["text"], "local only");
    let error = next_of(&mut ann, "error").await;
    assert_eq!(error["request_id"], "x");
    assert!(error["payload"]["message"].as_str().unwrap().contains("this node only"), "{error}");
    let (_, metrics) = http(&a.addr, "GET", "/metrics", "").await;
    assert!(metrics.contains("sabai_hub_redis_publish_errors_total 1\n"), "{metrics}");
    assert_eq!(http(&a.addr, "GET", "/readyz", "").await.0, 503);
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while http(&a.addr, "GET", "/readyz", "").await.0 != 200
        || http(&b.addr, "GET", "/readyz", "").await.0 != 200
    {
        assert!(std::time::Instant::now() < deadline, "the engines did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(&mut ann, "chat:l", "across again", json!("y")).await;
    // B saw nothing of "local only"; the first message it gets is this one
    // (after the notice that the history was lost).
    let message = next_of(&mut bob, "message").await;
    assert_eq!(message["payload"]["text"], "across again");
}
