//! Flow control against hostile peers over loopback TCP, with the tokio
//! layer: a peer that never reads, a peer that floods, a half-closed
//! connection. Memory is measured with a counting allocator (bytes, not
//! time); timeouts only detect a stalled sender or guard against hangs.
//! The hub's policies (slow consumer 4008, heartbeat 4002) are in tests/hub.rs.

#[path = "support/counting.rs"]
mod counting;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use counting::{measure, serial, Counting};
use sabai::{CloseCode, Error, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};

#[global_allocator]
static ALLOC: Counting = Counting;

const MESSAGE: usize = 16 * 1024;
const GUARD: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

// The server sends 16 KiB messages to a client that never reads. Once the
// kernel buffers are full, `send` waits (more than 64 KiB queued), so what
// the process holds stays far below what it tried to send.
#[test]
fn a_client_that_never_reads_makes_send_wait_with_memory_bounded() {
    let _serial = serial();
    let rt = runtime();
    let (sent, usage) = measure(|| {
        rt.block_on(async {
            let (listener, url) = listener().await;
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let mut ws = sabai::accept(stream).await.unwrap();
                let message = Message::binary(vec![7u8; MESSAGE]);
                let mut sent = 0usize;
                // Stops at the first send still waiting after a second.
                while let Ok(result) = timeout(Duration::from_secs(1), ws.send(message.clone())).await {
                    result.unwrap();
                    sent += 1;
                    assert!(sent < 64 * 1024, "1 GiB sent and send never waited");
                }
                sent
            });
            let client = sabai::connect(&url).await.unwrap();
            let sent = timeout(GUARD, server).await.expect("hang").unwrap();
            drop(client);
            sent
        })
    });
    eprintln!("sent {sent} x 16 KiB before send waited; {usage:?}");
    assert!(sent > 0);
    // Runtime, two connections, one queued message and the 64 KiB threshold.
    assert!(usage.peak < 1024 * 1024, "{usage:?}");
}

