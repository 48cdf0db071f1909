//! # sabai
//!
//! The WebSocket protocol (RFC 6455), written from the RFC: a sans-IO core
//! ([`Connection`], [`handshake`]) and, with the default `tokio` feature, an
//! async layer ([`WebSocket`]) that moves its bytes; with the `rustls`
//! feature, [`connect`] speaks `wss://` too.
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
