//! Plain HTTP: slow requests and the request limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Opens a request and sends it one byte every `pace` (at most `bytes`);
/// returns the status the server answered with, if any, and when.
async fn trickle(addr: &str, head: &str, bytes: usize, pace: Duration) -> (Option<u16>, Duration) {
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    for _ in 0..bytes {
        let mut buf = [0u8; 512];
        tokio::select! {
            read = stream.read(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => { response.extend_from_slice(&buf[..n]); break; }
                }
            }
            () = tokio::time::sleep(pace) => {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
    }
    let status = std::str::from_utf8(&response).ok().and_then(|r| r.get(9..12)).and_then(|s| s.parse().ok());
    (status, started.elapsed())
}

#[tokio::test]
async fn slow_requests_are_cut_off_and_plain_requests_are_bounded() {
    let (_app, addr) = start(&["--no-simulator", "--request-timeout", "1", "--max-requests", "2"]).await;
    // A body at one byte per 300 ms: 408 after about a second, not never.
    let head = format!("POST /publish HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n");
    let (status, took) = trickle(&addr, &head, 60, Duration::from_millis(300)).await;
    assert_eq!(status, Some(408));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A head at the same pace: the connection is dropped (hyper answers 408 or closes).
    let (status, took) =
        trickle(&addr, "GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ", 60, Duration::from_millis(300)).await;
    assert!(status.is_none() || status == Some(408), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Two slow bodies take both places: a third request does not wait, it gets 503.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (addr, head) = (addr.clone(), head.clone());
            tokio::spawn(async move { trickle(&addr, &head, 60, Duration::from_millis(300)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http(&addr, "GET", "/stats", "", "").await.0, 503);
    for request in slow {
        assert_eq!(request.await.unwrap().0, Some(408));
    }
    assert_eq!(http(&addr, "GET", "/healthz", "", "").await.0, 200, "the places are free again");
}

#[tokio::test]
async fn one_address_past_its_limits_gets_429_or_a_closed_connection_and_holds_a_bounded_number() {
    let flags =
        ["--no-simulator", "--limit-loopback", "--ip-rate", "5", "--ip-burst", "10", "--ip-max-open", "20"];
    let (app, addr) = start(&flags).await;
    let url = format!("ws://{addr}/ws");
    let (mut open, mut refused, mut dropped) = (Vec::new(), 0, 0);
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        match timeout(Duration::from_secs(5), sabai::connect(&url)).await.expect("a handshake hung") {
            Ok(ws) => open.push(ws),
            Err(sabai::Error::Handshake(sabai::handshake::HandshakeError::UnexpectedStatus(429))) => {
                refused += 1
            }
            Err(_) => dropped += 1, // closed at accept: over --ip-max-open
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let allowed = (10.0 + 5.0 * secs).ceil() as usize;
    assert!(open.len() <= allowed.min(20), "{} open in {secs:.1} s", open.len());
    assert!(open.len() >= 10, "the burst is allowed: {}", open.len());
    assert_eq!(open.len() + refused + dropped, 1000);
    assert!(app.hub.connection_count() <= 20);
    drop(open);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let flags = [
        "--no-simulator",
        "--limit-loopback",
        "--ip-rate",
        "0.01",
        "--ip-burst",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
    ];
    let (_app, addr) = start(&flags).await;
    let url = format!("ws://{addr}/ws");
    let as_client = |ip: &'static str| {
        let url = url.clone();
        async move {
            let config = sabai::WebSocketConfig::default();
            match sabai::connect_with(&url, &config, |r| r.header("X-Forwarded-For", ip)).await {
                Ok(ws) => Ok(ws),
                Err(sabai::Error::Handshake(sabai::handshake::HandshakeError::UnexpectedStatus(status))) => {
                    Err(status)
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    };
    let _a = (as_client("203.0.113.1").await.unwrap(), as_client("203.0.113.1").await.unwrap());
    assert_eq!(as_client("203.0.113.1").await.err(), Some(429), "its burst of 2 is spent");
    assert!(as_client("203.0.113.2").await.is_ok(), "another client behind the same proxy is not");
}
