//! Autobahn family 6 (UTF-8 handling, RFC 6455 §8.1): valid text in any
//! fragmentation is echoed; invalid text fails with 1007, in the read where
//! the bad byte arrives.

mod support;

use sabai::ProtocolError;
use support::*;

const VALID: &[&str] = &[
    "",
    "Hello-µ@ßöäüàá-UTF-8!!",
    "κόσμε",
    "\u{0}\u{80}\u{800}\u{10000}",
    "\u{7F}\u{7FF}\u{FFFF}",
    "\u{D7FF}\u{E000}\u{FFFD}\u{10FFFF}",
];

const INVALID: &[&[u8]] = &[
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", // surrogate (6.3.1)
    b"\x80",                 // lone continuation byte (6.6.x)
    b"\xc0\xaf",             // overlong '/' (6.9.x)
    b"\xe0\x80\xaf",         // overlong
    b"\xf0\x80\x80\xaf",     // overlong
    b"\xf4\x90\x80\x80",     // above U+10FFFF (6.4.x)
    b"\xf8\x88\x80\x80\x80", // 5-byte form (6.7.x)
    b"\xfe",                 // never valid (6.11.x)
    b"\xed\xbf\xbf",         // low surrogate
];

// 6.1, 6.2, 6.5: valid text is echoed, whole or fragmented at every byte.
conformance!(autobahn_6_2_valid_utf8_any_fragmentation, |peer| {
    for text in VALID {
        peer.send_frames(&[Frame::text(text)]);
        peer.expect(Frame::text(text).unmasked());
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            peer.send_frames(&[Frame::text(&bytes[..cut]).fin(false), Frame::cont(&bytes[cut..])]);
            peer.expect(Frame::text(text).unmasked());
        }
    }
    peer.close_cleanly();
});

// 6.3, 6.6-6.21: invalid text fails with 1007, in one frame...
#[test]
fn autobahn_6_3_invalid_utf8_fails_with_1007() {
    for bad in INVALID {
        each_peer(|peer| {
            peer.send_frames(&[Frame::text(bad)]);
            peer.expect_failure(1007, ProtocolError::InvalidUtf8);
        });
    }
}

// ...and split into one-byte fragments (6.3.2).
#[test]
fn autobahn_6_3_2_invalid_utf8_in_one_byte_fragments() {
    for bad in INVALID {
        each_peer(|peer| {
            let mut frames: Vec<Frame> = bad.iter().map(|b| Frame::cont([*b]).fin(false)).collect();
            frames[0].opcode = TEXT;
            frames.push(Frame::cont(""));
            peer.send_frames(&frames);
            peer.expect_failure(1007, ProtocolError::InvalidUtf8);
        });
    }
}

// A message that ends inside a code point is invalid, though every byte was
// a valid prefix.
conformance!(rejects_text_ending_mid_code_point, |peer| {
    peer.send_frames(&[Frame::text(b"ab\xe2\x82").fin(false), Frame::cont("")]);
    peer.expect_failure(1007, ProtocolError::InvalidUtf8);
});

// 6.4.1, 6.4.2: fail fast: the first impossible byte fails the connection
// while the rest of the frame has not been sent yet.
conformance!(autobahn_6_4_1_fails_fast_mid_frame, |peer| {
    let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    let bytes = Frame::text(payload).encode();
    let header = bytes.len() - payload.len();
    peer.send(&bytes[..header + 11]); // the header and "κόσμε"
    peer.send(&bytes[header + 11..header + 15]); // f4 90 80 80
    peer.expect_failure(1007, ProtocolError::InvalidUtf8);
});

// 6.4.3, 6.4.4: the bad byte arrives inside a code point split across reads.
conformance!(autobahn_6_4_3_fails_fast_inside_a_code_point, |peer| {
    let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    let bytes = Frame::text(payload).encode();
    let header = bytes.len() - payload.len();
    peer.send(&bytes[..header + 12]); // ... and f4, still a valid prefix
    peer.send(&bytes[header + 12..header + 13]); // 90: impossible after f4
    peer.expect_failure(1007, ProtocolError::InvalidUtf8);
});

// Fail fast across fragments: the second fragment's first byte is bad.
conformance!(fails_fast_across_fragment_boundary, |peer| {
    peer.send_frames(&[Frame::text(b"\xe2\x82").fin(false)]);
    let second = Frame::cont(b"\xff and more that never matters").encode();
    peer.send(&second[..second.len() - 20]);
    peer.expect_failure(1007, ProtocolError::InvalidUtf8);
});

// Binary messages are never validated.
conformance!(binary_is_not_utf8_checked, |peer| {
    peer.send_frames(&[Frame::binary(b"\xff\xfe\xc0\xaf")]);
    peer.expect(Frame::binary(b"\xff\xfe\xc0\xaf").unmasked());
    peer.close_cleanly();
});
