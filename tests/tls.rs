//! wss:// (feature `rustls`): `connect` and `connect_tls` against a
//! tokio-rustls server running `sabai::accept`, with a CA and certificates
//! made at test time. Every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use sabai::handshake::Accept;
use sabai::rustls::crypto::{ring, CryptoProvider};
use sabai::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sabai::rustls::server::WebPkiClientVerifier;
use sabai::rustls::{
    AlertDescription, CertificateError, ClientConfig, InvalidMessage, RootCertStore, ServerConfig,
};
use sabai::{
    CloseCode, Error, MaybeTlsStream, Message, MessageKind, TimeoutKind, WebSocket, WebSocketConfig,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

/// The bound on anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what} took over {WAIT:?}"))
}

/// The one provider of every config here, as in the library: never rustls'
/// process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A certificate and its key, in DER.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A private CA and what it signed: the server's certificate for
/// `localhost` and 127.0.0.1, one for another name, and a client's.
struct Pki {
    ca: CertificateDer<'static>,
    server: Identity,
    other_name: Identity,
    client: Identity,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let sign = |names: &[&str], usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            Identity { cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()) }
        };
        Pki {
            ca: ca_cert.der().clone(),
            server: sign(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth),
            other_name: sign(&["sabai.invalid"], ExtendedKeyUsagePurpose::ServerAuth),
            client: sign(&["client"], ExtendedKeyUsagePurpose::ClientAuth),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    /// A client config that trusts this CA only.
    fn client_config(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The same, presenting the client certificate.
    fn client_config_with_certificate(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(vec![self.client.cert.clone()], self.client.key())
            .unwrap();
        Arc::new(config)
    }

    fn server_config(&self, identity: &Identity) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![identity.cert.clone()], identity.key())
            .unwrap();
        Arc::new(config)
    }

    /// A server that wants a client certificate signed by this CA.
    fn server_config_requiring_clients(&self) -> Arc<ServerConfig> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider()).build().unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.cert.clone()], self.server.key())
            .unwrap();
        Arc::new(config)
    }
}

/// What the server saw of one connection that reached the WebSocket.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    host: Option<String>,
}

/// A wss:// echo server on 127.0.0.1: TLS with tokio-rustls, then
/// `sabai::accept_with`. Stops when dropped.
struct WssServer {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for WssServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WssServer {
    async fn start(tls: Arc<ServerConfig>, config: WebSocketConfig) -> WssServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, config, tx) = (acceptor.clone(), config.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = timeout(WAIT, acceptor.accept(tcp)).await else { return };
                    let (_, session) = tls.get_ref();
                    let sni = session.server_name().map(str::to_owned);
                    let mut host = None;
                    let accepted = sabai::accept_with(tls, &config, |request| {
                        host = request.host().map(str::to_owned);
                        Ok(Accept::new())
                    })
                    .await;
                    let Ok(mut ws) = accepted else { return };
                    let _ = tx.send(Seen { sni, host });
                    while let Ok(Some(message)) = ws.recv().await {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WssServer { addr, seen, task }
    }

    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/echo", self.addr.port())
    }

    async fn next_seen(&mut self) -> Seen {
        bounded("the server's report", self.seen.recv()).await.expect("the server reports")
    }
}

/// `connect_tls` with the default configuration, bounded.
async fn wss(url: &str, tls: Arc<ClientConfig>) -> Result<WebSocket<MaybeTlsStream>, Error> {
    bounded("connect_tls", sabai::connect_tls(url, &WebSocketConfig::default(), tls, |r| r)).await
}

/// The configurations the echo test runs with: plain, and (feature
/// `deflate`) with permessage-deflate on both ends.
fn configs() -> Vec<(WebSocketConfig, bool)> {
    let configs = vec![(WebSocketConfig::default(), false)];
    #[cfg(feature = "deflate")]
    let configs = {
        let mut configs = configs;
        let mut config = WebSocketConfig::default();
        config.protocol.deflate = Some(sabai::DeflateConfig::default());
        configs.push((config, true));
        configs
    };
    configs
}

