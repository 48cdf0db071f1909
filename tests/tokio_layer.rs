//! The tokio layer: cancel safety, split halves in two tasks, who closes
//! TCP first, time limits, and local misuse.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use sabai::{
    CloseCode, Config, Connection, Event, Message, MessageKind, PreparedMessage, SendError, WebSocket,
    WebSocketConfig,
};
use support::*;
use tokio::io::AsyncWriteExt;

fn server_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: S) -> WebSocket<S> {
    WebSocket::from_connection(io, Connection::server(Config::default()))
}

fn client_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: S) -> WebSocket<S> {
    WebSocket::from_connection(io, Connection::client(Config::default(), rand::random()))
}

// recv() dropped at every await point inside select! loses nothing.
#[tokio::test]
async fn recv_is_cancel_safe_in_select() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut ws = server_over(a);
    let expected: Vec<String> = (0..50).map(|i| format!("message {i} ").repeat(i % 7 + 1)).collect();
    let frames: Vec<Frame> = expected.iter().map(Frame::text).collect();
    let bytes = wire(&frames);
    let writer = tokio::spawn(async move {
        for piece in bytes.chunks(7) {
            b.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        b
    });
    let (mut got, mut cancelled) = (Vec::new(), 0);
    while got.len() < expected.len() {
        tokio::select! {
            biased;
            message = ws.recv() => got.push(message.unwrap().unwrap()),
            // Ready on its second poll: cancels recv() again and again.
            _ = tokio::task::yield_now() => cancelled += 1,
        }
    }
    assert!(cancelled > 10, "recv was cancelled only {cancelled} times");
    assert_eq!(got, expected.into_iter().map(Message::Text).collect::<Vec<_>>());
    drop(writer.await.unwrap());
}

// Both halves write (echoes and automatic Pongs) through a tiny pipe, so both
// often wait for write readiness at once: a lost wakeup would hang here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_two_tasks_do_not_lose_wakeups() {
    const MESSAGES: usize = 2000;
    const PINGS: usize = 200;
    let (a, b) = tokio::io::duplex(64);
    let (mut server_read, mut server_write) = server_over(a).split();
    let (mut client_read, mut client_write) = client_over(b).split();

    let (to_writer, mut from_reader) = tokio::sync::mpsc::channel::<Message>(16);
    let server_reader = tokio::spawn(async move {
        while let Some(message) = server_read.recv().await.unwrap() {
            to_writer.send(message).await.unwrap();
        }
    });
    let server_writer = tokio::spawn(async move {
        while let Some(message) = from_reader.recv().await {
            server_write.send(message).await.unwrap();
        }
    });
    let client_sender = tokio::spawn(async move {
        for i in 0..MESSAGES {
            client_write.send(Message::binary(vec![i as u8; 100 + i % 300])).await.unwrap();
            if i % (MESSAGES / PINGS) == 0 {
                client_write.ping(&(i as u32).to_be_bytes()).await.unwrap();
            }
        }
        client_write
    });
    let client_receiver = tokio::spawn(async move {
        let (mut echoes, mut pongs) = (0, 0);
        while echoes < MESSAGES || pongs < PINGS {
            match client_read.recv_event().await.unwrap() {
                Some(Event::Message(Message::Binary(data))) => {
                    assert_eq!(data.len(), 100 + echoes % 300);
                    assert!(data.iter().all(|&b| b == echoes as u8));
                    echoes += 1;
                }
                Some(Event::Pong(_)) => pongs += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        client_read
    });
    let all = async {
        let mut client_write = client_sender.await.unwrap();
        let mut client_read = client_receiver.await.unwrap();
        client_write.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(client_read.recv().await.unwrap(), None);
        server_reader.await.unwrap();
        server_writer.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), all).await.expect("a half hung: lost wakeup");
}

/// A raw TCP server thread: does the handshake with whatever key the client
/// sent, then runs `script` on the socket.
fn raw_server(script: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap().trim();
        let accept = sabai::handshake::accept_key(key);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(response.as_bytes()).unwrap();
        script(stream);
    });
    port
}

