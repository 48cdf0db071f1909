//! Which end of a connection we are.

/// Which end of the connection we are. It decides masking (RFC 6455 §5.1)
/// and who closes the TCP connection first (§7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}
