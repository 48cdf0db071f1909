//! Passwords and TLS.

use std::time::Duration;

use sabai::hub::EngineError;
use sabai_redis::testing::{RedisServer, ServerOptions, TlsFiles};
use sabai_redis::{RedisConfig, RedisEngine};

use crate::support::*;

/// A cross-node publication works on this Redis.
async fn works(config: impl Fn() -> RedisConfig) {
    let a = node_with(config(), hub_config()).await;
    let b = node_with(config(), hub_config()).await;
    let mut client = b.client(None).await;
    client.join("r").await;
    a.hub.publish("r", "hello").await.unwrap();
    assert_eq!(client.next().await, "hello r=1");
}

#[tokio::test]
async fn a_password_protected_redis_works_and_a_wrong_password_fails_clearly() {
    let redis = RedisServer::start_with(ServerOptions::default().password("s3cret"));
    assert!(redis.url().contains(":s3cret@"));
    works(|| engine_config(&redis)).await;
    let port = redis.port();
    for (url, shown) in [
        (format!("redis://:wrong-pass@127.0.0.1:{port}/"), "wrong-pass"),
        (format!("redis://127.0.0.1:{port}/"), "no password"),
    ] {
        // Waiting would not help: it fails at once even when told to wait.
        let config = RedisConfig::new(&url).wait_for_redis(true).command_timeout(Duration::from_secs(1));
        let error = tokio::time::timeout(Duration::from_secs(5), RedisEngine::connect(config))
            .await
            .expect("a refused password is not waited out")
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, EngineError::Broker(_)), "{shown}: {error:?}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains("wrong-pass"), "the password is not shown: {text}");
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn certificates() -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    TlsFiles { cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_pem: ca_cert.pem() }
}

#[tokio::test]
async fn rediss_with_a_ca_file_works_and_an_unknown_ca_fails_clearly() {
    let redis = RedisServer::start_with(ServerOptions::default().tls(certificates()));
    assert!(redis.url().starts_with("rediss://"));
    let ca = redis.ca_file().unwrap();
    works(|| engine_config(&redis).ca_file(&ca)).await;
    // The system roots do not know a CA made a moment ago; waiting would not change that.
    let config = engine_config(&redis).wait_for_redis(true);
    let error = tokio::time::timeout(Duration::from_secs(5), RedisEngine::connect(config))
        .await
        .unwrap()
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("rediss://127.0.0.1") && text.contains("certificate"), "{text}");
    let missing =
        RedisEngine::connect(engine_config(&redis).ca_file("/nonexistent/ca.pem")).await.unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/ca.pem"), "{missing}");
}
