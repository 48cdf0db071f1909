//! The hub's side of the pub/sub fan-out comparison with uWebSockets
//! (`../shared/fanout`, whose README has the server contract):
//!
//!     cargo build --release --example fanout_server --features hub
//!     target/release/examples/fanout_server 9001
//!
//! The port is the last argument; it listens on 127.0.0.1, on one thread
//! (a current_thread runtime, as uWebSockets runs one event loop). Every
//! connection joins the room "room" when it opens, and every message it
//! sends is published to that room, to every member, the sender included,
//! with its opcode (binary in, binary out). permessage-deflate is declined
//! (`HubConfig::deflate` stays off), messages up to 16 KiB are allowed.
//!
//! Limits raised so that nothing is dropped in the runs (uWebSockets
//! raises its backpressure limit to 256 MiB):
//!
//! - `queue_capacity`: 1,048,576 messages per connection (default 256). The
//!   queue grows only as far as it is filled.
//! - `slow_consumer`: `DropOldest` (default `Close`), so a full queue would
//!   drop one message at a time and count each in `Stats::dropped_messages`,
//!   as uWebSockets counts its drops, instead of closing the connection.
//! - `max_connections`: 20,000 (default 10,000; 10,000 subscribers and
//!   the publisher are 10,001).
//! - `ping_interval` / `pong_timeout`: 110 s / 120 s (default 54 s / 60 s;
//!   uWebSockets' `idleTimeout` is 120 s). Subscribers send nothing, and a
//!   run lasts up to 55 s.
//!
//! On SIGTERM (or Ctrl-C) it prints one line of counters to stderr and
//! exits: `sabai: opened … closed … messages_in … messages_out … dropped N
//! slow_consumer_closes M`, where `dropped` is every message the hub
//! dropped from a queue.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use sabai::hub::{Hub, HubConfig, HubEvent, SlowConsumer};
use tokio::net::TcpSocket;
use tokio::signal::unix::{signal, SignalKind};

const ROOM: &str = "room";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().skip(1).next_back().and_then(|p| p.parse().ok()).unwrap_or(9001u16);

    let mut config = HubConfig::default();
    config.max_message_size = 16 * 1024;
    config.queue_capacity = 1 << 20;
    config.slow_consumer = SlowConsumer::DropOldest;
    config.max_connections = 20_000;
    config.ping_interval = Duration::from_secs(110);
    config.pong_timeout = Duration::from_secs(120);
    let hub = Hub::new(config);

    let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (o, c) = (opened.clone(), closed.clone());
    hub.on_event(move |hub, event| match event {
        HubEvent::Connected { conn, .. } => {
            o.fetch_add(1, Relaxed);
            let (hub, conn) = (hub.clone(), *conn);
            tokio::spawn(async move {
                if let Err(error) = hub.join(conn, ROOM).await {
                    eprintln!("sabai: join failed: {error}");
                }
            });
        }
        HubEvent::Disconnected { .. } => {
            c.fetch_add(1, Relaxed);
        }
        _ => {}
    });

    // A backlog for 10,000 subscribers connecting at once (tokio's `bind`
    // asks for 128: SYNs beyond it were dropped and retried after 1 s).
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(4096)?;
    eprintln!("sabai: listening on 127.0.0.1:{port}");
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // One socket's error is that socket's: it is served anyway.
                let _ = stream.set_nodelay(true);
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Ok(accepted) = hub.accept(stream, |_| Ok(None)).await {
                        accepted
                            .serve(|hub, _, message| {
                                // Delivered to every member's queue before
                                // publish returns (the memory engine); the
                                // offsets are not needed.
                                drop(hub.publish(ROOM, message));
                                std::future::ready(())
                            })
                            .await;
                    }
                });
            }
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    let stats = hub.stats();
    eprintln!(
        "sabai: opened {} closed {} messages_in {} messages_out {} dropped {} slow_consumer_closes {}",
        opened.load(Relaxed),
        closed.load(Relaxed),
        stats.messages_in,
        stats.messages_out,
        stats.dropped_messages,
        stats.slow_consumer_closes,
    );
    Ok(())
}
