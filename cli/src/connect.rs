//! `sabai connect URL`: stdin lines out as messages, messages in to
//! stdout, until a close; every failure is a sentence and exit status 1.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sabai::handshake::Response;
use sabai::{DeflateConfig, Error, MessageKind, State, WebSocket, WebSocketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::adapter::{
    connection, ClientHandshake, ClientRequest, CloseCode, Event, HandshakeError, Message, Role,
};
use crate::trace::{Traced, Tracer};
use crate::url::WsUrl;
use crate::{explain, hex, tls, Io};

/// What `connect` was asked to do.
pub struct Options {
    pub url: String,
    pub trace: bool,
    pub binary: bool,
    pub count: Option<u64>,
    pub timeout: Duration,
    pub key: Option<[u8; 16]>,
    pub mask_key: Option<[u8; 4]>,
    pub print_ping_rtt: bool,
    pub deflate: bool,
    pub ca: Option<String>,
}

type Ws = WebSocket<Traced<Box<dyn Io>>>;

/// Runs a session; `Err` is the message for a failed one.
pub async fn run(opts: Options) -> Result<(), String> {
    let url = WsUrl::parse(&opts.url)?;
    let mut config = WebSocketConfig::default();
    if opts.deflate {
        config.protocol.deflate = Some(DeflateConfig::default());
    }
    let ws = match tokio::time::timeout(opts.timeout, open(&url, &opts, &config)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(format!(
                "no WebSocket after {:?} (--timeout): the TCP connection, TLS or the server's handshake response stalled",
                opts.timeout
            ))
        }
    };
    session(ws, &opts).await
}

