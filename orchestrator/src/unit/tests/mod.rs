//! Tests of unit parsing: syntax, quoting, specifiers, names, each section's keys and rules.

mod container;
mod fleet;
mod names;
mod service;
mod syntax;

use super::*;

/// Parses `text` as `name`, panicking with the error.
pub(super) fn ok(name: &str, text: &str) -> Unit {
    match parse_unit(name, text) {
        Ok(u) => u,
        Err(e) => panic!("{name} should parse: {e}"),
    }
}

/// The error message of a unit that must be refused.
pub(super) fn refused(name: &str, text: &str) -> String {
    match parse_unit(name, text) {
        Ok(u) => panic!("{name} should be refused, parsed as {u:?}"),
        Err(e) => e.to_string(),
    }
}

/// A fleet-era unit around a `[Service]` body.
pub(super) fn svc(body: &str) -> String {
    format!("[Service]\nExecStart=/bin/true\n{body}\n")
}

/// A container unit around a `[Container]` body (Image given first).
pub(super) fn ctr(body: &str) -> String {
    format!("[Container]\nImage=docker.io/library/busybox:1\n{body}\n")
}
