//! The one error of unit parsing, naming the file, line, section, key and value.

use std::fmt;

use super::name::truncate;

/// A unit file that cannot be accepted. Displays as
/// `web.service:7: [Container] PublishPort: "80:abc": container port is not a number`;
/// parts that do not apply (line, section, key, value) are left out. Text taken from the unit
/// is escaped and truncated when displayed. Its parts are read through [`ErrorDetails`]
/// (`err.line`, `err.key`, ...); they are boxed to keep `Result`s small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(Box<ErrorDetails>);

/// The parts of a [`UnitError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    /// The unit's name as submitted.
    pub unit: String,
    /// The line (1-based) of the assignment or header; `None` for the whole file.
    pub line: Option<usize>,
    /// The section, without brackets.
    pub section: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// The offending value (or the part of it that is wrong).
    pub value: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl std::ops::Deref for UnitError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl From<ErrorDetails> for UnitError {
    fn from(d: ErrorDetails) -> Self {
        UnitError(Box::new(d))
    }
}

impl UnitError {
    /// An error about the whole file.
    pub(crate) fn file(unit: &str, reason: impl Into<String>) -> UnitError {
        ErrorDetails {
            unit: unit.to_string(),
            line: None,
            section: None,
            key: None,
            value: None,
            reason: reason.into(),
        }
        .into()
    }

    /// The same error at `line`.
    pub(crate) fn at_line(mut self, line: Option<usize>) -> UnitError {
        self.0.line = line;
        self
    }

    /// The same error about `key` of `section`.
    pub(crate) fn at_key(mut self, section: &str, key: Option<&str>) -> UnitError {
        self.0.section = Some(section.to_string());
        self.0.key = key.map(str::to_string);
        self
    }
}

fn escaped(s: &str, max: usize) -> String {
    truncate(s, max).escape_debug().to_string()
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escaped(&self.unit, 260))?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(s) = &self.section {
            write!(f, "[{}] ", escaped(s, 100))?;
        }
        if let Some(k) = &self.key {
            write!(f, "{}: ", escaped(k, 100))?;
        }
        if let Some(v) = &self.value {
            write!(f, "\"{}\": ", escaped(v, 200))?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for UnitError {}
