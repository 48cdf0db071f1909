//! Shared by the tool's tests: running the built `sabai`, a `sabai serve`
//! on a free 127.0.0.1 port, and golden files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The built binary.
pub fn sabai() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sabai"))
}

/// Runs `sabai ARGS` with `stdin`, to completion.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = sabai()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sabai");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// A `sabai serve ARGS 127.0.0.1:0` and its port, read from its first line.
pub struct Server {
    pub child: Child,
    pub port: u16,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = sabai()
            .arg("serve")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sabai serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Everything else it printed, once it exited (`--once`).
    pub fn finish(mut self) -> String {
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve failed: {rest}");
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `actual` with `127.0.0.1:PORT` for the port, so it can be compared.
pub fn without_port(actual: &str, port: u16) -> String {
    actual.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT")
}

/// Compares with `tests/golden/NAME`; `SABAI_BLESS=1` writes it instead.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("SABAI_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SABAI_BLESS=1 writes it)", path.display()));
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!("{name} differs (first different line: {line:?}):\n--- expected\n{expected}\n--- actual\n{actual}");
    }
}
