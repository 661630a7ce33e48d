//! Making strings taken from images and registries safe to print: control
//! characters (terminal escape sequences included), bidirectional overrides
//! and bytes that are not UTF-8 are shown as escapes, and long strings are
//! cut, so an image can neither drive the user's terminal nor flood a log.

use std::fmt::Write;

/// How many characters of an untrusted string are shown.
pub const MAX_SHOWN: usize = 256;

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Most bytes of one error line shown on a terminal or in a log.
pub const MAX_LINE: usize = 4096;

/// A whole message (already built from escaped parts) made safe once more
/// before it reaches a terminal or a log: controls escaped, at most
/// [`MAX_LINE`] bytes. Defence in depth for causes (say, a parser's error
/// quoting its input) that were not escaped where they were made.
pub fn line(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= MAX_LINE {
            out.push_str("... (cut)");
            break;
        }
        if needs_escape(c) {
            if (c as u32) < 0x80 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `bytes` as printable text: escapes as `\xNN` or `\u{NNNN}`, at most
/// [`MAX_SHOWN`] characters followed by how much was left out.
pub fn bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0usize;
    let mut rest = bytes;
    while !rest.is_empty() {
        if shown >= MAX_SHOWN {
            let _ = write!(out, "... ({} more bytes)", rest.len());
            break;
        }
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, None),
            Err(e) => {
                let (v, b) = rest.split_at(e.valid_up_to());
                (std::str::from_utf8(v).unwrap_or_default(), Some(b))
            }
        };
        let mut consumed = 0;
        for c in valid.chars() {
            if shown >= MAX_SHOWN {
                break;
            }
            if c == '\\' {
                out.push_str("\\\\");
            } else if needs_escape(c) {
                if (c as u32) < 0x80 {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                } else {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
            } else {
                out.push(c);
            }
            shown += 1;
            consumed += c.len_utf8();
        }
        if consumed < valid.len() {
            rest = &rest[consumed..];
            continue;
        }
        match bad {
            Some(b) if !b.is_empty() && shown < MAX_SHOWN => {
                let _ = write!(out, "\\x{:02x}", b[0]);
                shown += 1;
                rest = &b[1..];
            }
            Some(b) => rest = b,
            None => rest = &[],
        }
    }
    out
}

/// [`bytes`] for a `str`.
pub fn text(s: &str) -> String {
    bytes(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_bidi_and_bad_utf8() {
        assert_eq!(text("usr/bin/ls"), "usr/bin/ls");
        assert_eq!(text("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
        assert_eq!(
            text("\x1b]0;pwned\x07\x1b[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(text("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
        assert_eq!(text("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(text("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
        assert_eq!(text("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn lines_escape_controls_and_stay_bounded() {
        assert_eq!(line("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert!(line(&"x".repeat(100_000)).len() < MAX_LINE + 20);
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "u".repeat(10 << 20);
        let shown = text(&long);
        assert!(shown.len() < MAX_SHOWN + 40, "{}", shown.len());
        assert!(shown.ends_with(&format!("... ({} more bytes)", (10 << 20) - MAX_SHOWN)));
        let escapes = "\x1b".repeat(1000);
        assert!(text(&escapes).len() < 4 * MAX_SHOWN + 40);
    }
}
