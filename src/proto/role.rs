//! Which end of a connection we are.

/// Which end of the connection we are. It decides masking (RFC 6455 §5.1)
/// and who closes the TCP connection first (§7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that opened the connection: it masks every frame it sends (§5.3).
    Client,
    /// The end that accepted it: it never masks, and closes TCP first (§7.1.1).
    Server,
}
