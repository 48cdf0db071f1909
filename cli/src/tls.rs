//! TLS for `connect wss://` and `serve --tls-cert`: rustls with `ring`, the
//! library's own rustls (`sabai::rustls`), so the trace wraps the stream
//! inside TLS and shows the WebSocket bytes, not ciphertext.

use std::sync::Arc;

use sabai::rustls::crypto::ring::default_provider;
use sabai::rustls::pki_types::pem::PemObject;
use sabai::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sabai::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, TlsAcceptor, TlsConnector};

/// The system's roots, plus the certificates in `ca` (a PEM file) if given.
pub fn client_config(ca: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {path}: {e}"))? {
                let cert = cert.map_err(|e| format!("--ca {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("--ca {path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS handshake as a client; a refused certificate says why.
pub async fn connect(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| match e.get_ref() {
        Some(inner) => format!("TLS failed (bad certificate?): {inner}"),
        None => format!("TLS failed: {e}"),
    })
}

/// A TLS acceptor from PEM files: the certificate chain and its key.
pub fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
