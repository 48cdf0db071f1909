//! `--trace`: a transport wrapper that prints every byte that crosses it,
//! both ways: the HTTP heads verbatim (with the Sec-WebSocket-Accept
//! computation under the response), then every frame field by field. It
//! sits between the socket and the library, so it shows exactly what went
//! over the wire, cut into frames by the core's own header parser.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::decode::{Decoder, Item};
use crate::{accept, explain, hex};

/// An HTTP head longer than this is not traced line by line.
const MAX_HEAD: usize = 16 * 1024;

/// A transport, traced when a tracer is given.
pub struct Traced<S> {
    inner: S,
    tracer: Option<Tracer>,
}

impl<S> Traced<S> {
    pub fn new(inner: S, tracer: Option<Tracer>) -> Self {
        Traced { inner, tracer }
    }
}

/// The trace of one connection.
pub struct Tracer {
    /// Put before each heading: "" for connect, "#3 " for serve's third.
    label: String,
    sent: Direction,
    received: Direction,
    /// The request's Sec-WebSocket-Key, for the Accept computation.
    key: Option<String>,
    out: Arc<Mutex<dyn Write + Send>>,
}

#[derive(Default)]
struct Direction {
    /// Bytes of an HTTP head still being read; `None` once it is complete.
    head: Option<Vec<u8>>,
    /// After a non-101 response: the body, shown as it comes.
    raw: bool,
    frames: Decoder,
}

impl Tracer {
    pub fn new(label: String, out: Arc<Mutex<dyn Write + Send>>) -> Self {
        let fresh = || Direction { head: Some(Vec::new()), ..Direction::default() };
        Tracer { label, sent: fresh(), received: fresh(), key: None, out }
    }

    fn bytes(&mut self, sent: bool, data: &[u8]) {
        let mut text = String::new();
        let arrow = if sent { "-->" } else { "<--" };
        let verb = if sent { "sent" } else { "received" };
        let mut data = data;
        let dir = if sent { &mut self.sent } else { &mut self.received };
        if let Some(head) = dir.head.as_mut() {
            // Up to the end of the head's blank line, and not past it.
            let mut end = None;
            for (i, &b) in data.iter().enumerate() {
                head.push(b);
                if head.ends_with(b"\r\n\r\n") || head.len() > MAX_HEAD {
                    end = Some(i + 1);
                    break;
                }
            }
            let Some(end) = end else { return };
            data = &data[end..];
            let head = dir.head.take().unwrap_or_default();
            let (lines, key, ok) = head_lines(&head);
            let is_request = head.starts_with(b"GET ");
            let what = if is_request {
                "the opening handshake request (RFC 6455 §4.1)"
            } else {
                "the handshake response (RFC 6455 §4.2.2)"
            };
            text.push_str(&format!("{}{arrow} {verb} {what}, {} bytes:\n{lines}", self.label, head.len()));
            if is_request {
                self.key = key;
            } else if ok {
                if let Some(key) = &self.key {
                    text.push_str("    Sec-WebSocket-Accept = base64(SHA-1(key + GUID)):\n");
                    text.push_str(&accept::steps(key, "      "));
                }
            } else {
                dir.raw = true;
            }
        }
        if dir.raw && !data.is_empty() {
            let shown = String::from_utf8_lossy(data);
            text.push_str(&format!(
                "{}{arrow} {verb} {} bytes after the head: {shown:?}\n",
                self.label,
                data.len()
            ));
        } else if !data.is_empty() {
            let mut items = Vec::new();
            dir.frames.push(data, &mut items);
            for item in items {
                match item {
                    Item::Frame(frame) => {
                        let size = frame.head.len() as u64 + frame.header.len;
                        text.push_str(&format!(
                            "{}{arrow} {verb} a {} frame, {size} bytes: {}\n",
                            self.label,
                            explain::name(frame.header.opcode),
                            hex::format(&frame.head)
                        ));
                        text.push_str(&explain::frame(&frame, "    "));
                    }
                    Item::Error { head, error } => text.push_str(&format!(
                        "{}{arrow} {verb} a header that breaks the protocol: {}\n    {error}\n",
                        self.label,
                        hex::format(&head)
                    )),
                }
            }
        }
        if !text.is_empty() {
            if let Ok(mut out) = self.out.lock() {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }

    /// Says what was left half-way when the transport ended.
    fn eof(&mut self) {
        if let Some(left) = self.received.frames.leftover() {
            if let Ok(mut out) = self.out.lock() {
                let _ = writeln!(out, "{}<-- the connection ended inside a frame: {left}", self.label);
            }
        }
    }
}

/// The head's lines with their `\r\n` written out, the
/// Sec-WebSocket-Key if any, and whether it is a 101 response.
fn head_lines(head: &[u8]) -> (String, Option<String>, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = String::new();
    let mut key = None;
    for line in text.split_inclusive("\r\n") {
        let bare = line.trim_end_matches("\r\n");
        let ending = if line.ends_with("\r\n") { "\\r\\n" } else { "" };
        lines.push_str(&format!("    {}{ending}\n", bare.escape_debug()));
        if let Some((name, value)) = bare.split_once(':') {
            if name.trim().eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(value.trim().to_owned());
            }
        }
    }
    let ok = text.starts_with("HTTP/1.1 101");
    (lines, key, ok)
}

impl<S: AsyncRead + Unpin> AsyncRead for Traced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(tracer)) = (&result, this.tracer.as_mut()) {
            let new = &buf.filled()[before..];
            if new.is_empty() {
                tracer.eof();
            } else {
                tracer.bytes(false, new);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Traced<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let (Poll::Ready(Ok(n)), Some(tracer)) = (&result, this.tracer.as_mut()) {
            tracer.bytes(true, &data[..*n]);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
