//! Printing strings that came from outside: tar entry names, sums lines, header fields,
//! registry answers. Anything a terminal could act on (C0 and C1 controls, DEL, escape
//! sequences, bidi overrides) is shown as a Rust-style escape, so that a name can neither
//! rewrite the operator's screen nor hide what it is.

use std::fmt;

/// Shows `s` with every control and invisible formatting character escaped (`\u{1b}`,
/// `\n`, `\u{202e}`, …); printable text, spaces included, is left as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else if c == '\\' {
                f.write_str("\\\\")?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// `s` escaped as [`Escaped`] shows it.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

/// Bytes that may not be UTF-8, escaped: invalid bytes as `\xNN`, the rest as [`Escaped`].
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Whether a character could act on a terminal or hide text: controls, and the Unicode
/// formatting characters that reorder or hide text (bidi overrides, zero-width joiners).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Whether `s` holds any character [`needs_escape`] would escape.
pub fn has_controls(s: &str) -> bool {
    s.chars().any(needs_escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sequences_are_shown_not_sent() {
        let evil = "a\u{1b}]0;PWNED\u{7}\u{1b}[31mRED\nb\u{202e}c\\";
        let shown = escape(evil);
        assert_eq!(
            shown,
            "a\\u{1b}]0;PWNED\\u{7}\\u{1b}[31mRED\\nb\\u{202e}c\\\\"
        );
        assert!(!shown.chars().any(needs_escape));
        assert_eq!(escape("plain name: ok/ü"), "plain name: ok/ü");
        assert!(has_controls(evil) && !has_controls("ok"));
    }

    #[test]
    fn invalid_utf8_is_shown_as_hex() {
        assert_eq!(escape_bytes(b"ab\xff\x1b"), "ab\\xff\\u{1b}");
    }
}
