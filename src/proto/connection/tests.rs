//! The close sequence of both roles, driven by hand with a fake clock: the
//! instants are made by the test, the connection reads no clock. Each test
//! plays the transport: it moves bytes, reports EOF, and does (or fails to
//! do) the steps the connection directs.

use std::time::{Duration, Instant};

use crate::{
    CloseCode, CloseFrame, Config, Connection, Directive, Ending, Event, Message, ProtocolError, State,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn server() -> Connection {
    Connection::server(Config::default())
}

fn client() -> Connection {
    Connection::client(Config::default(), [1; 32])
}

/// Moves every queued byte of `from` to `to`.
fn deliver(from: &mut Connection, to: &mut Connection) {
    while let Some(bytes) = from.poll_transmit() {
        to.receive(&bytes);
    }
}

/// Bytes `conn` queued, taken.
fn sent(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = conn.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

/// Does the step the connection directs (it must be `expected`) and
/// reports it done; `AwaitEof` is done by the peer's EOF.
fn step(conn: &mut Connection, expected: Directive) {
    assert_eq!(conn.poll_directive(), expected);
    match expected {
        Directive::Flush => {
            sent(conn);
            conn.directive_done(Directive::Flush);
        }
        Directive::AwaitEof => conn.receive_eof(),
        other => conn.directive_done(other),
    }
}

/// The whole closing handshake between two connections: `first` closes.
fn exchange_closes(first: &mut Connection, second: &mut Connection) {
    first.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!((first.state(), first.poll_directive()), (State::CloseSent, Directive::Read));
    deliver(first, second);
    let event = second.poll_event().unwrap();
    assert_eq!(event, Some(Event::Close(Some(CloseFrame::new(1000, "bye")))));
    deliver(second, first);
    assert_eq!(first.poll_event().unwrap(), Some(Event::Close(Some(CloseFrame::new(1000, "")))));
}

// ----- §7.1.1: who closes TCP first ------------------------------------------

#[test]
fn server_after_the_clients_close_shuts_down_first_then_waits_for_the_eof() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    // The server echoed the client's Close: it closes TCP first, at once.
    assert_eq!(server.state(), State::Closed);
    for directive in [Directive::Flush, Directive::Shutdown, Directive::AwaitEof, Directive::Close] {
        step(&mut server, directive);
    }
    assert_eq!(server.poll_directive(), Directive::Done);
    assert_eq!(server.ending(), Some(&Ending::Clean(Some(CloseFrame::new(1000, "bye")))));
    assert_eq!(server.peer_close(), Some(&CloseFrame::new(1000, "bye")));
}

#[test]
fn client_after_its_own_close_waits_for_the_servers_fin_then_shuts_down() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    assert_eq!(client.state(), State::Closed);
    // §7.1.1: the client waits for the server to end TCP, then ends its own.
    for directive in [Directive::Flush, Directive::AwaitEof, Directive::Shutdown, Directive::Close] {
        step(&mut client, directive);
    }
    assert_eq!(client.poll_directive(), Directive::Done);
    assert_eq!(client.ending(), Some(&Ending::Clean(Some(CloseFrame::new(1000, "")))));
}

#[test]
fn server_after_its_own_close_shuts_down_first() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut server, &mut client);
    for directive in [Directive::Flush, Directive::Shutdown, Directive::AwaitEof, Directive::Close] {
        step(&mut server, directive);
    }
    assert_eq!(server.ending(), Some(&Ending::Clean(Some(CloseFrame::new(1000, "")))));
}

#[test]
fn client_after_the_servers_close_echoes_then_waits_for_the_fin() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut server, &mut client);
    // The echo goes out first; nothing is shut down before the server's FIN.
    for directive in [Directive::Flush, Directive::AwaitEof, Directive::Shutdown, Directive::Close] {
        step(&mut client, directive);
    }
    assert_eq!(client.ending(), Some(&Ending::Clean(Some(CloseFrame::new(1000, "bye")))));
}

#[test]
fn a_client_that_failed_does_not_wait_for_the_server() {
    let mut client = client();
    // RFC 6455 §5.1: a server's frame is never masked.
    client.receive(&[0x81, 0x80, 1, 2, 3, 4]);
    assert_eq!(client.poll_event(), Err(ProtocolError::MaskedFrame));
    assert_eq!(client.state(), State::Failed);
    assert_eq!(sent_close_code(&mut client), Some(1002));
    for directive in [Directive::Shutdown, Directive::AwaitEof, Directive::Close] {
        step(&mut client, directive);
    }
    assert_eq!(client.ending(), Some(&Ending::Failed(ProtocolError::MaskedFrame)));
}

