//! Feeds arbitrary bytes to the Sec-WebSocket-Extensions parser (RFC 6455
//! §9.1) and to permessage-deflate negotiation (RFC 7692 §5, §7.1):
//! - the parser never panics and keeps its bounds (elements, parameters);
//! - every name and value it returns is a token, and rendering the result
//!   and parsing it again gives the same result;
//! - the same value split over two header fields (at a comma) parses to
//!   the same list;
//! - a server's answer from `negotiate` parses back to exactly one
//!   permessage-deflate element, which a client (offering the default
//!   configuration) accepts as the same parameters, with window bits 8–15.
//!
//! Input layout: `flags, value...`; flags choose the server's configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::handshake::deflate::{check_answer, negotiate, PERMESSAGE_DEFLATE};
use sabai::handshake::{parse_extensions, Extension, MAX_EXTENSIONS, MAX_PARAMS};
use sabai::DeflateConfig;

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn render(extensions: &[Extension]) -> String {
    let mut out = Vec::new();
    for e in extensions {
        let mut s = e.name.clone();
        for p in &e.params {
            s.push_str("; ");
            s.push_str(&p.name);
            if let Some(v) = &p.value {
                s.push('=');
                s.push_str(v);
            }
        }
        out.push(s);
    }
    out.join(", ")
}

fn parse(value: &[u8]) -> Result<Vec<Extension>, sabai::handshake::ExtensionError> {
    let mut out = Vec::new();
    parse_extensions(value, &mut out).map(|()| out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, value)) = input.split_first() else {
        return;
    };
    let parsed = parse(value);
    let Ok(extensions) = parsed else {
        return;
    };
    assert!(extensions.len() <= MAX_EXTENSIONS);
    for e in &extensions {
        assert!(is_token(&e.name), "{e:?}");
        assert!(e.params.len() <= MAX_PARAMS);
        for p in &e.params {
            assert!(is_token(&p.name) && p.value.as_deref().is_none_or(is_token), "{p:?}");
        }
    }
    assert_eq!(parse(render(&extensions).as_bytes()).as_ref(), Ok(&extensions));

    // A list split over two fields at a top-level comma is the same list.
    if let Some(comma) = value.iter().position(|&b| b == b',') {
        if !value[..comma].contains(&b'"') {
            let mut two = Vec::new();
            let first = parse_extensions(&value[..comma], &mut two);
            let second = parse_extensions(&value[comma + 1..], &mut two);
            assert!(first.is_ok() && second.is_ok());
            assert_eq!(two, extensions);
        }
    }

    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = flags & 1 != 0;
    config.client_no_context_takeover = flags & 2 != 0;
    config.server_max_window_bits = (flags & 4 != 0).then_some(8 + (flags >> 4) % 8);
    config.client_max_window_bits = (flags & 8 != 0).then_some(8 + (flags >> 5) % 8);
    if let Some(params) = negotiate(&extensions, &config) {
        let answer = parse(params.header_value().as_bytes()).unwrap();
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].name, PERMESSAGE_DEFLATE);
        assert_eq!(check_answer(&answer[0], &DeflateConfig::default()), Ok(params));
        for bits in [params.server_max_window_bits, params.client_max_window_bits].into_iter().flatten() {
            assert!((8..=15).contains(&bits));
        }
        // RFC 7692 §7.1.2.2: only answered when offered.
        if params.client_max_window_bits.is_some() {
            assert!(extensions.iter().any(|e| e.params.iter().any(|p| p.name == "client_max_window_bits")));
        }
    }
});
