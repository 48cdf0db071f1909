//! A frame builder that can produce any frame, valid or not, and a parser
//! for what sabai sends back. Written from RFC 6455 §5.2 independently of
//! sabai's codec.

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A frame on the wire, fields unchecked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    /// Masking key to apply when encoding, or found when decoding.
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final, masked frame (as a client sends).
    pub fn new(opcode: u8, payload: impl AsRef<[u8]>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some([0x5a, 0x17, 0xc3, 0x8e]),
            payload: payload.as_ref().to_vec(),
        }
    }
    pub fn text(payload: impl AsRef<[u8]>) -> Frame {
        Frame::new(TEXT, payload)
    }
    pub fn binary(payload: impl AsRef<[u8]>) -> Frame {
        Frame::new(BINARY, payload)
    }
    pub fn ping(payload: impl AsRef<[u8]>) -> Frame {
        Frame::new(PING, payload)
    }
    pub fn pong(payload: impl AsRef<[u8]>) -> Frame {
        Frame::new(PONG, payload)
    }
    pub fn cont(payload: impl AsRef<[u8]>) -> Frame {
        Frame::new(CONTINUATION, payload)
    }
    /// A Close with a code and reason.
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Frame::new(CLOSE, payload)
    }
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }
    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }
    pub fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }

    /// The frame's bytes, with the minimal length encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xFFFF {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }

    /// Parses one frame from the front of `buf`: `None` if incomplete.
    pub fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
        if buf.len() < 2 {
            return None;
        }
        let (fin, rsv, opcode) = (buf[0] & 0x80 != 0, (buf[0] >> 4) & 7, buf[0] & 0xF);
        let masked = buf[1] & 0x80 != 0;
        let (len, mut at) = match buf[1] & 0x7F {
            126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize, 4),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        let mask = if masked {
            let key: [u8; 4] = buf.get(at..at + 4)?.try_into().unwrap();
            at += 4;
            Some(key)
        } else {
            None
        };
        let mut payload = buf.get(at..at + len)?.to_vec();
        if let Some(key) = mask {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
        }
        Some((Frame { fin, rsv, opcode, mask, payload }, at + len))
    }

    /// The close code of a Close frame, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Concatenates encoded frames.
pub fn wire(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::encode).collect()
}

/// Everything a connection has queued, taken and decoded into frames.
pub fn frames_sent(conn: &mut sabai::Connection) -> Vec<Frame> {
    let mut bytes = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        bytes.extend_from_slice(&chunk);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = Frame::decode(&bytes[at..]) {
        frames.push(frame);
        at += used;
    }
    assert_eq!(at, bytes.len(), "partial frame queued");
    frames
}
