//! The parts of a `ws://` or `wss://` URL (RFC 6455 §3) the tool needs.

#[derive(Debug, PartialEq, Eq)]
pub struct WsUrl {
    pub secure: bool,
    /// The host as written, for the Host field and SNI (brackets removed).
    pub host: String,
    pub port: u16,
    /// Path and query: the request target.
    pub resource: String,
    /// The Host field: host, and `:port` when not the scheme's default (§4.1).
    pub host_header: String,
}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let bad = |why: &str| format!("bad URL {url:?}: {why}");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it needs ws:// or wss://"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad("the scheme must be ws or wss")),
        };
        if rest.contains('#') {
            return Err(bad("a fragment (#...) is not allowed in a WebSocket URL (RFC 6455 §3)"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        let resource = match resource {
            "" => "/".to_owned(),
            r if r.starts_with('?') => format!("/{r}"),
            r => r.to_owned(),
        };
        let default = if secure { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?)
            }
            _ => (authority, default),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host_header = if port == default { host.to_owned() } else { format!("{host}:{port}") };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(WsUrl { secure, host, port, resource, host_header })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_port_and_resource() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/chat?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.resource.as_str()), ("127.0.0.1", 9001, "/chat?x=1"));
        assert_eq!(u.host_header, "127.0.0.1:9001");
        let u = WsUrl::parse("wss://example.com").unwrap();
        assert_eq!(
            (u.secure, u.port, u.resource.as_str(), u.host_header.as_str()),
            (true, 443, "/", "example.com")
        );
        let u = WsUrl::parse("ws://[::1]:80?q").unwrap();
        assert_eq!((u.host.as_str(), u.resource.as_str(), u.host_header.as_str()), ("::1", "/?q", "[::1]"));
    }

    #[test]
    fn refuses_what_is_not_a_websocket_url() {
        assert!(WsUrl::parse("http://example.com").unwrap_err().contains("ws or wss"));
        assert!(WsUrl::parse("example.com").unwrap_err().contains("ws:// or wss://"));
        assert!(WsUrl::parse("ws://h/#f").unwrap_err().contains("fragment"));
        assert!(WsUrl::parse("ws://h:99999/").unwrap_err().contains("port"));
        assert!(WsUrl::parse("ws:///x").unwrap_err().contains("no host"));
    }
}
