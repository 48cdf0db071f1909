//! Feeds arbitrary bytes to `Utf8Validator` in input-chosen pieces and
//! checks it against `std::str::from_utf8` on the whole input:
//! - valid input: every `feed` and the `finish` succeed, and after each piece
//!   `is_complete()` is true exactly when the bytes so far end on a
//!   character boundary;
//! - invalid input: every piece before the first impossible byte (the first
//!   byte after which no continuation could make the input valid) is
//!   accepted, and the piece holding that byte is refused (fail fast);
//! - input cut off inside a character: every `feed` succeeds and only
//!   `finish` fails;
//! - the validator is `Copy`: a copy taken midway and fed the same way
//!   behaves the same; and `reset` really forgets.
//!
//! Input layout: `flags, plan..., bytes`. flags bit 3: the last piece goes
//! to `finish` (otherwise `feed` everything, then `finish(&[])`); bit 4:
//! check a copy taken halfway.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabai::proto::Utf8Validator;
use sabai_fuzz::{take_plan, Chunks};

/// Index of the first impossible byte, or `None` if every prefix could still
/// be completed to valid UTF-8.
fn first_impossible(data: &[u8]) -> Option<usize> {
    let error = std::str::from_utf8(data).err()?;
    error.error_len()?;
    let start = error.valid_up_to();
    // `data[..start]` is valid and ends on a boundary, so only the bytes
    // from `start` decide; the bad sequence is at most 4 bytes long.
    (start..data.len().min(start + 4))
        .find(|&end| std::str::from_utf8(&data[start..=end]).is_err_and(|e| e.error_len().is_some()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, _)) = input.split_first() else {
        return;
    };
    let Some((plan, data)) = take_plan(input) else {
        return;
    };
    let finish_with_last = flags & 8 != 0;
    let check_copy = flags & 16 != 0;

    let whole_ok = std::str::from_utf8(data).is_ok();
    let impossible = first_impossible(data);
    if impossible.is_some() {
        assert!(!whole_ok);
    }

    let pieces: Vec<&[u8]> = Chunks::new(data, plan).collect();
    let mut v = Utf8Validator::new();
    let mut fed = 0usize;
    let mut copy: Option<(Utf8Validator, usize)> = None;
    for (i, piece) in pieces.iter().enumerate() {
        if check_copy && copy.is_none() && fed * 2 >= data.len() {
            copy = Some((v, i));
        }
        let last = i + 1 == pieces.len();
        let result = if last && finish_with_last { v.finish(piece) } else { v.feed(piece) };
        let end = fed + piece.len();
        match impossible {
            Some(bad) if bad < end => {
                assert!(result.is_err(), "piece {fed}..{end} holds impossible byte {bad} but was accepted");
                // After an error the validator starts over, as if new.
                assert!(v.is_complete(), "state carried past an error");
                return check_reset(v);
            }
            _ => {}
        }
        if last && finish_with_last {
            assert_eq!(result.is_ok(), whole_ok, "finish on the last piece disagrees with std");
        } else {
            assert!(result.is_ok(), "valid prefix ..{end} refused");
            let boundary = std::str::from_utf8(&data[..end]).is_ok();
            assert_eq!(v.is_complete(), boundary, "is_complete after ..{end}");
        }
        fed = end;
    }
    if !finish_with_last {
        assert_eq!(v.finish(&[]).is_ok(), whole_ok, "finish disagrees with std");
    }

    // A copy taken midway, fed the rest the same way, ends the same way.
    if let Some((mut c, from)) = copy {
        let mut ok = true;
        for (i, piece) in pieces.iter().enumerate().skip(from) {
            let last = i + 1 == pieces.len();
            ok &= if last && finish_with_last { c.finish(piece) } else { c.feed(piece) }.is_ok();
        }
        if !finish_with_last {
            ok &= c.finish(&[]).is_ok();
        }
        assert_eq!(ok, whole_ok, "copy taken at piece {from} disagrees");
    }
    check_reset(v);
});

fn check_reset(mut v: Utf8Validator) {
    v.reset();
    assert!(v.is_complete());
    assert!(v.feed("ok \u{20AC}".as_bytes()).is_ok());
    assert!(v.finish(b"").is_ok());
}