// A client floods 32 MiB while the server's application reads nothing. TCP
// pushes back: the client's sends stall with the server holding only what
// it read into one connection. Then the server reads every message, in order.
#[test]
fn a_flooding_client_is_held_back_until_the_server_reads() {
    let _serial = serial();
    const COUNT: usize = 2048;
    let rt = runtime();
    let (received, usage) = measure(|| {
        rt.block_on(async {
            let (listener, url) = listener().await;
            let progress = Arc::new(AtomicUsize::new(0));
            let counter = progress.clone();
            let client = tokio::spawn(async move {
                let mut ws = sabai::connect(&url).await.unwrap();
                for i in 0..COUNT {
                    let mut payload = vec![0u8; MESSAGE];
                    payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    ws.send(Message::binary(payload)).await.unwrap();
                    counter.store(i + 1, Ordering::Relaxed);
                }
                ws.close(CloseCode::NORMAL, "done").await.unwrap();
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = sabai::accept(stream).await.unwrap();
            // Wait until the flood stalls: no progress for half a second.
            let mut last = usize::MAX;
            loop {
                sleep(Duration::from_millis(500)).await;
                let now = progress.load(Ordering::Relaxed);
                assert!(now < COUNT, "all {COUNT} messages sent while nobody read");
                if now == last {
                    break;
                }
                last = now;
            }
            let mut received = 0u64;
            while let Some(message) = timeout(GUARD, ws.recv()).await.expect("hang").unwrap() {
                let index = u64::from_be_bytes(message.as_bytes()[..8].try_into().unwrap());
                assert_eq!((index, message.len()), (received, MESSAGE));
                received += 1;
            }
            timeout(GUARD, client).await.expect("hang").unwrap();
            received
        })
    });
    eprintln!("received {received} x 16 KiB; {usage:?}");
    assert_eq!(received, COUNT as u64);
    // 32 MiB went through; the process never held more than a few messages.
    assert!(usage.peak < 2 * 1024 * 1024, "{usage:?}");
}

// A client sends a message, then shuts down its write side without a Close.
// The server gets the message, then 1006 (RFC 6455 §7.1.5), closes the TCP
// connection, and sends no frame: the client reads end-of-stream.
#[test]
fn a_half_closed_connection_is_an_abnormal_closure() {
    let _serial = serial();
    runtime().block_on(async {
        let (listener, url) = listener().await;
        let addr = url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .await
                .unwrap();
            // A masked "hi" (zero key), then FIN.
            stream.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            rest
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = sabai::accept(stream).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Some(Message::text("hi")));
        let error = timeout(GUARD, ws.recv()).await.expect("hang").unwrap_err();
        assert!(matches!(error, Error::AbnormalClosure), "{error:?}");
        // The socket is shut by sabai itself, with `ws` still alive.
        let rest = timeout(GUARD, client).await.expect("hang").unwrap();
        drop(ws);
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("no 101") + 4;
        assert!(rest.starts_with(b"HTTP/1.1 101"));
        assert_eq!(&rest[head_end..], b"", "frames sent after the peer's half-close");
    });
}

// With no size limits configured, a frame declaring 2^62 bytes of which ten
// arrive: the tokio layer sizes its reads to the frame in progress, but
// reserves at most 1 MiB ahead (src/tokio/core.rs), never the declared size.
// The end of input is then 1006.
#[test]
fn a_huge_declared_frame_reserves_a_bounded_read_buffer() {
    let _serial = serial();
    let rt = runtime();
    let (error, usage) = measure(|| {
        rt.block_on(async {
            let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
            let mut config = sabai::Config::default();
            config.max_frame_size = usize::MAX;
            config.max_message_size = usize::MAX;
            let conn = sabai::Connection::server(config);
            let mut ws = sabai::WebSocket::from_connection(server_io, conn);
            let mut frame = vec![0x82, 0x80 | 127];
            frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
            frame.extend_from_slice(&[0; 4 + 10]);
            client_io.write_all(&frame).await.unwrap();
            // Nothing to deliver yet: recv stays pending.
            assert!(timeout(Duration::from_millis(200), ws.recv()).await.is_err());
            drop(client_io);
            timeout(GUARD, ws.recv()).await.expect("hang").unwrap_err()
        })
    });
    assert!(matches!(error, Error::AbnormalClosure), "{error:?}");
    assert!(usage.peak < 2 * 1024 * 1024, "{usage:?}");
    eprintln!("2^62 declared, 10 sent: {usage:?}");
}

// A client that sends Pings without end and never reads: each Ping queues a
// Pong, but `recv` stops reading once more than 64 KiB of output wait, so
// the Pongs stay bounded and TCP holds the client back.
#[test]
fn a_ping_flood_from_a_client_that_never_reads_is_held_back() {
    let _serial = serial();
    let rt = runtime();
    let (sent, usage) = measure(|| {
        rt.block_on(async {
            let (listener, url) = listener().await;
            let addr = url.trim_start_matches("ws://").trim_end_matches('/').to_owned();
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let mut ws = sabai::accept(stream).await.unwrap();
                ws.recv().await
            });
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .await
                .unwrap();
            // 500 masked Pings of 125 bytes (zero key), 65.5 KB a batch.
            let mut batch = Vec::new();
            for _ in 0..500 {
                batch.extend_from_slice(&[0x89, 0x80 | 125, 0, 0, 0, 0]);
                batch.extend_from_slice(&[b'p'; 125]);
            }
            let mut sent = 0usize;
            // Stops at the first batch still not written after a second.
            while let Ok(result) = timeout(Duration::from_secs(1), stream.write_all(&batch)).await {
                result.unwrap();
                sent += batch.len();
                assert!(sent < 1 << 30, "1 GiB of Pings accepted while no Pong was read");
            }
            server.abort();
            sent
        })
    });
    eprintln!("ping flood: {sent} bytes of Pings sent before the client stalled; {usage:?}");
    assert!(usage.peak < 2 * 1024 * 1024, "{usage:?}");
}