/// Flushes `conn` (its directive must be Flush) and returns the code of the
/// one Close frame it sent.
fn sent_close_code(conn: &mut Connection) -> Option<u16> {
    assert_eq!(conn.poll_directive(), Directive::Flush);
    let mut server = server();
    let mut peer = client();
    let bytes = sent(conn);
    conn.directive_done(Directive::Flush);
    // Read it back with a connection of the other role.
    let reader = if conn.role() == crate::Role::Client { &mut server } else { &mut peer };
    reader.receive(&bytes);
    match reader.poll_event() {
        Ok(Some(Event::Close(frame))) => frame.map(|f| f.code.0),
        other => panic!("expected a Close, got {other:?}"),
    }
}

#[test]
fn a_server_that_failed_sends_its_close_then_closes_first() {
    let mut server = server();
    // RFC 6455 §5.1: a client's frame is always masked.
    server.receive(&Message::text("x").into_bytes().iter().fold(vec![0x81, 0x01], |mut v, b| {
        v.push(*b);
        v
    }));
    assert_eq!(server.poll_event(), Err(ProtocolError::UnmaskedFrame));
    assert_eq!(sent_close_code(&mut server), Some(1002));
    for directive in [Directive::Shutdown, Directive::AwaitEof, Directive::Close] {
        step(&mut server, directive);
    }
    assert_eq!(server.state(), State::Failed);
}

// ----- the close timer ----------------------------------------------------------

#[test]
fn an_open_connection_has_no_timer() {
    let mut conn = server();
    let t0 = Instant::now();
    conn.handle_timeout(t0);
    conn.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!((conn.poll_timeout(), conn.state()), (None, State::Open));
}

#[test]
fn the_timer_fires_when_our_close_goes_unanswered() {
    for mut conn in [server(), client()] {
        conn.close(CloseCode::NORMAL, "").unwrap();
        sent(&mut conn);
        assert_eq!(conn.poll_timeout(), None, "armed at the next handle_timeout");
        let t0 = Instant::now();
        conn.handle_timeout(t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + TIMEOUT));
        conn.handle_timeout(t0 + TIMEOUT - Duration::from_millis(1));
        assert_eq!(conn.state(), State::CloseSent, "not yet");
        conn.handle_timeout(t0 + TIMEOUT);
        // Our direction still gets its FIN: one try, with nothing to wait for.
        assert_eq!(conn.ending(), Some(&Ending::TimedOut));
        assert_eq!((conn.state(), conn.poll_directive()), (State::Closed, Directive::Shutdown));
        assert_eq!(conn.poll_timeout(), None);
        step(&mut conn, Directive::Shutdown);
        step(&mut conn, Directive::Close);
        assert_eq!(conn.poll_directive(), Directive::Done);
    }
}

#[test]
fn a_shutdown_that_does_not_finish_in_time_is_given_up() {
    let mut conn = client();
    conn.close(CloseCode::NORMAL, "").unwrap();
    let t0 = Instant::now();
    conn.handle_timeout(t0);
    conn.handle_timeout(t0 + TIMEOUT);
    assert_eq!(conn.poll_directive(), Directive::Shutdown);
    // The transport did not finish it; the driver is about to wait.
    conn.handle_timeout(t0 + TIMEOUT);
    assert_eq!(conn.poll_directive(), Directive::Close);
}

#[test]
fn the_timer_started_by_our_close_bounds_the_steps_after_the_peers() {
    let (mut client, mut server) = (client(), server());
    let t0 = Instant::now();
    client.close(CloseCode::NORMAL, "").unwrap();
    client.handle_timeout(t0);
    deliver(&mut client, &mut server);
    server.poll_event().unwrap();
    deliver(&mut server, &mut client);
    client.poll_event().unwrap();
    client.handle_timeout(t0 + Duration::from_secs(1));
    // Same deadline: the timer covers the whole closing.
    assert_eq!(client.poll_timeout(), Some(t0 + TIMEOUT));
    step(&mut client, Directive::Flush);
    assert_eq!(client.poll_directive(), Directive::AwaitEof);
    // The server never ends TCP: at the deadline, one try at our FIN.
    client.handle_timeout(t0 + TIMEOUT);
    assert_eq!(client.poll_directive(), Directive::Shutdown);
    step(&mut client, Directive::Shutdown);
    step(&mut client, Directive::Close);
    assert_eq!(client.ending(), Some(&Ending::Clean(Some(CloseFrame::new(1000, "")))), "still clean");
}

#[test]
fn the_timer_stops_a_server_waiting_for_the_clients_eof() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    step(&mut server, Directive::Flush);
    step(&mut server, Directive::Shutdown);
    let t0 = Instant::now();
    server.handle_timeout(t0);
    assert_eq!(server.poll_timeout(), Some(t0 + TIMEOUT));
    server.handle_timeout(t0 + TIMEOUT);
    // Already shut down: straight to Close.
    assert_eq!(server.poll_directive(), Directive::Close);
}

