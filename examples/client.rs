//! A client for the echo server: sends a few messages, prints the echoes,
//! then closes.
//!
//!     cargo run --example echo_server &      # in one terminal
//!     cargo run --example client -- ws://127.0.0.1:9001/

use sabai::{CloseCode, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sabai::Error> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:9001/".to_owned());
    let mut ws = sabai::connect(&url).await?;
    for message in [Message::text("hello"), Message::text("κόσμε"), Message::binary(vec![1, 2, 3])] {
        ws.send(message).await?;
        println!("echoed: {:?}", ws.recv().await?);
    }
    ws.close(CloseCode::NORMAL, "bye").await?;
    println!("closed cleanly");
    Ok(())
}
