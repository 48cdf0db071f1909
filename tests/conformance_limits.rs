//! Autobahn family 9 (limits and performance) at bounded sizes, and the
//! configured limits: refused with 1009 on the header, before buffering.

mod support;

use sabai::{Config, ProtocolError, WebSocketConfig};
use support::*;

// 9.1.x, 9.2.x: large text and binary messages in one frame.
conformance!(autobahn_9_1_and_9_2_large_messages, |peer| {
    for len in [64 << 10, 256 << 10, 1 << 20] {
        let text = Frame::text("*".repeat(len));
        peer.send_frames(std::slice::from_ref(&text));
        peer.expect(text.unmasked());
        let binary = Frame::binary(vec![0xfe; len]);
        peer.send_frames(std::slice::from_ref(&binary));
        peer.expect(binary.unmasked());
    }
    peer.close_cleanly();
});

// 9.3.x, 9.4.x: a 1 MiB message in fragments of 64 B to 64 KiB.
conformance!(autobahn_9_3_fragmented_large_message, |peer| {
    let payload = vec![b'x'; 1 << 20];
    for size in [64, 256, 1024, 4096, 16384, 65536] {
        let count = payload.len() / size;
        let frames: Vec<Frame> = payload
            .chunks(size)
            .enumerate()
            .map(|(i, c)| (if i == 0 { Frame::text(c) } else { Frame::cont(c) }).fin(i == count - 1))
            .collect();
        peer.send_frames(&frames);
        peer.expect(Frame::text(&payload).unmasked());
    }
    peer.close_cleanly();
});

// 9.5.x, 9.6.x: a 1 MiB message written in small chunks.
conformance!(autobahn_9_5_chunked_writes, |peer| {
    let frame = Frame::binary(vec![7; 1 << 20]);
    for chunk in frame.encode().chunks(1000) {
        peer.send(chunk);
    }
    peer.expect(frame.unmasked());
    peer.close_cleanly();
});

// 9.7.x, 9.8.x: a thousand small messages back to back, echoed in order.
conformance!(autobahn_9_7_many_small_messages, |peer| {
    let frames: Vec<Frame> = (0..1000).map(|i| Frame::text(format!("message {i}"))).collect();
    peer.send_frames(&frames);
    for i in 0..1000 {
        peer.expect(Frame::text(format!("message {i}")).unmasked());
    }
    peer.close_cleanly();
});

fn small_limits() -> Config {
    let mut config = Config::default();
    config.max_frame_size = 1000;
    config.max_message_size = 2500;
    config
}

fn with_small_limits(scenario: impl Fn(&mut dyn Peer)) {
    scenario(&mut MemoryPeer::with_config(small_limits()));
    let mut config = WebSocketConfig::default();
    config.protocol = small_limits();
    scenario(&mut TcpPeer::with_config(config));
}

// §10.4: a frame over the limit is refused on its header alone: the 1009
// arrives though none of the declared payload was sent.
#[test]
fn frame_over_limit_is_refused_on_its_header() {
    with_small_limits(|peer| {
        peer.send_frames(&[Frame::binary(vec![1; 1000])]);
        peer.expect(Frame::binary(vec![1; 1000]).unmasked());
        let header = &Frame::binary(vec![0; 1001]).encode()[..8];
        peer.send(header);
        peer.expect_failure(1009, ProtocolError::FrameTooLarge { len: 1001, max: 1000 });
    });
}

// A declared length in the exabytes gets the same answer, with nothing allocated.
#[test]
fn huge_declared_length_is_refused() {
    with_small_limits(|peer| {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        peer.send(&header);
        peer.expect_failure(1009, ProtocolError::FrameTooLarge { len: u64::MAX >> 1, max: 1000 });
    });
}

// The message limit counts every fragment, and is checked on each header.
#[test]
fn message_over_limit_across_fragments() {
    with_small_limits(|peer| {
        peer.send_frames(&[Frame::binary(vec![1; 1000]).fin(false), Frame::cont(vec![2; 1000]).fin(false)]);
        let third = Frame::cont(vec![3; 501]).encode();
        peer.send(&third[..8]);
        peer.expect_failure(1009, ProtocolError::MessageTooLarge { len: 2501, max: 2500 });
    });
}

// Exactly at the limits is fine.
#[test]
fn message_at_the_limit_is_accepted() {
    with_small_limits(|peer| {
        peer.send_frames(&[
            Frame::binary(vec![1; 1000]).fin(false),
            Frame::cont(vec![2; 1000]).fin(false),
            Frame::cont(vec![3; 500]),
        ]);
        let mut expected = vec![1; 1000];
        expected.extend(vec![2; 1000]);
        expected.extend(vec![3; 500]);
        peer.expect(Frame::binary(expected).unmasked());
        peer.close_cleanly();
    });
}
