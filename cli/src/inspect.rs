//! `sabai inspect`: a byte stream of frames explained field by field, and
//! judged by the library's own `Connection` in the reader's role, so every
//! verdict (a delivered message, a queued reply, a violation and its close
//! code) is the one a sabai endpoint would reach.

use crate::adapter::{
    connection, Config, Connection, DeflateParams, Ending, Event, Message, OpCode, ProtocolError, Role,
};
use crate::decode::{Decoder, Item, PREVIEW};
use crate::{explain, hex};

/// `inspect`'s output for `bytes`, sent by `from` (or guessed from the
/// first frame's MASK bit), with permessage-deflate agreed if `deflate`.
pub fn run(bytes: &[u8], from: Option<Role>, deflate: bool) -> String {
    let mut out = String::new();
    if bytes.is_empty() {
        return "no bytes to read\n".into();
    }
    let sender = from.unwrap_or_else(|| {
        let masked = bytes.get(1).is_some_and(|b| b & 0x80 != 0);
        let sender = if masked { Role::Client } else { Role::Server };
        out.push_str(&format!(
            "(no --from: the first frame is {}masked, so these are a {}'s bytes)\n",
            if masked { "" } else { "not " },
            who(sender)
        ));
        sender
    });
    let reader = match sender {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    out.push_str(&format!(
        "{} bytes from a {}, read as a {} reads them{}\n",
        bytes.len(),
        who(sender),
        who(reader),
        if deflate { ", permessage-deflate agreed" } else { "" }
    ));
    let mut conn = connection(reader, Config::default(), [0; 32], None);
    if deflate {
        conn = conn.with_deflate(DeflateParams::default());
    }
    let mut items = Vec::new();
    let mut decoder = Decoder::default();
    decoder.push(bytes, &mut items);
    let mut at = 0;
    for (n, item) in items.iter().enumerate() {
        out.push('\n');
        match item {
            Item::Frame(frame) => {
                let size = frame.head.len() + frame.header.len as usize;
                let payload = match frame.payload.is_empty() {
                    true => String::new(),
                    false => format!(" | {}", hex::format(&frame.payload)),
                };
                let cut = if frame.payload.len() < frame.header.len as usize { " …" } else { "" };
                out.push_str(&format!(
                    "frame {}, bytes {}-{}: {}{payload}{cut}\n",
                    n + 1,
                    at,
                    at + size - 1,
                    hex::format(&frame.head),
                ));
                out.push_str(&explain::frame(frame, "  "));
                if conn_done(&conn) {
                    out.push_str("  → not read: the connection is closed (§5.5.1: nothing after a Close)\n");
                } else {
                    conn.receive(&bytes[at..at + size]);
                    if !verdict(&mut conn, reader, frame.header.fin, frame.header.opcode, &mut out) {
                        at += size;
                        return stop(out, bytes.len() - at);
                    }
                }
                at += size;
            }
            Item::Error { head, .. } => {
                out.push_str(&format!("frame {}, bytes {}-: {}\n", n + 1, at, hex::format(head)));
                conn.receive(&bytes[at..]);
                // The decoder and the connection use the same parser: the
                // connection's verdict names the code it sends.
                verdict(&mut conn, reader, true, OpCode::Binary, &mut out);
                return stop(out, bytes.len() - at - head.len());
            }
        }
    }
    if let Some(leftover) = decoder.leftover() {
        out.push_str(&format!("\nbytes {at}-{}: {leftover}\n", bytes.len() - 1));
        conn.receive(&bytes[at..]);
        // A header's rules can be broken before its payload is complete.
        if let Err(e) = conn.poll_event() {
            failed(&mut conn, reader, e, &mut out);
            return out;
        }
    }
    if !conn_done(&conn) {
        conn.receive_eof();
        match conn.poll_event() {
            Err(e) => failed(&mut conn, reader, e, &mut out),
            // The transport ending without a Close is no rule broken: the
            // core ends the connection Abnormal, reported as 1006.
            Ok(_) if matches!(conn.ending(), Some(Ending::Abnormal)) => out.push_str(
                "\nend of the bytes with no Close: if the connection ended here, the application would see 1006 \
                 (connection closed without a close frame (RFC 6455 §7.1.5)), a code that is never sent\n",
            ),
            Ok(_) => {}
        }
    }
    out
}

fn stop(mut out: String, unread: usize) -> String {
    if unread > 0 {
        out.push_str(&format!("\n({unread} more bytes not read: the connection has failed)\n"));
    }
    out
}

fn conn_done(conn: &Connection) -> bool {
    !matches!(conn.state(), sabai::State::Open | sabai::State::CloseSent)
}

fn who(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Server => "server",
    }
}

