//! Echo server for Autobahn|Testsuite's fuzzing client
//! (`wstest -m fuzzingclient`), which tests sabai as a server.
//!
//!     cargo run --release --example autobahn_server -- 9002
//!
//! Listens on 127.0.0.1; the port is the last argument (default 9002).

use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().skip(1).next_back().and_then(|p| p.parse().ok()).unwrap_or(9002u16);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("autobahn echo server on ws://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let Ok(mut ws) = sabai::accept(stream).await else { return };
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
