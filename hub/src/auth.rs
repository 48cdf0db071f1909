//! Who a client is: a JWT checked at the handshake (and on /events,
//! POST /send and POST /publish), with the algorithm pinned by the
//! server's configuration, never by the token.
//!
//! A token comes as `Authorization: Bearer <token>`, `?token=<token>`, or
//! a `Sec-WebSocket-Protocol` entry `bearer.<token>` (browsers cannot set
//! headers on a WebSocket; the client offers the real subprotocol,
//! `sabai.v1`, beside it, and the server answers with that one only).
//! Claims: `sub` is the user; `exp` and `nbf` are enforced with a small
//! leeway; `rooms` (optional) lists the rooms the token allows, each a
//! name or a prefix ending in `*`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest token read: a JWT with a few claims is a few hundred bytes.
pub const MAX_TOKEN: usize = 8 * 1024;

/// The subprotocol of the JSON protocol, answered when a client offers it.
pub const SUBPROTOCOL: &str = "sabai.v1";

/// The prefix of a token offered as a subprotocol.
const BEARER_PROTOCOL: &str = "bearer.";

/// How tokens are checked.
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Room patterns the token allows; `None`: every room.
    pub rooms: Option<Vec<String>>,
    /// When the token stops being valid.
    pub expires: Option<SystemTime>,
    /// Device rooms the user may send commands to (`commands` claim:
    /// `["device:42", "device:*"]`); `None`: no commands.
    pub commands: Option<Vec<String>>,
}

impl Identity {
    /// Whether the token allows this room.
    pub fn may(&self, room: &str) -> bool {
        let Some(patterns) = &self.rooms else { return true };
        matches_any(patterns, room)
    }

    /// Whether the token allows commands to this device (its `commands`
    /// claim names its room; no claim, no commands).
    pub fn may_command(&self, device_id: &str) -> bool {
        let Some(patterns) = &self.commands else { return false };
        matches_any(patterns, &format!("device:{device_id}"))
    }
}

/// Whether a name or a `prefix*` pattern matches `room`.
fn matches_any(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
    rooms: Option<Vec<String>>,
    commands: Option<Vec<String>>,
}

/// Why a token was refused (the token itself is never part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Missing,
    TooLong,
    Expired,
    Invalid(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing => f.write_str("a token is required"),
            Refused::TooLong => write!(f, "the token is over {MAX_TOKEN} bytes"),
            Refused::Expired => f.write_str("the token has expired"),
            Refused::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

/// The server's JWT settings, as flags give them.
#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    pub secret: Option<String>,
    pub public_key: Option<std::path::PathBuf>,
    pub algorithm: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub leeway: Duration,
}

impl Jwt {
    /// `None` when no key is configured (no JWT).
    pub fn new(settings: &JwtSettings) -> Result<Option<Jwt>, String> {
        // One crypto backend, pinned: RustCrypto, never chosen by features.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        let algorithm = match settings.algorithm.as_deref() {
            None if settings.secret.is_some() => Algorithm::HS256,
            None => Algorithm::RS256,
            Some("HS256") => Algorithm::HS256,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some(other) => return Err(format!("--jwt-alg: HS256, RS256 or ES256, not {other:?}")),
        };
        let key = match (&settings.secret, &settings.public_key, algorithm) {
            (None, None, _) => return Ok(None),
            (Some(_), Some(_), _) => return Err("--jwt-secret and --jwt-public-key: give one".into()),
            (Some(secret), None, Algorithm::HS256) => {
                if secret.len() < 32 {
                    return Err("--jwt-secret: at least 32 bytes for HS256".into());
                }
                DecodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("--jwt-secret: {e}"))?
            }
            (Some(_), None, other) => return Err(format!("--jwt-secret is for HS256, not {other:?}")),
            (None, Some(path), Algorithm::HS256) => {
                return Err(format!("--jwt-public-key {} needs --jwt-alg RS256 or ES256", path.display()))
            }
            (None, Some(path), algorithm) => public_key(path, algorithm)?,
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        // A claim the server checks must be there: a token without `aud`
        // is not "for any audience".
        let mut required = vec!["sub"];
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Jwt { key, validation }))
    }

    /// Checks a token; its identity, or why not.
    pub fn verify(&self, token: &str) -> Result<Identity, Refused> {
        if token.len() > MAX_TOKEN {
            return Err(Refused::TooLong);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => {
                let claims = data.claims;
                if claims.sub.is_empty() || claims.sub.chars().any(char::is_control) || claims.sub.len() > 128
                {
                    return Err(Refused::Invalid(
                        "sub must be 1 to 128 bytes without control characters".into(),
                    ));
                }
                let expires = claims.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp));
                Ok(Identity { user: claims.sub, rooms: claims.rooms, expires, commands: claims.commands })
            }
            Err(error) => Err(match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Refused::Expired,
                kind => Refused::Invalid(describe(kind)),
            }),
        }
    }
}

