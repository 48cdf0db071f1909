//! permessage-deflate negotiation (RFC 7692 §5, §7.1): the server's choice
//! among offers and the client's check of the answer, over the sans-IO
//! handshake.
#![cfg(feature = "deflate")]

use sabai::handshake::{
    accept_key, Accept, ClientHandshake, ClientRequest, ExtensionError, HandshakeError, ServerHandshake,
};
use sabai::{DeflateConfig, DeflateParams};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(extensions: &[&str]) -> Result<sabai::handshake::Request, HandshakeError> {
    let mut head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for value in extensions {
        head.push_str(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
    }
    head.push_str("\r\n");
    ServerHandshake::default().parse(head.as_bytes()).map(|parsed| parsed.unwrap().0)
}

/// What a server with `config` agrees to for these offers.
fn agree(config: &DeflateConfig, offers: &str) -> Option<DeflateParams> {
    request(&[offers]).unwrap().negotiate_deflate(config)
}

fn agree_default(offers: &str) -> Option<String> {
    agree(&DeflateConfig::default(), offers).map(|p| p.header_value())
}

#[test]
fn plain_offer_is_accepted_and_answered() {
    assert_eq!(agree_default("permessage-deflate").as_deref(), Some("permessage-deflate"));
    let request = request(&["permessage-deflate"]).unwrap();
    let params = request.negotiate_deflate(&DeflateConfig::default()).unwrap();
    let response =
        String::from_utf8(request.accept_response(&Accept::new().deflate(params)).unwrap()).unwrap();
    assert!(response.contains("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"), "{response}");
}

#[test]
fn each_offered_parameter_is_answered() {
    let cases = [
        // RFC 7692 §7.1.1.1: accepting server_no_context_takeover echoes it.
        ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
        // §7.1.1.2: the client's hint is taken up.
        ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
        // §7.1.2.1: the same window, 8 included.
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits=8"),
        ("permessage-deflate; server_max_window_bits=\"9\"", "permessage-deflate; server_max_window_bits=9"),
        // §7.1.2.2: a server without a limit of its own need not answer it.
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits=9", "permessage-deflate"),
        ("PerMessage-Deflate", "permessage-deflate"),
    ];
    for (offer, answer) in cases {
        assert_eq!(agree_default(offer).as_deref(), Some(answer), "{offer}");
    }
}

#[test]
fn server_limits_are_applied_where_the_rfc_allows() {
    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = true;
    config.client_no_context_takeover = true;
    config.server_max_window_bits = Some(12);
    config.client_max_window_bits = Some(10);
    // §7.1.2.1: a server may name its window unasked, and answers with the
    // smaller of the two when asked.
    let p = agree(&config, "permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(
        p,
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(10),
        }
    );
    let p = agree(&config, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8").unwrap();
    assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (Some(9), Some(8)));
    // §7.1.2.2: without client_max_window_bits in the offer, it MUST NOT be answered.
    let p = agree(&config, "permessage-deflate").unwrap();
    assert_eq!(p.client_max_window_bits, None);
}

#[test]
fn invalid_offers_are_declined() {
    // RFC 7692 §7: unknown or repeated parameters and bad values decline the offer.
    for offer in [
        "permessage-deflate; unknown",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"x\"",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=abc",
        "x-other",
    ] {
        assert_eq!(agree_default(offer), None, "{offer}");
    }
}

#[test]
fn first_acceptable_of_several_offers_wins() {
    // RFC 7692 §5.2, §7.1.3: fallbacks in order of preference.
    let offers = "permessage-deflate; server_max_window_bits=99, x-foo, \
                  permessage-deflate; server_max_window_bits=10, permessage-deflate";
    assert_eq!(agree_default(offers).as_deref(), Some("permessage-deflate; server_max_window_bits=10"));
    // Offers spread over two header fields are one list (RFC 9110 §5.3).
    let request = request(&["permessage-deflate; bogus", "permessage-deflate; server_no_context_takeover"]);
    let params = request.unwrap().negotiate_deflate(&DeflateConfig::default()).unwrap();
    assert!(params.server_no_context_takeover);
}

#[test]
fn malformed_header_is_a_400() {
    for bad in ["permessage-deflate;", "permessage-deflate; a=\"unclosed", "; x", "a b"] {
        let error = request(&[bad]).unwrap_err();
        assert_eq!(error, HandshakeError::InvalidExtension(ExtensionError::Malformed), "{bad}");
        assert_eq!(error.status(), 400);
    }
    let many = "x,".repeat(5000);
    assert_eq!(request(&[&many]).unwrap_err(), HandshakeError::InvalidExtension(ExtensionError::TooMany));
}

// ----- client side --------------------------------------------------------

