//! Hostile compressed input for permessage-deflate (RFC 7692 §7.2.2): the
//! input's bytes become a compressed message (RSV1 on its first frame),
//! split into input-chosen fragments, fed to a client connection in
//! input-chosen chunks. Checks:
//! - nothing panics; the outcome is a message no longer than the limit or
//!   one of the errors a compressed message can cause (bad DEFLATE data,
//!   too large, bad UTF-8), each with its close code;
//! - the outcome does not depend on how the bytes were chunked;
//! - when a plain decoder (miniz_oxide, output capped past the limit)
//!   decodes the payload without reaching a final block and ending at a
//!   block boundary, sabai's message is exactly that output (or "too
//!   large" exactly when it is);
//! - the input sent as a message through sabai's compressor, with the
//!   input-chosen window bits and context takeover, arrives unchanged.
//!
//! Input layout: `flags, plan..., data`. flags bit 0: text; bits 1-3:
//! window bits 8 + n (8 = 15); bit 4: no context takeover; bits 5-7:
//! number of fragments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use sabai::proto::{FrameHeader, OpCode};
use sabai::{CloseCode, Config, Connection, DeflateConfig, DeflateParams, Event, Message, ProtocolError};
use sabai_fuzz::{take_plan, Chunks};

const LIMIT: usize = 64 * 1024;

fn config() -> Config {
    let mut deflate = DeflateConfig::default();
    deflate.threshold = 0;
    let mut config = Config::default();
    config.max_message_size = LIMIT;
    config.deflate = Some(deflate);
    config
}

fn frame(out: &mut Vec<u8>, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader { fin, rsv, opcode, mask: None, len: payload.len() as u64 };
    let mut head = [0u8; 14];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// Feeds `wire` in chunks; returns the first message or error.
fn run(params: DeflateParams, wire: &[u8], plan: &[u8]) -> Result<Option<Event>, ProtocolError> {
    let mut conn = Connection::client(config(), [1; 32]).with_deflate(params);
    for chunk in Chunks::new(wire, plan) {
        conn.receive(chunk);
        if let Some(event) = conn.poll_event()? {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

/// miniz_oxide on its own (an implementation sabai does not use): the
/// inflated bytes (capped at LIMIT + 1), or `None` if the data is not
/// DEFLATE, contains a final block, or does not end at a block boundary.
/// The whole output is one flat buffer, so a distance reaching before its
/// first byte is an error (RFC 1951 §3.2.5), as it is for sabai.
fn reference(data: &[u8]) -> Option<Vec<u8>> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let flags = TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | TINFL_FLAG_HAS_MORE_INPUT;
    let (status, mut out) = inflate(&input, flags);
    match status {
        // All input used, no final block: the message (a sync flush's end),
        // if it ends at a block boundary (below).
        TINFLStatus::NeedsMoreInput => {}
        // LIMIT + 1 bytes made: over the limit.
        TINFLStatus::HasMoreOutput => return Some(out),
        _ => return None,
    }
    // RFC 7692 §7.2.2's tail (an empty stored block) ends a message at a
    // block boundary: then an empty final stored block of our own after
    // it adds nothing and ends the stream exactly there. This sets aside
    // data that stops inside a block, and a block whose code has no
    // end-of-block symbol (it can never end): zlib, so sabai, refuses that
    // code as soon as it reads it ("invalid code -- missing end-of-block"),
    // while miniz_oxide only notices when it needs the symbol.
    input.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    let (ended, whole) = inflate(&input, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF);
    (ended == TINFLStatus::Done && whole == out).then(|| std::mem::take(&mut out))
}

/// One miniz_oxide pass over `input`: its status and output (at most
/// LIMIT + 1 bytes).
fn inflate(input: &[u8], flags: u32) -> (TINFLStatus, Vec<u8>) {
    let mut out = vec![0; LIMIT + 1];
    let mut raw = Box::<DecompressorOxide>::default();
    let (status, _, made) = decompress(&mut raw, input, &mut out, 0, flags);
    out.truncate(made);
    (status, out)
}

/// An outcome, without megabytes of payload.
fn outline(outcome: &Result<Option<Event>, ProtocolError>) -> String {
    match outcome {
        Ok(Some(Event::Message(m))) => format!("a message of {} bytes", m.len()),
        other => format!("{other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, _)) = input.split_first() else {
        return;
    };
    let Some((plan, data)) = take_plan(input) else {
        return;
    };
    let text = flags & 1 != 0;
    let bits = 8 + (flags >> 1) % 8;
    let window = if bits == 8 { None } else { Some(bits) };
    let no_takeover = flags & 16 != 0;
    let params = DeflateParams {
        server_no_context_takeover: no_takeover,
        client_no_context_takeover: no_takeover,
        server_max_window_bits: window,
        client_max_window_bits: window,
    };

    // Hostile compressed bytes, in fragments.
    let fragments = 1 + (flags >> 5) as usize;
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut wire = Vec::new();
    let step = data.len().div_ceil(fragments).max(1);
    let pieces: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(step).collect() };
    for (i, piece) in pieces.iter().enumerate() {
        let (op, rsv) = if i == 0 { (opcode, 0b100) } else { (OpCode::Continuation, 0) };
        frame(&mut wire, i + 1 == pieces.len(), rsv, op, piece);
    }
    let whole = run(params, &wire, &[0xFF]);
    assert_eq!(run(params, &wire, plan), whole, "chunking changed the outcome");
    match &whole {
        Ok(Some(Event::Message(m))) => assert!(m.len() <= LIMIT),
        Ok(other) => panic!("a whole message gave {other:?}"),
        Err(e) => {
            let expected = match e {
                ProtocolError::InvalidCompressedData => CloseCode::PROTOCOL_ERROR,
                ProtocolError::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
                ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
                other => panic!("unexpected error {other:?}"),
            };
            assert_eq!(e.close_code(), expected);
        }
    }
    if let Some(plain) = reference(data) {
        match &whole {
            // Bad UTF-8 may fail the message before it grows too large.
            Err(ProtocolError::InvalidUtf8) => assert!(text && std::str::from_utf8(&plain).is_err()),
            _ if plain.len() > LIMIT => {
                let too_large = matches!(whole, Err(ProtocolError::MessageTooLarge { .. }));
                assert!(too_large, "miniz_oxide inflated over the limit, sabai gave {}", outline(&whole))
            }
            Ok(Some(Event::Message(m))) => {
                assert!(m.as_bytes() == plain, "sabai's message differs from miniz_oxide's")
            }
            other => panic!("miniz_oxide inflated {} bytes, sabai gave {}", plain.len(), outline(other)),
        }
    }

    // The data as a message through sabai's own compressor.
    if data.len() <= LIMIT {
        let mut server = Connection::server(config()).with_deflate(params);
        let message = Message::binary(data.to_vec());
        server.send(message.clone()).unwrap();
        server.send(message.clone()).unwrap();
        let mut sent = Vec::new();
        while let Some(bytes) = server.poll_transmit() {
            sent.extend_from_slice(&bytes);
        }
        let mut client = Connection::client(config(), [2; 32]).with_deflate(params);
        let mut got = Vec::new();
        for chunk in Chunks::new(&sent, plan) {
            client.receive(chunk);
            while let Some(event) = client.poll_event().unwrap() {
                got.push(event);
            }
        }
        assert_eq!(got, [Event::Message(message.clone()), Event::Message(message)]);
    }
});
