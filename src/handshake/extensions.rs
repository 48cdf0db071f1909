//! The `Sec-WebSocket-Extensions` header (RFC 6455 §9.1): a list of
//! extensions, each a token with `;`-separated parameters.
//!
//! ```text
//! extension-list = 1#extension
//! extension      = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! The parser looks at each byte once and keeps at most [`MAX_EXTENSIONS`]
//! elements of at most [`MAX_PARAMS`] parameters, so hostile input (long
//! whitespace runs, unclosed quotes, thousands of tokens) costs linear time
//! and bounded memory.

use std::fmt;

use super::head::is_token;

/// Most list elements accepted in one handshake; more is an error.
pub const MAX_EXTENSIONS: usize = 32;
/// Most parameters accepted on one element; more is an error.
pub const MAX_PARAMS: usize = 16;

/// One element of the list: an extension name and its parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// The extension's name (a token), for example `permessage-deflate`.
    pub name: String,
    /// Its parameters, in the order they were written.
    pub params: Vec<Param>,
}

/// `name` or `name=value` (a quoted value is given unescaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name (a token).
    pub name: String,
    /// Its value, if it has one (`name=value`); a quoted value is unescaped.
    pub value: Option<String>,
}

/// Why an extension header or a negotiated extension was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtensionError {
    /// RFC 6455 §9.1: the header does not follow the grammar.
    Malformed,
    /// More than [`MAX_EXTENSIONS`] elements or [`MAX_PARAMS`] parameters.
    TooMany,
    /// RFC 7692 §7: a parameter this side may not send.
    UnknownParam(String),
    /// RFC 7692 §7: the same parameter twice.
    DuplicateParam(String),
    /// RFC 7692 §7: a parameter value out of range or where none belongs.
    InvalidValue(String),
    /// RFC 7692 §7.1.2.2: `client_max_window_bits` answered but not offered,
    /// or a window larger than we asked for.
    NotOffered(String),
    /// RFC 7692 §5: the server accepted permessage-deflate more than once.
    Duplicate,
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionError::Malformed => f.write_str("malformed Sec-WebSocket-Extensions (RFC 6455 §9.1)"),
            ExtensionError::TooMany => f.write_str("too many extensions or parameters"),
            ExtensionError::UnknownParam(p) => write!(f, "unknown parameter {p} (RFC 7692 §7)"),
            ExtensionError::DuplicateParam(p) => write!(f, "parameter {p} given twice (RFC 7692 §7)"),
            ExtensionError::InvalidValue(p) => write!(f, "invalid value for {p} (RFC 7692 §7.1)"),
            ExtensionError::NotOffered(p) => write!(f, "{p} does not match the offer (RFC 7692 §7.1)"),
            ExtensionError::Duplicate => f.write_str("permessage-deflate accepted twice (RFC 7692 §5)"),
        }
    }
}

impl std::error::Error for ExtensionError {}

/// Parses one header value, appending its elements to `out` (a field sent
/// several times is one list, RFC 9110 §5.3). Empty elements are skipped.
pub fn parse_extensions(value: &[u8], out: &mut Vec<Extension>) -> Result<(), ExtensionError> {
    let mut cur = Cursor { s: value, at: 0 };
    loop {
        cur.skip_space();
        match cur.peek() {
            None => return Ok(()),
            Some(b',') => {
                cur.at += 1;
                continue;
            }
            Some(_) => {}
        }
        if out.len() == MAX_EXTENSIONS {
            return Err(ExtensionError::TooMany);
        }
        let name = cur.token().ok_or(ExtensionError::Malformed)?;
        let mut params = Vec::new();
        loop {
            cur.skip_space();
            match cur.peek() {
                None | Some(b',') => break,
                Some(b';') => cur.at += 1,
                Some(_) => return Err(ExtensionError::Malformed),
            }
            if params.len() == MAX_PARAMS {
                return Err(ExtensionError::TooMany);
            }
            cur.skip_space();
            let name = cur.token().ok_or(ExtensionError::Malformed)?;
            cur.skip_space();
            let value = if cur.peek() == Some(b'=') {
                cur.at += 1;
                cur.skip_space();
                Some(cur.value()?)
            } else {
                None
            };
            params.push(Param { name, value });
        }
        out.push(Extension { name, params });
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// RFC 9110 §5.6.3: optional whitespace is spaces and tabs.
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(|b| is_token(&[b])) {
            self.at += 1;
        }
        let token = &self.s[start..self.at];
        // Token bytes are ASCII, so this never fails.
        (!token.is_empty()).then(|| String::from_utf8_lossy(token).into_owned())
    }

    /// A token, or a quoted string that unescapes to a token (RFC 6455 §9.1).
    fn value(&mut self) -> Result<String, ExtensionError> {
        if self.peek() != Some(b'"') {
            return self.token().ok_or(ExtensionError::Malformed);
        }
        self.at += 1;
        let mut value = Vec::new();
        loop {
            let b = self.peek().ok_or(ExtensionError::Malformed)?;
            self.at += 1;
            match b {
                b'"' => break,
                // RFC 9110 §5.6.4: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
                b'\\' => {
                    let escaped = self.peek().ok_or(ExtensionError::Malformed)?;
                    self.at += 1;
                    value.push(escaped);
                }
                _ => value.push(b),
            }
        }
        if !is_token(&value) {
            return Err(ExtensionError::Malformed);
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Extension>, ExtensionError> {
        let mut out = Vec::new();
        parse_extensions(s.as_bytes(), &mut out).map(|()| out)
    }

    fn param(name: &str, value: Option<&str>) -> Param {
        Param { name: name.into(), value: value.map(Into::into) }
    }

    #[test]
    fn parses_offers_params_and_quoted_values() {
        let got =
            parse("permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", x-y").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "permessage-deflate");
        assert_eq!(
            got[0].params,
            [param("client_max_window_bits", None), param("server_max_window_bits", Some("10"))]
        );
        assert_eq!(got[1], Extension { name: "x-y".into(), params: vec![] });
        assert_eq!(parse(" ,, a ,\t,").unwrap().len(), 1);
        assert_eq!(parse("a;b=\"\\1\\0\"").unwrap()[0].params, [param("b", Some("10"))]);
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        for bad in
            ["a;", "a;=1", "a b", "a;b=", "a;b=\"1", "a;b=\"\"", "a;b=\"1 0\"", ";a", "a;b=1 2", "\"a\""]
        {
            assert_eq!(parse(bad), Err(ExtensionError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let many = "a,".repeat(10_000);
        assert_eq!(parse(&many), Err(ExtensionError::TooMany));
        let params = format!("a{}", ";p".repeat(10_000));
        assert_eq!(parse(&params), Err(ExtensionError::TooMany));
        let spaces = format!("a{};b", " ".repeat(100_000));
        assert_eq!(parse(&spaces).unwrap()[0].params.len(), 1);
        let unclosed = format!("a;b=\"{}", "x".repeat(100_000));
        assert_eq!(parse(&unclosed), Err(ExtensionError::Malformed));
    }
}
