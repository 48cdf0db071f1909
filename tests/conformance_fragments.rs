//! Autobahn family 5 (fragmentation, RFC 6455 §5.4), each scenario run over
//! the in-memory core and over TCP.

mod support;

use sabai::ProtocolError;
use support::*;

fn two_fragments() -> Vec<u8> {
    wire(&[Frame::text("fragment1").fin(false), Frame::cont("fragment2")])
}

// 5.1: a Ping with FIN clear: control frames MUST NOT be fragmented (§5.5).
conformance!(rejects_fragmented_ping, |peer| {
    peer.send_frames(&[Frame::ping("fragment1").fin(false), Frame::cont("fragment2")]);
    peer.expect_failure(1002, ProtocolError::FragmentedControlFrame);
});

// 5.2: the same for a Pong.
conformance!(rejects_fragmented_pong, |peer| {
    peer.send_frames(&[Frame::pong("fragment1").fin(false), Frame::cont("fragment2")]);
    peer.expect_failure(1002, ProtocolError::FragmentedControlFrame);
});

// 5.3: a text message in two fragments is echoed whole.
conformance!(autobahn_5_3, |peer| {
    peer.send(&two_fragments());
    peer.expect(Frame::text("fragment1fragment2").unmasked());
    peer.close_cleanly();
});

// 5.4, 5.5: the same, written in small pieces and one byte at a time.
conformance!(autobahn_5_4_and_5_5, |peer| {
    for piece in two_fragments().chunks(5) {
        peer.send(piece);
    }
    peer.expect(Frame::text("fragment1fragment2").unmasked());
    for byte in two_fragments() {
        peer.send(&[byte]);
    }
    peer.expect(Frame::text("fragment1fragment2").unmasked());
    peer.close_cleanly();
});

// 5.6-5.8: a Ping between two fragments is answered at once; the message
// completes after it (§5.4: control frames MAY be injected).
conformance!(autobahn_5_6_ping_between_fragments, |peer| {
    let bytes =
        wire(&[Frame::text("fragment1").fin(false), Frame::ping("ping payload"), Frame::cont("fragment2")]);
    for byte in bytes {
        peer.send(&[byte]);
    }
    peer.expect(Frame::pong("ping payload").unmasked());
    peer.expect(Frame::text("fragment1fragment2").unmasked());
    peer.close_cleanly();
});

// 5.9-5.11: a final continuation frame with no message to continue.
conformance!(autobahn_5_9_continuation_without_start, |peer| {
    peer.send_frames(&[Frame::cont("non-continuation payload"), Frame::text("Hello, world!")]);
    peer.expect_failure(1002, ProtocolError::UnexpectedContinuation);
});

// 5.12-5.14: a non-final continuation frame with no message to continue.
conformance!(autobahn_5_12_open_continuation_without_start, |peer| {
    peer.send_frames(&[Frame::cont("non-continuation payload").fin(false), Frame::text("Hello, world!")]);
    peer.expect_failure(1002, ProtocolError::UnexpectedContinuation);
});

// 5.15: a complete fragmented message is echoed, then a stray continuation fails.
conformance!(autobahn_5_15, |peer| {
    peer.send_frames(&[
        Frame::text("fragment1").fin(false),
        Frame::cont("fragment2"),
        Frame::cont("fragment3").fin(false),
        Frame::text("fragment4"),
    ]);
    peer.expect(Frame::text("fragment1fragment2").unmasked());
    peer.expect_failure(1002, ProtocolError::UnexpectedContinuation);
});

// 5.18: a new text frame inside a fragmented message (§5.4: no interleaving).
conformance!(autobahn_5_18_data_frame_inside_fragmented_message, |peer| {
    peer.send_frames(&[Frame::text("fragment1").fin(false), Frame::text("fragment2")]);
    peer.expect_failure(1002, ProtocolError::ExpectedContinuation);
});

// 5.19, 5.20: five fragments with two Pings among them.
conformance!(autobahn_5_19, |peer| {
    peer.send_frames(&[
        Frame::text("fragment1").fin(false),
        Frame::cont("fragment2").fin(false),
        Frame::ping("pongme 1!"),
        Frame::cont("fragment3").fin(false),
        Frame::cont("fragment4").fin(false),
        Frame::ping("pongme 2!"),
        Frame::cont("fragment5"),
    ]);
    peer.expect(Frame::pong("pongme 1!").unmasked());
    peer.expect(Frame::pong("pongme 2!").unmasked());
    peer.expect(Frame::text("fragment1fragment2fragment3fragment4fragment5").unmasked());
    peer.close_cleanly();
});

// A binary message in fragments, and a message made only of empty fragments.
conformance!(binary_and_empty_fragments, |peer| {
    peer.send_frames(&[Frame::binary([1, 2]).fin(false), Frame::cont([]).fin(false), Frame::cont([3])]);
    peer.expect(Frame::binary([1, 2, 3]).unmasked());
    peer.send_frames(&[Frame::text("").fin(false), Frame::cont("").fin(false), Frame::cont("")]);
    peer.expect(Frame::text("").unmasked());
    peer.close_cleanly();
});

// Many one-byte fragments make one message (reassembly is linear).
conformance!(ten_thousand_one_byte_fragments, |peer| {
    let mut frames = vec![Frame::binary([0]).fin(false)];
    frames.extend((1..10_000u32).map(|i| Frame::cont([i as u8]).fin(i == 9_999)));
    peer.send_frames(&frames);
    let expected: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    peer.expect(Frame::binary(expected).unmasked());
    peer.close_cleanly();
});

// 10.1.1: a 64 KiB text message fragmented into 1300-byte frames.
conformance!(autobahn_10_1_1, |peer| {
    let text = "*".repeat(65536);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(1300).collect();
    let frames: Vec<Frame> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let frame = if i == 0 { Frame::text(c) } else { Frame::cont(c) };
            frame.fin(i == chunks.len() - 1)
        })
        .collect();
    peer.send_frames(&frames);
    peer.expect(Frame::text(&text).unmasked());
    peer.close_cleanly();
});
