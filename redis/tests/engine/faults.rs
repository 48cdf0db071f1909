//! Redis restarted, unreachable, or dropping pub/sub messages: nothing
//! hangs, what can be recovered is, and what cannot is reported.

use std::time::Duration;

use sabai::hub::{EngineError, HubError};
use sabai_redis::testing::{free_port, RedisServer, ServerOptions};
use sabai_redis::{Backoff, RedisConfig, RedisEngine};
use tokio::time::{timeout, Instant};

use crate::support::*;

async fn ready(n: &TestNode) {
    eventually("the engine to be ready", || n.engine.stats().ready).await;
}

#[tokio::test]
async fn a_redis_restart_resets_rooms_and_delivery_resumes() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut client = b.client(None).await;
    client.join("r").await;
    for i in 1..=5 {
        a.hub.publish("r", format!("m{i}")).await.unwrap();
    }
    for i in 1..=5 {
        assert_eq!(client.next().await, format!("m{i} r={i}"));
    }
    let old = b.position("r").await;
    redis.restart();
    eventually("B to see that Redis restarted", || b.engine.stats().reconnects >= 1).await;
    ready(&a).await;
    ready(&b).await;
    eventually("a RoomReset on B", || !b.resets("r").is_empty()).await;
    let reset = &b.resets("r")[0];
    assert_ne!(reset.epoch, old.epoch, "a new epoch: the history was lost");
    assert_eq!(reset.offset, 0);
    a.hub.publish("r", "after").await.expect("publishing works again");
    assert_eq!(client.next().await, "after r=1", "delivery resumes in the new epoch");
    // A client that knew the old epoch learns that its state is stale.
    let mut late = b.client(None).await;
    let outcome = late.subscribe(&format!("r@5@{}", old.epoch)).await;
    assert_eq!(outcome[0].recovered, Some(false));
    assert_eq!(outcome[0].position.as_ref().unwrap().offset, 1);
    assert!(b.engine.stats().resets >= 1);
}

