//! Client for Autobahn|Testsuite's fuzzing server (`wstest -m
//! fuzzingserver`), which tests sabai as a client: it asks for the number of
//! cases, runs each one as an echo client, then asks for the report.
//!
//!     cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 sabai
//!
//! It offers permessage-deflate (RFC 7692), for cases 12.x and 13.x.

use sabai::{Message, WebSocket};

async fn echo(mut ws: WebSocket<sabai::MaybeTlsStream>) -> Result<(), sabai::Error> {
    while let Some(message) = ws.recv().await? {
        ws.send(message).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let agent = args.next().unwrap_or_else(|| "sabai".to_owned());

    let mut ws = sabai::connect(&format!("{base}/getCaseCount")).await?;
    let count: u32 = match ws.recv().await? {
        Some(Message::Text(text)) => text.trim().parse()?,
        other => return Err(format!("unexpected case count message: {other:?}").into()),
    };
    while ws.recv().await?.is_some() {}
    println!("running {count} cases as agent {agent}");

    let mut config = sabai::WebSocketConfig::default();
    let mut deflate = sabai::DeflateConfig::default();
    deflate.threshold = 0;
    config.protocol.deflate = Some(deflate);
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match sabai::connect_with(&url, &config, |request| request).await {
            // Protocol errors are what many cases test; sabai has already
            // answered them with the right close code.
            Ok(ws) => {
                if let Err(error) = echo(ws).await {
                    println!("case {case}: {error}");
                }
            }
            Err(error) => println!("case {case}: connect failed: {error}"),
        }
    }

    let mut ws = sabai::connect(&format!("{base}/updateReports?agent={agent}")).await?;
    while ws.recv().await?.is_some() {}
    println!("reports updated");
    Ok(())
}
