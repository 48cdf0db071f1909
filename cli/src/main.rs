//! `sabai`: a WebSocket client and server that show their frames, a frame
//! inspector and the Sec-WebSocket-Accept computation: RFC 6455 to run and
//! watch. See docs/tour.md.

mod accept;
mod adapter;
mod connect;
mod decode;
mod explain;
mod hex;
mod inspect;
mod serve;
mod tls;
mod trace;
mod url;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::adapter::Role;

/// Any transport: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Parser)]
#[command(
    name = "sabai",
    version,
    about = "WebSocket (RFC 6455) to run and watch: client, server, frame inspector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to a ws:// or wss:// URL: each stdin line is sent as a text
    /// message; received messages are printed (binary as hex). Commands:
    /// /ping [TEXT], /close [CODE [REASON]]; //x sends "/x".
    Connect {
        url: String,
        /// Print every byte both ways: the handshake, then each frame's fields.
        #[arg(long)]
        trace: bool,
        /// Stdin lines are hex, sent as binary messages.
        #[arg(long)]
        binary: bool,
        /// Close after receiving N messages (then stdin's end does not close).
        #[arg(short = 'n', value_name = "N")]
        count: Option<u64>,
        /// Seconds for TCP, TLS and the opening handshake together.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        timeout: f64,
        /// The handshake's Sec-WebSocket-Key (base64 of 16 bytes), for a
        /// reproducible trace. Default: random, as RFC 6455 §4.1 requires.
        #[arg(long, value_name = "BASE64")]
        key: Option<String>,
        /// Mask every frame with this 4-byte key (8 hex digits), for a
        /// reproducible trace. Never for real traffic: §10.3 wants a fresh
        /// unpredictable key per frame (the default).
        #[arg(long, value_name = "HEX")]
        mask_key: Option<String>,
        /// Print the round-trip time when the Pong for /ping arrives.
        #[arg(long)]
        print_ping_rtt: bool,
        /// Offer permessage-deflate (RFC 7692).
        #[arg(long)]
        deflate: bool,
        /// wss://: trust the certificates in this PEM file instead of the system's.
        #[arg(long, value_name = "PEM")]
        ca: Option<String>,
    },
    /// Serve WebSocket on ADDR (default 127.0.0.1:9001): echo each message
    /// back, or with --broadcast send it to every connection.
    Serve {
        #[arg(default_value = "127.0.0.1:9001")]
        addr: String,
        /// Send each message to every connection instead of echoing it.
        #[arg(long)]
        broadcast: bool,
        /// Print every byte both ways on every connection.
        #[arg(long)]
        trace: bool,
        /// Exit when the first connection ends.
        #[arg(long)]
        once: bool,
        /// Accept permessage-deflate (RFC 7692) when offered.
        #[arg(long)]
        deflate: bool,
        /// wss://: the certificate chain (PEM); needs --tls-key.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<String>,
        /// wss://: the private key (PEM); needs --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<String>,
    },
    /// Explain a byte stream of frames field by field, and what a sabai
    /// endpoint does with each (RFC 6455 §5). HEX, or - (the default) to read hex from stdin.
    Inspect {
        #[arg(default_value = "-", num_args = 1..)]
        hex: Vec<String>,
        /// Who sent the bytes; by default guessed from the first MASK bit.
        #[arg(long, value_enum)]
        from: Option<From>,
        /// Read stdin as raw bytes, not hex.
        #[arg(long)]
        raw: bool,
        /// As if permessage-deflate was agreed (RFC 7692).
        #[arg(long)]
        deflate: bool,
    },
    /// Compute Sec-WebSocket-Accept for a Sec-WebSocket-Key, step by step.
    Accept {
        /// The Sec-WebSocket-Key, e.g. dGhlIHNhbXBsZSBub25jZQ== (RFC 6455 §1.3).
        key: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    Client,
    Server,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Accept { key } => {
            print!("{}", accept::run(&key));
            Ok(())
        }
        Command::Inspect { hex, from, raw, deflate } => input(&hex.join(" "), raw).map(|bytes| {
            let from = from.map(|f| match f {
                From::Client => Role::Client,
                From::Server => Role::Server,
            });
            print!("{}", inspect::run(&bytes, from, deflate));
        }),
        Command::Connect {
            url,
            trace,
            binary,
            count,
            timeout,
            key,
            mask_key,
            print_ping_rtt,
            deflate,
            ca,
        } => connect_options(url, trace, binary, count, timeout, key, mask_key, print_ping_rtt, deflate, ca)
            .and_then(|opts| runtime()?.block_on(connect::run(opts))),
        Command::Serve { addr, broadcast, trace, once, deflate, tls_cert, tls_key } => {
            let tls = tls_cert.zip(tls_key);
            let opts = serve::Options { addr, broadcast, trace, once, deflate, tls };
            runtime().and_then(|rt| rt.block_on(serve::run(opts)))
        }
    };
    // Exit here: the stdin thread of `connect` may still be blocked reading.
    let code = match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("sabai: error: {message}");
            1
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `inspect`'s bytes: hex from the argument or stdin, or raw stdin.
fn input(arg: &str, raw: bool) -> Result<Vec<u8>, String> {
    let mut stdin = Vec::new();
    if arg == "-" {
        std::io::stdin().read_to_end(&mut stdin).map_err(|e| format!("reading stdin: {e}"))?;
        if raw {
            return Ok(stdin);
        }
    }
    let text = if arg == "-" { String::from_utf8_lossy(&stdin).into_owned() } else { arg.to_owned() };
    hex::parse(&text).map_err(|e| format!("inspect takes hex (or --raw bytes on stdin): {e}"))
}

#[allow(clippy::too_many_arguments)]
fn connect_options(
    url: String,
    trace: bool,
    binary: bool,
    count: Option<u64>,
    timeout: f64,
    key: Option<String>,
    mask_key: Option<String>,
    print_ping_rtt: bool,
    deflate: bool,
    ca: Option<String>,
) -> Result<connect::Options, String> {
    let key = key
        .map(|k| match BASE64.decode(&k).ok().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(nonce) => Ok(nonce),
            None => {
                Err(format!("--key {k:?}: a Sec-WebSocket-Key is base64 of exactly 16 bytes (RFC 6455 §4.1)"))
            }
        })
        .transpose()?;
    let mask_key = mask_key
        .map(|m| match hex::parse(&m).ok().and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(key) => Ok(key),
            None => Err(format!("--mask-key {m:?}: a masking key is 4 bytes, 8 hex digits (RFC 6455 §5.3)")),
        })
        .transpose()?;
    let timeout = Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| format!("--timeout {timeout}: give a positive number of seconds"))?;
    Ok(connect::Options { url, trace, binary, count, timeout, key, mask_key, print_ping_rtt, deflate, ca })
}
