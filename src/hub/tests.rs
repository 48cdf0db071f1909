//! Hub internals that the TCP tests cannot see.

use std::sync::Arc;

use super::outbox::{Next, Outbox};
use super::{ConnId, Hub, HubConfig, SlowConsumer};

fn member(hub: &Hub, id: u64, room: &str) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(8, SlowConsumer::Close));
    hub.registry().insert(ConnId(id), None, outbox.clone());
    hub.join(ConnId(id), room).unwrap();
    outbox
}

#[tokio::test]
async fn fan_out_shares_one_encoded_frame() {
    let hub = Hub::new(HubConfig::default());
    let outboxes: Vec<_> = (1..=3).map(|id| member(&hub, id, "global")).collect();
    assert_eq!(hub.publish("global", "{\"type\":\"telemetry\"}"), 3);
    let mut frames = Vec::new();
    for outbox in &outboxes {
        match outbox.next(10, usize::MAX).await {
            Next::Frames(mut taken) => frames.push(taken.remove(0)),
            Next::Close(..) => panic!("unexpected close"),
        }
    }
    // Same bytes at the same address: encoded once, not copied per member.
    let first = frames[0].frame().as_ptr();
    assert!(frames.iter().all(|f| f.frame().as_ptr() == first));
    assert_eq!(frames[0].frame()[..2], [0x81, 20]);
}

#[cfg(feature = "deflate")]
#[tokio::test]
async fn fan_out_compresses_once_for_every_member() {
    let hub = Hub::new(HubConfig { deflate: Some(crate::DeflateConfig::default()), ..HubConfig::default() });
    let outboxes: Vec<_> = (1..=3).map(|id| member(&hub, id, "global")).collect();
    let json = "{\"type\":\"telemetry\",\"temperature\":21.5}".repeat(20);
    assert_eq!(hub.publish("global", json), 3);
    let mut compressed = Vec::new();
    for outbox in &outboxes {
        match outbox.next(10, usize::MAX).await {
            // What each member's writer sends to a deflate connection.
            Next::Frames(taken) => compressed.push(taken[0].compressed_frame(15).unwrap().clone()),
            Next::Close(..) => panic!("unexpected close"),
        }
    }
    // Compressed by the first, the same bytes for the others.
    assert!(compressed.iter().all(|c| c.as_ptr() == compressed[0].as_ptr()));
    assert_eq!(compressed[0][0], 0xc1); // FIN, RSV1 (RFC 7692 §6), text
}

#[cfg(feature = "deflate")]
#[test]
fn hub_connections_always_agree_to_no_context_takeover() {
    assert_eq!(Hub::new(HubConfig::default()).websocket_config().protocol.deflate, None);
    let config = HubConfig { deflate: Some(crate::DeflateConfig::default()), ..HubConfig::default() };
    let deflate = Hub::new(config).websocket_config().protocol.deflate.unwrap();
    // RFC 7692 §7.1.1.1: the server may name it unasked; the hub always does.
    assert!(deflate.server_no_context_takeover);
}

#[test]
fn publish_except_skips_the_sender() {
    let hub = Hub::new(HubConfig::default());
    let _a = member(&hub, 1, "chat");
    let _b = member(&hub, 2, "chat");
    let typing = sabai_prepared("typing");
    assert_eq!(hub.publish_except("chat", Some(ConnId(1)), &typing), 1);
    assert_eq!(hub.publish_except("chat", None, &typing), 2);
}

fn sabai_prepared(text: &str) -> crate::PreparedMessage {
    crate::PreparedMessage::new(&crate::Message::text(text))
}