fn client(config: Option<DeflateConfig>) -> ClientHandshake {
    let mut request = ClientRequest::new("x", "/");
    if let Some(config) = config {
        request = request.permessage_deflate(config);
    }
    ClientHandshake::new(request, *b"the sample nonce")
}

/// The server's 101 with these Sec-WebSocket-Extensions values.
fn answer(
    handshake: &mut ClientHandshake,
    extensions: &[&str],
) -> Result<Option<DeflateParams>, HandshakeError> {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(KEY)
    );
    for value in extensions {
        head.push_str(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
    }
    head.push_str("\r\n");
    handshake.parse_response(head.as_bytes()).map(|parsed| parsed.unwrap().0.deflate())
}

#[test]
fn client_offer_names_what_is_configured() {
    let request = String::from_utf8(client(Some(DeflateConfig::default())).request_bytes().unwrap()).unwrap();
    assert!(request.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = true;
    config.client_no_context_takeover = true;
    config.server_max_window_bits = Some(8);
    config.client_max_window_bits = Some(9);
    let request = String::from_utf8(client(Some(config)).request_bytes().unwrap()).unwrap();
    assert!(request.contains(
        "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=9\r\n"
    ));
    let request = String::from_utf8(client(None).request_bytes().unwrap()).unwrap();
    assert!(!request.contains("Sec-WebSocket-Extensions"));
}

#[test]
fn client_accepts_valid_answers() {
    let config = DeflateConfig::default();
    assert_eq!(answer(&mut client(Some(config.clone())), &[]), Ok(None));
    assert_eq!(
        answer(&mut client(Some(config.clone())), &["permessage-deflate"]),
        Ok(Some(DeflateParams::default()))
    );
    let all = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
               server_max_window_bits=8; client_max_window_bits=8";
    let expected = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: Some(8),
        client_max_window_bits: Some(8),
    };
    assert_eq!(answer(&mut client(Some(config)), &[all]), Ok(Some(expected)));
}

type Outcome = Result<Option<DeflateParams>, HandshakeError>;

#[test]
fn client_fails_on_bad_answers() {
    use ExtensionError::*;
    let config = DeflateConfig::default();
    let invalid = |e| Err(HandshakeError::InvalidExtension(e));
    let cases: [(&[&str], Outcome); 9] = [
        (&["x-foo"], Err(HandshakeError::UnofferedExtension("x-foo".into()))),
        (&["permessage-deflate, permessage-deflate"], invalid(Duplicate)),
        (&["permessage-deflate", "permessage-deflate"], invalid(Duplicate)),
        (&["permessage-deflate; foo"], invalid(UnknownParam("foo".into()))),
        (
            &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            invalid(DuplicateParam("server_no_context_takeover".into())),
        ),
        // §7.1.2.2: an answer's client_max_window_bits carries a value.
        (
            &["permessage-deflate; client_max_window_bits"],
            invalid(InvalidValue("client_max_window_bits".into())),
        ),
        (
            &["permessage-deflate; server_max_window_bits=16"],
            invalid(InvalidValue("server_max_window_bits".into())),
        ),
        (
            &["permessage-deflate; client_no_context_takeover=1"],
            invalid(InvalidValue("client_no_context_takeover".into())),
        ),
        (&["permessage-deflate;"], invalid(Malformed)),
    ];
    for (values, expected) in cases {
        assert_eq!(answer(&mut client(Some(config.clone())), values), expected, "{values:?}");
    }
    // Nothing offered: any extension fails (RFC 6455 §4.1).
    assert_eq!(
        answer(&mut client(None), &["permessage-deflate"]),
        Err(HandshakeError::UnofferedExtension("permessage-deflate".into()))
    );
}

#[test]
fn client_fails_when_its_window_request_is_ignored() {
    let mut config = DeflateConfig::default();
    config.server_max_window_bits = Some(10);
    // §7.1.2.1: the answer must carry the same or a smaller value.
    assert_eq!(
        answer(&mut client(Some(config.clone())), &["permessage-deflate; server_max_window_bits=10"])
            .unwrap(),
        Some(DeflateParams { server_max_window_bits: Some(10), ..DeflateParams::default() })
    );
    assert!(
        answer(&mut client(Some(config.clone())), &["permessage-deflate; server_max_window_bits=9"]).is_ok()
    );
    for bad in ["permessage-deflate; server_max_window_bits=11", "permessage-deflate"] {
        assert_eq!(
            answer(&mut client(Some(config.clone())), &[bad]),
            Err(HandshakeError::InvalidExtension(ExtensionError::NotOffered(
                "server_max_window_bits".into()
            ))),
            "{bad}"
        );
    }
}
