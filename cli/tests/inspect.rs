//! `sabai inspect` and `sabai accept` as a user runs them: the RFC's
//! examples explained, and bad input answered in words with no panic.

mod support;

use support::{golden, run, text};

fn inspect(args: &[&str]) -> (bool, String, String) {
    let out = run(&[&["inspect"], args].concat(), "");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn rfc_6455_5_7_unmasked_hello() {
    let (ok, out, _) = inspect(&["81 05 48 65 6c 6c 6f"]);
    assert!(ok);
    assert!(out.contains("read as a client reads them"), "{out}");
    assert!(out.contains("opcode   0x1 Text"), "{out}");
    assert!(out.contains("→ a text message of 5 bytes is delivered: \"Hello\""), "{out}");
    golden("inspect_unmasked_hello.txt", &out);
}

#[test]
fn rfc_6455_5_7_masked_hello() {
    let (ok, out, _) = inspect(&["--from", "client", "81 85 37 fa 21 3d 7f 9f 4d 51 58"]);
    assert!(ok);
    assert!(out.contains("key      37 fa 21 3d"), "{out}");
    assert!(out.contains("unmasked 48 65 6c 6c 6f"), "{out}");
    golden("inspect_masked_hello.txt", &out);
}

#[test]
fn hex_may_come_as_several_arguments_or_on_stdin() {
    let (_, one, _) = inspect(&["81 05 48 65 6c 6c 6f"]);
    let (_, many, _) = inspect(&["81", "05", "48656c6c6f"]);
    let piped = run(&["inspect"], "81 05 48 65\n6c 6c 6f\n");
    assert_eq!(one, many);
    assert_eq!(one, text(&piped.stdout));
}

#[test]
fn unmasked_frame_from_a_client_fails_with_1002() {
    let (ok, out, _) = inspect(&["--from", "client", "81 05 48 65 6c 6c 6f"]);
    assert!(ok, "a violation is explained, not an error of the tool");
    assert!(out.contains("✗ client frame not masked (RFC 6455 §5.1)"), "{out}");
    assert!(out.contains("fails the connection with close code 1002"), "{out}");
}

#[test]
fn rsv1_without_an_extension_and_with_permessage_deflate() {
    let (_, out, _) = inspect(&["c1 07 f2 48 cd c9 c9 07 00"]);
    assert!(out.contains("RSV bits 0b100 set without a negotiated extension (RFC 6455 §5.2)"), "{out}");
    assert!(out.contains("close code 1002"), "{out}");
    // RFC 7692 §7.2.3.1: "Hello" compressed, as one frame.
    let (_, out, _) = inspect(&["--deflate", "c1 07 f2 48 cd c9 c9 07 00"]);
    assert!(out.contains("→ a text message of 5 bytes is delivered: \"Hello\""), "{out}");
}

#[test]
fn length_with_the_top_bit_set_is_a_violation() {
    let (ok, out, _) = inspect(&["82 7f 80 00 00 00 00 00 00 00"]);
    assert!(ok);
    assert!(out.contains("64-bit payload length with the top bit set (RFC 6455 §5.2)"), "{out}");
}

#[test]
fn invalid_opcodes_are_named() {
    for op in (0x3..=0x7).chain(0xb..=0xf) {
        let (ok, out, _) = inspect(&[&format!("{:02x} 00", 0x80 | op)]);
        assert!(ok);
        assert!(out.contains(&format!("reserved opcode {op:#x} (RFC 6455 §5.2)")), "{out}");
    }
}

#[test]
fn truncated_frames_say_what_is_missing() {
    let (ok, out, _) = inspect(&["81 7e 01"]);
    assert!(ok);
    assert!(out.contains("truncated header: 3 bytes (81 7e 01), and a header needs at least 4"), "{out}");
    let (_, out, _) = inspect(&["81 05 48 65"]);
    assert!(
        out.contains("(81 05, 7-bit length form) declares 5 payload bytes and only 2 arrived (3 missing)"),
        "{out}"
    );
}

#[test]
fn garbage_hex_is_an_error_with_exit_status_1() {
    for (input, says) in [("81 0g", "not a hex digit: 'g'"), ("810", "odd number of hex digits")] {
        let (ok, out, err) = inspect(&[input]);
        assert!(!ok && out.is_empty(), "{input}");
        assert!(err.contains(says) && !err.contains("panicked"), "{input}: {err}");
    }
}

#[test]
fn random_raw_bytes_never_panic() {
    // A fixed xorshift: the same "random" inputs every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for round in 0..40 {
        let len = round * 7 % 97;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut child = support::sabai()
            .args(["inspect", "--raw"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{bytes:02x?}: {}", text(&out.stderr));
    }
}

#[test]
fn accept_shows_each_step_with_the_guid() {
    let out = run(&["accept", "dGhlIHNhbXBsZSBub25jZQ=="], "");
    let out = text(&out.stdout);
    assert!(out.contains("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
    assert!(out.contains("b3 7a 4f 2c c0 62 4f 16 90 f6 46 06 cf 38 59 45 b2 be c4 ea"));
    assert!(out.ends_with("   s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n"), "{out}");
    golden("accept_rfc_key.txt", &out);
}