#[tokio::test]
async fn redis_unreachable_at_start_fails_clearly_or_is_waited_for() {
    let port = free_port();
    let config = |url: String| {
        RedisConfig::new(url)
            .command_timeout(Duration::from_millis(500))
            .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(200)))
    };
    let started = Instant::now();
    let error = RedisEngine::connect(config(format!("redis://:secret@127.0.0.1:{port}/"))).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "failing took {:?}", started.elapsed());
    let EngineError::Unavailable { reason, delivered_locally: false } = &error else { panic!("{error:?}") };
    assert!(reason.contains(&format!("127.0.0.1:{port}")) && reason.contains("refused"), "{reason}");
    assert!(!reason.contains("secret"), "the password is not shown: {reason}");
    assert!(error.to_string().starts_with("engine unavailable"), "{error}");

    // Told to wait, it connects once Redis is there.
    let waiting =
        tokio::spawn(RedisEngine::connect(config(format!("redis://127.0.0.1:{port}/")).wait_for_redis(true)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still waiting for Redis");
    let redis = RedisServer::start_with(ServerOptions::default().port(port));
    let engine =
        timeout(Duration::from_secs(5), waiting).await.expect("connects once Redis is up").unwrap().unwrap();
    eventually("ready", || engine.stats().ready).await;
    drop(redis);
}

#[tokio::test]
async fn losing_redis_mid_run_keeps_local_delivery_then_reconnects() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut on_a, mut on_b) = (a.client(None).await, b.client(None).await);
    on_a.join("r").await;
    on_b.join("r").await;
    a.hub.publish("r", "before").await.unwrap();
    assert_eq!(on_a.next().await, "before r=1");
    assert_eq!(on_b.next().await, "before r=1");

    redis.stop();
    eventually("A to notice", || !a.engine.stats().ready).await;
    let started = Instant::now();
    let outcome = a.hub.publish("r", "while down").await;
    assert!(started.elapsed() < Duration::from_secs(2), "publishing took {:?}", started.elapsed());
    match outcome {
        Err(HubError::Engine(EngineError::Unavailable { delivered_locally: true, reason })) => {
            assert!(reason.contains("Redis"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(on_a.next().await, "while down", "this node's members still get it, without an offset");
    on_b.assert_quiet(Duration::from_millis(100)).await;
    let stats = a.engine.stats();
    assert!(stats.publish_errors >= 1 && stats.delivered_locally >= 1, "{stats:?}");
    assert!(a.hub.presence("r").await.is_err(), "reads fail, they do not hang");
    // Joining works meanwhile, at once; the room is subscribed when Redis is back.
    let mut newcomer = b.client(None).await;
    let started = Instant::now();
    let outcome = newcomer.subscribe("r2").await;
    assert!(started.elapsed() < Duration::from_millis(900), "joining took {:?}", started.elapsed());
    assert_eq!(outcome[0].position, None, "no history could be read");

    redis.restart();
    ready(&a).await;
    ready(&b).await;
    assert!(a.engine.stats().reconnects >= 1 && b.engine.stats().reconnects >= 1);
    a.hub.publish("r", "back").await.expect("publishing works again");
    assert_eq!(on_a.next().await, "back r=1");
    assert_eq!(on_b.next().await, "back r=1", "cross-node delivery resumes");
    a.hub.publish("r2", "to the newcomer").await.unwrap();
    assert_eq!(
        newcomer.next().await,
        "to the newcomer r2=1",
        "rooms joined while Redis was away are subscribed"
    );
}

#[tokio::test]
async fn lost_pubsub_messages_are_filled_from_history() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    // B comes back slowly, so that publications fall in the gap.
    let slow =
        engine_config(&redis).backoff(Backoff::new(Duration::from_millis(1000), Duration::from_millis(2000)));
    let b = node_with(slow, hub_config()).await;
    let mut client = b.client(None).await;
    client.join("r").await;
    for i in 1..=3 {
        a.hub.publish("r", format!("m{i}")).await.unwrap();
        assert_eq!(client.next().await, format!("m{i} r={i}"));
    }
    // Only B's connection is subscribed to anything: this kills it alone,
    // and Redis drops what it would have sent it.
    redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 4..=8 {
        a.hub.publish("r", format!("m{i}")).await.unwrap();
    }
    eventually("B to reconnect", || b.engine.stats().reconnects >= 1).await;
    a.hub.publish("r", "m9").await.unwrap();
    for i in 4..=9 {
        assert_eq!(client.next().await, format!("m{i} r={i}"), "in order, once, no gap");
    }
    client.assert_quiet(Duration::from_millis(100)).await;
    assert!(b.engine.stats().gaps_filled >= 1, "{:?}", b.engine.stats());
    assert!(b.resets("r").is_empty(), "the history had everything: no reset");
}

#[tokio::test]
async fn a_gap_the_history_cannot_fill_resets_the_room() {
    let redis = RedisServer::start();
    let small = hub_config().history("", sabai::hub::HistoryPolicy::new(3, Duration::from_secs(60)));
    let a = node_with(engine_config(&redis), small.clone()).await;
    let slow =
        engine_config(&redis).backoff(Backoff::new(Duration::from_millis(1000), Duration::from_millis(2000)));
    let b = node_with(slow, small).await;
    let mut client = b.client(None).await;
    client.join("r").await;
    a.hub.publish("r", "m1").await.unwrap();
    assert_eq!(client.next().await, "m1 r=1");
    redis.query(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 2..=10 {
        a.hub.publish("r", format!("m{i}")).await.unwrap();
    }
    eventually("B to reset the room", || !b.resets("r").is_empty()).await;
    a.hub.publish("r", "m11").await.unwrap();
    // 2..=7 are gone from a history of 3: the members are told, then get
    // what the history still had, then live ones.
    let reset = &b.resets("r")[0];
    assert_eq!(reset.offset, 7, "{reset}");
    for i in 8..=11 {
        assert_eq!(client.next().await, format!("m{i} r={i}"));
    }
}

#[tokio::test]
async fn a_redis_that_stops_answering_makes_nothing_hang() {
    let redis = RedisServer::start();
    let config = || engine_config(&redis).command_timeout(Duration::from_millis(400));
    let a = node_with(config(), hub_config()).await;
    let b = node_with(config(), hub_config()).await;
    let (mut on_a, mut on_b) = (a.client(None).await, b.client(None).await);
    on_a.join("r").await;
    on_b.join("r").await;
    redis.pause();
    let started = Instant::now();
    let outcome = a.hub.publish("r", "while frozen").await;
    assert!(started.elapsed() < Duration::from_secs(1), "publishing took {:?}", started.elapsed());
    assert!(
        matches!(outcome, Err(HubError::Engine(EngineError::Unavailable { delivered_locally: true, .. }))),
        "{outcome:?}"
    );
    assert_eq!(on_a.next().await, "while frozen");
    let started = Instant::now();
    assert!(b.hub.presence("r").await.is_err());
    assert!(b.hub.cluster().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "reads took {:?}", started.elapsed());
    // The PING on the pub/sub connection finds out too.
    eventually("both nodes to be not ready", || !a.engine.stats().ready && !b.engine.stats().ready).await;
    redis.resume();
    ready(&a).await;
    ready(&b).await;
    a.hub.publish("r", "thawed").await.expect("publishing works again");
    // Redis may still run the frozen publication when it wakes up (it was
    // in its socket buffer): then it comes, with its offset, before.
    for client in [&mut on_a, &mut on_b] {
        let mut line = client.next().await;
        if line.starts_with("while frozen r=") {
            line = client.next().await;
        }
        assert!(line.starts_with("thawed r="), "{line}");
    }
}
