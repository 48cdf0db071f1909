//! The hub server over TLS (--tls-cert, --tls-key), with a certificate
//! made at test time: a sabai wss:// client, a ClientHello that never
//! ends, and plaintext on the TLS port.

mod support;

use std::sync::Arc;
use std::time::Duration;

use sabai::rustls;
use serde_json::json;
use support::{next_of, send, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A CA, and a certificate it signed for localhost and 127.0.0.1.
struct Pki {
    dir: std::path::PathBuf,
    ca_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "sabai test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir =
            std::env::temp_dir().join(format!("sabai-hub-tls-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir, ca_der: ca_cert.der().to_vec() }
    }

    fn flags(&self) -> [String; 4] {
        let path = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        ["--tls-cert".into(), path("cert.pem"), "--tls-key".into(), path("key.pem")]
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.ca_der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
}

fn tls_node(pki: &Pki) -> Node {
    let flags = pki.flags();
    let mut all: Vec<&str> = vec!["--no-simulator", "--request-timeout", "1"];
    all.extend(flags.iter().map(String::as_str));
    Node::start(&all)
}

#[tokio::test]
async fn a_sabai_client_speaks_the_protocol_over_wss() {
    let pki = Pki::new();
    let node = tls_node(&pki);
    let port = node.addr.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{port}/ws?user=ann");
    let config = sabai::WebSocketConfig::default();
    let mut ws = sabai::connect_tls(&url, &config, pki.client(), |r| r).await.unwrap();
    assert!(ws.get_ref().is_tls());
    assert_eq!(next_of(&mut ws, "connected").await["payload"]["user"], "ann");
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:tls"]}})).await;
    next_of(&mut ws, "subscribed").await;
    send(&mut ws, json!({"type": "publish", "room": "chat:tls", "payload": {"text": "over TLS"}})).await;
    assert_eq!(next_of(&mut ws, "message").await["payload"]["text"], "over TLS");
    // The system's roots do not know this CA.
    let refused = sabai::connect(&format!("wss://localhost:{port}/ws")).await;
    assert!(matches!(refused, Err(sabai::Error::Tls(_))), "{refused:?}");
}

/// Reads until the server closes; whether it did within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_client_hello_that_never_ends_and_plaintext_on_the_tls_port_are_dropped() {
    let pki = Pki::new();
    let node = tls_node(&pki);
    // The first bytes of a TLS record (handshake, TLS 1.0 record version,
    // a length of 512) and then nothing: cut off after --request-timeout.
    let mut stalled = TcpStream::connect(&node.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).await,
        "a stalled ClientHello kept the connection"
    );
    // Plain HTTP where TLS is spoken: dropped at once, no answer in clear.
    let mut plain = TcpStream::connect(&node.addr).await.unwrap();
    plain.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(5)).await);
    // And the server still serves TLS.
    let port = node.addr.rsplit(':').next().unwrap();
    let config = sabai::WebSocketConfig::default();
    let mut ws = sabai::connect_tls(&format!("wss://127.0.0.1:{port}/ws"), &config, pki.client(), |r| r)
        .await
        .unwrap();
    next_of(&mut ws, "connected").await;
}
