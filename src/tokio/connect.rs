//! Opening a WebSocket from a URL: `ws://` over TCP, `wss://` over TLS
//! (feature `rustls`), then the client's opening handshake.

#[cfg(feature = "rustls")]
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::config::WebSocketConfig;
use super::error::{Error, TimeoutKind};
use super::handshake::client_handshake;
use super::stream::MaybeTlsStream;
#[cfg(feature = "rustls")]
use super::tls::{self, refused_late};
use super::WebSocket;
use crate::handshake::ClientRequest;

/// Connects to a `ws://` or `wss://` URL, with the default configuration.
///
/// ```no_run
/// # async fn demo() -> Result<(), sabai::Error> {
/// let mut ws = sabai::connect("ws://127.0.0.1:9001/chat").await?;
/// ws.send(sabai::Message::text("hello")).await?;
/// let reply = ws.recv().await?;
/// ws.close(sabai::CloseCode::NORMAL, "done").await?;
/// # Ok(()) }
/// ```
///
/// `wss://` needs the `rustls` feature (see [`connect_with`]); without it,
/// a `wss://` URL is an [`Error::Url`]. Cancel safety: not cancel-safe
/// (dropping it drops the connection being opened).
pub async fn connect(url: &str) -> Result<WebSocket<MaybeTlsStream>, Error> {
    connect_with(url, &WebSocketConfig::default(), |request| request).await
}

/// Like [`connect`], with a configuration and a chance to add subprotocols
/// or headers to the request.
///
/// The URL's parts (RFC 6455 §3): host, port (80 for `ws://`, 443 for
/// `wss://` when none is given) and the resource (path and query; no
/// fragment). The request's Host field is the host, plus `:port` when the
/// port is not the scheme's default (§4.1).
///
/// For `wss://` (feature `rustls`), TLS runs over the TCP connection before
/// the opening handshake (§4.1 step 5), with the host name in SNI and the
/// server's certificate verified against the system's trusted roots and
/// that name. A failure there is an `Error::Tls`, and nothing of the
/// WebSocket handshake has been sent. The first `wss://` connection of the
/// process reads the system's roots (rustls-native-certs, which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`; a few milliseconds); later ones
/// share them. For a private CA or a client certificate, see
/// `connect_tls`.
///
/// Everything, from the TCP connection through TLS to the 101, must finish
/// within [`WebSocketConfig::handshake_timeout`], or the result is
/// [`Error::Timeout`]`(`[`TimeoutKind::Handshake`]`)`.
///
/// Cancel safety: not cancel-safe (dropping it drops the connection being
/// opened; nothing else is lost).
pub async fn connect_with(
    url: &str,
    config: &WebSocketConfig,
    customize: impl FnOnce(ClientRequest) -> ClientRequest,
) -> Result<WebSocket<MaybeTlsStream>, Error> {
    let target = WsUrl::parse(url)?;
    let tls = match target.secure {
        false => None,
        #[cfg(feature = "rustls")]
        true => Some(tls::default_config()?),
        #[cfg(not(feature = "rustls"))]
        true => {
            return Err(Error::Url(format!(
                "wss:// needs sabai's `rustls` feature (or open the TLS stream yourself and use \
                 sabai::client): {url:?}"
            )))
        }
    };
    open(target, config, tls, customize).await
}

/// Like [`connect_with`] for a `wss://` URL, with your own rustls
/// configuration: a private CA in its roots, a client certificate, other
/// protocol versions. A `ws://` URL is refused ([`Error::Url`]) rather than
/// sent in the clear.
///
/// Build the configuration with an explicit provider, as sabai does, so
/// that it never depends on rustls' process-wide default:
///
/// ```no_run
/// use std::sync::Arc;
/// use sabai::rustls::{crypto::ring, pki_types::CertificateDer, ClientConfig, RootCertStore};
///
/// # async fn demo(ca: CertificateDer<'static>) -> Result<(), Box<dyn std::error::Error>> {
/// let mut roots = RootCertStore::empty();
/// roots.add(ca)?;
/// let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
///     .with_safe_default_protocol_versions()?
///     .with_root_certificates(roots)
///     .with_no_client_auth();
/// let config = sabai::WebSocketConfig::default();
/// let ws = sabai::connect_tls("wss://internal.example:8443/feed", &config, Arc::new(tls), |r| r).await?;
/// # Ok(()) }
/// ```
///
/// The configuration is used as given (its ALPN list too: leave it empty
/// or offer `http/1.1`, never only `h2`). Cancel safety: not cancel-safe
/// (dropping it drops the connection being opened).
#[cfg(feature = "rustls")]
pub async fn connect_tls(
    url: &str,
    config: &WebSocketConfig,
    tls: Arc<rustls::ClientConfig>,
    customize: impl FnOnce(ClientRequest) -> ClientRequest,
) -> Result<WebSocket<MaybeTlsStream>, Error> {
    let target = WsUrl::parse(url)?;
    if !target.secure {
        return Err(Error::Url(format!("connect_tls needs a wss:// URL: {url:?}")));
    }
    open(target, config, Some(tls), customize).await
}

/// The TLS configuration of a `wss://` connection; without TLS, a type
/// with no value.
#[cfg(feature = "rustls")]
type TlsConfig = Arc<rustls::ClientConfig>;
#[cfg(not(feature = "rustls"))]
type TlsConfig = std::convert::Infallible;

