//! Hex in and out: `--binary` lines, `--mask-key`, `inspect`'s input.

/// Bytes from hex digits. Spaces, tabs, newlines, `:` and `,` between
/// bytes are ignored, so `81 05`, `8105` and `81:05` are the same.
pub fn parse(text: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        match c {
            ' ' | '\t' | '\n' | '\r' | ':' | ',' => {}
            _ => match c.to_digit(16) {
                Some(d) => digits.push(d as u8),
                None => return Err(format!("not a hex digit: {c:?} at character {}", at + 1)),
            },
        }
    }
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({}): each byte takes two", digits.len()));
    }
    Ok(digits.chunks(2).map(|pair| pair[0] << 4 | pair[1]).collect())
}

/// `81 05 48`: lower-case pairs separated by spaces.
pub fn format(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_separators() {
        assert_eq!(parse("81 05"), Ok(vec![0x81, 0x05]));
        assert_eq!(parse("8105"), Ok(vec![0x81, 0x05]));
        assert_eq!(parse("81:0A\n"), Ok(vec![0x81, 0x0a]));
        assert_eq!(parse(""), Ok(vec![]));
    }

    #[test]
    fn names_the_bad_character_and_odd_lengths() {
        assert_eq!(parse("81 0g"), Err("not a hex digit: 'g' at character 5".into()));
        assert_eq!(parse("810"), Err("odd number of hex digits (3): each byte takes two".into()));
    }

    #[test]
    fn formats_pairs() {
        assert_eq!(format(&[0x81, 0x05, 0xff]), "81 05 ff");
        assert_eq!(format(&[]), "");
    }
}
