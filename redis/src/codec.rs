//! How a publication travels through Redis: one byte string, the same in a
//! room's history and on its channel.
//!
//! It is a sequence of netstrings (D. J. Bernstein, "Netstrings",
//! 1997: `<length in decimal>:<bytes>,`), binary-safe, and simple enough
//! for the publish script to append the offsets it assigns with Lua's
//! string concatenation:
//!
//! ```text
//! "s1" or "s2"               format and version
//! node id                    the publishing node
//! sequence                   decimal; (node, sequence) identifies it
//! except                     decimal connection id of that node, or empty
//! coalescing key             "s2" only: the publication's key (Publish::coalesce)
//! kind                       "t" (text) or "b" (binary)
//! rooms                      decimal count, then for each room:
//!   room, offset, epoch      offset and epoch empty where it has no history
//! payload                    the message's bytes
//! ```
//!
//! The node encodes everything but the rooms' three fields (a head and a
//! tail); the script writes those between them.
//!
//! **Versions.** A publication without a coalescing key is written as
//! `s1`, exactly as before keys existed; only one with a key is written as
//! `s2`. Nodes of this version read both. A node of an earlier version
//! cannot read `s2`: it skips such a publication (counted in
//! `decode_errors`), so during a rolling upgrade its members miss the
//! coalesced publications of upgraded nodes (the hub server's typing and
//! presence notices: ephemeral, never replayed) and nothing else.

use std::sync::Arc;

use bytes::Bytes;
use sabai::hub::{ConnId, Placement, Position, Publication};
use sabai::Message;

/// The format's first field: without a coalescing key.
const VERSION: &[u8] = b"s1";
/// ... and with one (an extra field after `except`).
const VERSION_KEYED: &[u8] = b"s2";

/// Appends one netstring.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b',');
}

/// What goes before and after the rooms.
pub(crate) struct Frame {
    pub(crate) head: Vec<u8>,
    pub(crate) tail: Vec<u8>,
}

/// A publication's id: the node that published it and its number there.
pub(crate) type PublicationId = (Arc<str>, u64);

/// What the node encodes of a publication.
pub(crate) struct Head<'a> {
    pub(crate) node: &'a str,
    pub(crate) seq: u64,
    pub(crate) except: Option<ConnId>,
    pub(crate) coalesce: Option<&'a str>,
}

/// Encodes all but the rooms' fields.
pub(crate) fn frame(publication: &Head<'_>, message: &Message, rooms: usize) -> Frame {
    let mut head = Vec::with_capacity(64);
    field(&mut head, if publication.coalesce.is_some() { VERSION_KEYED } else { VERSION });
    field(&mut head, publication.node.as_bytes());
    field(&mut head, publication.seq.to_string().as_bytes());
    field(&mut head, publication.except.map(|c| c.0.to_string()).unwrap_or_default().as_bytes());
    if let Some(key) = publication.coalesce {
        field(&mut head, key.as_bytes());
    }
    field(&mut head, if message.as_text().is_some() { b"t" } else { b"b" });
    field(&mut head, rooms.to_string().as_bytes());
    let payload = message.as_bytes();
    let mut tail = Vec::with_capacity(payload.len() + 12);
    field(&mut tail, payload);
    Frame { head, tail }
}

/// The rooms' fields as the script writes them (for tests and for
/// symmetry: the script is the one that really does this).
#[cfg(test)]
pub(crate) fn room_fields(room: &str, position: Option<&Position>) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, room.as_bytes());
    field(&mut out, position.map(|p| p.offset.to_string()).unwrap_or_default().as_bytes());
    field(&mut out, position.map(|p| p.epoch.as_bytes()).unwrap_or_default());
    out
}

/// Why bytes are not a publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// A decoded publication and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) id: PublicationId,
    pub(crate) publication: Arc<Publication>,
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<&'a [u8], Malformed> {
        let colon = self.rest.iter().take(11).position(|&b| b == b':').ok_or(Malformed("length"))?;
        let digits = &self.rest[..colon];
        // Netstrings: no sign, no leading zero except "0" itself.
        if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
            return Err(Malformed("length"));
        }
        let len = number(digits).ok_or(Malformed("length"))?;
        let start = colon + 1;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).ok_or(Malformed("length"))?;
        if self.rest.get(end) != Some(&b',') {
            return Err(Malformed("truncated"));
        }
        let bytes = &self.rest[start..end];
        self.rest = &self.rest[end + 1..];
        Ok(bytes)
    }

    fn number(&mut self) -> Result<u64, Malformed> {
        number(self.next()?).ok_or(Malformed("number"))
    }

    fn text(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.next()?).map_err(|_| Malformed("utf-8"))
    }
}

