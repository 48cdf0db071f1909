//! # sabai
//!
//! The WebSocket protocol (RFC 6455, and permessage-deflate, RFC 7692),
//! written from the RFCs to be read as well as used. The protocol is a
//! sans-IO core: bytes in, events out, bytes to send out, with no sockets,
//! clock or OS randomness inside. With the default `tokio` feature, an
//! async layer moves those bytes over any `AsyncRead + AsyncWrite`.
//!
//! ## The layers
//!
//! Data flows down on receive and up on send:
//!
//! ```text
//!  your application          handler, examples/, the hub's rooms
//!  ──────────────────────────────────────────────────────────────────────
//!  hub (feature "hub")       rooms, fan-out, slow consumers       crate::hub
//!  tokio (default feature)   WebSocket<S>: the only code that     WebSocket, accept,
//!                            awaits; moves bytes, runs timers     connect, client
//!  ──────────────────────────────────────────────────────────────────────
//!  handshake   (sans-IO)     HTTP/1.1 Upgrade, Sec-WebSocket-     crate::handshake
//!                            Accept, 101 or 4xx (RFC 6455 §4)
//!  proto       (sans-IO)     frames, masking, fragments, UTF-8,   crate::proto,
//!                            close, deflate (§5–§8, RFC 7692)     Connection
//! ```
//!
//! `proto` and `handshake` build with `--no-default-features`: that is the
//! whole protocol, embeddable in any runtime and fuzzable without mocks.
//!
//! ## Where to start reading
//!
//! 1. [`proto::FrameHeader`]: the §5.2 bit diagram and the three length
//!    encodings, with the RFC's own bytes.
//! 2. [`Connection`]: one connection's state machine, and a complete
//!    exchange between two of them (handshake, masked "Hello", Ping and
//!    Pong, close) with every byte checked.
//! 3. [`handshake`]: [`handshake::ClientHandshake`] and
//!    [`handshake::ServerHandshake`], the opening handshake as a pure
//!    function of the bytes; [`handshake::HandshakeError`] says which §4 rule failed.
//! 4. [`ProtocolError`]: one variant per rule a peer can break, each with
//!    its section and its close code (1002, 1007, 1009).
//! 5. [`WebSocket`] (feature `tokio`): the same [`Connection`] driven by a
//!    socket; [`connect`] and [`accept`] open one.
//!
//! Beside the code: `SPEC_NOTES.md` maps every requirement of the RFCs to
//! the code that enforces it and the test that shows it, `docs/tour.md`
//! walks through the protocol byte by byte, and the `sabai` command-line
//! tool (`cli/`) prints every frame of a live connection with `--trace`.
//!
//! ## Features
//!
//! - `tokio` (default): [`WebSocket`], [`connect`], [`accept`].
//! - `deflate` (default): permessage-deflate, off until
//!   [`Config::deflate`] is set.
//! - `rustls`: `wss://` in [`connect`], through rustls with `ring`.
//! - `hyper`: upgrades from hyper 1.x and axum servers (`sabai::hyper`).
//! - `hub`: rooms and fan-out for many connections (`sabai::hub`).
//!
//! ## Where each item lives
//!
//! Every item has one path. The crate root holds the connection and the
//! types its user names: the sans-IO [`Connection`] with its messages,
//! events, settings and errors, and the async layer ([`WebSocket`],
//! [`accept`], [`connect`], [`Error`]). The modules hold the rest:
//! [`handshake`] (the opening handshake, sans-IO), [`proto`] (frame headers,
//! masking, UTF-8 validation), `hub` (the room hub, feature `hub`) and
//! `hyper` (upgrades from hyper and axum, feature `hyper`).
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

pub mod handshake;
pub mod proto;

pub use proto::buffers::Buffers;
pub use proto::close::{CloseCode, CloseFrame};
pub use proto::config::Config;
pub use proto::connection::{Connection, Directive, Ending, State};
#[cfg(feature = "deflate")]
pub use proto::deflate::{DeflateConfig, DeflateParams};
pub use proto::error::{ProtocolError, SendError};
pub use proto::message::{Event, Message, MessageKind};
pub use proto::prepared::PreparedMessage;
pub use proto::role::Role;

#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tokio")]
pub use crate::tokio::{
    accept, accept_with, client, connect, connect_with, Error, MaybeTlsStream, ReadHalf, TimeoutKind,
    WebSocket, WebSocketConfig, WriteHalf,
};
#[cfg(feature = "rustls")]
pub use crate::tokio::{connect_tls, TlsError};
/// The rustls that `wss://` runs on (feature `rustls`), for building your
/// own `ClientConfig` for [`connect_tls`] with the same version.
#[cfg(feature = "rustls")]
pub use rustls;

#[cfg(feature = "hyper")]
pub use crate::tokio::hyper;

#[cfg(feature = "hub")]
pub mod hub;

// The README's examples compile and run as doctests (its axum example
// needs the hyper feature; `cargo test` at the root has it, through hub/).
#[cfg(all(doctest, feature = "tokio", feature = "deflate", feature = "hyper"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