/// Bytes that do not compress: a large message really is large on the wire.
fn noise(len: usize) -> Vec<u8> {
    support::noise(len, 0x9E37_79B9_7F4A_7C15)
}

/// The rustls error inside a TLS error, and the error's text; a failure
/// naming what came instead.
fn rustls_error<T: std::fmt::Debug>(result: Result<T, Error>) -> (sabai::rustls::Error, String) {
    let error = result.expect_err("the connection must fail");
    let text = error.to_string();
    match &error {
        Error::Tls(e) => {
            (e.rustls_error().cloned().unwrap_or_else(|| panic!("not a rustls error: {text}")), text)
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// Echo over wss:// with a private CA, with and without permessage-deflate:
/// text, binary and a 3 MiB message; SNI and Host name the URL's host; the
/// close handshake ends cleanly (TLS close_notify included).
#[tokio::test]
async fn echo_over_wss_with_a_private_ca() {
    let pki = Pki::new();
    for (config, deflate) in configs() {
        let mut server = WssServer::start(pki.server_config(&pki.server), config.clone()).await;
        let url = server.url("localhost");
        let connecting = sabai::connect_tls(&url, &config, pki.client_config(), |r| r);
        let mut ws = bounded("connect_tls", connecting).await.expect("wss with the private CA");
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.get_ref().tcp().peer_addr().unwrap(), server.addr);
        #[cfg(feature = "deflate")]
        assert_eq!(ws.deflate().is_some(), deflate, "permessage-deflate as configured");
        #[cfg(not(feature = "deflate"))]
        let _ = deflate;
        let seen = server.next_seen().await;
        assert_eq!(seen.sni.as_deref(), Some("localhost"), "SNI names the host");
        // RFC 6455 §4.1: Host carries the port, which is not wss's 443.
        assert_eq!(seen.host, Some(format!("localhost:{}", server.addr.port())));
        for message in [
            Message::text("สวัสดี over TLS"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::binary(noise(3 << 20)),
            Message::text("x".repeat(200_000)),
        ] {
            bounded("send", ws.send(message.clone())).await.unwrap();
            let echoed = bounded("the echo", ws.recv()).await.unwrap().expect("an echo");
            assert_eq!(echoed, message);
        }
        bounded("close", ws.close(CloseCode::NORMAL, "done")).await.expect("a clean close over TLS");
        assert_eq!(ws.close_frame().map(|f| f.code), Some(CloseCode::NORMAL));
    }
}

/// `connect`'s own configuration: verified against the system's roots, it
/// refuses a CA made a moment ago, before any WebSocket byte is sent.
#[tokio::test]
async fn the_system_roots_refuse_a_private_ca() {
    let pki = Pki::new();
    let server = WssServer::start(pki.server_config(&pki.server), WebSocketConfig::default()).await;
    let result = bounded("connect", sabai::connect(&server.url("localhost"))).await;
    let (error, text) = rustls_error(result);
    assert_eq!(error, sabai::rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), "{text}");
    assert!(text.contains("TLS") && text.contains("issuer"), "{text}");
}

/// A certificate signed by a trusted CA but for another name is refused.
#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let pki = Pki::new();
    let server = WssServer::start(pki.server_config(&pki.other_name), WebSocketConfig::default()).await;
    let (error, text) = rustls_error(wss(&server.url("localhost"), pki.client_config()).await);
    assert!(
        matches!(
            error,
            sabai::rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{text}"
    );
    assert!(text.contains("not valid for name \"localhost\""), "{text}");
    // The right name on the same kind of certificate works: it is the name.
    let server = WssServer::start(pki.server_config(&pki.server), WebSocketConfig::default()).await;
    let mut ws = wss(&server.url("127.0.0.1"), pki.client_config())
        .await
        .expect("the IP address is in the certificate");
    bounded("close", ws.close(CloseCode::NORMAL, "")).await.unwrap();
}

/// A plain ws:// server on the port answers the ClientHello with an HTTP
/// error: a TLS error that says so, at once rather than at the timeout.
#[tokio::test]
async fn a_plaintext_server_on_the_wss_port_is_a_tls_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        sabai::accept(tcp).await.map(|_| ())
    });
    let pki = Pki::new();
    let started = Instant::now();
    let url = format!("wss://localhost:{port}/");
    let (error, text) = rustls_error(wss(&url, pki.client_config()).await);
    assert_eq!(error, sabai::rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType), "{text}");
    assert!(text.contains("did not answer in TLS"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "no wait for the handshake timeout");
    // The server, for its part, refused the ClientHello as a bad request.
    let refused = bounded("the plain server", server).await.unwrap().unwrap_err();
    assert!(matches!(refused, Error::Handshake(_)), "{refused:?}");
}