/// TCP, TLS for wss://, then the opening handshake.
async fn open(url: &WsUrl, opts: &Options, config: &WebSocketConfig) -> Result<Ws, String> {
    // A bad --ca is a usage error: said before any connection is tried.
    let tls_config = match url.secure {
        true => Some(tls::client_config(opts.ca.as_deref())?),
        false => None,
    };
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", url.host, url.port))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls_config {
        Some(tls_config) => Box::new(tls::connect(tcp, &url.host, tls_config).await?),
        None => Box::new(tcp),
    };
    let tracer = opts.trace.then(|| Tracer::new(String::new(), Arc::new(Mutex::new(std::io::stderr()))));
    let mut stream = Traced::new(io, tracer);
    let mut request = ClientRequest::new(url.host_header.clone(), url.resource.clone());
    if let Some(deflate) = &config.protocol.deflate {
        request = request.permessage_deflate(deflate.clone());
    }
    // RFC 6455 §4.1 item 7: a random nonce, unless --key fixes it for a
    // reproducible trace.
    let mut handshake = ClientHandshake::new(request, opts.key.unwrap_or_else(rand::random));
    let request = handshake.request_bytes().map_err(|e| format!("cannot write the request: {e}"))?;
    stream.write_all(&request).await.map_err(|e| format!("sending the handshake failed: {e}"))?;
    let mut buf = Vec::new();
    let (response, head_len) = loop {
        match handshake.parse_response(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(HandshakeError::UnexpectedStatus(status)) => {
                return Err(refused(&mut stream, buf, status).await)
            }
            Err(e) => return Err(format!("the server's handshake response is not acceptable: {e}")),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the handshake response: {e}"))?;
        if n == 0 {
            return Err(format!(
                "the server closed the connection during the opening handshake, after {} bytes of response",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Ok(websocket(stream, &response, &buf[head_len..], opts, config))
}

/// The connection after the 101, holding the bytes that came with it.
fn websocket(
    stream: Traced<Box<dyn Io>>,
    response: &Response,
    rest: &[u8],
    opts: &Options,
    config: &WebSocketConfig,
) -> Ws {
    let mut conn = connection(Role::Client, config.protocol.clone(), rand::random(), opts.mask_key);
    if let Some(params) = response.deflate() {
        conn = conn.with_deflate(params);
    }
    conn.receive(rest);
    WebSocket::from_connection(stream, conn)
}

/// The message for a non-101 answer, with its status line and body (read
/// for at most a second, up to 4 KiB).
async fn refused(stream: &mut Traced<Box<dyn Io>>, mut buf: Vec<u8>, status: u16) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut chunk = [0u8; 1024];
        while buf.len() < 4096 {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
            if body_complete(&buf) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.trim()).unwrap_or_default();
    let body = if body.is_empty() { String::new() } else { format!("\n  body: {body}") };
    format!("the server refused the WebSocket with HTTP {status} ({status_line}){body}")
}

/// Whether the head and a body of its Content-Length have arrived.
fn body_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|n| body.len() >= n)
}

/// A line of stdin, or why it could not be read.
type Line = Result<String, String>;

/// stdin on its own thread: a blocking read never holds the runtime open.
fn stdin_lines() -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("reading stdin: {e}")));
                    return;
                }
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            let line =
                String::from_utf8(line).map_err(|_| "a line of stdin is not UTF-8: skipped".to_owned());
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn session(mut ws: Ws, opts: &Options) -> Result<(), String> {
    let mut lines = stdin_lines();
    let mut reading = true;
    let mut received = 0u64;
    let mut ping_at: Option<Instant> = None;
    // A /close with any code is ours: its echo is no failure.
    let mut we_closed = false;
    let done = |n: u64| opts.count.is_some_and(|max| n >= max);
    loop {
        tokio::select! {
            line = lines.recv(), if reading => match line {
                // stdin ended: close, unless -n still waits for messages.
                None => {
                    reading = false;
                    if opts.count.is_none() && ws.state() == State::Open {
                        ws.start_close(CloseCode::NORMAL, "").map_err(failure)?;
                    }
                }
                Some(Err(e)) => eprintln!("sabai: {e}"),
                Some(Ok(line)) => {
                    if command(&mut ws, &line, opts, &mut ping_at).await? {
                        reading = false;
                        we_closed = true;
                    }
                }
            },
            event = ws.recv_event() => match event.map_err(failure)? {
                // -n N: what arrives after the Nth message (already on its
                // way when we closed) is not printed.
                Some(Event::Message(_)) if done(received) => {}
                Some(Event::Message(message)) => {
                    print(&message);
                    received += 1;
                    if done(received) && ws.state() == State::Open {
                        reading = false;
                        ws.start_close(CloseCode::NORMAL, "").map_err(failure)?;
                    }
                }
                Some(Event::Pong(_)) => {
                    if let (true, Some(at)) = (opts.print_ping_rtt, ping_at.take()) {
                        eprintln!("pong after {:.3} ms", at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                // Pings are answered by the core; a Close ends the loop with None next.
                Some(_) => {}
                None => break,
            }
        }
    }
    closed(&ws, we_closed)
}

/// One line typed: a command or a message. True when it started the close.
async fn command(
    ws: &mut Ws,
    line: &str,
    opts: &Options,
    ping_at: &mut Option<Instant>,
) -> Result<bool, String> {
    if ws.state() != State::Open {
        return Ok(true);
    }
    if let Some(payload) = line.strip_prefix("/ping") {
        *ping_at = Some(Instant::now());
        ws.ping(payload.trim().as_bytes()).await.map_err(failure)?;
        return Ok(false);
    }
    if let Some(args) = line.strip_prefix("/close") {
        let mut args = args.trim().splitn(2, ' ');
        let code = match args.next().filter(|c| !c.is_empty()) {
            None => CloseCode::NORMAL,
            Some(c) => match c.parse::<u16>() {
                Ok(c) => CloseCode(c),
                Err(_) => {
                    eprintln!("sabai: /close CODE REASON: {c:?} is not a code (1000, 4000, ...)");
                    return Ok(false);
                }
            },
        };
        return match ws.start_close(code, args.next().unwrap_or("")) {
            Ok(()) => Ok(true),
            Err(e) => {
                eprintln!("sabai: cannot close like that: {e}");
                Ok(false)
            }
        };
    }
    // "//x" sends "/x": a way to send a message that starts with a slash.
    let line = line.strip_prefix('/').filter(|l| l.starts_with('/')).unwrap_or(line);
    let message = if opts.binary {
        match hex::parse(line) {
            Ok(bytes) => Message::binary(bytes),
            Err(e) => {
                eprintln!("sabai: --binary takes hex: {e}");
                return Ok(false);
            }
        }
    } else {
        Message::text(line)
    };
    ws.send(message).await.map_err(failure)?;
    Ok(false)
}

/// A received message on stdout: text as is, binary as hex.
fn print(message: &Message) {
    let mut out = std::io::stdout().lock();
    let _ = match message.kind() {
        MessageKind::Text => writeln!(out, "{}", message.as_text().unwrap_or_default()),
        MessageKind::Binary => writeln!(out, "{}", hex::format(message.as_bytes())),
    };
}

/// The end of a session: the server's Close code, and whether it is a
/// failure for the exit status (a code other than 1000 or 1001 that we
/// did not ask for).
fn closed(ws: &Ws, we_closed: bool) -> Result<(), String> {
    match ws.close_frame() {
        None => {
            eprintln!("closed: the server's Close had no code (1005)");
            Ok(())
        }
        Some(frame) => {
            let (code, reason) = (frame.code.0, &frame.reason);
            let line = format!("closed: {code} ({}) {reason:?}", explain::close_name(code));
            if code == 1000 || code == 1001 || we_closed {
                eprintln!("{line}");
                Ok(())
            } else {
                Err(format!("the server {line}"))
            }
        }
    }
}

/// An error of an open connection, in words.
fn failure(e: Error) -> String {
    match e {
        Error::AbnormalClosure => {
            format!("the server ended the connection without a Close frame (1006): {e}")
        }
        Error::Protocol(e) => {
            format!("protocol error by the server: {e}; we closed with {}", e.close_code().0)
        }
        Error::Timeout(_) => "the server did not answer our Close in time".into(),
        Error::Io(e) => format!("connection lost: {e}"),
        other => other.to_string(),
    }
}
