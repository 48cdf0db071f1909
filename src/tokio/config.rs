//! [`WebSocketConfig`]: the settings of the async layer.

use std::time::Duration;

use crate::handshake::HandshakeLimits;
use crate::Config;

/// Settings of the async layer: the protocol's settings (limits, the close
/// timeout), the opening handshake's limits and its time limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Frame and message limits, auto-fragmentation, the close timeout,
    /// permessage-deflate.
    pub protocol: Config,
    /// Size and header-count limits of the opening handshake.
    pub handshake: HandshakeLimits,
    /// The whole opening handshake, from the first byte to the 101 (default
    /// 10 s); for `connect`, from the TCP connection through TLS to the 101.
    pub handshake_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            protocol: Config::default(),
            handshake: HandshakeLimits::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
