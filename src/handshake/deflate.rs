//! Negotiating permessage-deflate (RFC 7692 §5, §7.1): the server picks one
//! acceptable offer and answers with the agreed parameters; the client
//! writes its offer and checks the answer.

use super::extensions::{Extension, ExtensionError, Param};
use crate::proto::deflate::{extension_header, EXTENSION_NAME};
use crate::proto::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::{DeflateConfig, DeflateParams};

/// RFC 7692 §7: the registered extension name.
pub const PERMESSAGE_DEFLATE: &str = EXTENSION_NAME;

/// The four parameters as one side sent them; a window of `Some(None)` is
/// `client_max_window_bits` without a value (RFC 7692 §7.1.2.2).
#[derive(Default)]
struct Sent {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<Option<u8>>,
}

/// Reads the parameters of one element. RFC 7692 §7: an unknown parameter,
/// a repeated one or a bad value makes the element invalid. `in_offer`
/// allows `client_max_window_bits` without a value (only offers may).
fn read_params(params: &[Param], in_offer: bool) -> Result<Sent, ExtensionError> {
    let mut sent = Sent::default();
    let mut seen = [false; 4];
    for Param { name, value } in params {
        let index = match name.as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err(ExtensionError::UnknownParam(name.clone())),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(ExtensionError::DuplicateParam(name.clone()));
        }
        let invalid = || ExtensionError::InvalidValue(name.clone());
        match (index, value) {
            // RFC 7692 §7.1.1: the context takeover parameters have no value.
            (0, None) => sent.server_no_context_takeover = true,
            (1, None) => sent.client_no_context_takeover = true,
            (0 | 1, Some(_)) => return Err(invalid()),
            // RFC 7692 §7.1.2.1: server_max_window_bits always has a value.
            (2, Some(v)) => sent.server_max_window_bits = Some(window_bits(v).ok_or_else(invalid)?),
            // RFC 7692 §7.1.2.2: without a value only in an offer.
            (3, None) if in_offer => sent.client_max_window_bits = Some(None),
            (3, Some(v)) => sent.client_max_window_bits = Some(Some(window_bits(v).ok_or_else(invalid)?)),
            _ => return Err(invalid()),
        }
    }
    Ok(sent)
}

/// RFC 7692 §7.1.2: a decimal integer 8 to 15 without leading zeroes.
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Server side: the parameters for the first offer we can accept, or `None`
/// to go on without compression (RFC 7692 §5: at most one is accepted).
pub fn negotiate(offers: &[Extension], config: &DeflateConfig) -> Option<DeflateParams> {
    offers.iter().filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE)).find_map(|offer| {
        // RFC 7692 §7: an invalid offer is declined; the next may do.
        let sent = read_params(&offer.params, true).ok()?;
        let ours = |bits: Option<u8>| bits.map(|b| b.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS));
        // RFC 7692 §7.1.2.1: answer with the same or a smaller value; we
        // may also name one unasked. Any value works: see Compressor.
        let server_max_window_bits = match (sent.server_max_window_bits, ours(config.server_max_window_bits))
        {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // RFC 7692 §7.1.2.2: only if offered; at most the offered value.
        let client_max_window_bits = match sent.client_max_window_bits {
            None => None,
            Some(hint) => ours(config.client_max_window_bits).map(|b| hint.map_or(b, |h| h.min(b))),
        };
        Some(DeflateParams {
            // RFC 7692 §7.1.1.1: accepting the request means echoing it.
            server_no_context_takeover: sent.server_no_context_takeover || config.server_no_context_takeover,
            // RFC 7692 §7.1.1.2: the offer's hint may be taken up.
            client_no_context_takeover: sent.client_no_context_takeover || config.client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        })
    })
}

/// Client side: the offer for `Sec-WebSocket-Extensions`. It always names
/// `client_max_window_bits`, since we can compress with any window.
pub fn offer(config: &DeflateConfig) -> String {
    let clamp = |bits: u8| bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    extension_header(
        config.server_no_context_takeover,
        config.client_no_context_takeover,
        config.server_max_window_bits.map(clamp),
        Some(config.client_max_window_bits.map(clamp)),
    )
}

/// Client side: checks the server's answer to [`offer`] (RFC 7692 §5, §7).
pub fn check_answer(answer: &Extension, config: &DeflateConfig) -> Result<DeflateParams, ExtensionError> {
    let sent = read_params(&answer.params, false)?;
    // RFC 7692 §7.1.2.1: at most the window we asked the server to use.
    if let (Some(asked), Some(got)) = (config.server_max_window_bits, sent.server_max_window_bits) {
        if got > asked.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS) {
            return Err(ExtensionError::NotOffered("server_max_window_bits".into()));
        }
    }
    // A server that ignores our window request would use 32 KiB: we asked
    // for less, so that is not a configuration we accept.
    if config.server_max_window_bits.is_some() && sent.server_max_window_bits.is_none() {
        return Err(ExtensionError::NotOffered("server_max_window_bits".into()));
    }
    Ok(DeflateParams {
        server_no_context_takeover: sent.server_no_context_takeover,
        client_no_context_takeover: sent.client_no_context_takeover,
        server_max_window_bits: sent.server_max_window_bits,
        client_max_window_bits: sent.client_max_window_bits.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bits_are_8_to_15_without_leading_zeroes() {
        for (s, v) in [("8", 8), ("9", 9), ("10", 10), ("15", 15)] {
            assert_eq!(window_bits(s), Some(v));
        }
        for s in ["7", "16", "08", "010", "", "1", "+9", "9 ", "150"] {
            assert_eq!(window_bits(s), None, "{s:?}");
        }
    }
}
