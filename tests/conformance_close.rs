//! Autobahn family 7 (closing, RFC 6455 §5.5.1, §7): echoes, codes, reasons,
//! and nothing processed or sent after a Close.

mod support;

use sabai::ProtocolError;
use support::*;

// 7.1.1: a message, then Close: the echo, then the Close echo.
conformance!(autobahn_7_1_1, |peer| {
    peer.send_frames(&[Frame::text("Hello World!"), Frame::close(1000, "")]);
    peer.expect(Frame::text("Hello World!").unmasked());
    peer.expect_close(Some(1000));
    assert_eq!(peer.protocol_error(), None);
});

// 7.1.2-7.1.4: after the peer's Close, a second Close, a Ping and a
// message are discarded (§1.4): no Pong, no echo.
conformance!(autobahn_7_1_2_to_7_1_4_nothing_after_close, |peer| {
    peer.send_frames(&[
        Frame::close(1000, ""),
        Frame::close(1000, ""),
        Frame::ping("x"),
        Frame::text("late"),
    ]);
    peer.expect_close(Some(1000));
    assert_eq!(peer.protocol_error(), None);
});

// 7.1.5: a Close inside a fragmented message ends it; the message is dropped.
conformance!(autobahn_7_1_5, |peer| {
    peer.send_frames(&[
        Frame::text("fragment1").fin(false),
        Frame::close(1000, ""),
        Frame::cont("fragment2"),
    ]);
    peer.expect_close(Some(1000));
});

// 7.3.1: an empty Close is answered with an empty Close.
conformance!(autobahn_7_3_1_empty_close, |peer| {
    peer.send_frames(&[Frame::new(CLOSE, "")]);
    peer.expect_close(None);
    assert_eq!(peer.protocol_error(), None);
});

// 7.3.2: a one-byte Close body is a protocol error (§5.5.1).
conformance!(autobahn_7_3_2_close_body_of_one_byte, |peer| {
    peer.send_frames(&[Frame::new(CLOSE, [0x03])]);
    peer.expect_failure(1002, ProtocolError::CloseBodyTooShort);
});

// 7.3.3-7.3.5: a code, a reason, a reason of the maximum 123 bytes.
#[test]
fn autobahn_7_3_3_to_7_3_5() {
    for reason in ["", "Hello World!", &"*".repeat(123)] {
        each_peer(|peer| {
            peer.send_frames(&[Frame::close(1000, reason)]);
            peer.expect_close(Some(1000));
            assert_eq!(peer.protocol_error(), None);
        });
    }
}

// 7.3.6: a 124-byte reason makes a 126-byte control frame (§5.5).
conformance!(autobahn_7_3_6_close_reason_too_long, |peer| {
    peer.send_frames(&[Frame::close(1000, &"*".repeat(124))]);
    peer.expect_failure(1002, ProtocolError::ControlFrameTooLong(126));
});

// 7.5.1: a reason that is not UTF-8 fails with 1007 (§8.1).
conformance!(autobahn_7_5_1_invalid_utf8_reason, |peer| {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
    );
    peer.send_frames(&[Frame::new(CLOSE, payload)]);
    peer.expect_failure(1007, ProtocolError::InvalidUtf8);
});

// 7.7.x: every code valid on receipt is echoed (1000-1003, 1007-1014, 3000-4999).
#[test]
fn autobahn_7_7_valid_codes_are_echoed() {
    for code in
        [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
    {
        each_peer(|peer| {
            peer.send_frames(&[Frame::close(code, "")]);
            peer.expect_close(Some(code));
            assert_eq!(peer.protocol_error(), None);
        });
    }
}

// 7.9.x, 7.13.x: codes not allowed on the wire fail with 1002 (§7.4).
#[test]
fn autobahn_7_9_invalid_codes_fail_with_1002() {
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        each_peer(|peer| {
            peer.send_frames(&[Frame::close(code, "")]);
            peer.expect_failure(1002, ProtocolError::InvalidCloseCode(code));
        });
    }
}

// §7.1.5: the transport ending without a Close is an abnormal closure (1006),
// reported to the application; nothing is sent.
conformance!(transport_ending_without_close_is_abnormal, |peer| {
    peer.send_frames(&[Frame::text("last words")]);
    peer.expect(Frame::text("last words").unmasked());
    peer.shutdown();
    assert_eq!(peer.recv(), None);
    assert_eq!(peer.outcome(), Outcome::Abnormal);
});

// Everything that arrived before the transport ended is still delivered.
conformance!(messages_before_eof_are_not_lost, |peer| {
    peer.send_frames(&[Frame::text("one"), Frame::text("two")]);
    peer.shutdown();
    peer.expect(Frame::text("one").unmasked());
    peer.expect(Frame::text("two").unmasked());
    assert_eq!(peer.recv(), None);
});
