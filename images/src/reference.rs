//! Image references: `[registry/]path[:tag][@digest]`, as the distribution
//! spec writes them. A reference without tag or digest gets `:latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Errors of reference parsing.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference `{reference}`: {reason}")]
    Invalid { reference: String, reason: String },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    name: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The repository name (`registry/path`), without tag or digest.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Builds `name:tag` from parts that have already been validated.
    pub fn with_tag(name: &str, tag: &str) -> Result<Reference, ReferenceError> {
        format!("{name}:{tag}").parse()
    }

    /// The reference without its digest when it has a tag (`name:tag@d` is
    /// stored as `name:tag`); a digest-only reference stays as it is.
    pub fn without_digest_if_tagged(&self) -> Reference {
        if self.tag.is_some() {
            self.without_digest()
        } else {
            self.clone()
        }
    }

    /// The same reference with the digest dropped (what the store keys
    /// images by: `name:tag`).
    pub fn without_digest(&self) -> Reference {
        Reference {
            name: self.name.clone(),
            tag: self.tag.clone().or_else(|| Some("latest".to_string())),
            digest: None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError::Invalid {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// A path component: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        if s.len() > 255 + 1 + 128 + 1 + 135 {
            return Err(invalid(s, "too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| invalid(s, e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(
                    s,
                    format!("tag `{t}` must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"),
                ));
            }
        }
        if name.is_empty() {
            return Err(invalid(s, "empty name"));
        }
        if name.len() > 255 {
            return Err(invalid(s, "name longer than 255 characters"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let first = parts[0];
        let has_domain =
            parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
        if has_domain {
            if !valid_domain(first) {
                return Err(invalid(
                    s,
                    format!("registry `{first}` is not a valid host[:port]"),
                ));
            }
            parts.remove(0);
        }
        for c in parts {
            if !valid_component(c) {
                return Err(invalid(
                    s,
                    format!(
                        "name component `{c}` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`"
                    ),
                ));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            name: name.to_string(),
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn name_gets_latest() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.name(), "busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "busybox:latest");
    }

    #[test]
    fn name_with_registry_port_and_tag() {
        let r: Reference = "localhost:5000/team/app:v1.2".parse().unwrap();
        assert_eq!(r.name(), "localhost:5000/team/app");
        assert_eq!(r.tag(), Some("v1.2"));
        let r: Reference = "quay.io/a_b/c-d__e:x".parse().unwrap();
        assert_eq!(r.name(), "quay.io/a_b/c-d__e");
    }

    #[test]
    fn digest_references() {
        let r: Reference = format!("busybox@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("busybox@{D}"));
        let r: Reference = format!("busybox:1@{D}").parse().unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.without_digest().to_string(), "busybox:1");
    }

    #[test]
    fn rejects_invalid_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "-a",
            "a..b",
            "busybox@sha256:123",
            "bad host/x",
            "x:y/z",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{bad}`")),
                "{bad}: {err}"
            );
        }
    }
}