/// What the connection made of the frame just received; false when it
/// failed the connection.
fn verdict(conn: &mut Connection, reader: Role, fin: bool, opcode: OpCode, out: &mut String) -> bool {
    let mut said = false;
    loop {
        let line = match conn.poll_event() {
            Ok(None) => break,
            Ok(Some(Event::Message(Message::Text(text)))) => {
                let shown: String = text.chars().take(PREVIEW).collect();
                format!("→ a text message of {} bytes is delivered: {shown:?}", text.len())
            }
            Ok(Some(Event::Message(Message::Binary(data)))) => format!(
                "→ a binary message of {} bytes is delivered: {}",
                data.len(),
                hex::format(&data[..data.len().min(PREVIEW)])
            ),
            Ok(Some(Event::Ping(_))) => format!("→ Ping: the {} queues {} (§5.5.2)", who(reader), sent(conn)),
            Ok(Some(Event::Pong(_))) => "→ Pong: delivered to the application (§5.5.3)".into(),
            Ok(Some(Event::Close(frame))) => {
                let what = match frame {
                    Some(f) => format!("code {} {:?}", f.code.0, f.reason),
                    None => "no code (the application sees 1005, which is never sent, §7.1.5)".into(),
                };
                let echo = sent(conn);
                if echo.is_empty() {
                    format!("→ Close, {what}: the closing handshake is complete (§7.1.2)")
                } else {
                    format!("→ Close, {what}: the {} echoes {echo} (§5.5.1)", who(reader))
                }
            }
            // Event is non-exhaustive: a kind added later is still shown.
            Ok(Some(other)) => format!("→ {other:?}"),
            Err(e) => {
                failed(conn, reader, e, out);
                return false;
            }
        };
        out.push_str(&format!("  {line}\n"));
        said = true;
    }
    if !said {
        let why = if !fin && !opcode.is_control() {
            "→ a fragment: held until the frame with FIN (§5.4)"
        } else {
            "→ nothing delivered"
        };
        out.push_str(&format!("  {why}\n"));
    }
    true
}

/// The violation, its close code and the Close the connection queued.
fn failed(conn: &mut Connection, reader: Role, e: ProtocolError, out: &mut String) {
    out.push_str(&format!(
        "  ✗ {e}\n  → the {} fails the connection with close code {} (§7.1.7): it sends {} and reads no more\n",
        who(reader),
        e.close_code().0,
        sent(conn)
    ));
}

/// The frames the connection queued: each one's kind, a Close's code, and
/// its bytes (the first 16 of a long one).
fn sent(conn: &mut Connection) -> String {
    let mut bytes = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return String::new();
    }
    let mut items = Vec::new();
    Decoder::default().push(&bytes, &mut items);
    let mut words = Vec::new();
    for item in items {
        if let Item::Frame(frame) = item {
            let mut clear = frame.payload.clone();
            if let Some(key) = frame.header.mask {
                crate::adapter::apply_mask(&mut clear, key);
            }
            let code = match (frame.header.opcode, clear.get(..2)) {
                (OpCode::Close, Some(&[hi, lo])) => format!(" {}", u16::from_be_bytes([hi, lo])),
                _ => String::new(),
            };
            words.push(format!("a {}{code} frame", explain::name(frame.header.opcode)));
        }
    }
    let shown = if bytes.len() > 16 {
        format!("{} … ({} bytes)", hex::format(&bytes[..16]), bytes.len())
    } else {
        hex::format(&bytes)
    };
    format!("{}: {shown}", words.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame with a well-formed start: any first byte, a short length,
    /// masked or not, then random bytes, so inputs go past the header.
    fn framed() -> impl Strategy<Value = Vec<u8>> {
        (any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..140)).prop_map(
            |(b0, mask, rest)| {
                let len = rest.len().min(125) as u8;
                let mut out = vec![b0, len | if mask { 0x80 } else { 0 }];
                out.extend_from_slice(&rest);
                out
            },
        )
    }

    proptest! {
        #[test]
        fn any_bytes_are_explained_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            from in 0..3usize,
            deflate: bool,
        ) {
            let from = [None, Some(Role::Client), Some(Role::Server)][from];
            let out = run(&bytes, from, deflate);
            prop_assert!(out.ends_with('\n'));
        }

        #[test]
        fn frame_streams_are_explained_without_a_panic(
            frames in proptest::collection::vec(framed(), 1..6),
            deflate: bool,
        ) {
            let bytes = frames.concat();
            let out = run(&bytes, None, deflate);
            // A masked short frame may end before its key: then it is a truncated header.
            prop_assert!(out.contains("frame 1") || out.contains("truncated"), "{}", out);
        }
    }
}
