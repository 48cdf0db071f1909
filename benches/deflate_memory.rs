//! Heap that permessage-deflate holds per connection: the compressor, made
//! on the first compressed message sent, and the inflater, made on the
//! first compressed message received (both kept until the connection is
//! dropped, unless the peer compresses each message alone: then the
//! inflater goes back to its thread's spares after each message). Counted
//! by a global allocator around the public sans-IO API, for each window
//! size a peer may ask for. Each measurement runs on a thread of its own,
//! whose spares start empty.
//!
//!     cargo bench --bench deflate_memory

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sabai::{Config, Connection, DeflateParams, Event, Message};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// About 2 KiB of JSON readings: compressible, as dashboards send.
fn readings() -> String {
    (0..16)
        .map(|i| format!(r#"{{"device":"d{i}","temp":{}.{},"seq":{}}}"#, 20 + i % 7, i % 10, 1000 + i))
        .collect()
}

fn main() {
    println!("| window bits | compressor, bytes | inflater and the receive path after one message, bytes |");
    println!("|---:|---:|---:|");
    for bits in [15u8, 12, 9] {
        std::thread::spawn(move || window_cell(bits)).join().expect("a measurement thread");
    }

    // A server's side of a client's messages, with and without the
    // client's context takeover: what a connection keeps once the message
    // is read (what a second connection's message adds), and what the
    // thread keeps as spares (the rest of what the first one added).
    println!();
    println!("| client_no_context_takeover | held by each connection after one compressed message, bytes | held by the thread's spares, bytes |");
    println!("|---|---:|---:|");
    for reset in [false, true] {
        std::thread::spawn(move || takeover_cell(reset)).join().expect("a measurement thread");
    }
}

fn window_cell(bits: u8) {
    {
        let params = DeflateParams {
            server_max_window_bits: Some(bits),
            client_max_window_bits: Some(bits),
            ..Default::default()
        };
        let mut server = Connection::server(Config::default()).with_deflate(params);
        let mut client = Connection::client(Config::default(), [7; 32]).with_deflate(params);
        let text = readings();

        // The server's first compressed message makes its compressor.
        let before = live();
        server.send(Message::text(text.clone())).unwrap();
        let mut wire = Vec::new();
        while let Some(bytes) = server.poll_transmit() {
            wire.extend_from_slice(&bytes);
        }
        let compressor = live() - before - wire.capacity() as isize;
        assert!(wire[0] & 0x40 != 0, "the message went out compressed (RSV1)");

        // The client's first compressed message received makes its inflater
        // (counted once the message itself is dropped).
        let before = live();
        client.receive(&wire);
        let event = client.poll_event().unwrap();
        assert_eq!(event, Some(Event::Message(Message::text(text))));
        drop(event);
        let inflater = live() - before;
        println!("| {bits} | {compressor} | {inflater} |");
    }
}

fn takeover_cell(reset: bool) {
    let params = DeflateParams { client_no_context_takeover: reset, ..Default::default() };
    let mut client = Connection::client(Config::default(), [7; 32]).with_deflate(params);
    let text = readings();
    client.send(Message::text(text.clone())).unwrap();
    let mut wire = Vec::new();
    while let Some(bytes) = client.poll_transmit() {
        wire.extend_from_slice(&bytes);
    }
    assert!(wire[0] & 0x40 != 0, "the message went out compressed (RSV1)");
    // Two servers' connections, each reading the message once.
    let mut servers = [(); 2].map(|()| Connection::server(Config::default()).with_deflate(params));
    let mut added = [0isize; 2];
    for (server, added) in servers.iter_mut().zip(&mut added) {
        let before = live();
        server.receive(&wire);
        let event = server.poll_event().unwrap();
        assert_eq!(event, Some(Event::Message(Message::text(text.clone()))));
        drop(event);
        *added = live() - before;
    }
    let per_connection = added[1];
    println!("| {reset} | {per_connection} | {} |", added[0] - per_connection);
}
