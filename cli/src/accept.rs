//! `sabai accept KEY`: Sec-WebSocket-Accept step by step (RFC 6455 §1.3,
//! §4.2.2 item 5.4). The library computes it; this shows its steps.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::adapter::{accept_key, WEBSOCKET_GUID};
use crate::hex;

/// The computation for `key`, each step on its own lines, under `indent`.
pub fn steps(key: &str, indent: &str) -> String {
    let accept = accept_key(key);
    // The library's answer is base64 of the SHA-1 digest: decoding it shows
    // the digest without computing it a second time here.
    let digest = BASE64.decode(&accept).unwrap_or_default();
    let nonce = match BASE64.decode(key) {
        Ok(bytes) if bytes.len() == 16 => format!("base64 of the 16-byte nonce {}", hex::format(&bytes)),
        _ => "not base64 of 16 bytes: a server answers 400 (§4.2.1 item 5)".into(),
    };
    let joined = format!("{key}{WEBSOCKET_GUID}");
    [
        format!("1. the key, as sent: {key:?}"),
        format!("   ({nonce}; §4.1 item 7)"),
        format!("2. append the GUID {WEBSOCKET_GUID} (§1.3):"),
        format!("   {joined}"),
        format!("3. SHA-1 of those {} bytes of text (not of the decoded nonce):", joined.len()),
        format!("   {}", hex::format(&digest)),
        "4. base64 of the 20 bytes: Sec-WebSocket-Accept".into(),
        format!("   {accept}"),
    ]
    .iter()
    .map(|line| format!("{indent}{line}\n"))
    .collect()
}

/// The `accept` command's output.
pub fn run(key: &str) -> String {
    format!(
        "Sec-WebSocket-Accept for Sec-WebSocket-Key {key:?} (RFC 6455 §4.2.2 item 5.4):\n{}",
        steps(key, "")
    )
}
