//! Autobahn families 1 (framing), 2 (ping/pong), 3 (reserved bits) and
//! 4 (opcodes), each scenario run over the in-memory core and over TCP.

mod support;

use sabai::ProtocolError;
use support::*;

fn echo_each(peer: &mut dyn Peer, opcode: u8, fill: u8) {
    for len in [0usize, 125, 126, 127, 128, 65535, 65536] {
        let frame = Frame::new(opcode, vec![fill; len]);
        peer.send_frames(std::slice::from_ref(&frame));
        peer.expect(frame.unmasked());
    }
    peer.close_cleanly();
}

// 1.1.1-1.1.7: text messages at every length-encoding boundary are echoed.
conformance!(autobahn_1_1, |peer| { echo_each(peer, TEXT, b'*') });

// 1.2.1-1.2.7: the same for binary.
conformance!(autobahn_1_2, |peer| { echo_each(peer, BINARY, 0xfe) });

// 1.1.8 / 1.2.8: a 64 KiB message written in 997-byte chunks.
conformance!(autobahn_1_1_8_chunked_write, |peer| {
    let frame = Frame::text(vec![b'*'; 65535]);
    for chunk in frame.encode().chunks(997) {
        peer.send(chunk);
    }
    peer.expect(frame.unmasked());
    peer.close_cleanly();
});

// 2.1-2.4: a Ping is answered by a Pong with the same payload (§5.5.2).
conformance!(autobahn_2_1_to_2_4_pong_echoes_ping_payload, |peer| {
    for payload in
        [&b""[..], b"Hello, world!", &[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff], &[b'x'; 125]]
    {
        peer.send_frames(&[Frame::ping(payload)]);
        peer.expect(Frame::pong(payload).unmasked());
    }
    peer.close_cleanly();
});

// 2.5: a Ping with 126 bytes of payload fails the connection (§5.5).
conformance!(rejects_ping_over_125_bytes, |peer| {
    peer.send_frames(&[Frame::ping([b'x'; 126])]);
    peer.expect_failure(1002, ProtocolError::ControlFrameTooLong(126));
});

// 2.6: a Ping written one byte at a time.
conformance!(autobahn_2_6, |peer| {
    for byte in Frame::ping([b'p'; 125]).encode() {
        peer.send(&[byte]);
    }
    peer.expect(Frame::pong([b'p'; 125]).unmasked());
    peer.close_cleanly();
});

// 2.7-2.9: unsolicited Pongs get no answer (§5.5.3); a Ping after them does.
conformance!(autobahn_2_7_to_2_9_unsolicited_pongs_are_ignored, |peer| {
    peer.send_frames(&[Frame::pong(b""), Frame::pong(b"unsolicited"), Frame::ping(b"ping")]);
    peer.expect(Frame::pong(b"ping").unmasked());
    peer.close_cleanly();
});

// 2.10-2.11: ten Pings in a row, each answered in order.
conformance!(autobahn_2_10, |peer| {
    let pings: Vec<Frame> = (0..10).map(|i| Frame::ping(format!("payload-{i}"))).collect();
    for byte in wire(&pings) {
        peer.send(&[byte]);
    }
    for i in 0..10 {
        peer.expect(Frame::pong(format!("payload-{i}")).unmasked());
    }
    peer.close_cleanly();
});

// 3.1: RSV1 set with no extension negotiated fails the connection (§5.2).
conformance!(autobahn_3_1, |peer| {
    peer.send_frames(&[Frame::text("Hello").rsv(0b100)]);
    peer.expect_failure(1002, ProtocolError::ReservedBits(0b100));
});

// 3.2: a good message is echoed, then the RSV frame fails the connection and
// the Ping after it gets no Pong.
conformance!(autobahn_3_2, |peer| {
    peer.send_frames(&[Frame::text("Hello"), Frame::text("Hello").rsv(0b010), Frame::ping("Hello")]);
    peer.expect(Frame::text("Hello").unmasked());
    peer.expect_failure(1002, ProtocolError::ReservedBits(0b010));
});

// 3.3-3.7: every RSV combination, on every kind of frame.
#[test]
fn autobahn_3_3_to_3_7() {
    for (rsv, frame) in [
        (3, Frame::text("Hello")),
        (4, Frame::text("Hello")),
        (5, Frame::binary([0xff; 8])),
        (6, Frame::ping("Hello")),
        (7, Frame::close(1000, "")),
    ] {
        each_peer(|peer| {
            peer.send_frames(&[frame.clone().rsv(rsv)]);
            peer.expect_failure(1002, ProtocolError::ReservedBits(rsv));
        });
    }
}

// 4.1.1-4.1.5, 4.2.1-4.2.5: reserved opcodes fail the connection (§5.2),
// after the good message before them was echoed.
conformance!(autobahn_4_reserved_opcodes, |peer| {
    peer.send_frames(&[Frame::text("Hello"), Frame::new(0x3, ""), Frame::ping("")]);
    peer.expect(Frame::text("Hello").unmasked());
    peer.expect_failure(1002, ProtocolError::ReservedOpcode(0x3));
});

#[test]
fn every_reserved_opcode_fails_with_1002() {
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        each_peer(|peer| {
            peer.send_frames(&[Frame::new(opcode, "reserved")]);
            peer.expect_failure(1002, ProtocolError::ReservedOpcode(opcode));
        });
    }
}

// §5.1: a server MUST close the connection on an unmasked frame.
conformance!(rejects_unmasked_client_frame, |peer| {
    peer.send_frames(&[Frame::text("Hello").unmasked()]);
    peer.expect_failure(1002, ProtocolError::UnmaskedFrame);
});

// §5.2: a 64-bit length with its top bit set.
conformance!(rejects_64_bit_length_with_top_bit, |peer| {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    peer.send(&bytes);
    peer.expect_failure(1002, ProtocolError::LengthMsbSet);
});

// §5.2: lengths must use the minimal encoding (our documented choice: reject).
conformance!(rejects_non_minimal_length, |peer| {
    peer.send(&[0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4, 0, 0, 0, 0, 0]);
    peer.expect_failure(1002, ProtocolError::NonMinimalLength);
});

// §1.2 framing: a frame split at every byte boundary still echoes whole.
conformance!(a_frame_in_one_byte_writes, |peer| {
    for byte in Frame::binary([7u8; 300]).encode() {
        peer.send(&[byte]);
    }
    peer.expect(Frame::binary([7u8; 300]).unmasked());
    peer.close_cleanly();
});
