//! `sabai connect wss://` against `sabai serve --tls-cert/--tls-key`, with a
//! CA made at test time (rcgen), all on 127.0.0.1: a message round-trips
//! with `--ca`; without it, or with another CA, the certificate is refused
//! in words and the exit status is 1. And permessage-deflate between the two
//! ends: the message round-trips and the trace shows RSV1 on both frames.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{run, text, Server};

/// PEM files in a directory of their own: `ca.pem`, `other-ca.pem` (a CA
/// that signed nothing here), `server.pem` and `server.key` (for
/// 127.0.0.1 and localhost, signed by `ca.pem`).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sabai-cli-wss-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two names: a CA with the same name as the signer would be taken
        // for it and fail as BadSignature rather than UnknownIssuer.
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, format!("sabai test {name}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.join(name), cert.pem()).unwrap();
            Issuer::new(params, key)
        };
        let issuer = ca("ca.pem");
        ca("other-ca.pem");
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        Server::start(&[&["--tls-cert", cert.as_str(), "--tls-key", key.as_str()], extra].concat())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wss(server: &Server) -> String {
    format!("wss://127.0.0.1:{}/", server.port)
}

#[test]
fn wss_round_trip_with_the_servers_ca() {
    let pki = Pki::new("round-trip");
    let server = pki.serve(&[]);
    let out = run(&["connect", "--ca", &pki.path("ca.pem"), "-n", "1", &wss(&server)], "over TLS\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over TLS\n");
    assert!(text(&out.stderr).contains("closed: 1000 (normal closure)"), "{}", text(&out.stderr));
}

/// The refusal names the certificate and rustls' reason, exits 1, and no
/// message was sent or received.
fn assert_certificate_refused(out: &std::process::Output) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad certificate"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn wss_without_ca_refuses_the_private_certificate() {
    let pki = Pki::new("no-ca");
    let server = pki.serve(&[]);
    // The system's roots do not include a CA made a moment ago.
    let out = run(&["connect", "-n", "1", &wss(&server)], "never sent\n");
    assert_certificate_refused(&out);
}

#[test]
fn wss_with_another_ca_refuses_the_certificate() {
    let pki = Pki::new("other-ca");
    let server = pki.serve(&[]);
    let out = run(&["connect", "--ca", &pki.path("other-ca.pem"), "-n", "1", &wss(&server)], "never sent\n");
    assert_certificate_refused(&out);
}

#[test]
fn a_ca_file_that_does_not_exist_is_named() {
    let missing = Path::new(&std::env::temp_dir()).join("sabai-cli-no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    let out = run(&["connect", "--ca", missing, "wss://127.0.0.1:9/"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("--ca {missing}")), "{}", text(&out.stderr));
}

#[test]
fn deflate_round_trip_shows_rsv1_in_the_trace() {
    let server = Server::start(&["--deflate", "--once"]);
    // Longer than DeflateConfig's 32-byte threshold, and compressible.
    let message = "Hello, Hello, Hello, Hello, Hello, Hello, Hello, Hello!";
    let out = run(&["connect", "--deflate", "--trace", "-n", "1", &server.url("/")], &format!("{message}\n"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), format!("{message}\n"));
    // Offered, and agreed in the 101.
    assert!(err.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{err}");
    let agreed = err.split("<-- received the handshake response").nth(1).expect("response traced");
    assert!(agreed.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{err}");
    // Our Text frame and the echo both carry RSV1 (RFC 7692 §6), and both
    // are shorter on the wire than the 55-byte message.
    let compressed: Vec<&str> =
        err.split("a Text frame, ").skip(1).filter(|frame| frame.contains("RSV1-3   1 0 0")).collect();
    assert_eq!(compressed.len(), 2, "{err}");
    for frame in compressed {
        let bytes: usize = frame.split(" bytes").next().unwrap().parse().unwrap();
        assert!(bytes < message.len(), "{bytes} bytes on the wire: {err}");
    }
}

#[test]
fn deflate_offered_to_a_server_without_it_is_plain() {
    let server = Server::start(&["--once"]);
    let message = "Hello, Hello, Hello, Hello, Hello, Hello, Hello, Hello!";
    let out = run(&["connect", "--deflate", "--trace", "-n", "1", &server.url("/")], &format!("{message}\n"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), format!("{message}\n"));
    assert!(!err.contains("RSV1-3   1"), "{err}");
    let response = err.split("<-- received the handshake response").nth(1).unwrap();
    // The head ends where the Sec-WebSocket-Accept computation starts.
    let head = response.split("Sec-WebSocket-Accept = ").next().unwrap();
    assert!(head.contains("HTTP/1.1 101") && !head.contains("Sec-WebSocket-Extensions"), "{err}");
}
