//! Incremental UTF-8 validation for text messages (RFC 6455 §8.1).
//!
//! A text message may arrive in many frames and each frame in many reads; a
//! code point may be split anywhere. [`Utf8Validator`] accepts the bytes in
//! any pieces and fails on the first byte that cannot start or continue valid
//! UTF-8, so a bad message is refused in the read where the bad byte arrives
//! (Autobahn 6.4.x calls this "fail fast").
//!
//! The bulk of the work is `std::str::from_utf8`, which is fast on ASCII. Its
//! error tells "invalid" (`error_len() == Some(_)`) from "valid so far but cut
//! off" (`None`); only the cut-off tail, at most 3 bytes, is carried over.

/// The input is not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates UTF-8 fed in pieces.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator {
    /// Bytes of a code point that the previous piece cut off.
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. Fails as soon as the bytes seen so far
    /// cannot be the beginning of valid UTF-8. After an error the validator
    /// starts over, as if new: the failed message is not carried into the next.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), Utf8Error> {
        let result = self.feed_piece(input);
        if result.is_err() {
            *self = Self::default();
        }
        result
    }

    fn feed_piece(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]) - have;
            let take = need.min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            match std::str::from_utf8(&self.partial[..now]) {
                Ok(_) => self.partial_len = 0,
                // Still a valid prefix, and `input` is used up.
                Err(e) if e.error_len().is_none() => {
                    self.partial_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            input = &input[take..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// True when no code point is left unfinished: the message may end here.
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }

    /// Validates the last piece of a message: like `feed`, and the message
    /// must not end inside a code point. Either way the validator is then
    /// ready for the next message.
    pub fn finish(&mut self, input: &[u8]) -> Result<(), Utf8Error> {
        self.feed(input)?;
        let complete = self.is_complete();
        *self = Self::default();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }

    /// Forgets any carried-over bytes, ready for a new message.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// Length of the sequence a lead byte starts. Only called on the first byte
/// of a carried-over prefix, which `from_utf8` already accepted as a lead.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], cut: usize) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        v.feed(&bytes[..cut])?;
        v.finish(&bytes[cut..])
    }

    #[test]
    fn agrees_with_std_at_every_split_point() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{7FF}\u{80}\u{7F}".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
            b"\xed\xa0\x80", // a surrogate
            b"\xc0\xaf",     // overlong
            b"\xf8\x88\x80\x80\x80",
            b"\xe0\x80",
            b"abc\xc3",
            b"\xf0\x9f\x98",
            b"",
        ];
        for s in samples {
            let expected = std::str::from_utf8(s).is_ok();
            for cut in 0..=s.len() {
                assert_eq!(validate_split(s, cut).is_ok(), expected, "{s:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn fails_fast_on_the_first_impossible_byte() {
        // Autobahn 6.4.1: U+10FFFF + 1 starts with f4 90; 0x90 is already impossible.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(b"\xf4\x90"), Err(Utf8Error));
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "ab\u{20AC}c\u{1F600}d".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(v.is_complete());
        let mut v = Utf8Validator::new();
        v.feed(&text[..3]).unwrap();
        assert!(!v.is_complete());
    }

    #[test]
    fn starts_over_after_an_error() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.feed(b"\xff"), Err(Utf8Error));
        // The cut-off prefix of the failed message is gone.
        assert!(v.is_complete());
        v.finish(b"next message").unwrap();
        // `finish` on a message cut mid code point also leaves it fresh.
        assert_eq!(v.finish(b"\xe2\x82"), Err(Utf8Error));
        v.finish(b"ok").unwrap();
    }

    #[test]
    fn reset_forgets_a_cut_off_code_point() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        v.reset();
        assert!(v.is_complete());
        v.finish(b"plain").unwrap();
    }
}
