//! permessage-deflate through the tokio layer: `Config::deflate` turns it on
//! for `accept_with` and `connect_with`, over loopback TCP.
#![cfg(all(feature = "deflate", feature = "tokio"))]

use sabai::handshake::Accept;
use sabai::{DeflateConfig, DeflateParams, Message, WebSocketConfig};
use tokio::net::TcpListener;

fn config(deflate: Option<DeflateConfig>) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.protocol.deflate = deflate;
    config
}

/// An echo server with `server` config; a client with `client` config sends
/// `messages` and returns what it agreed and got back.
async fn echo(
    server: WebSocketConfig,
    client: WebSocketConfig,
    messages: &[Message],
) -> (Option<DeflateParams>, Vec<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = sabai::accept_with(stream, &server, |_| Ok(Accept::new())).await.unwrap();
        let agreed = ws.deflate().copied();
        while let Some(message) = ws.recv().await.unwrap() {
            ws.send(message).await.unwrap();
        }
        agreed
    });
    let url = format!("ws://127.0.0.1:{port}/");
    let mut ws = sabai::connect_with(&url, &client, |request| request).await.unwrap();
    let agreed = ws.deflate().copied();
    let mut echoed = Vec::new();
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        echoed.push(ws.recv().await.unwrap().unwrap());
    }
    ws.close(sabai::CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(task.await.unwrap(), agreed, "both ends agree");
    (agreed, echoed)
}

fn messages() -> Vec<Message> {
    vec![
        Message::text("{\"sensor\":1,\"value\":20.5}".repeat(40)),
        Message::binary(vec![9u8; 100_000]),
        Message::text("tiny"),
    ]
}

#[tokio::test]
async fn both_ends_configured_agree_and_echo() {
    let mut server = DeflateConfig::default();
    server.server_no_context_takeover = true;
    server.client_max_window_bits = Some(10);
    let (agreed, echoed) =
        echo(config(Some(server)), config(Some(DeflateConfig::default())), &messages()).await;
    let expected = DeflateParams {
        server_no_context_takeover: true,
        client_max_window_bits: Some(10),
        ..DeflateParams::default()
    };
    assert_eq!(agreed, Some(expected));
    assert_eq!(echoed, messages());
}

#[tokio::test]
async fn one_end_without_deflate_means_no_compression() {
    let (agreed, echoed) = echo(config(None), config(Some(DeflateConfig::default())), &messages()).await;
    assert_eq!((agreed, echoed), (None, messages()));
    let (agreed, echoed) = echo(config(Some(DeflateConfig::default())), config(None), &messages()).await;
    assert_eq!((agreed, echoed), (None, messages()));
}
