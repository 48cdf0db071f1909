//! Subscribing with `since` across nodes: replay then live, history reads
//! shared and bounded, hostile positions.

use std::sync::Arc;

use sabai::hub::{Engine, HubConfig, Position, Publish};
use sabai::Message;
use sabai_redis::testing::RedisServer;

use crate::support::*;

/// Reads `count` publications of `room` and returns their offsets, checking
/// that each text is `m<offset>`.
async fn offsets(client: &mut Client, room: &str, count: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        let line = client.next().await;
        let (text, offset) = line.split_once(&format!(" {room}=")).unwrap_or_else(|| panic!("{line}"));
        let offset: u64 = offset.parse().unwrap();
        assert_eq!(text, format!("m{offset}"), "{line}");
        got.push(offset);
    }
    got
}

#[tokio::test]
async fn since_on_one_node_recovers_what_another_published_with_no_seam() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    for i in 1..=200 {
        a.hub.publish("feed", format!("m{i}")).await.unwrap();
    }
    let epoch = b.position("feed").await.epoch;
    // Publications go on through A while clients of B subscribe since
    // different positions.
    let publisher = tokio::spawn({
        let hub = a.hub.clone();
        async move {
            for i in 201..=1000 {
                hub.publish("feed", format!("m{i}")).await.unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let mut checks = Vec::new();
    for since in [0u64, 50, 150, 199, 200] {
        let mut client = b.client(None).await;
        let outcome = client.subscribe(&format!("feed@{since}@{epoch}")).await;
        assert_eq!(outcome[0].recovered, Some(true), "since {since}");
        checks.push(tokio::spawn(async move {
            let got = offsets(&mut client, "feed", (1000 - since) as usize).await;
            let expected: Vec<u64> = (since + 1..=1000).collect();
            assert!(got == expected, "since {since}: a gap or a duplicate at the seam");
            client.assert_quiet(std::time::Duration::from_millis(100)).await;
        }));
    }
    publisher.await.unwrap();
    for check in checks {
        check.await.unwrap();
    }
}

#[tokio::test]
async fn history_gives_the_publications_live_delivery_gave() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    // B renders every field of a publication, so what its members get
    // can be compared with what its engine reads from history.
    let debug = |p: &sabai::hub::Publication| Message::text(format!("{:?} {:?}", p.rooms, p.message));
    let b = node_with(engine_config(&redis), hub_config().render(debug)).await;
    let mut client = b.client(None).await;
    client.join("d,g").await;
    a.hub.publish("d", "text").await.unwrap();
    a.hub
        .publish_with(Publish::new(Message::binary(vec![0u8, 159, 146, 150])).rooms(["g", "d"]))
        .await
        .unwrap();
    a.hub.publish_with(Publish::new("ψ,:0").rooms(["d", "x", "g"])).await.unwrap();
    let live = [client.next().await, client.next().await, client.next().await];
    let read = b.engine.history("d", Some(0), &policy()).await.unwrap();
    let replayed: Vec<String> =
        read.publications.iter().map(|p| format!("{:?} {:?}", p.rooms, p.message)).collect();
    assert_eq!(replayed, live);
    assert_eq!(read.earliest, Some(1));
    assert_eq!(read.position.unwrap().offset, 3);
    let nothing_yet = b.engine.history("new-room", Some(0), &policy()).await.unwrap();
    assert_eq!(nothing_yet.position.as_ref().map(|p| p.offset), Some(0), "an empty room has an epoch");
    assert!(nothing_yet.publications.is_empty() && nothing_yet.earliest.is_none());
}

#[tokio::test]
async fn hostile_positions_are_not_recovered_and_reads_stay_bounded() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    for i in 1..=30 {
        a.hub.publish("r", format!("m{i}")).await.unwrap();
    }
    let epoch = b.position("r").await.epoch;
    let cases = [
        format!("r@{}@{epoch}", u64::MAX),
        format!("r@31@{epoch}"),
        "r@5@an-epoch-nobody-made".to_owned(),
        "r@not-a-number@x".to_owned(),
        format!("nobody-here@5@{epoch}"),
        format!("{}@1@e", "z".repeat(128)),
    ];
    for spec in cases {
        redis.reset_stats();
        let mut client = b.client(None).await;
        let outcome = client.subscribe(&spec).await;
        assert_eq!(outcome[0].recovered, Some(false), "{spec}");
        assert!(outcome[0].position.is_some(), "{spec}: the room's position is given");
        client.assert_quiet(std::time::Duration::from_millis(50)).await;
        let ranges = redis.command_calls("xrange");
        assert!(ranges <= 2, "{spec}: {ranges} XRANGE calls");
    }
    let mut client = b.client(None).await;
    let outcome = client.subscribe(&format!("r@28@{epoch}")).await;
    assert_eq!(outcome[0].recovered, Some(true));
    assert_eq!(offsets(&mut client, "r", 2).await, [29, 30]);
}

#[tokio::test]
async fn a_thousand_subscribers_recovering_at_once_share_a_few_history_reads() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    for i in 1..=100 {
        a.hub.publish("busy", format!("m{i}")).await.unwrap();
    }
    let epoch = b.position("busy").await.epoch;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(b.client(None).await);
    }
    redis.reset_stats();
    let before = b.engine.stats().history_reads;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let since = 50 + (i as u64 % 50);
            let epoch: Arc<str> = epoch.clone();
            tokio::spawn(async move {
                let outcome = client.subscribe(&format!("busy@{since}@{epoch}")).await;
                assert_eq!(outcome[0].recovered, Some(true), "client {i}");
                let got = offsets(&mut client, "busy", (100 - since) as usize).await;
                assert_eq!(got, (since + 1..=100).collect::<Vec<_>>(), "client {i}");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let reads = b.engine.stats().history_reads - before;
    let ranges = redis.command_calls("xrange");
    assert!(reads <= 5, "{reads} history reads for 1000 recoveries");
    assert!(ranges <= 10, "{ranges} XRANGE calls for 1000 recoveries");
    println!("1000 recoveries: {reads} history reads, {ranges} XRANGE calls");
}

#[tokio::test]
async fn a_since_from_a_history_that_no_longer_reaches_back_is_not_recovered() {
    let redis = RedisServer::start();
    let small = HubConfig::default()
        .history("", sabai::hub::HistoryPolicy::new(5, std::time::Duration::from_secs(60)));
    let a = node_with(engine_config(&redis), small.clone()).await;
    let b = node_with(engine_config(&redis), small).await;
    for i in 1..=12 {
        a.hub.publish("short", format!("m{i}")).await.unwrap();
    }
    let read = b.engine.history(
        "short",
        Some(0),
        &sabai::hub::HistoryPolicy::new(5, std::time::Duration::from_secs(60)),
    );
    let read = read.await.unwrap();
    assert_eq!(read.earliest, Some(8), "MAXLEN keeps exactly the last 5");
    assert_eq!(read.publications.len(), 5);
    let epoch = read.position.clone().unwrap().epoch;
    assert!(!read.recovers(&Position::new(6, epoch.clone())));
    assert!(read.recovers(&Position::new(7, epoch.clone())));
    let mut client = b.client(None).await;
    let outcome = client.subscribe(&format!("short@3@{epoch}")).await;
    assert_eq!(outcome[0].recovered, Some(false));
    assert_eq!(outcome[0].position.as_ref().unwrap().offset, 12);
}
