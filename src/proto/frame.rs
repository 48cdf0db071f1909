//! Frame headers: the first 2 to 14 bytes of every frame (RFC 6455 §5.2).
//! The bit diagram is on [`FrameHeader`], where rustdoc shows it.
//!
//! This module only knows the wire format. Rules that depend on the role or on
//! what came before (masking direction, RSV bits, fragmentation, limits) are
//! checked by [`Connection`](crate::Connection).

use bytes::{Bytes, BytesMut};

use super::error::ProtocolError;

/// The longest header: 2 bytes, a 64-bit length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (RFC 6455 §5.2). Reserved opcodes have no variant: a
/// frame carrying one is rejected by [`FrameHeader::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message (§5.4).
    Continuation = 0x0,
    /// 0x1: the first frame of a text message (UTF-8, §5.6).
    Text = 0x1,
    /// 0x2: the first frame of a binary message (§5.6).
    Binary = 0x2,
    /// 0x8: Close, a control frame (§5.5.1).
    Close = 0x8,
    /// 0x9: Ping, a control frame (§5.5.2).
    Ping = 0x9,
    /// 0xA: Pong, a control frame (§5.5.3).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved values
    /// 0x3–0x7 and 0xB–0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// RFC 6455 §5.5: control frames have opcodes whose high bit is set.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A frame header: the first 2 to 14 bytes of every frame (RFC 6455 §5.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-------+-+-------------+-------------------------------+
