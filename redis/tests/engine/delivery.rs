//! Publications between nodes: reach, order, and multi-room publications.

use std::collections::HashSet;

use sabai::hub::Publish;
use sabai::Message;
use sabai_redis::testing::RedisServer;

use crate::support::*;

#[tokio::test]
async fn a_publication_on_one_node_reaches_members_on_both_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut on_a, mut on_b) = (a.client(None).await, b.client(None).await);
    on_a.join("chat:1").await;
    on_b.join("chat:1").await;
    on_a.publish("chat:1", "hello").await;
    assert_eq!(
        on_a.next().await,
        "hello chat:1=1",
        "the publisher's node delivers it when Redis hands it back"
    );
    assert_eq!(on_b.next().await, "hello chat:1=1");
    b.hub.publish("chat:1", "from b").await.unwrap();
    a.hub.publish_with(Publish::new("typing").to("chat:1").ephemeral()).await.unwrap();
    for client in [&mut on_a, &mut on_b] {
        // Once each: the next message is the next publication.
        assert_eq!(client.next().await, "from b chat:1=2");
        assert_eq!(client.next().await, "typing", "an ephemeral publication has no offset");
    }
    // Not to its sender, even though the sender's node gets it back from Redis.
    on_a.send("pubx chat:1 said").await;
    assert_eq!(on_b.next().await, "said chat:1=3");
    on_b.publish("chat:1", "marker").await;
    assert_eq!(on_a.next().await, "marker chat:1=4", "the sender did not get its own");
    assert_eq!(a.engine.stats().publications, 3);
    assert!(a.engine.stats().ready && b.engine.stats().ready);
}

#[tokio::test]
async fn two_publishers_on_two_nodes_give_every_member_one_order() {
    const EACH: usize = 2000;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut readers = Vec::new();
    for n in [&a, &b, &a, &b] {
        let mut client = n.client(None).await;
        client.join("race").await;
        readers.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(2 * EACH);
            for _ in 0..2 * EACH {
                got.push(client.next().await);
            }
            got
        }));
    }
    let publishers = [(&a, "a"), (&b, "b")].map(|(n, name)| {
        let hub = n.hub.clone();
        tokio::spawn(async move {
            // Queued in order without awaiting each, then all awaited.
            let pending: Vec<_> = (0..EACH).map(|i| hub.publish("race", format!("{name}{i}"))).collect();
            for publishing in pending {
                publishing.await.unwrap();
            }
        })
    });
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut orders = Vec::new();
    for reader in readers {
        orders.push(reader.await.unwrap());
    }
    let first = &orders[0];
    for (i, order) in orders.iter().enumerate() {
        assert!(order == first, "member {i} saw another order");
    }
    // Offsets 1..=4000 in order, each publication once, each publisher's in its order.
    let mut seen = HashSet::new();
    let (mut last_a, mut last_b) = (None, None);
    for (i, line) in first.iter().enumerate() {
        let (text, offset) = line.split_once(" race=").unwrap();
        assert_eq!(offset.parse::<usize>().unwrap(), i + 1, "{line}");
        assert!(seen.insert(text.to_owned()), "{text} twice");
        let n: usize = text[1..].parse().unwrap();
        let last = if text.starts_with('a') { &mut last_a } else { &mut last_b };
        assert!(last.is_none_or(|l| l < n), "{text} out of its publisher's order");
        *last = Some(n);
    }
    assert_eq!(seen.len(), 2 * EACH);
}

#[tokio::test]
async fn a_publication_to_several_rooms_comes_once_with_every_offset() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut both = b.client(None).await;
    both.join("device:1,global").await;
    let mut global_only = a.client(None).await;
    global_only.join("global").await;
    a.hub.publish("device:1", "x").await.unwrap();
    let placed =
        a.hub.publish_with(Publish::new("y").rooms(["device:1", "global", "elsewhere"])).await.unwrap();
    let offsets: Vec<_> = placed.iter().map(|p| p.position.as_ref().map(|p| p.offset)).collect();
    assert_eq!(offsets, [Some(2), Some(1), Some(1)]);
    b.hub.publish("global", "z").await.unwrap();
    assert_eq!(both.next().await, "x device:1=1");
    assert_eq!(both.next().await, "y device:1=2 global=1 elsewhere=1");
    assert_eq!(both.next().await, "z global=2", "y came once, though it arrived on two channels");
    assert_eq!(global_only.next().await, "y device:1=2 global=1 elsewhere=1");
    assert_eq!(global_only.next().await, "z global=2");
}

#[tokio::test]
async fn a_coalescing_key_crosses_nodes_and_coalesces_there() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    // Node b shows each publication's key, as it got it from Redis.
    let showing_keys = hub_config().render(|p| {
        let text = p.message.as_text().unwrap_or_default();
        Message::text(format!("{text} key={}", p.coalesce.as_deref().unwrap_or("-")))
    });
    let b = node_with(engine_config(&redis), showing_keys).await;
    let mut on_b = b.client(None).await;
    on_b.join("chat:1").await;
    // 200 states of one key, 8 KiB each, published on a while the client
    // on b does not read: b's writer stalls once the pipe (256 KiB) is full.
    let blob = "x".repeat(8 * 1024);
    for i in 0..200 {
        let state = Publish::new(format!("{i:03} {blob}")).to("chat:1").ephemeral().coalesce("typing|ann");
        a.hub.publish_with(state).await.unwrap();
    }
    a.hub.publish_with(Publish::new("done").to("chat:1").ephemeral()).await.unwrap();
    let mut states = Vec::new();
    loop {
        let text = on_b.next().await;
        if text == "done key=-" {
            break;
        }
        let (n, rest) = text.split_once(' ').unwrap();
        assert!(rest.ends_with(" key=typing|ann"), "the key crossed the nodes");
        states.push(n.parse::<u32>().unwrap());
    }
    // In order, ending with the latest; those queued behind the stall
    // were replaced on b, not queued one by one.
    assert!(states.windows(2).all(|w| w[0] < w[1]), "{states:?}");
    assert_eq!(states.last(), Some(&199));
    assert!(states.len() < 200 && b.hub.stats().coalesced > 0, "{} states arrived", states.len());
}
