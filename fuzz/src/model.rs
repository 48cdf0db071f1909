//! A reference model of what a connection reads from a byte stream that
//! arrives in one piece and then ends: a plain, single-pass reading of
//! RFC 6455 §5 (framing), §5.4 (fragmentation), §5.5 (control frames),
//! §7.4 (close codes), §8.1 (UTF-8) and the size limits, with sabai's
//! documented choices (minimal lengths required, UTF-8 checked as payload
//! arrives, which error wins when a frame breaks several rules).
//!
//! It deliberately shares no code with sabai: it decodes headers, unmasks
//! and validates with its own code and `std::str::from_utf8`.

use bytes::Bytes;
use sabai::{CloseCode, CloseFrame, Event, Message, ProtocolError, Role};

/// What the model expects: the events, then how reading ended (`None` when
/// the peer's Close ended it).
#[derive(Debug)]
pub struct Expected {
    pub events: Vec<Event>,
    pub error: Option<End>,
}

/// How reading ended without the peer's Close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer broke a rule: the connection failed.
    Failed(ProtocolError),
    /// The input ended first (RFC 6455 §7.1.5: 1006, never sent).
    Abnormal,
}

/// Whether `bytes` could still be the start of valid UTF-8.
fn utf8_prefix_ok(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// Tracks the UTF-8 of a text message over its fragments, re-reading only
/// from the last character boundary known to be valid.
#[derive(Default)]
struct Text {
    data: Vec<u8>,
    valid: usize,
}

impl Text {
    /// Adds bytes; false if the message can no longer be valid UTF-8.
    fn push(&mut self, bytes: &[u8]) -> bool {
        self.data.extend_from_slice(bytes);
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => {
                self.valid = self.data.len();
                true
            }
            Err(e) => {
                self.valid += e.valid_up_to();
                e.error_len().is_none()
            }
        }
    }

    /// Would the message still be possibly valid with `more` appended
    /// (without keeping them)?
    fn prefix_ok_with(&self, more: &[u8]) -> bool {
        let tail = &self.data[self.valid..];
        let mut probe = Vec::with_capacity(tail.len() + more.len());
        probe.extend_from_slice(tail);
        probe.extend_from_slice(more);
        utf8_prefix_ok(&probe)
    }

    fn complete(&self) -> bool {
        self.valid == self.data.len()
    }
}

enum Assembly {
    Text(Text),
    Binary(Vec<u8>),
}

fn unmask(payload: &mut [u8], key: Option<[u8; 4]>) {
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
}

/// Runs the model over `data`, then end of input.
pub fn expect(role: Role, max_frame: usize, max_message: usize, data: &[u8]) -> Expected {
    let mut events = Vec::new();
    let error = run(role, max_frame, max_message, data, &mut events);
    Expected { events, error }
}

