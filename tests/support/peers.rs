//! Two ways to put a raw peer in front of a sabai echo endpoint: the
//! in-memory core ([`MemoryPeer`]) and a real tokio server on loopback TCP
//! ([`TcpPeer`]). Scenarios are written once against [`Peer`].

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use sabai::{Config, Connection, Ending, Event, ProtocolError, State, WebSocketConfig};

use super::frames::{wire, Frame, CLOSE};

/// How long a TCP peer waits for sabai before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A raw WebSocket client talking to a sabai server that echoes messages.
pub trait Peer {
    /// Sends bytes as they are.
    fn send(&mut self, bytes: &[u8]);
    /// The next frame sabai sent; `None` once sabai closed the transport.
    fn recv(&mut self) -> Option<Frame>;
    /// Ends our sending direction (TCP FIN; `receive_eof` in memory).
    fn shutdown(&mut self);
    /// How sabai told its application the connection ended, once it is over.
    fn outcome(&mut self) -> Outcome;

    /// The protocol error sabai reported to its application, once the
    /// connection is over.
    fn protocol_error(&mut self) -> Option<ProtocolError> {
        match self.outcome() {
            Outcome::Protocol(error) => Some(error),
            _ => None,
        }
    }

    fn send_frames(&mut self, frames: &[Frame]) {
        self.send(&wire(frames));
    }

    /// The next frame must be `expected` (the mask is not compared).
    fn expect(&mut self, expected: Frame) {
        let got = self.recv().expect("sabai closed the connection, expected a frame");
        assert_eq!(
            (got.fin, got.rsv, got.opcode, &got.payload),
            (expected.fin, expected.rsv, expected.opcode, &expected.payload)
        );
        assert_eq!(got.mask, None, "a server must not mask (RFC 6455 §5.1)");
    }

    /// Sabai must answer with a Close carrying `code` (`None`: no code) and
    /// then close the transport.
    fn expect_close(&mut self, code: Option<u16>) {
        let frame = self.recv().expect("expected a Close frame, the transport closed");
        assert_eq!(frame.opcode, CLOSE, "expected a Close frame, got {frame:?}");
        assert_eq!(frame.close_code(), code, "close code of {frame:?}");
        // A client that sent Close waits for the server to end TCP (§7.1.1).
        if let Some(extra) = self.recv() {
            panic!("frame after Close: {extra:?}");
        }
    }

    /// Sabai fails the connection with `code` and reports `error`.
    fn expect_failure(&mut self, code: u16, error: ProtocolError) {
        self.expect_close(Some(code));
        assert_eq!(self.protocol_error(), Some(error));
    }

    /// A clean close started by us: our Close is echoed with the same code.
    fn close_cleanly(&mut self) {
        self.send_frames(&[Frame::close(1000, "")]);
        self.expect_close(Some(1000));
        assert_eq!(self.outcome(), Outcome::Clean);
    }
}

/// How a connection ended, as sabai reported it to its application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The closing handshake completed.
    Clean,
    /// The peer broke a rule.
    Protocol(ProtocolError),
    /// The transport ended before the peer's Close (1006).
    Abnormal,
}

/// The sans-IO core as the server, with an application that echoes every
/// message.
pub struct MemoryPeer {
    conn: Connection,
    from_sabai: Vec<u8>,
    pub events: Vec<Event>,
    error: Option<ProtocolError>,
}

impl MemoryPeer {
    pub fn server() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        MemoryPeer {
            conn: Connection::server(config),
            from_sabai: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs the application until the connection needs input.
    fn pump(&mut self) {
        loop {
            match self.conn.poll_event() {
                Ok(Some(Event::Message(message))) => {
                    self.events.push(Event::Message(message.clone()));
                    // The echo may fail after our Close went out: fine.
                    let _ = self.conn.send(message);
                }
                Ok(Some(event)) => self.events.push(event),
                Ok(None) => break,
                Err(error) => {
                    assert!(self.error.is_none(), "second error {error:?} after {:?}", self.error);
                    self.error = Some(error);
                }
            }
        }
        while let Some(bytes) = self.conn.poll_transmit() {
            self.from_sabai.extend_from_slice(&bytes);
        }
    }
}

impl Peer for MemoryPeer {
    fn send(&mut self, bytes: &[u8]) {
        self.conn.receive(bytes);
        self.pump();
    }

