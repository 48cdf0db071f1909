//! A frame's fields in words, each with its RFC 6455 section: shared by
//! `inspect` and `--trace`.

use crate::adapter::{apply_mask, OpCode};
use crate::decode::{Frame, PREVIEW};
use crate::hex;

/// The lines describing `frame`, each starting with `indent`.
pub fn frame(frame: &Frame, indent: &str) -> String {
    let h = &frame.header;
    let mut out = String::new();
    let mut line = |field: &str, value: String, why: &str| {
        out.push_str(&format!("{indent}{field:<9}{value:<15}{why}\n"));
    };
    let b0 = frame.head[0];
    line(
        "FIN",
        format!("{}", u8::from(h.fin)),
        if h.fin { "final fragment of its message (§5.2)" } else { "more fragments follow (§5.4)" },
    );
    let rsv = format!("{} {} {}", b0 >> 6 & 1, b0 >> 5 & 1, b0 >> 4 & 1);
    let rsv_why = match h.rsv {
        0 => "no extension bits (§5.2)",
        0b100 => {
            "RSV1: \"compressed\" if permessage-deflate was agreed (RFC 7692 §6), else a violation (§5.2)"
        }
        _ => "RSV2/RSV3: no extension defines them here: a violation (§5.2)",
    };
    line("RSV1-3", rsv, rsv_why);
    line("opcode", format!("0x{:x} {}", h.opcode as u8, name(h.opcode)), opcode_why(h.opcode));
    line(
        "MASK",
        format!("{}", u8::from(h.mask.is_some())),
        match h.mask {
            Some(_) => "masked: a client masks every frame it sends (§5.3)",
            None => "not masked: a server never masks (§5.1)",
        },
    );
    let b1 = frame.head[1] & 0x7f;
    let (len_how, len_why) = match b1 {
        126 => (format!("{} (126 + 16 bits)", h.len), "16-bit form: 126, then 2 bytes big-endian (§5.2)"),
        127 => (format!("{} (127 + 64 bits)", h.len), "64-bit form: 127, then 8 bytes big-endian (§5.2)"),
        _ => (format!("{} (7 bits)", h.len), "7-bit form: 0-125 fit in the second byte (§5.2)"),
    };
    line("length", len_how, len_why);
    let shown = &frame.payload;
    let more = h.len.saturating_sub(shown.len() as u64);
    let tail = if more > 0 { format!(" … ({more} more)") } else { String::new() };
    let mut clear = shown.clone();
    if let Some(key) = h.mask {
        line("key", hex::format(&key), "masking key: payload byte i is XORed with key[i % 4] (§5.3)");
        out.push_str(&format!("{indent}masked   {}{tail}\n", hex::format(shown)));
        apply_mask(&mut clear, key);
        out.push_str(&format!("{indent}unmasked {}{tail}\n", hex::format(&clear)));
    } else if !shown.is_empty() {
        out.push_str(&format!("{indent}payload  {}{tail}\n", hex::format(shown)));
    }
    if let Some(text) = payload_words(h.opcode, h.rsv, &clear, more) {
        out.push_str(&format!("{indent}{text}\n"));
    }
    out
}

/// The opcode's name (§5.2, §11.8).
pub fn name(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Continuation => "Continuation",
        OpCode::Text => "Text",
        OpCode::Binary => "Binary",
        OpCode::Close => "Close",
        OpCode::Ping => "Ping",
        OpCode::Pong => "Pong",
    }
}

fn opcode_why(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Continuation => "continues the message in progress (§5.4)",
        OpCode::Text => "starts a text message: UTF-8 (§5.6)",
        OpCode::Binary => "starts a binary message (§5.6)",
        OpCode::Close => "control: closing handshake (§5.5.1)",
        OpCode::Ping => "control: the peer answers with a Pong (§5.5.2)",
        OpCode::Pong => "control: answers a Ping (§5.5.3)",
    }
}

/// The payload read as its opcode says: text, or a Close's code and reason.
fn payload_words(opcode: OpCode, rsv: u8, clear: &[u8], more: u64) -> Option<String> {
    if rsv & 0b100 != 0 && !opcode.is_control() {
        return Some("text     (compressed: DEFLATE data, RFC 7692 §7.2.1)".into());
    }
    match opcode {
        OpCode::Text | OpCode::Continuation if !clear.is_empty() => Some(match std::str::from_utf8(clear) {
            Ok(text) => format!("text     {text:?}{}", if more > 0 { " …" } else { "" }),
            Err(_) if opcode == OpCode::Continuation => return None,
            Err(e) if e.error_len().is_none() => {
                let whole = String::from_utf8_lossy(&clear[..e.valid_up_to()]);
                format!("text     {whole:?}, then a character cut at the end of what is shown")
            }
            Err(e) => format!("text     not UTF-8: byte {} is invalid (§8.1)", e.valid_up_to()),
        }),
        OpCode::Close => Some(match clear {
            [] => "close    no body: no code (reported as 1005, never sent, §7.1.5)".into(),
            [_] => "close    1-byte body: a code needs 2 bytes (§5.5.1)".into(),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                let reason = String::from_utf8_lossy(reason);
                format!("close    code {code} ({}), reason {reason:?} (§5.5.1, §7.4.1)", close_name(code))
            }
        }),
        _ => None,
    }
    .filter(|_| clear.len() <= PREVIEW)
}

/// The registered meaning of a close code (§7.4.1, IANA).
pub fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status code: never on the wire",
        1006 => "abnormal closure: never on the wire",
        1007 => "invalid payload data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        1015 => "TLS handshake failed: never on the wire",
        3000..=3999 => "registered with IANA for libraries and frameworks",
        4000..=4999 => "private use",
        _ => "not allowed on the wire (§7.4)",
    }
}
