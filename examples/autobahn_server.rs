//! Echo server for Autobahn|Testsuite's fuzzing client
//! (`wstest -m fuzzingclient`), which tests sabai as a server.
//!
//!     cargo run --release --example autobahn_server -- 9002
//!
//! Listens on 127.0.0.1; the port is the last argument (default 9002).
//! permessage-deflate (RFC 7692) is on, for cases 12.x and 13.x.

use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().skip(1).next_back().and_then(|p| p.parse().ok()).unwrap_or(9002u16);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("autobahn echo server on ws://127.0.0.1:{port}/");
    let mut config = sabai::WebSocketConfig::default();
    let mut deflate = sabai::DeflateConfig::default();
    // Compress every message, so every echo exercises the compressor.
    deflate.threshold = 0;
    config.protocol.deflate = Some(deflate);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            let accept = |_: &sabai::handshake::Request| Ok(sabai::handshake::Accept::new());
            let Ok(mut ws) = sabai::accept_with(stream, &config, accept).await else { return };
            // Errors are the point of many cases; the protocol layer has
            // already answered them with the right close code.
            while let Ok(Some(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