fn read_frame(stream: &mut std::net::TcpStream) -> Frame {
    let mut buf = Vec::new();
    let mut byte = [0u8];
    loop {
        if let Some((frame, _)) = Frame::decode(&buf) {
            return frame;
        }
        stream.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
}

// §7.1.1: the client waits for the server to close TCP first.
#[tokio::test]
async fn client_waits_for_the_server_to_close_tcp() {
    let (tx, rx) = std::sync::mpsc::channel();
    let port = raw_server(move |mut stream| {
        stream.write_all(&Frame::close(1000, "server done").unmasked().encode()).unwrap();
        let echo = read_frame(&mut stream);
        assert_eq!(echo.close_code(), Some(1000));
        // The client must still be connected: it waits for us.
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let still_open = matches!(stream.read(&mut [0u8; 1]), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        tx.send((still_open, Instant::now())).unwrap();
        drop(stream); // now the server closes
    });
    let mut ws = sabai::connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), None);
    let returned = Instant::now();
    let (still_open, server_closed) = rx.recv().unwrap();
    assert!(still_open, "the client closed TCP before the server");
    assert!(returned >= server_closed, "recv returned before the server closed TCP");
    assert_eq!(ws.close_frame(), Some(&sabai::CloseFrame::new(1000, "server done")));
}

// The client's wait is bounded by the close timeout.
#[tokio::test]
async fn client_close_times_out_when_the_server_never_answers() {
    let port = raw_server(|mut stream| {
        let _ = read_frame(&mut stream); // our Close; never answered
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut config = WebSocketConfig::default();
    config.protocol.close_timeout = Duration::from_millis(200);
    let mut ws = sabai::connect_with(&format!("ws://127.0.0.1:{port}/"), &config, |r| r).await.unwrap();
    let started = Instant::now();
    let error = ws.close(CloseCode::NORMAL, "").await.unwrap_err();
    assert!(matches!(error, sabai::Error::Timeout(sabai::TimeoutKind::Close)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ws.recv().await.unwrap(), None, "closed for good");
}

// A client that receives a masked frame fails with 1002 (§5.1).
#[tokio::test]
async fn client_fails_on_masked_server_frame() {
    let (tx, rx) = std::sync::mpsc::channel();
    let port = raw_server(move |mut stream| {
        stream.write_all(&Frame::text("masked!").encode()).unwrap();
        tx.send(read_frame(&mut stream).close_code()).unwrap();
    });
    let mut ws = sabai::connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    let error = ws.recv().await.unwrap_err();
    assert!(matches!(error, sabai::Error::Protocol(sabai::ProtocolError::MaskedFrame)), "{error}");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Some(1002));
}

// A server-initiated close: both sides end cleanly and see the code.
#[tokio::test]
async fn server_initiated_close_completes_on_both_sides() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut ws = sabai::accept(listener.accept().await.unwrap().0).await.unwrap();
        ws.send(Message::text("bye soon")).await.unwrap();
        ws.close(CloseCode::GOING_AWAY, "restart").await.unwrap();
        assert_eq!(ws.close_frame().map(|f| f.code), Some(CloseCode::GOING_AWAY), "echoed code");
        assert!(matches!(ws.send(Message::text("x")).await, Err(sabai::Error::Send(SendError::Closed))));
    });
    let mut ws = sabai::connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("bye soon")));
    assert_eq!(ws.recv().await.unwrap(), None);
    assert_eq!(ws.close_frame(), Some(&sabai::CloseFrame::new(1001, "restart")));
    tokio::time::timeout(TIMEOUT, server).await.unwrap().unwrap();
}

// Pings from the application, Pongs back as events; fragments from the
// application arrive as one message.
#[tokio::test]
async fn ping_events_and_fragmented_sends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut ws = sabai::accept(listener.accept().await.unwrap().0).await.unwrap();
        while let Some(message) = ws.recv().await.unwrap() {
            ws.send(message).await.unwrap();
        }
    });
    let mut ws = sabai::connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    ws.ping(b"heartbeat").await.unwrap();
    assert_eq!(ws.recv_event().await.unwrap(), Some(Event::Pong(bytes::Bytes::from_static(b"heartbeat"))));
    ws.send_fragment(MessageKind::Text, b"one, ", false).await.unwrap();
    ws.send_fragment(MessageKind::Text, b"two", true).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("one, two")));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    tokio::time::timeout(TIMEOUT, server).await.unwrap().unwrap();
}

// Auto-fragmentation over the tokio layer, seen by a raw client.
#[test]
fn auto_fragmentation_on_the_wire() {
    let mut config = WebSocketConfig::default();
    config.protocol.max_send_frame_size = Some(1000);
    let mut peer = TcpPeer::with_config(config);
    peer.send_frames(&[Frame::binary(vec![4; 2500])]);
    peer.expect(Frame::binary(vec![4; 1000]).fin(false).unmasked());
    peer.expect(Frame::cont(vec![4; 1000]).fin(false).unmasked());
    peer.expect(Frame::cont(vec![4; 500]).unmasked());
    peer.close_cleanly();
}

