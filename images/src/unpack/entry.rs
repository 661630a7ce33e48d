//! Pure decisions about one tar entry: its normalized path, whether it is a
//! whiteout, and what to create. No IO here.

use std::collections::BTreeMap;

/// What is wrong with an entry's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("absolute path")]
    Absolute,
    #[error("`..` component")]
    DotDot,
    #[error("empty path")]
    Empty,
    #[error("whiteout of `{0}` is not allowed")]
    BadWhiteout(String),
}

/// Splits an entry name into components: leading `./` and `.`/empty
/// components are dropped; absolute names and `..` are refused (the caller
/// reports them as hostile; resolution is still done in-root by openat2).
/// The one absolute name accepted is `/` itself, the root entry umoci and
/// GNU tar write.
pub fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.is_empty() {
        return Err(PathProblem::Empty);
    }
    if raw[0] == b'/' {
        if raw.iter().all(|&b| b == b'/' || b == b'.') && !raw.windows(2).any(|w| w == b"..") {
            return Ok(Vec::new());
        }
        return Err(PathProblem::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathProblem::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a final path component means for the layer model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// An ordinary name.
    No,
    /// `.wh..wh..opq`: the parent directory hides everything below it.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Remove(&'a [u8]),
    /// Other `.wh..wh.*` names (aufs metadata): ignored.
    Meta,
}

pub fn classify(name: &[u8]) -> Result<Whiteout<'_>, PathProblem> {
    if name == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(b".wh..wh.") {
        return Ok(Whiteout::Meta);
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Whiteout::No),
        Some(target @ (b"" | b"." | b"..")) => Err(PathProblem::BadWhiteout(display(target))),
        Some(target) => Ok(Whiteout::Remove(target)),
    }
}

/// Ownership, permissions and times to give a created entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The kind of node an entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File,
    /// A PAX sparse file (see `sparse`).
    Sparse(super::sparse::Sparse),
    Dir,
    Symlink(Vec<u8>),
    /// A hard link to another path of the same layer (already normalized).
    Hardlink(Vec<Vec<u8>>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// Parses a PAX `mtime` such as `1700000000.5`.
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    let digits: Vec<u8> = frac.bytes().take(9).collect();
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    for i in 0..9 {
        nsec = nsec * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if secs < 0 && nsec > 0 {
        return Some((secs - 1, 1_000_000_000 - nsec));
    }
    Some((secs, nsec))
}

/// Xattr names an image may not set: overlay's own markers would let a layer
/// forge whiteouts and opaque directories.
pub fn xattr_allowed(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay."))
}

/// Renders a raw tar name (untrusted) for messages: escaped and truncated.
pub fn display(raw: &[u8]) -> String {
    crate::escape::bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_dots_and_slashes() {
        assert_eq!(normalize(b"./a/b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert_eq!(normalize(b"a//./c").unwrap(), vec![&b"a"[..], b"c"]);
        assert!(normalize(b"./").unwrap().is_empty());
        assert!(normalize(b"/").unwrap().is_empty());
        assert!(normalize(b"/./").unwrap().is_empty());
        assert_eq!(normalize(b"/.."), Err(PathProblem::Absolute));
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(normalize(b"../x"), Err(PathProblem::DotDot));
        assert_eq!(normalize(b"a/../../x"), Err(PathProblem::DotDot));
        assert_eq!(normalize(b""), Err(PathProblem::Empty));
    }

    #[test]
    fn classify_whiteouts() {
        assert_eq!(classify(b"foo").unwrap(), Whiteout::No);
        assert_eq!(classify(b".wh.foo").unwrap(), Whiteout::Remove(b"foo"));
        assert_eq!(classify(b".wh..wh..opq").unwrap(), Whiteout::Opaque);
        assert_eq!(classify(b".wh..wh.plnk").unwrap(), Whiteout::Meta);
        assert!(classify(b".wh...").is_err());
        assert!(classify(b".wh.").is_err());
        assert_eq!(classify(b".whfoo").unwrap(), Whiteout::No);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn overlay_xattrs_are_filtered() {
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"user.overlay.whiteout"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(xattr_allowed(b"user.foo"));
    }
}