    fn recv(&mut self) -> Option<Frame> {
        if let Some((frame, used)) = Frame::decode(&self.from_sabai) {
            self.from_sabai.drain(..used);
            return Some(frame);
        }
        assert!(self.from_sabai.is_empty(), "partial frame left: {:?}", self.from_sabai);
        match self.conn.state() {
            State::Closed | State::Failed => None,
            state => panic!("no frame from sabai, which is waiting for input in state {state:?}"),
        }
    }

    fn shutdown(&mut self) {
        self.conn.receive_eof();
        self.pump();
    }

    fn outcome(&mut self) -> Outcome {
        match self.conn.ending() {
            Some(Ending::Clean(_)) => Outcome::Clean,
            Some(Ending::Failed(error)) => {
                assert_eq!(self.error, Some(*error), "poll_event reported the failure");
                Outcome::Protocol(*error)
            }
            Some(Ending::Abnormal) => Outcome::Abnormal,
            other => panic!("the connection is not over as expected: {other:?}"),
        }
    }
}

/// A sabai tokio echo server on 127.0.0.1, serving one connection, and a
/// blocking raw client connected to it.
pub struct TcpPeer {
    stream: TcpStream,
    from_sabai: Vec<u8>,
    ended: mpsc::Receiver<Result<(), sabai::Error>>,
    outcome: Option<Outcome>,
}

impl TcpPeer {
    pub fn server() -> Self {
        Self::with_config(WebSocketConfig::default())
    }

    pub fn with_config(config: WebSocketConfig) -> Self {
        let (port, ended) = serve_once(move |stream| async move {
            let mut ws = sabai::accept_with(stream, &config, |_| Ok(sabai::handshake::Accept::new())).await?;
            while let Some(message) = ws.recv().await? {
                ws.send(message).await?;
            }
            Ok(())
        });
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&handshake_request("/")).unwrap();
        let mut peer = TcpPeer { stream, from_sabai: Vec::new(), ended, outcome: None };
        let head = peer.read_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "handshake refused: {head}");
        peer
    }

    /// Reads an HTTP head; bytes after it stay buffered.
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.from_sabai.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.from_sabai.drain(..end + 4).collect();
                return String::from_utf8(head).unwrap();
            }
            assert!(self.read_more(), "connection closed during the handshake");
        }
    }

    /// Reads what is available; false at EOF.
    fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.from_sabai.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("sabai sent nothing for {TIMEOUT:?}")
            }
            Err(e) => panic!("reading from sabai failed: {e} (a reset instead of a clean close?)"),
        }
    }
}

/// A valid opening handshake with the RFC's example key.
pub fn handshake_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

impl Peer for TcpPeer {
    fn send(&mut self, bytes: &[u8]) {
        // Once sabai has failed the connection, writes may be refused; what
        // sabai sent is still read back by `recv`.
        if let Err(e) = self.stream.write_all(bytes) {
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "write failed: {e}"
            );
        }
    }

    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.from_sabai) {
                self.from_sabai.drain(..used);
                return Some(frame);
            }
            if !self.read_more() {
                assert!(self.from_sabai.is_empty(), "partial frame at EOF: {:?}", self.from_sabai);
                return None;
            }
        }
    }

    fn shutdown(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    fn outcome(&mut self) -> Outcome {
        if self.outcome.is_none() {
            // The server task ends after closing the transport.
            self.stream.shutdown(std::net::Shutdown::Write).ok();
            let ended = self.ended.recv_timeout(TIMEOUT).expect("server did not finish");
            self.outcome = Some(match ended {
                Ok(()) => Outcome::Clean,
                Err(sabai::Error::Protocol(e)) => Outcome::Protocol(e),
                Err(sabai::Error::AbnormalClosure) => Outcome::Abnormal,
                Err(other) => panic!("server ended with an unexpected error: {other}"),
            });
        }
        self.outcome.unwrap()
    }
}

/// Runs `scenario` once against a fresh in-memory peer and once against a
/// fresh TCP peer: for tests that loop over many cases.
pub fn each_peer(scenario: impl Fn(&mut dyn Peer)) {
    scenario(&mut MemoryPeer::server());
    scenario(&mut TcpPeer::server());
}

/// Runs `serve` on the first connection to a fresh 127.0.0.1 port, on a
/// current-thread runtime in a thread of its own. Returns the port and
/// where `serve`'s result arrives.
pub fn serve_once<T, F, Fut>(serve: F) -> (u16, mpsc::Receiver<T>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (port_tx, port_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let _ = done_tx.send(serve(stream).await);
        });
    });
    (port_rx.recv_timeout(TIMEOUT).expect("server did not start"), done_rx)
}
