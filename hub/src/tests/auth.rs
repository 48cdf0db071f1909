//! Tokens: JWT at the handshake, on /events and POST /publish; room
//! claims; expiry while connected and `refresh`; the per-user limit.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sabai::WebSocketConfig;
use serde_json::{json, Value};

use super::*;
use crate::auth::now_secs;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn token(claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn for_user(user: &str, secs: u64) -> String {
    token(json!({"sub": user, "exp": now_secs() + secs}))
}

async fn hs256(extra: &[&str]) -> (Arc<crate::App>, String) {
    let mut flags = vec!["--no-simulator", "--jwt-secret", SECRET];
    flags.extend_from_slice(extra);
    start(&flags).await
}

/// The handshake's status with this header, or Ok.
async fn status_with(addr: &str, query: &str, header: Option<(&str, String)>) -> Result<(), u16> {
    let url = format!("ws://{addr}/ws{query}");
    let result = sabai::connect_with(&url, &WebSocketConfig::default(), |request| match &header {
        Some((name, value)) => request.header(*name, value.as_str()),
        None => request,
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sabai::Error::Handshake(sabai::handshake::HandshakeError::UnexpectedStatus(status))) => {
            Err(status)
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_token_in_the_header_the_query_or_a_subprotocol_names_the_user() {
    let (_app, addr) = hs256(&[]).await;
    assert_eq!(status_with(&addr, "", None).await, Err(401));
    let ann = for_user("ann", 60);
    assert_eq!(status_with(&addr, "", Some(("Authorization", format!("Bearer {ann}")))).await, Ok(()));
    // ?user= is ignored: the token's sub is the user.
    let mut ws = connect(&addr, &format!("?token={ann}&user=admin")).await;
    assert_eq!(next_of(&mut ws, "connected").await["payload"]["user"], "ann");
    // The browser way: the token as a subprotocol entry beside sabai.v1;
    // the answer is sabai.v1, never the token.
    let config = WebSocketConfig::default();
    let (mut ws, response) = {
        let stream = sabai::MaybeTlsStream::Plain(tokio::net::TcpStream::connect(&addr).await.unwrap());
        let request = sabai::handshake::ClientRequest::new(addr.clone(), "/ws")
            .protocol("sabai.v1")
            .protocol(format!("bearer.{ann}"));
        sabai::client(stream, request, &config).await.unwrap()
    };
    assert_eq!(response.protocol(), Some("sabai.v1"));
    assert_eq!(next_of(&mut ws, "connected").await["payload"]["user"], "ann");
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_reason_and_are_never_accepted() {
    let (_app, addr) = hs256(&["--jwt-audience", "hub"]).await;
    let now = now_secs();
    let b64 = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let good = token(json!({"sub": "ann", "exp": now + 60, "aud": "hub"}));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = "@@not-base64@@".into();
    let bad_base64 = parts.join(".");
    // 100 KB of token is over the handshake's head limit (16 KiB): 431,
    // refused before anything reads the token.
    let huge = Some(("Authorization", format!("Bearer {}", "x".repeat(100 * 1024))));
    assert_eq!(status_with(&addr, "", huge).await, Err(431));
    let cases = [
        ("x".repeat(10 * 1024), "10 KB, over the 8 KiB token limit"),
        (bad_base64, "malformed base64 in the payload"),
        (
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&json!({"sub":"root","exp":now+60,"aud":"hub"}).to_string())
            ),
            "alg none",
        ),
        (token(json!({"sub": "ann", "exp": now - 3600, "aud": "hub"})), "expired"),
        (token(json!({"sub": "ann", "exp": now + 60, "aud": "billing"})), "another audience"),
        (token(json!({"sub": "ann", "exp": now + 60})), "no audience"),
    ];
    for (token, what) in cases {
        let header = Some(("Authorization", format!("Bearer {token}")));
        assert_eq!(status_with(&addr, "", header).await, Err(401), "{what}");
    }
    assert_eq!(status_with(&addr, "", Some(("Authorization", format!("Bearer {good}")))).await, Ok(()));
    // The reason is in the body, for a client to show.
    let (status, body) =
        http(&addr, "GET", "/events?rooms=global", "Authorization: Bearer expired.token.here\r\n", "").await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid token"), "{body}");
}

#[tokio::test]
async fn an_es256_server_refuses_an_hs256_token_signed_with_its_public_key() {
    let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let dir = std::env::temp_dir().join(format!("sabai-hub-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("public.pem");
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    let (_app, addr) =
        start(&["--no-simulator", "--jwt-public-key", public.to_str().unwrap(), "--jwt-alg", "ES256"]).await;
    let claims = json!({"sub": "ann", "exp": now_secs() + 60});
    let signed = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(status_with(&addr, "", Some(("Authorization", format!("Bearer {signed}")))).await, Ok(()));
    // The classic confusion: HMAC with the public key as its secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(pair.public_key_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(status_with(&addr, "", Some(("Authorization", format!("Bearer {confused}")))).await, Err(401));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_rooms_claim_limits_subscribe_publish_and_post_publish() {
    let (_app, addr) = hs256(&[]).await;
    let limited = token(json!({"sub": "ann", "exp": now_secs() + 60, "rooms": ["chat:*"]}));
    let mut ws = connect(&addr, &format!("?token={limited}")).await;
    next_of(&mut ws, "connected").await;
    send(
        &mut ws,
        json!({"type": "subscribe", "payload": {"rooms": ["chat:a", "device:x"]}, "request_id": 1}),
    )
    .await;
    let error = next_of(&mut ws, "error").await;
    assert!(error["payload"]["message"].as_str().unwrap().contains("device:x"), "{error}");
    send(&mut ws, json!({"type": "subscribe", "payload": {"rooms": ["chat:a"]}})).await;
    assert_eq!(next_of(&mut ws, "subscribed").await["payload"]["rooms"], json!(["chat:a"]));
    // POST /publish takes a token too, held to its rooms.
    let reading = r#"{"room":"device:x","type":"telemetry","payload":{}}"#;
    assert_eq!(http(&addr, "POST", "/publish", "", reading).await.0, 401);
    let bearer = format!("Authorization: Bearer {limited}\r\n");
    assert_eq!(http(&addr, "POST", "/publish", &bearer, reading).await.0, 403);
    let backend = format!("Authorization: Bearer {}\r\n", for_user("backend", 60));
    assert_eq!(http(&addr, "POST", "/publish", &backend, reading).await.0, 200);
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4001_unless_refreshed() {
    let (_app, addr) = hs256(&["--jwt-leeway", "0.001"]).await;
    let mut short = connect(&addr, &format!("?token={}", for_user("ann", 2))).await;
    let mut refreshed = connect(&addr, &format!("?token={}", for_user("bob", 2))).await;
    next_of(&mut short, "connected").await;
    next_of(&mut refreshed, "connected").await;
    // Another user's token is no refresh.
    send(
        &mut refreshed,
        json!({"type": "refresh", "payload": {"token": for_user("ann", 60)}, "request_id": 1}),
    )
    .await;
    assert!(next_of(&mut refreshed, "error").await["payload"]["message"]
        .as_str()
        .unwrap()
        .contains("same user"));
    send(
        &mut refreshed,
        json!({"type": "refresh", "payload": {"token": for_user("bob", 60)}, "request_id": 2}),
    )
    .await;
    assert_eq!(next_of(&mut refreshed, "refreshed").await["request_id"], 2);
    // ann's token runs out: 4001.
    let end = timeout(Duration::from_secs(6), async { while let Ok(Some(_)) = short.recv().await {} }).await;
    assert!(end.is_ok(), "the expired connection stayed open");
    assert_eq!(short.close_frame().map(|f| f.code.0), Some(4001));
    // bob is still there.
    send(&mut refreshed, json!({"type": "ping", "request_id": 3})).await;
    assert_eq!(next_of(&mut refreshed, "pong").await["request_id"], 3);
}

#[tokio::test]
async fn the_per_user_limit_counts_verified_identities_only() {
    // Without tokens, a name is a claim: ten "ann"s are ten guests as far
    // as limits go, and nobody can lock "ann" out.
    let (_app, addr) = start(&["--no-simulator", "--max-per-user", "2"]).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut ws = connect(&addr, "?user=ann").await;
        next_of(&mut ws, "connected").await;
        open.push(ws);
    }
    // With tokens, the third connection of one sub is closed with 4029.
    let (_app, addr) = hs256(&["--max-per-user", "2"]).await;
    let ann = for_user("ann", 60);
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut ws = connect(&addr, &format!("?token={ann}")).await;
        next_of(&mut ws, "connected").await;
        kept.push(ws);
    }
    let mut third = connect(&addr, &format!("?token={ann}")).await;
    while let Ok(Ok(Some(_))) = timeout(Duration::from_secs(5), third.recv()).await {}
    assert_eq!(third.close_frame().map(|f| f.code.0), Some(4029));
}