// A peer that stops reading: send() waits (backpressure) instead of
// buffering without bound.
#[tokio::test]
async fn send_applies_backpressure_when_the_peer_does_not_read() {
    let (a, _b) = tokio::io::duplex(4096);
    let mut ws = server_over(a);
    let sent = async {
        loop {
            ws.send(Message::binary(vec![0; 1024])).await.unwrap();
        }
    };
    assert!(tokio::time::timeout(Duration::from_millis(200), sent).await.is_err(), "send never blocked");
}

// Every connection's task holds a `recv` or a `send` future, so their size
// is part of the idle memory per connection (BENCHMARKS.md): `send` holds
// its message once, and `recv` little more than its `&mut self`. (An
// `async fn` that passed the message on to another `async fn` held it
// twice, and made the echo server's task a 128-byte step larger.)
#[test]
fn the_futures_every_connection_holds_stay_small() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut ws = server_over(io);
    let word = std::mem::size_of::<usize>();
    let send = std::mem::size_of_val(&ws.send(Message::text("hi")));
    assert!(send <= std::mem::size_of::<Message>() + 4 * word, "send future: {send} bytes");
    let recv = std::mem::size_of_val(&ws.recv());
    assert!(recv <= 3 * word, "recv future: {recv} bytes");
    // Held across awaits in a task's `Result`s; with every feature on too
    // (rustls' error, unboxed, made it 64).
    let error = std::mem::size_of::<sabai::Error>();
    assert!(error <= 4 * word, "Error: {error} bytes");
}

/// A transport scripted for the tests below: reads give `input` forever
/// (`None`: they never complete), writes succeed or fail. Every 16th read
/// yields to the runtime first, so that a test's own time bound can fire.
struct Scripted {
    input: Option<Vec<u8>>,
    writes_fail: bool,
    reads: u64,
}

impl tokio::io::AsyncRead for Scripted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reads += 1;
        if self.reads.is_multiple_of(16) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        match &self.input {
            Some(bytes) => {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes[..n]);
                std::task::Poll::Ready(Ok(()))
            }
            None => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for Scripted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(match self.writes_fail {
            true => Err(ErrorKind::BrokenPipe.into()),
            false => Ok(data.len()),
        })
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn server_with_close_timeout(io: Scripted, close_timeout: Duration) -> WebSocket<Scripted> {
    let mut config = Config::default();
    config.close_timeout = close_timeout;
    WebSocket::from_connection(io, Connection::server(config))
}

// A write that fails under the write half ends the connection for the
// read half too, at once, although its own reads would never complete:
// without a closing handshake (1006, §7.1.5), then `Ok(None)`.
#[tokio::test]
async fn a_write_half_failure_ends_the_read_half() {
    let io = Scripted { input: None, writes_fail: true, reads: 0 };
    let (mut read, mut write) = server_with_close_timeout(io, Duration::from_secs(3600)).split();
    let reading = tokio::spawn(async move {
        let first = read.recv_event().await;
        (first, read.recv_event().await)
    });
    tokio::task::yield_now().await;
    let sent = write.send(Message::text("lost")).await;
    assert!(matches!(sent, Err(sabai::Error::Io(ref e)) if e.kind() == ErrorKind::BrokenPipe), "{sent:?}");
    let (first, then) =
        tokio::time::timeout(TIMEOUT, reading).await.expect("the reader was not woken").unwrap();
    assert!(matches!(first, Err(sabai::Error::AbnormalClosure)), "{first:?}");
    assert!(matches!(then, Ok(None)), "{then:?}");
    // Nothing more can be sent.
    assert!(matches!(write.send(Message::text("after")).await, Err(sabai::Error::Send(SendError::Closed))));
}

// `WriteHalf::closed` is bounded by the connection's close timeout even
// when nobody polls the read half (a hub handler that hangs): the peer
// never answers our Close.
#[tokio::test(start_paused = true)]
async fn write_half_closed_returns_at_the_close_timeout() {
    let io = Scripted { input: None, writes_fail: false, reads: 0 };
    let (_read, mut write) = server_with_close_timeout(io, Duration::from_secs(7)).split();
    write.start_close(CloseCode::NORMAL, "bye").unwrap();
    let started = tokio::time::Instant::now();
    write.closed().await;
    assert_eq!(started.elapsed().as_secs(), 7, "returned at the close timeout, not before or long after");
}

// A peer that keeps sending after our Close does not keep the connection
// open past the close timeout (the hub's refusal of a connection over its
// limits relies on it): the transport makes the reader wait now and then,
// as tokio's cooperative budget makes a socket do, and the timer is
// checked then.
#[tokio::test]
async fn a_peer_flooding_after_our_close_is_cut_at_the_close_timeout() {
    let flood = Frame::text("still talking").encode().repeat(256);
    let io = Scripted { input: Some(flood), writes_fail: false, reads: 0 };
    let mut ws = server_with_close_timeout(io, Duration::from_millis(100));
    let closed = tokio::time::timeout(TIMEOUT, ws.close(CloseCode::NORMAL, "")).await;
    let error = closed.expect("close() never ended under the flood").unwrap_err();
    assert!(matches!(error, sabai::Error::Timeout(sabai::TimeoutKind::Close)), "{error}");
}

