//! The line grammar of systemd unit files (systemd.syntax(7), systemd's `conf-parser.c`).
//!
//! - Lines end with `\n` (a `\r` before it is dropped). A line ending in an odd number of
//!   backslashes continues on the next one: that backslash becomes a space and the next line
//!   is appended. Comment lines inside a continuation are skipped, as systemd does.
//! - After joining, leading and trailing whitespace is stripped; empty lines and lines whose
//!   first character is `#` or `;` are comments. A `#` later in a line is part of the value.
//! - `[Name]` opens a section (the whole stripped line must be the header).
//! - `Key=Value`: whitespace around the `=` is dropped; keys are case-sensitive.
//!
//! Where systemd only warns and skips (a line without `=`, an assignment before any section,
//! `.include`), this parser refuses the file: a unit is checked at submit time, where an error
//! is cheap and a silently dropped line is not. Values are returned raw; quoting and specifiers
//! are the business of the key that reads them.

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Index into [`Document::sections`].
    pub section: usize,
    pub key: String,
    pub value: String,
    /// First line of the (possibly continued) assignment, 1-based.
    pub line: usize,
}

/// A section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub name: String,
    pub line: usize,
}

/// A parsed file: its sections in order and every assignment in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Document {
    pub sections: Vec<Section>,
    pub entries: Vec<Entry>,
}

/// A syntax error: the line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub reason: String,
}

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn is_comment(s: &str) -> bool {
    s.starts_with('#') || s.starts_with(';')
}

fn ends_in_escape(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Parses a whole unit file.
pub(crate) fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut doc = Document::default();
    // A continued line being assembled: (its first line number, the text so far).
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if pending.is_some() && is_comment(line.trim_start_matches(WHITESPACE)) {
            continue;
        }
        let (start, mut buf) = pending.take().unwrap_or((lineno, String::new()));
        if ends_in_escape(line) {
            buf.push_str(&line[..line.len() - 1]);
            buf.push(' ');
            pending = Some((start, buf));
            continue;
        }
        buf.push_str(line);
        logical_line(&mut doc, start, &buf)?;
    }
    if let Some((start, buf)) = pending {
        logical_line(&mut doc, start, &buf)?;
    }
    Ok(doc)
}

fn logical_line(doc: &mut Document, line: usize, text: &str) -> Result<(), SyntaxError> {
    let l = text.trim_matches(WHITESPACE);
    let err = |reason: String| Err(SyntaxError { line, reason });
    if l.is_empty() || is_comment(l) {
        return Ok(());
    }
    if l.starts_with(".include") {
        return err(".include is not supported (systemd deprecated it)".into());
    }
    if let Some(inner) = l.strip_prefix('[') {
        let Some(name) = inner.strip_suffix(']') else {
            return err(format!(
                "invalid section header {:?}: want [Name] alone on its line",
                super::name::truncate(l, 100)
            ));
        };
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == '[' || c == ']') {
            return err(format!(
                "invalid section name {:?}",
                super::name::truncate(name, 100)
            ));
        }
        doc.sections.push(Section {
            name: name.to_string(),
            line,
        });
        return Ok(());
    }
    let Some((key, value)) = l.split_once('=') else {
        return err(format!(
            "missing '=' in {:?} (want Key=Value)",
            super::name::truncate(l, 100)
        ));
    };
    let key = key.trim_matches(WHITESPACE);
    if key.is_empty() {
        return err("assignment without a key".into());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(format!("invalid key {:?}", super::name::truncate(key, 100)));
    }
    let Some(section) = doc.sections.len().checked_sub(1) else {
        return err(format!("{key}= is outside of any section"));
    };
    doc.entries.push(Entry {
        section,
        key: key.to_string(),
        value: value.trim_matches(WHITESPACE).to_string(),
        line,
    });
    Ok(())
}