/// |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
/// |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
/// |N|V|V|V|       |S|             |   (if payload len==126/127)   |
/// | |1|2|3|       |K|             |                               |
/// +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
/// |     Extended payload length continued, if payload len == 127  |
/// + - - - - - - - - - - - - - - - +-------------------------------+
/// |                               |Masking-key, if MASK set to 1  |
/// +-------------------------------+-------------------------------+
/// | Masking-key (continued)       |          Payload Data         |
/// +-------------------------------- - - - - - - - - - - - - - - - +
/// :                     Payload Data continued ...                :
/// + - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
/// |                     Payload Data continued ...                |
/// +---------------------------------------------------------------+
/// ```
///
/// Field by field, as this struct holds them:
///
/// - **FIN** (1 bit, [`fin`](Self::fin)): this frame ends its message.
///   A message in one frame has it set; a fragmented one sets it on its last
///   fragment only (§5.4).
/// - **RSV1, RSV2, RSV3** (1 bit each, [`rsv`](Self::rsv), RSV1 = `0b100`):
///   0 unless an agreed extension gives them a meaning. permessage-deflate
///   (RFC 7692) uses RSV1 for "compressed" on a message's first frame.
/// - **opcode** (4 bits, [`opcode`](Self::opcode)): 0x0 continuation, 0x1
///   text, 0x2 binary, 0x8 close, 0x9 ping, 0xA pong. The others are
///   reserved, and [`parse`](Self::parse) refuses them.
/// - **MASK** (1 bit) and the **masking key** (4 bytes, [`mask`](Self::mask)):
///   set on every frame a client sends and on none a server sends (§5.1).
///   Payload byte *i* is XORed with key byte *i* mod 4 (§5.3). Masking is
///   not secrecy: the key travels in clear, right here. It stops a script
///   from choosing the bytes an intermediary sees (§10.3).
/// - **Payload len** (7 bits, then 0, 2 or 8 more bytes, [`len`](Self::len)):
///   0–125 is the length itself; 126 means a 16-bit length follows; 127 a
///   64-bit length whose top bit is 0. The shortest form MUST be used, and
///   [`parse`](Self::parse) refuses the others
///   ([`ProtocolError::NonMinimalLength`]).
///
/// The header of the RFC's masked "Hello" (§5.7), and the same header
/// written back:
///
/// ```
/// use sabai::proto::{FrameHeader, OpCode, MAX_HEADER_LEN};
///
/// let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
/// let (header, used) = FrameHeader::parse(&frame).unwrap().expect("a whole header");
/// assert_eq!(
///     header,
///     FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: Some([0x37, 0xfa, 0x21, 0x3d]), len: 5 }
/// );
/// assert_eq!(used, 6); // 2 bytes, no extended length, 4 of masking key
///
/// let mut out = [0; MAX_HEADER_LEN];
/// let n = header.encode(&mut out);
/// assert_eq!(out[..n], frame[..6]);
///
/// // A 256-byte payload needs the 16-bit form: 126, then 0x01 0x00.
/// let big = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, len: 256 };
/// let n = big.encode(&mut out);
/// assert_eq!(out[..n], [0x82, 0x7e, 0x01, 0x00]);
/// // Too few bytes yet is not an error.
/// assert_eq!(FrameHeader::parse(&[0x82, 0x7e, 0x01]), Ok(None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode: what the payload is (§5.2).
    pub opcode: OpCode,
    /// The masking key, present exactly when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header
    /// (partial input is not an error), or the header and its length in bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        // RFC 6455 §5.2: reserved opcodes MUST fail the connection.
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let (len, len_bytes) = match b1 & 0x7F {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([ext[0], ext[1]]) as u64;
                // RFC 6455 §5.2: "the minimal number of bytes MUST be used to
                // encode the length". We reject violations (see SPEC_NOTES.md).
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 2)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet);
                }
                if len <= u16::MAX as u64 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 8)
            }
            short => (short as u64, 0),
        };
        let mask_at = 2 + len_bytes;
        let (mask, header_len) = if masked {
            let Some(key) = buf.get(mask_at..mask_at + 4) else {
                return Ok(None);
            };
            (Some([key[0], key[1], key[2], key[3]]), mask_at + 4)
        } else {
            (None, mask_at)
        };
        let header = FrameHeader { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode, mask, len };
        Ok(Some((header, header_len)))
    }

    /// Writes the header into `out` and returns how many bytes it took,
    /// always using the minimal length encoding (RFC 6455 §5.2).
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = if self.len < 126 {
            out[1] = mask_bit | self.len as u8;
            2
        } else if self.len <= u16::MAX as u64 {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }

    /// One whole unmasked frame with FIN set, encoded (RFC 6455 §5.1: a
    /// server does not mask), and the length of its header: what a
    /// prepared message shares among connections.
    pub(crate) fn server_frame(rsv: u8, opcode: OpCode, payload: &[u8]) -> (Bytes, usize) {
        let header = FrameHeader { fin: true, rsv, opcode, mask: None, len: payload.len() as u64 };
        let mut head = [0u8; MAX_HEADER_LEN];
        let header_len = header.encode(&mut head);
        let mut frame = BytesMut::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&head[..header_len]);
        frame.extend_from_slice(payload);
        (frame.freeze(), header_len)
    }

    /// The header's size on the wire.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader { fin: true, rsv: 0, opcode, mask, len }
    }

    fn round_trip(h: FrameHeader) {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut out);
        assert_eq!(n, h.encoded_len());
        assert_eq!(FrameHeader::parse(&out[..n]).unwrap(), Some((h, n)));
        // Every strict prefix is "need more input", never an error.
        for cut in 0..n {
            assert_eq!(FrameHeader::parse(&out[..cut]).unwrap(), None, "prefix {cut}");
        }
    }

    #[test]
    fn round_trips_each_length_encoding() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, (1 << 63) - 1] {
            round_trip(header(OpCode::Binary, len, None));
            round_trip(header(OpCode::Text, len, Some([1, 2, 3, 4])));
        }
    }

    #[test]
    fn rfc_example_unmasked_hello() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!((n, h), (2, header(OpCode::Text, 5, None)));
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!((n, h), (6, header(OpCode::Text, 5, Some([0x37, 0xfa, 0x21, 0x3d]))));
    }

    #[test]
    fn rejects_reserved_opcodes() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(FrameHeader::parse(&[0x80 | op, 0]), Err(ProtocolError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn rejects_64_bit_length_with_msb_set() {
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(FrameHeader::parse(&bytes), Err(ProtocolError::LengthMsbSet));
        bytes[2] = 0x80;
        bytes[3..10].fill(0);
        assert_eq!(FrameHeader::parse(&bytes), Err(ProtocolError::LengthMsbSet));
    }

    #[test]
    fn rejects_non_minimal_lengths() {
        assert_eq!(FrameHeader::parse(&[0x82, 126, 0, 125]), Err(ProtocolError::NonMinimalLength));
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&0xFFFFu64.to_be_bytes());
        assert_eq!(FrameHeader::parse(&bytes), Err(ProtocolError::NonMinimalLength));
    }

    #[test]
    fn reads_fin_and_rsv_bits() {
        let (h, _) = FrameHeader::parse(&[0x70 | 0x1, 0]).unwrap().unwrap();
        assert!(!h.fin);
        assert_eq!(h.rsv, 0b111);
        let (h, _) = FrameHeader::parse(&[0xC0 | 0x1, 0]).unwrap().unwrap();
        assert!(h.fin);
        assert_eq!(h.rsv, 0b100);
    }

    #[test]
    fn control_opcodes_are_the_high_ones() {
        assert!(OpCode::Close.is_control() && OpCode::Ping.is_control() && OpCode::Pong.is_control());
        assert!(!OpCode::Text.is_control() && !OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }
}