/// A transport that counts system calls the way tokio's `TcpStream` makes
/// them: a read while the socket is marked ready is one call; it marks the
/// socket not ready when it finds nothing (WouldBlock) or fills less than
/// the buffer offered (tokio takes a short read as a drained socket), and
/// new input marks it ready again. Writes take everything; their slices
/// are counted too.
#[derive(Clone, Default)]
struct Counted(std::rc::Rc<std::cell::RefCell<Socket>>);

#[derive(Default)]
struct Socket {
    input: Vec<u8>,
    ready: bool,
    reads: usize,
    writes: usize,
    slices: usize,
    written: Vec<u8>,
}

impl Socket {
    fn arrive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.ready = true;
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut socket = self.0.borrow_mut();
        if !socket.ready {
            return std::task::Poll::Pending;
        }
        socket.reads += 1;
        let n = socket.input.len().min(buf.remaining());
        if n < buf.remaining() {
            socket.ready = false;
        }
        if n == 0 {
            return std::task::Poll::Pending;
        }
        buf.put_slice(&socket.input[..n]);
        socket.input.drain(..n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(data)])
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut socket = self.0.borrow_mut();
        socket.writes += 1;
        socket.slices += data.len();
        data.iter().for_each(|slice| socket.written.extend_from_slice(slice));
        std::task::Poll::Ready(Ok(data.iter().map(|slice| slice.len()).sum()))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

// Request–response with one message in flight, each request arriving
// whole: one read and one write per echo, and the `recv` after it waits
// without another read (issue 16). A read sized exactly to a large frame
// came back full, so the next `recv` paid a read that only said WouldBlock.
#[test]
fn an_echo_costs_one_read_and_one_write() {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let socket = Counted::default();
    let mut ws = server_over(socket.clone());
    // Up to the 1 MiB that reads reserve ahead of the data at most.
    for size in [20, 1024, 16 * 1024, 70_000, 256 * 1024, 1_000_000] {
        let request = Frame::binary(noise(size, size as u64)).encode();
        // The first frame of a size sizes the reads for the next ones.
        for round in 0..4 {
            socket.0.borrow_mut().arrive(&request);
            let (reads, writes) = (socket.0.borrow().reads, socket.0.borrow().writes);
            let std::task::Poll::Ready(Ok(Some(Event::Message(message)))) = ws.poll_recv_event(&mut cx)
            else {
                panic!("{size} B: the request was not received whole");
            };
            let sent = std::future::Future::poll(std::pin::pin!(ws.send(message)), &mut cx);
            assert!(
                matches!(sent, std::task::Poll::Ready(Ok(()))),
                "{size} B: the echo did not go out at once"
            );
            assert!(ws.poll_recv_event(&mut cx).is_pending());
            let mut io = socket.0.borrow_mut();
            let (reads, writes) = (io.reads - reads, io.writes - writes);
            assert_eq!(writes, 1, "{size} B, round {round}: writes per echo");
            if round > 0 {
                assert_eq!(reads, 1, "{size} B, round {round}: reads per echo");
            }
            let reply = Frame::decode(&std::mem::take(&mut io.written)).expect("a whole frame").0;
            assert_eq!(reply.payload.len(), size);
        }
    }
}

// A hub writer's batch: 64 prepared frames of 1 KiB, fed under one lock,
// leave in one vectored write of the shared frames (no copy into the
// connection's buffer), in order.
#[tokio::test]
async fn a_batch_of_prepared_frames_leaves_in_one_vectored_write() {
    let frames: Vec<PreparedMessage> =
        (0..64u8).map(|i| PreparedMessage::new(&Message::binary(vec![i; 1024]))).collect();
    let io = Counted::default();
    let ws = WebSocket::from_connection(io.clone(), Connection::server(Config::default()));
    let (_read, mut write) = ws.split();
    let queued = write.feed_prepared_all(&frames).unwrap();
    assert_eq!(queued, frames.iter().map(|f| f.frame().len()).sum::<usize>());
    write.flush().await.unwrap();
    let socket = io.0.borrow();
    assert_eq!((socket.writes, socket.slices), (1, 64));
    assert_eq!(socket.written, frames.iter().flat_map(|f| f.frame().to_vec()).collect::<Vec<u8>>());
}
