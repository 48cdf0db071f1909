//! Echo server for the TLS cost benchmark, on one thread like the shared
//! harness's anchors: `tls-echo sabai|tungstenite [--tls DIR] PORT`.
//! With `--tls`, every connection is TLS first (cert.pem and key.pem from
//! DIR, see `tls-load certs`); the echo loop is the same either way.

use std::path::PathBuf;

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The loop of sabai's examples/echo_server.rs.
async fn echo_sabai<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = sabai::accept(stream).await else { return };
    while let Ok(Some(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            return;
        }
    }
}

/// The loop of tokio-tungstenite's echo-server example (as in wsbench).
async fn echo_tungstenite<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (write, read) = ws.split();
    let _ = read.try_filter(|m| future::ready(m.is_text() || m.is_binary())).forward(write).await;
}

/// Spawns the echo task. Each (library, transport) pair is its own spawn
/// site: one future holding every variant would be as large as the
/// largest (a rustls connection inline), and every idle connection would
/// pay for it.
fn spawn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(library: &str, stream: S) {
    match library {
        "sabai" => tokio::spawn(echo_sabai(stream)),
        _ => tokio::spawn(echo_tungstenite(stream)),
    };
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tls-echo sabai|tungstenite [--tls DIR] PORT";
    let library: &'static str = match args.first().map(String::as_str) {
        Some("sabai") => "sabai",
        Some("tungstenite") => "tungstenite",
        _ => panic!("{usage}"),
    };
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(i) => {
            let dir = PathBuf::from(args.get(i + 1).expect(usage));
            Some(TlsAcceptor::from(sabai_tls_bench::server_config(&dir).expect("--tls DIR")))
        }
        None => None,
    };
    let port: u16 = args.last().and_then(|p| p.parse().ok()).expect(usage);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        eprintln!("tls-echo {library} listening on 127.0.0.1:{port} (tls: {})", tls.is_some());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            match &tls {
                Some(acceptor) => {
                    let accept = acceptor.accept(stream);
                    tokio::spawn(async move {
                        if let Ok(stream) = accept.await {
                            spawn(library, stream);
                        }
                    });
                }
                None => spawn(library, stream),
            }
        }
    });
}
