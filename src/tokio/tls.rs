//! TLS for `wss://` (feature `rustls`): the default client configuration
//! (the system's roots, `ring`), the TLS handshake, and its errors.
//!
//! RFC 6455 §4.1 step 5: for a /secure/ URL the client runs TLS over the
//! connection, with the host name in SNI, before it sends the opening
//! handshake, and fails the connection if TLS fails. (§3: `wss://`
//! defaults to port 443; that is src/tokio/connect.rs.)

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, InvalidMessage, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::Error;

/// Why TLS failed on a `wss://` connection: the server's certificate was
/// refused (unknown issuer, wrong host name, expired), the handshake broke
/// (an alert, a server that does not speak TLS, a connection closed
/// midway), or no trusted roots could be loaded.
#[derive(Debug)]
pub struct TlsError {
    /// Boxed: rustls' error is large, and `Error`'s size is in every
    /// connection's task (any `Result<_, Error>` held across an await):
    /// unboxed it doubled `Error` to 64 bytes.
    inner: Box<Inner>,
}

#[derive(Debug)]
enum Inner {
    /// rustls refused the handshake.
    Rustls(rustls::Error),
    /// The transport failed or closed during the handshake.
    Io(io::Error),
    /// The system's root store gave no usable certificate.
    NoRoots(String),
}

impl TlsError {
    /// rustls' own error, to match on, for example
    /// `rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)`.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match &*self.inner {
            Inner::Rustls(e) => Some(e),
            _ => None,
        }
    }

    /// Sorts an error of the TLS handshake: tokio-rustls wraps rustls'
    /// errors in `io::Error`s.
    fn from_handshake(error: io::Error) -> TlsError {
        let inner = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).cloned() {
            Some(e) => Inner::Rustls(e),
            None => Inner::Io(error),
        };
        TlsError { inner: Box::new(inner) }
    }
}

/// A plain-words reading of the usual rustls errors, after rustls' own text.
fn hint(error: &rustls::Error) -> Option<&'static str> {
    use rustls::Error as E;
    Some(match error {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the certificate's issuer is not among the trusted roots; for a private CA, give \
             connect_tls a ClientConfig that trusts it"
        }
        // (NotValidForNameContext says it in its own words.)
        E::InvalidCertificate(CertificateError::NotValidForName) => {
            "the certificate does not name the URL's host"
        }
        E::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the server did not answer in TLS: is it a plain ws:// or HTTP server on this port?"
        }
        E::AlertReceived(_) => "the server refused the TLS handshake",
        _ => return None,
    })
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Rustls(e) => match hint(e) {
                Some(hint) => write!(f, "{e} ({hint})"),
                None => write!(f, "{e}"),
            },
            Inner::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the server closed the connection during the TLS handshake")
            }
            Inner::Io(e) => write!(f, "I/O error during the TLS handshake: {e}"),
            Inner::NoRoots(why) => write!(f, "no trusted root certificates: {why}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.inner {
            Inner::Rustls(e) => Some(e),
            Inner::Io(e) => Some(e),
            Inner::NoRoots(_) => None,
        }
    }
}

/// The configuration of `connect` for `wss://`: the system's roots, TLS 1.2
/// and 1.3 with `ring`, ALPN `http/1.1`. Built on first use (reading the
/// roots takes a few milliseconds) and shared after that.
pub(super) fn default_config() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(format!(
                "none found in the system's store{}{}; install the system's CA certificates, set \
                 SSL_CERT_FILE, or give connect_tls a ClientConfig",
                if errors.is_empty() { "" } else { ": " },
                errors.join("; ")
            ));
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        // The opening handshake is HTTP/1.1 (RFC 6455 §4.1); a server that
        // also speaks HTTP/2 must not pick it for this connection.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    });
    config.clone().map_err(|why| Error::Tls(TlsError { inner: Box::new(Inner::NoRoots(why)) }))
}

/// Runs the TLS handshake over `tcp`, verifying the server's certificate
/// against `config`'s roots and `host` (sent in SNI when it is a name, as
/// RFC 6066 §3 wants: an IP address is not sent).
pub(super) async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Url(format!("{host:?} is neither a DNS name nor an IP address, as TLS needs")))?;
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| Error::Tls(TlsError::from_handshake(e)))
}

/// An error of the opening handshake over TLS: rustls' errors (an alert
/// from a server that refused our client certificate, say) are TLS errors,
/// the rest stays as it was.
pub(super) fn refused_late(error: Error) -> Error {
    match error {
        Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            Error::Tls(TlsError::from_handshake(e))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default configuration offers HTTP/1.1 in ALPN, and is built once.
    /// (It needs the system's roots, as `connect` does.)
    #[test]
    fn the_default_config_offers_http_1_1_and_is_shared() {
        let config = default_config().expect("the system's roots");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(Arc::ptr_eq(&config, &default_config().unwrap()));
    }
}
