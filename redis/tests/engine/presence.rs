//! Presence and the node registry across nodes.

use std::time::Duration;

use sabai_redis::testing::RedisServer;

use crate::support::*;

fn users(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(u, n)| (u.to_string(), *n)).collect()
}

#[tokio::test]
async fn presence_spans_nodes_and_a_dead_nodes_entries_expire() {
    let redis = RedisServer::start();
    let config = || engine_config(&redis).presence_ttl(Duration::from_millis(900));
    let a = node_with(config(), hub_config()).await;
    let mut ann = a.client(Some("ann")).await;
    ann.join("chat").await;
    assert_eq!(
        a.hub.presence("chat").await.unwrap(),
        users(&[("ann", 1)]),
        "a node reads its own joins at once"
    );

    // Node B runs on a runtime of its own, so that it can die the way a
    // killed process does: without leaving a room or cleaning up.
    let b_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (up, b_is_up) = tokio::sync::oneshot::channel();
    let config = config();
    b_runtime.spawn(async move {
        let b = node_with(config, hub_config()).await;
        let mut clients = Vec::new();
        for user in [Some("bob"), Some("bob"), None] {
            let mut client = b.client(user).await;
            client.join("chat").await;
            clients.push(client);
        }
        let _ = up.send(b.hub.presence("chat").await.unwrap());
        std::future::pending::<()>().await;
        drop((b, clients));
    });
    let seen_by_b = b_is_up.await.unwrap();
    assert_eq!(seen_by_b, users(&[("ann", 1), ("bob", 2)]), "anonymous connections are not listed");
    assert_eq!(a.hub.presence("chat").await.unwrap(), users(&[("ann", 1), ("bob", 2)]));
    eventually_async("every connection counted", || async {
        a.hub.cluster().await.is_ok_and(|c| (c.nodes, c.connections) == (2, 4))
    })
    .await;

    ann.send("leave chat").await;
    let expected = users(&[("bob", 2)]);
    eventually_async("ann to leave", || async { a.hub.presence("chat").await.unwrap() == expected }).await;

    b_runtime.shutdown_background();
    let died = tokio::time::Instant::now();
    eventually_async("B's entries to expire", || async { a.hub.presence("chat").await.unwrap().is_empty() })
        .await;
    eventually_async("B to leave the registry", || async { a.hub.cluster().await.unwrap().nodes == 1 }).await;
    assert!(died.elapsed() >= Duration::from_millis(300), "they expired, they were not removed");
}

#[tokio::test]
async fn presence_lost_in_a_redis_restart_comes_back_and_shutdown_removes_it() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut ann = a.client(Some("ann")).await;
    ann.join("chat").await;
    assert_eq!(a.hub.presence("chat").await.unwrap(), users(&[("ann", 1)]));
    redis.restart();
    let expected = users(&[("ann", 1)]);
    eventually_async("ann's entry to be written again", || async {
        b.hub.presence("chat").await.is_ok_and(|p| p == expected)
    })
    .await;
    eventually_async("both nodes registered again", || async {
        b.hub.cluster().await.is_ok_and(|c| c.nodes == 2)
    })
    .await;
    a.engine.shutdown().await;
    assert!(b.hub.presence("chat").await.unwrap().is_empty(), "removed at once, not after the TTL");
    assert_eq!(b.hub.cluster().await.unwrap().nodes, 1);
}
