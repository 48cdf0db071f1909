//! `sabai connect` against `sabai serve` and against misbehaving servers,
//! all on 127.0.0.1: messages round-trip in pipes, the trace is the golden
//! file byte for byte, and every failure is a sentence and exit status 1.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use support::{golden, run, text, without_port, Server};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[test]
fn echo_round_trip_in_a_pipe_with_n() {
    let server = Server::start(&[]);
    let out = run(&["connect", &server.url("/"), "-n", "3"], "one\ntwo\nthree\nfour\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");
    assert!(text(&out.stderr).contains("closed: 1000 (normal closure)"), "{}", text(&out.stderr));
}

#[test]
fn end_of_stdin_closes_normally() {
    let server = Server::start(&[]);
    let out = run(&["connect", &server.url("/")], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn binary_lines_are_hex_both_ways() {
    let server = Server::start(&[]);
    let out = run(&["connect", "--binary", &server.url("/"), "-n", "1"], "00 ff 10\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "00 ff 10\n");
}

#[test]
fn close_command_sends_its_code_and_reason() {
    let server = Server::start(&["--once"]);
    let out = run(&["connect", &server.url("/")], "/close 4000 bye\n");
    // The server echoes our code (not the reason); our own 4000 is no failure.
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("closed: 4000 (private use) \"\""), "{}", text(&out.stderr));
    assert!(server.finish().contains("#1 closed: 4000 (private use) \"bye\""));
}

#[test]
fn ping_rtt_is_printed_when_the_pong_arrives() {
    let server = Server::start(&[]);
    let out = run(&["connect", "--print-ping-rtt", &server.url("/"), "-n", "1"], "/ping\nafter\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pong after "), "{}", text(&out.stderr));
}

#[test]
fn broadcast_sends_to_every_connection() {
    let server = Server::start(&["--broadcast"]);
    let url = server.url("/");
    let listener = {
        let url = url.clone();
        thread::spawn(move || run(&["connect", &url, "-n", "1"], ""))
    };
    // The listener has joined once the server has its connection.
    thread::sleep(Duration::from_millis(500));
    let out = run(&["connect", &url, "-n", "1"], "to all\n");
    assert_eq!(text(&out.stdout), "to all\n");
    let heard = listener.join().unwrap();
    assert_eq!(text(&heard.stdout), "to all\n", "{}", text(&heard.stderr));
}

#[test]
fn trace_of_both_ends_is_the_golden_file() {
    let server = Server::start(&["--once", "--trace"]);
    let args =
        ["connect", "--trace", "--key", KEY, "--mask-key", "37fa213d", "-n", "1", &server.url("/chat")];
    let out = run(&args, "Hello\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello\n");
    let port = server.port;
    golden("connect_trace.txt", &without_port(&text(&out.stderr), port));
    let served = server.finish();
    // The client's port differs on every run.
    let served: String =
        served.lines().filter(|l| !l.contains("connection from")).map(|l| format!("{l}\n")).collect();
    golden("serve_trace.txt", &without_port(&served, port));
}

#[test]
fn bad_key_and_mask_key_are_refused_before_connecting() {
    let out = run(&["connect", "--key", "short", "ws://127.0.0.1:9/"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("base64 of exactly 16 bytes"), "{}", text(&out.stderr));
    let out = run(&["connect", "--mask-key", "37fa", "ws://127.0.0.1:9/"], "");
    assert!(text(&out.stderr).contains("a masking key is 4 bytes"), "{}", text(&out.stderr));
}

#[test]
fn refused_connection_is_a_clear_error() {
    // Bound and dropped: nothing listens there any more.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(&["connect", &format!("ws://127.0.0.1:{port}/")], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("cannot connect to 127.0.0.1:{port}")) && err.contains("refused"), "{err}");
}

/// A one-connection server that reads the request, then does `then`.
fn fake_server(then: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        then(stream)
    });
    port
}

const ACCEPT_101: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn connect_to(port: u16, extra: &[&str]) -> (Option<i32>, String) {
    let url = format!("ws://127.0.0.1:{port}/");
    let out = run(&[&["connect", "--key", KEY], extra, &[url.as_str()]].concat(), "");
    (out.status.code(), text(&out.stderr))
}

#[test]
fn forbidden_shows_the_status_and_the_body() {
    let port = fake_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n\r\nunknown origin");
    });
    let (code, err) = connect_to(port, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused the WebSocket with HTTP 403 (HTTP/1.1 403 Forbidden)"), "{err}");
    assert!(err.contains("body: unknown origin"), "{err}");
}

#[test]
fn garbage_instead_of_a_handshake_response() {
    let port = fake_server(|mut s| {
        let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    });
    let (code, err) = connect_to(port, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("the server's handshake response is not acceptable"), "{err}");
}

#[test]
fn a_stalled_handshake_times_out() {
    let port = fake_server(|s| {
        thread::sleep(Duration::from_secs(5));
        drop(s);
    });
    let (code, err) = connect_to(port, &["--timeout", "0.5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no WebSocket after 500ms (--timeout)"), "{err}");
}

#[test]
fn a_server_closing_mid_frame_is_a_1006() {
    let port = fake_server(|mut s| {
        // The 101, then the first 3 bytes of a 5-byte text frame, then gone.
        let _ = s.write_all(ACCEPT_101.as_bytes());
        let _ = s.write_all(&[0x81, 0x05, b'H']);
    });
    let (code, err) = connect_to(port, &["-n", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("without a Close frame (1006)"), "{err}");
}

#[test]
fn a_protocol_error_names_its_close_code() {
    let port = fake_server(|mut s| {
        // A masked frame from a server: RFC 6455 §5.1.
        let _ = s.write_all(ACCEPT_101.as_bytes());
        let _ = s.write_all(&[0x81, 0x80, 1, 2, 3, 4]);
        thread::sleep(Duration::from_millis(500));
    });
    let (code, err) = connect_to(port, &["-n", "1"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "protocol error by the server: server frame masked (RFC 6455 §5.1); we closed with 1002"
        ),
        "{err}"
    );
}

#[test]
fn a_101_in_http_1_0_is_refused() {
    let port = fake_server(|mut s| {
        let _ = s.write_all(ACCEPT_101.replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes());
        thread::sleep(Duration::from_millis(500));
    });
    let (code, err) = connect_to(port, &["-n", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not acceptable: WebSocket handshake needs HTTP/1.1 (RFC 6455 §4.1"), "{err}");
}
