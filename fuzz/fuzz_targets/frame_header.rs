//! `FrameHeader::parse` on arbitrary bytes, and `encode` on arbitrary headers:
//! - a parsed header re-encodes to exactly the bytes it was parsed from (the
//!   parser accepts only minimal lengths, so encodings are canonical; FIN,
//!   RSV, opcode and mask key round-trip as they are), and its length is
//!   `encoded_len()`;
//! - the fields agree with an independent reading of RFC 6455 §5.2;
//! - parsing never depends on input beyond the bytes that decide it: every
//!   shorter prefix says "need more" (`Ok(None)`), and errors are decided
//!   on the opcode and length bytes; `Ok(None)` only for fewer than 14 bytes;
//! - encode then parse gives the header back, for any header with a
//!   63-bit length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::proto::{FrameHeader, OpCode, MAX_HEADER_LEN};
use sabai::ProtocolError;

fn check_parse(data: &[u8]) {
    let result = FrameHeader::parse(data);
    // Only the first MAX_HEADER_LEN bytes may matter.
    let head = &data[..data.len().min(MAX_HEADER_LEN)];
    assert_eq!(FrameHeader::parse(head), result, "bytes past the header changed the result");

    let decided_at = match &result {
        Ok(Some((header, n))) => {
            let n = *n;
            assert!((2..=MAX_HEADER_LEN).contains(&n) && n <= data.len());
            assert_eq!(n, header.encoded_len());
            let mut out = [0u8; MAX_HEADER_LEN];
            let written = header.encode(&mut out);
            assert_eq!(&out[..written], &data[..n], "re-encoding differs from the input");
            // Independent field reading.
            assert_eq!(header.fin, data[0] & 0x80 != 0);
            assert_eq!(header.rsv, (data[0] >> 4) & 7);
            assert_eq!(header.opcode as u8, data[0] & 0x0F);
            assert_eq!(header.mask.is_some(), data[1] & 0x80 != 0);
            if let Some(key) = header.mask {
                assert_eq!(key[..], data[n - 4..n]);
            }
            assert!(header.len < 1 << 63);
            let minimal = match header.len {
                0..=125 => 2,
                126..=0xFFFF => 4,
                _ => 10,
            };
            assert_eq!(n, minimal + if header.mask.is_some() { 4 } else { 0 });
            n
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_LEN, "Ok(None) with {} bytes", data.len());
            data.len()
        }
        Err(error) => {
            let op = data[0] & 0x0F;
            let reserved = OpCode::from_u8(op).is_none();
            match error {
                ProtocolError::ReservedOpcode(o) => assert!(reserved && *o == op),
                ProtocolError::NonMinimalLength => assert!(!reserved && data[1] & 0x7F >= 126),
                ProtocolError::LengthMsbSet => {
                    assert!(!reserved && data[1] & 0x7F == 127 && data[2] & 0x80 != 0)
                }
                other => panic!("unexpected error from parse: {other:?}"),
            }
            // Errors are decided on the bytes up to the length field.
            match data[1] & 0x7F {
                _ if reserved => 2,
                126 => 4,
                _ => 10,
            }
        }
    };
    // Every prefix too short to decide needs more input.
    for cut in 0..decided_at.min(data.len()) {
        assert_eq!(
            FrameHeader::parse(&data[..cut]),
            Ok(None),
            "prefix of {cut} bytes of {decided_at} decided"
        );
    }
}

fn check_encode(data: &[u8]) {
    let [b0, b1, rest @ ..] = data else {
        return;
    };
    let (b0, b1) = (*b0, *b1);
    let Some(opcode) = OpCode::from_u8(b0 & 0x0F) else {
        return;
    };
    let mut len_bytes = [0u8; 8];
    let take = rest.len().min(8);
    len_bytes[..take].copy_from_slice(&rest[..take]);
    // Bias toward the interesting boundaries 125/126, 65535/65536.
    let raw = u64::from_le_bytes(len_bytes) & ((1 << 63) - 1);
    let len = match b1 & 3 {
        0 => raw % 256,
        1 => 0xFF00 + raw % 0x200,
        _ => raw,
    };
    let mask = (b1 & 4 != 0).then_some([b1, b0, 0x5A, take as u8]);
    let header = FrameHeader { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 7, opcode, mask, len };
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut out);
    assert_eq!(n, header.encoded_len());
    assert_eq!(FrameHeader::parse(&out[..n]), Ok(Some((header, n))), "encode/parse round trip");
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    check_encode(data);
});