/// A short reason, naming no part of the token.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        InvalidToken => "not a JWT (three base64url segments)".into(),
        InvalidSignature => "bad signature".into(),
        InvalidAlgorithm => "algorithm not accepted here".into(),
        ImmatureSignature => "not valid yet (nbf)".into(),
        InvalidAudience => "wrong audience".into(),
        InvalidIssuer => "wrong issuer".into(),
        MissingRequiredClaim(claim) => format!("claim {claim} missing"),
        Base64(_) => "bad base64url".into(),
        Json(_) => "bad JSON in the token".into(),
        Utf8(_) => "bad UTF-8 in the token".into(),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

fn public_key(path: &Path, algorithm: Algorithm) -> Result<DecodingKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
    let key = match algorithm {
        Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    };
    key.map_err(|e| {
        format!("--jwt-public-key {}: not a {algorithm:?} public key in PEM: {e}", path.display())
    })
}

/// The token a request carries: `Authorization: Bearer`, `?token=`, or a
/// `bearer.` subprotocol entry, in that order.
pub fn token_of(
    authorization: Option<&str>,
    query_token: Option<String>,
    protocols: &[String],
) -> Option<String> {
    if let Some(bearer) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        return Some(bearer.trim().to_owned());
    }
    if let Some(token) = query_token {
        return Some(token);
    }
    protocols.iter().find_map(|p| p.strip_prefix(BEARER_PROTOCOL)).map(str::to_owned)
}

