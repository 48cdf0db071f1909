//! `mqtts://` for the bridge and the simulator: rustls with the `ring`
//! provider, named here (never rustls' process default, which panics when
//! two crates of a build enable two providers), trusting the CAs of
//! `--mqtt-ca` or, without it, the system's roots. No client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The TLS configuration of the broker's connections.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("--mqtt-ca {}: {e}", path.display()))?;
            let (added, _unparsable) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("--mqtt-ca {}: no usable CA certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("mqtts:// without --mqtt-ca needs the system's CA certificates, and none \
                            were found: install them, set SSL_CERT_FILE, or give --mqtt-ca FILE"
                    .into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What a failed TLS connection to the broker most likely means, in plain
/// words, for the log line beside rumqttc's own error.
pub fn hint(error: &rumqttc::ConnectionError) -> Option<&'static str> {
    use rustls::Error as E;
    let rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(io)) = error else { return None };
    // tokio-rustls wraps rustls' errors in io::Errors.
    let Some(error) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return Some("the broker closed the connection during the TLS handshake: is this its TLS port?");
    };
    Some(match error {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the broker's certificate is not signed by a trusted CA: give its CA with --mqtt-ca FILE"
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the broker's certificate does not name the host of --mqtt"
        }
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the broker's certificate has expired"
        }
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the broker did not answer in TLS: is this its plain mqtt:// port?"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("sabai-mqtt-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let why = client_config(Some(&empty)).unwrap_err();
        assert!(why.contains("--mqtt-ca") && why.contains("empty.pem"), "{why}");
        let why = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(why.contains("missing.pem"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unknown_issuer_is_explained() {
        let rustls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let error = rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(io));
        assert!(hint(&error).unwrap().contains("--mqtt-ca"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(hint(&rumqttc::ConnectionError::Io(refused)), None, "not a TLS error");
    }
}