/// A server that takes the TCP connection and never answers the
/// ClientHello: the handshake timeout covers TLS too.
#[tokio::test]
async fn a_server_silent_after_the_client_hello_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        // Reads the ClientHello and whatever follows, answers nothing.
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
        sink.len()
    });
    let pki = Pki::new();
    let mut config = WebSocketConfig::default();
    config.handshake_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let url = format!("wss://localhost:{port}/");
    let result = bounded("connect_tls", sabai::connect_tls(&url, &config, pki.client_config(), |r| r)).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout(TimeoutKind::Handshake))), "{:?}", result.map(|_| ()));
    assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The client dropped the connection; the server had got a ClientHello.
    let received = bounded("the silent server", silent).await.unwrap();
    assert!(received > 0, "a ClientHello was sent");
}

/// A client certificate from `connect_tls`'s config reaches a server that
/// requires one; without it, the server's refusal is a TLS error (in TLS
/// 1.3 it arrives after the client's side of the handshake is done).
#[tokio::test]
async fn a_client_certificate_is_presented_and_its_absence_is_a_tls_error() {
    let pki = Pki::new();
    let mut server =
        WssServer::start(pki.server_config_requiring_clients(), WebSocketConfig::default()).await;
    let url = server.url("localhost");
    let mut ws =
        wss(&url, pki.client_config_with_certificate()).await.expect("the client certificate is accepted");
    server.next_seen().await;
    bounded("send", ws.send(Message::text("mutual"))).await.unwrap();
    assert_eq!(bounded("echo", ws.recv()).await.unwrap(), Some(Message::text("mutual")));
    bounded("close", ws.close(CloseCode::NORMAL, "")).await.unwrap();

    let (error, text) = rustls_error(wss(&url, pki.client_config()).await);
    assert_eq!(error, sabai::rustls::Error::AlertReceived(AlertDescription::CertificateRequired), "{text}");
}

/// Over TLS the halves still work from two tasks: one sends 200 messages
/// while the other reads their echoes.
#[tokio::test]
async fn split_halves_work_over_wss() {
    let pki = Pki::new();
    let server = WssServer::start(pki.server_config(&pki.server), WebSocketConfig::default()).await;
    let ws = wss(&server.url("localhost"), pki.client_config()).await.unwrap();
    let (mut read, mut write) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 0..200u32 {
            write.send(Message::binary(noise(1000 + i as usize))).await.unwrap();
        }
        write
    });
    for i in 0..200u32 {
        let message = bounded("an echo", read.recv()).await.unwrap().expect("an echo");
        assert_eq!((message.kind(), message.len()), (MessageKind::Binary, 1000 + i as usize));
    }
    let mut write = bounded("the writer", writer).await.unwrap();
    bounded("close", write.close(CloseCode::NORMAL, "")).await.unwrap();
    assert_eq!(bounded("the end", read.recv()).await.unwrap(), None);
}