/// A decimal `u64` (digits only).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Decodes a publication. `except` is kept only if `this_node` published
/// it (a connection id means nothing on another node).
pub(crate) fn decode(bytes: &[u8], this_node: &str) -> Result<Decoded, Malformed> {
    let mut reader = Reader { rest: bytes };
    let keyed = match reader.next()? {
        VERSION => false,
        VERSION_KEYED => true,
        _ => return Err(Malformed("version")),
    };
    let node = reader.text()?;
    let seq = reader.number()?;
    let except = match reader.next()? {
        b"" => None,
        digits => Some(ConnId(number(digits).ok_or(Malformed("except"))?)),
    };
    let coalesce: Option<Arc<str>> = if keyed { Some(reader.text()?.into()) } else { None };
    let text = match reader.next()? {
        b"t" => true,
        b"b" => false,
        _ => return Err(Malformed("kind")),
    };
    let count = reader.number()?;
    // Each room takes at least 9 bytes ("0:,0:,0:,"): a count past that is a lie.
    if count > (reader.rest.len() / 9) as u64 {
        return Err(Malformed("room count"));
    }
    let mut rooms = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let room = reader.text()?.to_owned();
        let offset = reader.next()?;
        let epoch = reader.text()?;
        let position = match (offset, epoch) {
            (b"", "") => None,
            (b"", _) | (_, "") => return Err(Malformed("position")),
            (offset, epoch) => Some(Position::new(number(offset).ok_or(Malformed("offset"))?, epoch)),
        };
        rooms.push(Placement { room, position });
    }
    let payload = reader.next()?;
    if !reader.rest.is_empty() {
        return Err(Malformed("trailing bytes"));
    }
    let message = if text {
        Message::Text(std::str::from_utf8(payload).map_err(|_| Malformed("utf-8"))?.to_owned())
    } else {
        Message::Binary(Bytes::copy_from_slice(payload))
    };
    let except = except.filter(|_| node == this_node);
    let publication = Arc::new(Publication { message, rooms, except, coalesce });
    Ok(Decoded { id: (node.into(), seq), publication })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publish script writes, done here.
    fn encode(
        node: &str,
        seq: u64,
        except: Option<ConnId>,
        message: &Message,
        rooms: &[Placement],
    ) -> Vec<u8> {
        encode_keyed(&Head { node, seq, except, coalesce: None }, message, rooms)
    }

    fn encode_keyed(head: &Head<'_>, message: &Message, rooms: &[Placement]) -> Vec<u8> {
        let frame = frame(head, message, rooms.len());
        let mut out = frame.head;
        for placement in rooms {
            out.extend(room_fields(&placement.room, placement.position.as_ref()));
        }
        out.extend(frame.tail);
        out
    }

    fn at(room: &str, position: Option<(u64, &str)>) -> Placement {
        Placement { room: room.into(), position: position.map(|(o, e)| Position::new(o, e)) }
    }

    #[test]
    fn a_publication_comes_back_as_it_went() {
        let rooms =
            [at("device:7", Some((41, "1700000000123456"))), at("global", None), at("", Some((1, "e")))];
        for message in
            [Message::text("21.5 °C"), Message::binary(vec![0, 255, b',', b':', b'1']), Message::text("")]
        {
            let bytes = encode("node-a", 7, Some(ConnId(3)), &message, &rooms);
            let decoded = decode(&bytes, "node-a").unwrap();
            assert_eq!(decoded.id, ("node-a".into(), 7));
            assert_eq!(decoded.publication.message, message);
            assert_eq!(decoded.publication.rooms, rooms);
            assert_eq!(decoded.publication.except, Some(ConnId(3)));
            let elsewhere = decode(&bytes, "node-b").unwrap();
            assert_eq!(elsewhere.publication.except, None, "a connection id is only meaningful on its node");
        }
    }

    #[test]
    fn the_layout_is_netstrings() {
        let bytes = encode("n", 1, None, &Message::text("hi"), &[at("r", Some((5, "e")))]);
        assert_eq!(bytes, b"2:s1,1:n,1:1,0:,1:t,1:1,1:r,1:5,1:e,2:hi,");
        let decoded = decode(&bytes, "n").unwrap();
        assert_eq!(decoded.publication.coalesce, None);
    }

    #[test]
    fn a_coalescing_key_is_written_as_s2_and_read_back() {
        let head = Head { node: "n", seq: 1, except: Some(ConnId(4)), coalesce: Some("typing|chat:a|ann") };
        let bytes = encode_keyed(&head, &Message::text("hi"), &[at("chat:a", None)]);
        assert_eq!(bytes, b"2:s2,1:n,1:1,1:4,17:typing|chat:a|ann,1:t,1:1,6:chat:a,0:,0:,2:hi,");
        let decoded = decode(&bytes, "n").unwrap();
        assert_eq!(decoded.publication.coalesce.as_deref(), Some("typing|chat:a|ann"));
        assert_eq!(decoded.publication.except, Some(ConnId(4)));
        assert_eq!(decoded.publication.message, Message::text("hi"));
        // An empty key is a key; s1 and s2 differ only by that field.
        let empty = encode_keyed(&Head { coalesce: Some(""), ..head }, &Message::text("x"), &[]);
        assert_eq!(decode(&empty, "n").unwrap().publication.coalesce.as_deref(), Some(""));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], "n").is_err(), "cut at {cut}");
        }
        assert!(decode(b"2:s2,1:n,1:1,0:,2:\xff\xfe,1:t,1:0,0:,", "n").is_err(), "a key is UTF-8");
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let good = encode("n", 1, None, &Message::text("hi"), &[at("r", Some((5, "e")))]);
        // Every truncation and every single-byte change of a valid encoding.
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], "n").is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for b in [b'0', b'9', b':', b',', 0xff, b'x'] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode(&bad, "n");
            }
        }
        for bad in [
            &b""[..],
            b"2:s2,",
            b"99999999999999999999:",
            b"2:s1,1:n,1:1,0:,1:t,9999999:",
            b"2:s1,1:n,1:1,0:,1:t,1:1,1:r,0:,1:e,0:,",
            b"2:s1,1:n,1:1,0:,1:x,1:0,0:,",
            b"2:s1,1:n,1:1,0:,1:t,1:0,2:\xff\xfe,",
            b"2:s1,1:n,1:1,0:,1:t,1:0,0:,extra",
            b"02:s1,",
        ] {
            assert!(decode(bad, "n").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
