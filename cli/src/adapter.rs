//! Everything the tool takes from the library's sans-IO core, in one place:
//! when the core's names change, this file changes and the rest of the tool
//! does not.

pub use sabai::handshake::{accept_key, ClientHandshake, ClientRequest, HandshakeError, WEBSOCKET_GUID};
pub use sabai::proto::{apply_mask, FrameHeader, OpCode};
pub use sabai::{CloseCode, Config, Connection, DeflateParams, Ending, Event, Message, ProtocolError, Role};

/// A connection for `role`; a client's masks come from `seed`, or are all
/// `fixed` (`--mask-key`, for reproducible traces).
pub fn connection(role: Role, config: Config, seed: [u8; 32], fixed: Option<[u8; 4]>) -> Connection {
    match (role, fixed) {
        (Role::Server, _) => Connection::server(config),
        (Role::Client, None) => Connection::client(config, seed),
        (Role::Client, Some(key)) => Connection::client(config, seed).with_fixed_mask_key(key),
    }
}

/// Parses one frame header at the start of `buf`: `Ok(None)` when more
/// bytes are needed, else the header and its size.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    FrameHeader::parse(buf)
}
