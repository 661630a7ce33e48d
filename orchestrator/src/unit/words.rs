//! systemd's quoting: words as `ExecStart=` and `Environment=` split them (systemd's
//! `extract_first_word` with `EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE`), and environment files.
//!
//! - Words are separated by unquoted whitespace. `"..."` and `'...'` quote whitespace and may
//!   start or end inside a word (`a"b c"d` is the single word `ab cd`); `""` is an empty word.
//! - Backslash escapes are C's, inside and outside quotes: `\a \b \f \n \r \t \v \\ \" \'`,
//!   `\s` (space), `\xHH`, `\uHHHH`, `\UHHHHHHHH`, `\OOO` (octal), and `\;` (a literal `;`).
//!   Any other escape, an escape producing NUL, or an unbalanced quote is an error.

/// One word and whether it was written as a bare `;` (systemd's command separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub bare_semicolon: bool,
}

const WS: &[char] = &[' ', '\t', '\n', '\r'];

fn hex(chars: &mut std::str::Chars<'_>, n: usize) -> Option<u32> {
    let mut v: u32 = 0;
    for _ in 0..n {
        v = v.checked_mul(16)? + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// Reads one escape after a backslash.
fn unescape_one(chars: &mut std::str::Chars<'_>) -> Result<char, String> {
    let Some(c) = chars.next() else {
        return Err("trailing backslash".into());
    };
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        's' => Some(' '),
        '\\' | '"' | '\'' | ';' => Some(c),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(s);
    }
    let code = match c {
        'x' => hex(chars, 2),
        'u' => hex(chars, 4),
        'U' => hex(chars, 8),
        '0'..='3' => {
            let d = |ch: Option<char>| ch.and_then(|x| x.to_digit(8));
            match (d(Some(c)), d(chars.next()), d(chars.next())) {
                (Some(a), Some(b), Some(e)) => Some(a * 64 + b * 8 + e),
                _ => None,
            }
        }
        _ => return Err(format!("unknown escape \\{c}")),
    };
    match code.and_then(char::from_u32) {
        Some('\0') => Err("escape produces a NUL character".into()),
        Some(ch) => Ok(ch),
        None => Err(format!("invalid \\{c} escape")),
    }
}

/// Splits `s` into words by systemd's rules.
pub(crate) fn split_words(s: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut rest = s.trim_start_matches(WS);
    while !rest.is_empty() {
        let mut chars = rest.chars();
        let mut word = String::new();
        let mut quote: Option<char> = None;
        loop {
            let before = chars.as_str();
            let Some(c) = chars.next() else {
                if let Some(q) = quote {
                    return Err(format!("unbalanced quote {q}"));
                }
                break;
            };
            match (quote, c) {
                (_, '\\') => word.push(unescape_one(&mut chars)?),
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), _) if c == q => quote = None,
                (None, _) if WS.contains(&c) => {
                    chars = before.chars();
                    break;
                }
                _ => word.push(c),
            }
        }
        let raw_len = rest.len() - chars.as_str().len();
        words.push(Word {
            bare_semicolon: &rest[..raw_len] == ";",
            text: word,
        });
        rest = chars.as_str().trim_start_matches(WS);
    }
    Ok(words)
}

/// True for a valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Splits one `NAME=value` assignment.
pub(crate) fn assignment(word: &str) -> Result<(String, String), String> {
    let Some((k, v)) = word.split_once('=') else {
        return Err(format!(
            "{:?} is not an assignment (want NAME=value)",
            super::name::truncate(word, 100)
        ));
    };
    if !valid_env_name(k) {
        return Err(format!(
            "invalid variable name {:?} (want [A-Za-z_][A-Za-z0-9_]*)",
            super::name::truncate(k, 100)
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The format of an environment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFileFormat {
    /// systemd's `EnvironmentFile=` (`[Service]`): `NAME=value` lines, `#`/`;` comments, values
    /// may be `"double"` (backslash escapes `\" \\ \$ \``) or `'single'` quoted, a trailing
    /// backslash continues a line, an optional `export ` before the name is dropped.
    Systemd,
    /// podman's `--env-file`, which Quadlet's `EnvironmentFile=` (`[Container]`) maps to:
    /// `NAME=value` lines taken literally (quotes are kept), `#` comments, blank lines skipped.
    /// A bare `NAME` (podman: copy from podman's own environment) is refused: berthd's
    /// environment is not the unit's business.
    Podman,
}

/// Parses the content of an environment file (the caller reads the file). Errors name the
/// line (1-based).
pub fn parse_env_file(
    text: &str,
    format: EnvFileFormat,
) -> Result<Vec<(String, String)>, (usize, String)> {
    match format {
        EnvFileFormat::Podman => podman_env(text),
        EnvFileFormat::Systemd => systemd_env(text),
    }
}

fn podman_env(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.contains('=') {
            return Err((
                i + 1,
                format!(
                    "{:?} has no '=' (copying berthd's own environment is not supported)",
                    super::name::truncate(line, 100)
                ),
            ));
        }
        out.push(assignment(line).map_err(|e| (i + 1, e))?);
    }
    Ok(out)
}

fn systemd_env(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // Continuations outside single quotes: join with the next line.
        while ends_in_unquoted_backslash(&line) {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next.trim_start()),
                None => break,
            }
        }
        let body = line.strip_prefix("export ").unwrap_or(&line).trim_start();
        let Some((k, v)) = body.split_once('=') else {
            return Err((
                i + 1,
                format!("missing '=' in {:?}", super::name::truncate(body, 100)),
            ));
        };
        let k = k.trim_end();
        if !valid_env_name(k) {
            return Err((
                i + 1,
                format!("invalid variable name {:?}", super::name::truncate(k, 100)),
            ));
        }
        let v = systemd_env_value(v.trim()).map_err(|e| (i + 1, e))?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn ends_in_unquoted_backslash(line: &str) -> bool {
    let single_quotes = line.matches('\'').count();
    single_quotes % 2 == 0 && line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// A value of a systemd environment file: quoted parts are unquoted, and outside single quotes
/// a backslash escapes the next character (inside double quotes only `" \ $ \``).
fn systemd_env_value(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), _) => out.push(c),
            (Some(_), '\\') => match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => return Err("trailing backslash".into()),
            },
            (None, '\\') => match chars.next() {
                Some(n) => out.push(n),
                None => return Err("trailing backslash".into()),
            },
            (None, '"' | '\'') => quote = Some(c),
            _ => out.push(c),
        }
    }
    match quote {
        Some(q) => Err(format!("unbalanced quote {q}")),
        None => Ok(out),
    }
}