#[test]
fn the_timer_stops_a_flush_that_never_ends() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    let t0 = Instant::now();
    server.handle_timeout(t0);
    assert_eq!(server.poll_directive(), Directive::Flush);
    server.handle_timeout(t0 + TIMEOUT);
    assert_eq!(server.poll_directive(), Directive::Shutdown);
    step(&mut server, Directive::Shutdown);
    // No waiting for the EOF once time is up.
    assert_eq!(server.poll_directive(), Directive::Close);
}

// ----- the peer's EOF ------------------------------------------------------------

#[test]
fn an_eof_without_a_close_ends_abnormally_after_what_was_buffered() {
    for (mut conn, peer) in [(server(), &mut client()), (client(), &mut server())] {
        peer.send(Message::text("last")).unwrap();
        deliver(peer, &mut conn);
        conn.receive_eof();
        assert_eq!(conn.poll_event(), Ok(Some(Event::Message(Message::text("last")))));
        assert_eq!(conn.poll_event(), Ok(None));
        // §7.1.5: 1006, reported and never sent.
        assert_eq!((conn.state(), conn.ending()), (State::Closed, Some(&Ending::Abnormal)));
        assert!(sent(&mut conn).is_empty());
        // The EOF came already: nobody waits for it again.
        for directive in [Directive::Flush, Directive::Shutdown, Directive::Close] {
            step(&mut conn, directive);
        }
    }
}

#[test]
fn an_eof_while_our_close_waits_keeps_the_timer() {
    let mut conn = server();
    conn.close(CloseCode::NORMAL, "").unwrap();
    let t0 = Instant::now();
    conn.handle_timeout(t0);
    conn.receive_eof();
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.ending(), Some(&Ending::Abnormal));
    assert_eq!(conn.poll_timeout(), Some(t0 + TIMEOUT));
}

#[test]
fn an_early_eof_skips_the_wait_for_it() {
    // The server's FIN arrives while the client still flushes its echo.
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut server, &mut client);
    assert_eq!(client.poll_directive(), Directive::Flush);
    client.receive_eof();
    assert_eq!(client.poll_directive(), Directive::Flush, "an EOF does not skip the flush");
    step(&mut client, Directive::Flush);
    step(&mut client, Directive::Shutdown);
    step(&mut client, Directive::Close);
}

#[test]
fn input_after_the_closing_handshake_is_discarded() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    step(&mut server, Directive::Flush);
    step(&mut server, Directive::Shutdown);
    assert_eq!(server.poll_directive(), Directive::AwaitEof);
    // Late bytes, through either path, are dropped (RFC 6455 §1.4).
    server.receive(&[0x81, 0x81, 0, 0, 0, 0, b'x']);
    server.buffers_mut().read_buffer().extend_from_slice(&[0x81, 0x81, 0, 0, 0, 0, b'y']);
    assert_eq!(server.poll_event(), Ok(None));
    assert_eq!(server.buffers().buffered_input(), 0);
    assert_eq!(server.poll_directive(), Directive::AwaitEof);
}

// ----- abort ------------------------------------------------------------------------

#[test]
fn an_abort_drops_what_is_queued_and_closes_at_once() {
    for mut conn in [server(), client()] {
        conn.send(Message::text("never sent")).unwrap();
        conn.abort();
        assert_eq!(conn.buffers().pending_transmit(), 0);
        assert_eq!((conn.state(), conn.ending()), (State::Closed, Some(&Ending::Aborted)));
        assert_eq!(conn.send(Message::text("x")), Err(crate::SendError::Closed));
        step(&mut conn, Directive::Close);
        assert_eq!(conn.poll_directive(), Directive::Done);
    }
}

#[test]
fn an_abort_while_closing_keeps_the_ending() {
    let mut conn = server();
    conn.receive(&[0x81, 0x01, b'x']);
    assert_eq!(conn.poll_event(), Err(ProtocolError::UnmaskedFrame));
    assert_eq!(conn.poll_directive(), Directive::Flush);
    conn.abort();
    assert_eq!(conn.poll_directive(), Directive::Close);
    assert_eq!(conn.ending(), Some(&Ending::Failed(ProtocolError::UnmaskedFrame)));
}

#[test]
fn a_step_reported_out_of_turn_changes_nothing() {
    let (mut client, mut server) = (client(), server());
    exchange_closes(&mut client, &mut server);
    server.directive_done(Directive::Shutdown);
    server.directive_done(Directive::Close);
    server.directive_done(Directive::AwaitEof);
    assert_eq!(server.poll_directive(), Directive::Flush);
}
