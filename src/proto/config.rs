//! Role and limits of a connection.

/// Which end of the connection we are. It decides masking (RFC 6455 §5.1)
/// and who closes the TCP connection first (§7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that opened the connection: it masks every frame it sends (§5.3).
    Client,
    /// The end that accepted it: it never masks, and closes TCP first (§7.1.1).
    Server,
}

/// Protocol limits and sending options.
///
/// ```
/// let mut config = sabai::Config::default();
/// config.max_message_size = 1 << 20; // 1 MiB
/// config.max_send_frame_size = Some(64 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted, checked on the header before any of
    /// the payload is buffered (RFC 6455 §10.4). Over it: close 1009.
    pub max_frame_size: usize,
    /// Largest message accepted, summed over its fragments and checked on
    /// each header before buffering. Over it: close 1009. For a compressed
    /// message it bounds the inflated size, checked while inflating.
    pub max_message_size: usize,
    /// Outgoing messages longer than this are sent as several frames of at
    /// most this many payload bytes (RFC 6455 §5.4). `None` (the default)
    /// sends each message as one frame.
    pub max_send_frame_size: Option<usize>,
    /// permessage-deflate (RFC 7692): what to offer (client) or accept
    /// (server). `None` (the default): no compression is negotiated.
    #[cfg(feature = "deflate")]
    pub deflate: Option<super::deflate::DeflateConfig>,
}

/// 16 MiB: the largest message Autobahn's limits cases (9.x) send.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_frame_size: None,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}
