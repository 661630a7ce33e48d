//! Unit names: `name.service`, templates `name@.service`, instances `name@inst.service`.
//!
//! Validated as systemd's `unit_name_is_valid` (and fleet's `ValidateName`, which copied it):
//! at most 255 bytes, a non-empty prefix, at most one `@`, the prefix and the instance made of
//! `[A-Za-z0-9:_.\-\\]`, and a known suffix. berth runs services only, so the suffix must be
//! `.service`; the other systemd unit types (socket, timer, path, ...) are refused by name.

use std::fmt;
use std::str::FromStr;

/// Longest unit name systemd accepts (`UNIT_NAME_MAX` is 256 with the NUL byte).
pub const MAX_UNIT_NAME_LEN: usize = 255;

/// The systemd unit types fleet scheduled; berth accepts only `service`.
const OTHER_UNIT_TYPES: &[&str] = &[
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];

/// A validated unit name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName {
    full: String,
    /// Byte offset of the `@`, when there is one.
    at: Option<usize>,
    /// Byte offset of the last `.` (start of the suffix).
    dot: usize,
}

/// Why a unit name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid unit name {name:?}: {reason}")]
pub struct NameError {
    /// The name as given (escaped and truncated when displayed).
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\')
}

impl UnitName {
    /// Parses and validates a unit name.
    pub fn parse(name: &str) -> Result<UnitName, NameError> {
        let bad = |reason: &str| NameError {
            name: truncate(name, 300),
            reason: reason.to_string(),
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > MAX_UNIT_NAME_LEN {
            return Err(bad("longer than 255 bytes"));
        }
        let dot = name
            .rfind('.')
            .ok_or_else(|| bad("no suffix (want name.service)"))?;
        let suffix = &name[dot + 1..];
        if suffix != "service" {
            return Err(if OTHER_UNIT_TYPES.contains(&suffix) {
                bad(&format!(
                    "unit type {suffix:?} is not supported: berth runs .service units only"
                ))
            } else {
                bad(&format!("unknown unit type {suffix:?} (want .service)"))
            });
        }
        let stem = &name[..dot];
        let at = stem.find('@');
        let prefix = &stem[..at.unwrap_or(stem.len())];
        if prefix.is_empty() {
            return Err(bad("empty prefix before the suffix or '@'"));
        }
        if let Some(a) = at {
            if stem[a + 1..].contains('@') {
                return Err(bad("more than one '@'"));
            }
        }
        if let Some(c) = stem.chars().find(|&c| c != '@' && !valid_char(c)) {
            return Err(bad(&format!(
                "character {c:?} not allowed (only A-Z a-z 0-9 : _ . - \\ and one @)"
            )));
        }
        Ok(UnitName {
            full: name.to_string(),
            at,
            dot,
        })
    }

    /// The whole name (`%n`), e.g. `web@1.service`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The name without its suffix (`%N`), e.g. `web@1`.
    pub fn stem(&self) -> &str {
        &self.full[..self.dot]
    }

    /// The suffix without the dot, e.g. `service`.
    pub fn suffix(&self) -> &str {
        &self.full[self.dot + 1..]
    }

    /// The part before `@` (or before the suffix) (`%p`), e.g. `web`.
    pub fn prefix(&self) -> &str {
        &self.full[..self.at.unwrap_or(self.dot)]
    }

    /// The instance (`%i`): `Some("1")` for `web@1.service`, `None` for a template or a plain
    /// unit.
    pub fn instance(&self) -> Option<&str> {
        let a = self.at?;
        let inst = &self.full[a + 1..self.dot];
        (!inst.is_empty()).then_some(inst)
    }

    /// True for `name@.service`.
    pub fn is_template(&self) -> bool {
        self.at.is_some() && self.instance().is_none()
    }

    /// True for `name@inst.service`.
    pub fn is_instance(&self) -> bool {
        self.instance().is_some()
    }

    /// The template an instance is made from (`web@.service` for `web@1.service`).
    pub fn template(&self) -> Option<UnitName> {
        self.instance()?;
        UnitName::parse(&format!("{}@.{}", self.prefix(), self.suffix())).ok()
    }

    /// The instance `inst` of this template (`web@.service` + `1` = `web@1.service`).
    pub fn instantiate(&self, inst: &str) -> Result<UnitName, NameError> {
        if !self.is_template() {
            return Err(NameError {
                name: self.full.clone(),
                reason: "not a template (want name@.service)".into(),
            });
        }
        if inst.is_empty() {
            return Err(NameError {
                name: self.full.clone(),
                reason: "empty instance".into(),
            });
        }
        UnitName::parse(&format!("{}@{}.{}", self.prefix(), inst, self.suffix()))
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for UnitName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

impl serde::Serialize for UnitName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UnitName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// At most `max` characters of `s` (untrusted text kept short for messages).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push_str("...");
        t
    }
}
