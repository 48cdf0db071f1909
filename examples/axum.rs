//! A WebSocket echo route in an axum app, beside ordinary routes.
//!
//!     cargo run --example axum --features hyper
//!
//! Then open http://127.0.0.1:3000/ and, in the browser console,
//! `ws = new WebSocket("ws://127.0.0.1:3000/ws"); ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send("hi")`.

use axum::extract::Request;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use sabai::handshake::Accept;
use sabai::WebSocketConfig;

/// `/ws`: sabai checks the handshake and answers it; the WebSocket exists
/// once axum has sent the 101, on its own task.
async fn ws(request: Request) -> Response {
    let mut config = WebSocketConfig::default();
    // Browsers offer permessage-deflate; agree to it.
    config.protocol.deflate = Some(sabai::DeflateConfig::default());
    match sabai::hyper::upgrade(request, &config, |_| Ok(Accept::new())) {
        Ok((response, upgrading)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = upgrading.await else { return };
                // Ok(None): the client closed normally.
                while let Ok(Some(message)) = ws.recv().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
            response
        }
        // 400, 426 or 431 for a bad handshake, with the reason in the body.
        Err(refusal) => refusal,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { "sabai in axum: a WebSocket echo on /ws\n" }))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ws", any(ws));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}/ (WebSocket: /ws)", listener.local_addr()?);
    // axum::serve serves HTTP/1.1 with upgrades enabled.
    axum::serve(listener, app).await
}