/// TCP, then TLS when given a configuration, then the opening handshake,
/// all within the handshake timeout.
async fn open(
    target: WsUrl,
    config: &WebSocketConfig,
    tls: Option<TlsConfig>,
    customize: impl FnOnce(ClientRequest) -> ClientRequest,
) -> Result<WebSocket<MaybeTlsStream>, Error> {
    let request = customize(ClientRequest::new(target.host_header(), target.resource.clone()));
    let handshake = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => MaybeTlsStream::Plain(tcp),
            #[cfg(feature = "rustls")]
            Some(tls) => MaybeTlsStream::Tls(Box::new(tls::handshake(tcp, &target.host, tls).await?)),
            #[cfg(not(feature = "rustls"))]
            Some(never) => match never {},
        };
        // A TLS 1.3 server checks a client certificate after the client has
        // finished its side of the TLS handshake: a refusal arrives here.
        client_handshake(stream, request, config).await.map_err(refused_late)
    };
    // Boxed, as in `accept_with`: the handshake's state (rustls' included)
    // is on the heap only while it runs.
    let (ws, _) = Box::pin(timeout(config.handshake_timeout, handshake))
        .await
        .unwrap_or(Err(Error::Timeout(TimeoutKind::Handshake)))?;
    Ok(ws)
}

/// Without TLS, no error of the opening handshake comes from TLS.
#[cfg(not(feature = "rustls"))]
fn refused_late(error: Error) -> Error {
    error
}

/// The parts of a `ws://` or `wss://` URL (RFC 6455 §3).
#[derive(Debug, PartialEq, Eq)]
struct WsUrl {
    /// `wss://`: TLS first.
    secure: bool,
    host: String,
    port: u16,
    /// Path and query: the request target.
    resource: String,
}

impl WsUrl {
    fn parse(url: &str) -> Result<WsUrl, Error> {
        let bad = |why: &str| Error::Url(format!("{why}: {url:?}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let secure = match scheme {
            s if s.eq_ignore_ascii_case("ws") => false,
            s if s.eq_ignore_ascii_case("wss") => true,
            _ => return Err(bad("scheme must be ws or wss")),
        };
        // RFC 6455 §3: fragment identifiers are meaningless here and MUST NOT be used.
        if rest.contains('#') {
            return Err(bad("fragment identifiers are not allowed (RFC 6455 §3)"));
        }
        let (authority, resource) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("invalid port"))?)
            }
            _ => (authority, default_port(secure)),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(WsUrl { secure, host: host.to_owned(), port, resource })
    }

    /// The Host field: the port only when it is not the scheme's default
    /// (RFC 6455 §4.1 item 4).
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default_port(self.secure) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// RFC 6455 §3: port 80 for `ws`, 443 for `wss`.
fn default_port(secure: bool) -> u16 {
    if secure {
        443
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> WsUrl {
        WsUrl::parse(s).unwrap()
    }

    #[test]
    fn parses_ws_urls() {
        let u = url("ws://127.0.0.1:9001/runCase?case=1&agent=sabai");
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("127.0.0.1", 9001, "/runCase?case=1&agent=sabai")
        );
        assert_eq!(u.host_header(), "127.0.0.1:9001");
        let u = url("ws://example.com");
        assert_eq!((u.port, u.resource.as_str(), u.host_header().as_str()), (80, "/", "example.com"));
        let u = url("ws://example.com?x=1");
        assert_eq!(u.resource, "/?x=1");
        let u = url("ws://[::1]:8080/a");
        assert_eq!((u.host.as_str(), u.port, u.host_header().as_str()), ("::1", 8080, "[::1]:8080"));
        assert!(!u.secure);
    }

    /// RFC 6455 §3: `wss` defaults to port 443, and §4.1 leaves the default
    /// port out of Host.
    #[test]
    fn parses_wss_urls_with_port_443_by_default() {
        let u = url("wss://example.com/feed");
        assert!(u.secure);
        assert_eq!((u.port, u.resource.as_str(), u.host_header().as_str()), (443, "/feed", "example.com"));
        let u = url("WSS://example.com:8443");
        assert_eq!((u.port, u.host_header().as_str()), (8443, "example.com:8443"));
        // 80 is not the default for wss, nor 443 for ws.
        assert_eq!(url("wss://example.com:80/").host_header(), "example.com:80");
        assert_eq!(url("ws://example.com:443/").host_header(), "example.com:443");
    }

    #[test]
    fn refuses_unusable_urls() {
        for bad in [
            "http://x/",
            "https://x/",
            "example.com",
            "ws://x/#frag",
            "wss://x/#f",
            "ws://:80/",
            "ws://x:99999/",
            "ws://u@x/",
        ] {
            assert!(matches!(WsUrl::parse(bad), Err(Error::Url(_))), "{bad}");
        }
    }

    /// Without TLS, a wss:// URL is a clear error, and nothing is connected.
    #[cfg(not(feature = "rustls"))]
    #[tokio::test]
    async fn wss_without_the_rustls_feature_is_a_url_error() {
        let error = connect("wss://127.0.0.1:9/").await.unwrap_err();
        assert!(matches!(&error, Error::Url(why) if why.contains("rustls")), "{error}");
    }

    /// connect_tls never falls back to plain TCP.
    #[cfg(feature = "rustls")]
    #[tokio::test]
    async fn connect_tls_refuses_a_ws_url() {
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let tls = Arc::new(tls);
        let error =
            connect_tls("ws://127.0.0.1:9/", &WebSocketConfig::default(), tls, |r| r).await.unwrap_err();
        assert!(matches!(&error, Error::Url(why) if why.contains("wss://")), "{error}");
    }
}
