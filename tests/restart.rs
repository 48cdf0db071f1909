//! A hub server restarted while clients are connected: the clients see 1001
//! (or a refused connection), reconnect with exponential backoff and seeded
//! jitter, resubscribe, and all receive what the new server publishes. On
//! 127.0.0.1, bounded: every wait has a hang guard.
#![cfg(feature = "hub")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sabai::hub::{Hub, HubConfig};
use sabai::{Message, WebSocket};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

const CLIENTS: usize = 200;
const GUARD: Duration = Duration::from_secs(60);

/// A hub on `addr`: any message joins the room "all" and is answered "joined".
async fn serve(addr: SocketAddr) -> (Hub, JoinHandle<()>) {
    let hub = Hub::new(HubConfig::default());
    // A reconnecting client may hold the port for an instant (a loopback
    // connect can pick the very port it dials while nothing listens).
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) if tries < 100 => {
                tries += 1;
                eprintln!("bind {addr}: {e}, retrying");
                sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let server = hub.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let hub = server.clone();
            tokio::spawn(async move {
                let Ok(accepted) = hub.accept(stream, |_| Ok(None)).await else { return };
                accepted
                    .serve(|hub, conn, _| async move {
                        hub.join(conn, "all").await.unwrap();
                        hub.send_to(conn, "joined");
                    })
                    .await;
            });
        }
    });
    (hub, accepting)
}

/// Connects and joins, retrying with exponential backoff (10 ms doubling
/// to 640 ms) and jitter from a per-client xorshift seed.
async fn join_with_backoff(url: &str, seed: &mut u64) -> (WebSocket<sabai::MaybeTlsStream>, usize) {
    let mut delay = 10u64;
    for attempt in 0..100 {
        if let Ok(mut ws) = sabai::connect(url).await {
            let joined = async {
                ws.send(Message::text("join")).await.ok()?;
                ws.recv().await.ok()?
            };
            if joined.await == Some(Message::text("joined")) {
                return (ws, attempt);
            }
        }
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        sleep(Duration::from_millis(delay / 2 + *seed % delay)).await;
        delay = (delay * 2).min(640);
    }
    panic!("no connection after 100 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_and_resubscribe_after_a_restart() {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let url = format!("ws://{addr}/");
    let (first, accepting) = serve(addr).await;

    let joined = Arc::new(Barrier::new(CLIENTS + 1));
    let rejoined = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, joined, rejoined) = (url.clone(), joined.clone(), rejoined.clone());
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
                let (mut ws, _) = join_with_backoff(&url, &mut seed).await;
                joined.wait().await;
                while let Ok(Some(_)) = ws.recv().await {}
                let first_close = ws.close_frame().map(|f| f.code.0);
                let (mut ws, attempts) = join_with_backoff(&url, &mut seed).await;
                rejoined.wait().await;
                let after = ws.recv().await.unwrap();
                (first_close, attempts, after)
            })
        })
        .collect();
    timeout(GUARD, joined.wait()).await.expect("clients did not join");
    assert_eq!(first.connection_count(), CLIENTS);

    // Restart: graceful shutdown (1001), the port closed for a moment,
    // then a new hub on the same address.
    assert!(first.shutdown(Duration::from_secs(10)).await);
    accepting.abort();
    let _ = accepting.await;
    sleep(Duration::from_millis(200)).await;
    let (second, _accepting) = serve(addr).await;

    timeout(GUARD, rejoined.wait()).await.expect("clients did not come back");
    assert_eq!(second.connection_count(), CLIENTS);
    assert_eq!(second.members("all").len(), CLIENTS);
    second.publish("all", "after restart").await.unwrap();
    let mut retried = 0;
    for client in clients {
        let (first_close, attempts, after) = timeout(GUARD, client).await.expect("hang").unwrap();
        assert_eq!(first_close, Some(1001));
        assert_eq!(after, Some(Message::text("after restart")));
        retried += usize::from(attempts > 0);
    }
    eprintln!("restart: {CLIENTS} clients back, {retried} needed more than one attempt");
    assert!(retried > 0, "no client ever met the server down");
}
