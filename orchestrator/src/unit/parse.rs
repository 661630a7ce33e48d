//! From text to [`Unit`]: sections dispatched to their readers, with one context that expands
//! specifiers and builds errors naming unit, line, section and key.

use sha2::{Digest, Sha256};

use super::error::{ErrorDetails, UnitError};
use super::name::UnitName;
use super::specifier::{MachineContext, Specifiers};
use super::syntax::{self, Entry};
use super::words::{self, Word};
use super::{container, fleet, service, IgnoredKey, Unit, MAX_UNIT_SIZE};

/// What every section reader gets: the unit's name for errors and specifiers.
pub(crate) struct Ctx<'a> {
    /// The name errors carry (a template's name while its trial instance is parsed).
    pub error_name: &'a str,
    pub spec: Specifiers<'a>,
    pub section: &'a str,
}

impl Ctx<'_> {
    /// An error about entry `e`, showing `value`.
    pub fn err(&self, e: &Entry, value: Option<&str>, reason: impl Into<String>) -> UnitError {
        ErrorDetails {
            unit: self.error_name.to_string(),
            line: Some(e.line),
            section: Some(self.section.to_string()),
            key: Some(e.key.clone()),
            value: value.map(str::to_string),
            reason: reason.into(),
        }
        .into()
    }

    /// The value of `e` with its specifiers expanded.
    pub fn expand(&self, e: &Entry) -> Result<String, UnitError> {
        self.spec
            .expand(&e.value)
            .map_err(|r| self.err(e, Some(&e.value), r))
    }

    /// The value of `e` split into words (systemd quoting), each with specifiers expanded.
    pub fn words(&self, e: &Entry) -> Result<Vec<String>, UnitError> {
        self.raw_words(e, &e.value)?
            .into_iter()
            .map(|w| {
                self.spec
                    .expand(&w.text)
                    .map_err(|r| self.err(e, Some(&w.text), r))
            })
            .collect()
    }

    /// `text` (part of `e`'s value) split into words, specifiers not yet expanded.
    pub fn raw_words(&self, e: &Entry, text: &str) -> Result<Vec<Word>, UnitError> {
        words::split_words(text).map_err(|r| self.err(e, Some(&e.value), r))
    }

    /// `Environment=`-style assignments of `e`.
    pub fn assignments(&self, e: &Entry) -> Result<Vec<(String, String)>, UnitError> {
        self.words(e)?
            .iter()
            .map(|w| words::assignment(w).map_err(|r| self.err(e, Some(w), r)))
            .collect()
    }

    /// An error for a key this section does not know.
    pub fn unknown_key(&self, e: &Entry, known: &str) -> UnitError {
        self.err(
            e,
            None,
            format!("unknown key in [{}] (known: {known})", self.section),
        )
    }
}

/// Parses `text` as the unit `name`; `machine` fills `%m` and `%H`.
pub(crate) fn parse(
    name: &str,
    text: &str,
    machine: Option<&MachineContext>,
) -> Result<Unit, UnitError> {
    let unit_name = UnitName::parse(name).map_err(|e| UnitError::file(name, e.reason))?;
    if text.len() > MAX_UNIT_SIZE {
        return Err(UnitError::file(
            name,
            format!(
                "{} bytes, more than the {MAX_UNIT_SIZE} allowed",
                text.len()
            ),
        ));
    }
    if text.contains('\0') {
        return Err(UnitError::file(name, "contains a NUL byte"));
    }
    // A template is checked through a trial instance: its %i has no value of its own.
    let effective = if unit_name.is_template() {
        unit_name
            .instantiate("1")
            .map_err(|e| UnitError::file(name, e.reason))?
    } else {
        unit_name.clone()
    };
    let doc =
        syntax::parse(text).map_err(|e| UnitError::file(name, e.reason).at_line(Some(e.line)))?;
    let mut unit = Unit {
        name: unit_name,
        hash: hex::encode(Sha256::digest(text.as_bytes())),
        text: text.to_string(),
        description: None,
        fleet: fleet::FleetOptions::default(),
        service: service::ServiceOptions::default(),
        container: None,
        ignored: Vec::new(),
    };
    let ctx_for = |section: &'static str, placement: bool| Ctx {
        error_name: name,
        spec: Specifiers {
            name: &effective,
            machine,
            placement,
        },
        section,
    };
    let in_section = |want: &str| -> Vec<&Entry> {
        doc.entries
            .iter()
            .filter(|e| doc.sections[e.section].name == want)
            .collect()
    };
    check_sections(name, &doc, &mut unit.ignored)?;
    unit.description = service::parse_unit_section(
        &ctx_for("Unit", false),
        &in_section("Unit"),
        &mut unit.ignored,
    )?;
    unit.fleet = fleet::parse(&ctx_for("X-Fleet", true), &in_section("X-Fleet"))?;
    let has_container = doc.sections.iter().any(|s| s.name == "Container");
    unit.service = service::parse(
        &ctx_for("Service", false),
        &in_section("Service"),
        has_container,
        &mut unit.ignored,
    )?;
    if has_container {
        unit.container = Some(container::parse(
            &ctx_for("Container", false),
            &in_section("Container"),
            &mut unit.ignored,
        )?);
    } else if unit.service.exec_start.is_none() {
        return Err(UnitError::file(
            name,
            "no [Container] section and no ExecStart= in [Service]: nothing to run",
        ));
    }
    fleet::check_self(&ctx_for("X-Fleet", true), &unit, &effective)?;
    Ok(unit)
}

/// Refuses unknown sections; records the ignored ones.
fn check_sections(
    name: &str,
    doc: &syntax::Document,
    ignored: &mut Vec<IgnoredKey>,
) -> Result<(), UnitError> {
    for s in &doc.sections {
        match s.name.as_str() {
            "Unit" | "Service" | "Container" | "X-Fleet" => {}
            "Install" => {}
            other if other.starts_with("X-") => {}
            other => {
                return Err(UnitError::file(
                    name,
                    "unknown section (berth reads [Unit], [Service], [Container] and [X-Fleet]; [Install] and [X-...] are ignored)",
                )
                .at_line(Some(s.line))
                .at_key(other, None))
            }
        }
    }
    for e in &doc.entries {
        let section = &doc.sections[e.section].name;
        if section == "Install" || (section.starts_with("X-") && section != "X-Fleet") {
            ignored.push(IgnoredKey {
                line: e.line,
                section: section.clone(),
                key: e.key.clone(),
            });
        }
    }
    Ok(())
}
