//! Prepared messages over the tokio layer: the same encoded frame sent to
//! many server connections arrives as the original message at each client.

use sabai::{Config, Connection, Message, PreparedMessage, WebSocket};

fn pair() -> (WebSocket<tokio::io::DuplexStream>, WebSocket<tokio::io::DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = WebSocket::from_connection(a, Connection::server(Config::default()));
    let client = WebSocket::from_connection(b, Connection::client(Config::default(), rand::random()));
    (server, client)
}

#[tokio::test]
async fn one_prepared_frame_reaches_every_client() {
    let prepared = PreparedMessage::new(&Message::text("to everyone"));
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let (mut server, client) = pair();
        if i == 0 {
            server.send_prepared(&prepared).await.unwrap();
            servers.push((Some(server), None));
        } else {
            // The split write half: queue two, flush once.
            let (read, mut write) = server.split();
            write.feed_prepared(&prepared).unwrap();
            write.feed_prepared(&PreparedMessage::new(&Message::binary(vec![i as u8; 300]))).unwrap();
            write.flush().await.unwrap();
            servers.push((None, Some((read, write))));
        }
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.recv().await.unwrap(), Some(Message::text("to everyone")));
        if i > 0 {
            assert_eq!(client.recv().await.unwrap(), Some(Message::binary(vec![i as u8; 300])));
        }
    }
}

#[tokio::test]
async fn a_client_can_send_a_prepared_message() {
    let (mut server, mut client) = pair();
    client.send_prepared(&PreparedMessage::new(&Message::text("masked anew"))).await.unwrap();
    assert_eq!(server.recv().await.unwrap(), Some(Message::text("masked anew")));
}
