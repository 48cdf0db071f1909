//! An echo server: every text or binary message comes back unchanged.
//!
//!     cargo run --release --example echo_server -- 9001
//!
//! The port is the last argument (default 9001); it listens on 127.0.0.1.
//! One thread, one task per connection: the loop below is all the user code.

use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().skip(1).next_back().and_then(|p| p.parse().ok()).unwrap_or(9001u16);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("echo server listening on ws://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut ws = match sabai::accept(stream).await {
                Ok(ws) => ws,
                Err(error) => return eprintln!("handshake failed: {error}"),
            };
            let echo = async {
                while let Some(message) = ws.recv().await? {
                    ws.send(message).await?;
                }
                Ok::<_, sabai::Error>(())
            };
            if let Err(error) = echo.await {
                eprintln!("connection ended: {error}");
            }
        });
    }
}