fn run(
    role: Role,
    max_frame: usize,
    max_message: usize,
    data: &[u8],
    events: &mut Vec<Event>,
) -> Option<End> {
    use ProtocolError as E;
    let mut at = 0usize;
    let mut assembly: Option<Assembly> = None;
    loop {
        let rest = &data[at..];
        // --- header (RFC 6455 §5.2) ---
        if rest.len() < 2 {
            return Some(End::Abnormal);
        }
        let (b0, b1) = (rest[0], rest[1]);
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 7;
        let opcode = b0 & 0x0F;
        if !matches!(opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
            return Some(End::Failed(E::ReservedOpcode(opcode)));
        }
        let mut header_len = 2;
        let len: u64 = match b1 & 0x7F {
            126 => {
                if rest.len() < 4 {
                    return Some(End::Abnormal);
                }
                let l = u16::from_be_bytes([rest[2], rest[3]]) as u64;
                if l < 126 {
                    return Some(End::Failed(E::NonMinimalLength));
                }
                header_len = 4;
                l
            }
            127 => {
                if rest.len() < 10 {
                    return Some(End::Abnormal);
                }
                let l = u64::from_be_bytes(rest[2..10].try_into().unwrap());
                if l & (1 << 63) != 0 {
                    return Some(End::Failed(E::LengthMsbSet));
                }
                if l < 0x1_0000 {
                    return Some(End::Failed(E::NonMinimalLength));
                }
                header_len = 10;
                l
            }
            short => short as u64,
        };
        let mask = if b1 & 0x80 != 0 {
            if rest.len() < header_len + 4 {
                return Some(End::Abnormal);
            }
            let key = [rest[header_len], rest[header_len + 1], rest[header_len + 2], rest[header_len + 3]];
            header_len += 4;
            Some(key)
        } else {
            None
        };
        // --- rules on the header, in sabai's order ---
        let control = opcode & 0x8 != 0;
        if rsv != 0 {
            return Some(End::Failed(E::ReservedBits(rsv)));
        }
        if control && !fin {
            return Some(End::Failed(E::FragmentedControlFrame));
        }
        if control && len > 125 {
            return Some(End::Failed(E::ControlFrameTooLong(len)));
        }
        match (role, mask.is_some()) {
            (Role::Server, false) => return Some(End::Failed(E::UnmaskedFrame)),
            (Role::Client, true) => return Some(End::Failed(E::MaskedFrame)),
            _ => {}
        }
        if len > max_frame as u64 {
            return Some(End::Failed(E::FrameTooLarge { len, max: max_frame }));
        }
        let so_far = match (opcode, &assembly) {
            (0x0, None) => return Some(End::Failed(E::UnexpectedContinuation)),
            (0x0, Some(Assembly::Text(t))) => Some(t.data.len() as u64),
            (0x0, Some(Assembly::Binary(b))) => Some(b.len() as u64),
            (0x1 | 0x2, Some(_)) => return Some(End::Failed(E::ExpectedContinuation)),
            (0x1 | 0x2, None) => Some(0),
            _ => None,
        };
        if let Some(so_far) = so_far {
            if so_far + len > max_message as u64 {
                return Some(End::Failed(E::MessageTooLarge { len: so_far + len, max: max_message }));
            }
        }
        // --- payload ---
        let body = &rest[header_len..];
        let is_text = opcode == 0x1 || (opcode == 0x0 && matches!(assembly, Some(Assembly::Text(_))));
        if (body.len() as u64) < len {
            // The frame never completes. Text that has arrived is still
            // checked (fail fast, RFC 6455 §8.1).
            if is_text {
                let mut arrived = body.to_vec();
                unmask(&mut arrived, mask);
                let ok = match &assembly {
                    Some(Assembly::Text(t)) => t.prefix_ok_with(&arrived),
                    _ => utf8_prefix_ok(&arrived),
                };
                if !ok {
                    return Some(End::Failed(E::InvalidUtf8));
                }
            }
            return Some(End::Abnormal);
        }
        let len = len as usize;
        let mut payload = body[..len].to_vec();
        unmask(&mut payload, mask);
        at += header_len + len;
        match opcode {
            0x9 => events.push(Event::Ping(Bytes::from(payload))),
            0xA => events.push(Event::Pong(Bytes::from(payload))),
            0x8 => {
                let frame = match payload.as_slice() {
                    [] => None,
                    [_] => return Some(End::Failed(E::CloseBodyTooShort)),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        // RFC 6455 §7.4.1, §7.4.2: codes allowed on the wire.
                        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                            return Some(End::Failed(E::InvalidCloseCode(code)));
                        }
                        let Ok(reason) = std::str::from_utf8(reason) else {
                            return Some(End::Failed(E::InvalidUtf8));
                        };
                        Some(CloseFrame::new(CloseCode(code), reason))
                    }
                };
                events.push(Event::Close(frame));
                return None;
            }
            _ => {
                let mut current = match (opcode, assembly.take()) {
                    (0x0, Some(a)) => a,
                    (0x1, None) => Assembly::Text(Text::default()),
                    (0x2, None) => Assembly::Binary(Vec::new()),
                    _ => unreachable!("checked on the header"),
                };
                match &mut current {
                    Assembly::Text(t) => {
                        if !t.push(&payload) || (fin && !t.complete()) {
                            return Some(End::Failed(E::InvalidUtf8));
                        }
                    }
                    Assembly::Binary(b) => b.extend_from_slice(&payload),
                }
                if !fin {
                    assembly = Some(current);
                    continue;
                }
                events.push(Event::Message(match current {
                    Assembly::Text(t) => Message::Text(String::from_utf8(t.data).unwrap()),
                    Assembly::Binary(b) => Message::Binary(Bytes::from(b)),
                }));
            }
        }
    }
}
