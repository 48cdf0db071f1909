//! The limits and sending options of a connection.

use std::time::Duration;

/// Protocol limits, sending options and the close timeout.
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
    /// How long closing may take, from our Close (or the peer's, or a
    /// failure) until the transport is closed (default 5 s). RFC 6455
    /// §7.1.1 leaves it to us; the connection counts it on the clock its
    /// driver gives ([`Connection::handle_timeout`](crate::Connection::handle_timeout)).
    pub close_timeout: Duration,
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
            close_timeout: Duration::from_secs(5),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}

/// What a connection keeps of its [`Config`]: the limits it checks, how it
/// sends, its close timeout, and how it would compress. Smaller than a
/// `Config`, so that the connection keeps room for its state within the
/// allocation size an idle connection had before (see BENCHMARKS.md, idle
/// memory).
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub(super) max_frame_size: usize,
    pub(super) max_message_size: usize,
    /// At least 1; `usize::MAX` when messages are not split.
    pub(super) max_send_frame_size: usize,
    pub(super) close_timeout: Duration,
    /// [`DeflateConfig::level`](crate::DeflateConfig::level), for a
    /// compressor made once permessage-deflate is agreed.
    #[cfg(feature = "deflate")]
    pub(super) deflate_level: u32,
    /// [`DeflateConfig::threshold`](crate::DeflateConfig::threshold),
    /// saturated at `u32::MAX` (a message that long is never compressed).
    #[cfg(feature = "deflate")]
    pub(super) deflate_threshold: u32,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        #[cfg(feature = "deflate")]
        let deflate = config.deflate.clone().unwrap_or_default();
        Settings {
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
            max_send_frame_size: config.max_send_frame_size.unwrap_or(usize::MAX).max(1),
            close_timeout: config.close_timeout,
            #[cfg(feature = "deflate")]
            deflate_level: deflate.level,
            #[cfg(feature = "deflate")]
            deflate_threshold: u32::try_from(deflate.threshold).unwrap_or(u32::MAX),
        }
    }
}