/// An HS256 token for `user` (`--mint-token`): for trying the server out.
pub fn mint(secret: &str, user: &str, rooms: &[String], valid_for: Duration) -> Result<String, String> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let mut claims =
        serde_json::json!({ "sub": user, "iat": now_secs(), "exp": now_secs() + valid_for.as_secs() });
    if !rooms.is_empty() {
        claims["rooms"] = serde_json::json!(rooms);
    }
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|e| e.to_string())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

    #[test]
    fn a_minted_token_verifies_with_its_rooms() {
        let rooms = vec!["chat:*".to_owned()];
        let token = mint(SECRET, "ann", &rooms, Duration::from_secs(60)).unwrap();
        let id = hs256().verify(&token).unwrap();
        assert_eq!((id.user.as_str(), id.rooms), ("ann", Some(rooms)));
    }

    fn hs256() -> Jwt {
        let settings =
            JwtSettings { secret: Some(SECRET.into()), leeway: Duration::from_secs(2), ..Default::default() };
        Jwt::new(&settings).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap())
            .unwrap()
    }

    #[test]
    fn a_good_token_names_the_user_and_its_rooms() {
        let jwt = hs256();
        let t = token(json!({"sub": "ann", "exp": now_secs() + 60, "rooms": ["chat:*", "device:42"]}));
        let id = jwt.verify(&t).unwrap();
        assert_eq!(id.user, "ann");
        assert!(id.may("chat:lobby") && id.may("device:42"));
        assert!(!id.may("device:43") && !id.may("global"));
        let open = jwt.verify(&token(json!({"sub": "bob", "exp": now_secs() + 60}))).unwrap();
        assert!(open.may("anything"), "no rooms claim: every room");
    }

    #[test]
    fn bad_tokens_are_refused_for_a_reason_that_shows_no_token() {
        let jwt = hs256();
        let now = now_secs();
        assert_eq!(jwt.verify(&token(json!({"sub": "ann", "exp": now - 60}))), Err(Refused::Expired));
        let in_leeway = token(json!({"sub": "ann", "exp": now - 1}));
        assert!(jwt.verify(&in_leeway).is_ok(), "within the leeway");
        let later = token(json!({"sub": "ann", "exp": now + 600, "nbf": now + 300}));
        assert!(matches!(jwt.verify(&later), Err(Refused::Invalid(_))));
        assert_eq!(jwt.verify(&"x".repeat(100 * 1024)), Err(Refused::TooLong));
        for bad in ["", "a.b", "a.b.c", "!!!.???.***", "eyJhbGciOiJIUzI1NiJ9.%%%.sig"] {
            assert!(matches!(jwt.verify(bad), Err(Refused::Invalid(_))), "{bad:?}");
        }
        // alg none: refused whatever its claims.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&json!({"sub": "root", "exp": now + 60}).to_string())
        );
        assert!(matches!(jwt.verify(&none), Err(Refused::Invalid(_))));
        // Another secret's signature.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "root", "exp": now + 60}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx!").unwrap(),
        )
        .unwrap();
        assert_eq!(jwt.verify(&forged), Err(Refused::Invalid("bad signature".into())));
        // No sub.
        assert!(matches!(jwt.verify(&token(json!({"exp": now + 60}))), Err(Refused::Invalid(_))));
        for refused in [Refused::Missing, Refused::TooLong, Refused::Expired, Refused::Invalid("x".into())] {
            assert!(!refused.to_string().contains("eyJ"));
        }
    }

    #[test]
    fn the_audience_is_checked_when_configured() {
        let settings =
            JwtSettings { secret: Some(SECRET.into()), audience: Some("hub".into()), ..Default::default() };
        let jwt = Jwt::new(&settings).unwrap().unwrap();
        let exp = now_secs() + 60;
        assert!(jwt.verify(&token(json!({"sub": "a", "exp": exp, "aud": "hub"}))).is_ok());
        assert_eq!(
            jwt.verify(&token(json!({"sub": "a", "exp": exp, "aud": "billing"}))),
            Err(Refused::Invalid("wrong audience".into()))
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_at_start() {
        let short = JwtSettings { secret: Some("short".into()), ..Default::default() };
        assert!(Jwt::new(&short).is_err());
        let both = JwtSettings {
            secret: Some(SECRET.into()),
            public_key: Some("k.pem".into()),
            ..Default::default()
        };
        assert!(Jwt::new(&both).is_err());
        let hs_key = JwtSettings {
            public_key: Some("k.pem".into()),
            algorithm: Some("HS256".into()),
            ..Default::default()
        };
        assert!(Jwt::new(&hs_key).is_err());
        let none =
            JwtSettings { algorithm: Some("none".into()), secret: Some(SECRET.into()), ..Default::default() };
        assert!(Jwt::new(&none).is_err());
        assert!(Jwt::new(&JwtSettings::default()).unwrap().is_none());
    }

    #[test]
    fn tokens_come_from_the_header_the_query_or_a_subprotocol() {
        let protocols = vec!["sabai.v1".to_owned(), "bearer.tok3".to_owned()];
        assert_eq!(token_of(Some("Bearer tok1"), Some("tok2".into()), &protocols).as_deref(), Some("tok1"));
        assert_eq!(token_of(None, Some("tok2".into()), &protocols).as_deref(), Some("tok2"));
        assert_eq!(token_of(None, None, &protocols).as_deref(), Some("tok3"));
        assert_eq!(token_of(Some("Basic x"), None, &[]), None);
    }

    fn b64(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
