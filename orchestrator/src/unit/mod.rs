//! fleet-style unit files: parsing, specifiers, validation (pure: the caller passes text in).
//!
//! A unit is systemd INI text with fleet's `[X-Fleet]` placement keys, podman Quadlet's
//! `[Container]` keys and a subset of systemd's `[Service]` keys:
//!
//! - line syntax (sections, continuations, comments): the `syntax` module doc;
//! - quoting of `ExecStart=`, `Exec=`, `Environment=` words and environment files: `words`;
//! - specifiers `%n %N %p %i %m %H %%`: [`MachineContext`] and the `specifier` module doc;
//! - `[Unit]` and `[Service]`: [`ServiceOptions`]; `[Container]`: [`ContainerOptions`];
//!   `[X-Fleet]` and its rules: [`FleetOptions`], [`check_set`];
//! - names: [`UnitName`]; translation to an OCI runtime config: [`oci`].
//!
//! Sections: `[Unit]`, `[Service]`, `[Container]`, `[X-Fleet]` are read; `[Install]` (fleet
//! enabled such units in the machine's systemd; berth has none) and any `[X-...]` section are
//! accepted and ignored; any other section is an error. In a section berth reads, an unknown key
//! is an error (a typo must not pass silently), except keys starting with `X-`, which systemd
//! itself ignores; every ignored key is listed in [`Unit::ignored`] so callers can warn.
//!
//! Why a hand-written parser: the crates for this format are either unmaintained
//! (`systemd-parser`, nom 2) or lossless editors (`systemd-unit-edit`) that give neither the line
//! of a value nor systemd's value-level rules; generic INI crates join continuations and treat
//! comments and quotes differently from systemd. The line grammar is a few dozen lines
//! (`syntax.rs`); the rules that matter (quoting, escapes, specifiers) are systemd's own and
//! no crate implements them.

mod container;
mod error;
mod fleet;
mod name;
pub mod oci;
mod parse;
mod service;
mod specifier;
mod syntax;
mod values;
mod words;

pub use container::{ContainerOptions, HealthCheck, Network, Protocol, PublishPort, Volume};
pub use error::{ErrorDetails, UnitError};
pub use fleet::{check_set, FleetOptions, MetadataRequirement, UnitGlob};
pub use name::{NameError, UnitName, MAX_UNIT_NAME_LEN};
pub use service::{EnvFileRef, ExecCommand, RestartPolicy, ServiceOptions};
pub use specifier::MachineContext;
pub use values::{CapabilityName, Limit};
pub use words::{parse_env_file, EnvFileFormat};

#[cfg(test)]
mod tests;

/// Largest unit text accepted (it is stored in one registry value with its hash and state).
pub const MAX_UNIT_SIZE: usize = 512 * 1024;

/// A key that was accepted and ignored (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredKey {
    /// Its line.
    pub line: usize,
    /// Its section.
    pub section: String,
    /// The key.
    pub key: String,
}

impl IgnoredKey {
    pub(crate) fn of(section: &str, e: &syntax::Entry) -> IgnoredKey {
        IgnoredKey {
            line: e.line,
            section: section.to_string(),
            key: e.key.clone(),
        }
    }
}

/// A parsed, validated unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Its name.
    pub name: UnitName,
    /// The text as submitted.
    pub text: String,
    /// SHA-256 of `text`, lowercase hex.
    pub hash: String,
    /// `[Unit] Description=`.
    pub description: Option<String>,
    /// `[X-Fleet]`.
    pub fleet: FleetOptions,
    /// `[Service]` (defaults when the section is absent).
    pub service: ServiceOptions,
    /// `[Container]`, when present; without it the unit runs `ExecStart=` on the host's root.
    pub container: Option<ContainerOptions>,
    /// Keys accepted and ignored, in file order.
    pub ignored: Vec<IgnoredKey>,
}

/// Parses and validates unit `name` from `text`, as at submit time.
///
/// `%m` and `%H` stay verbatim (the machine is not known yet; see [`Unit::for_machine`]).
/// A template (`name@.service`) is checked through the trial instance `name@1.service`: its
/// typed fields are that instance's (templates are never placed; see [`Unit::for_instance`]).
pub fn parse_unit(name: &str, text: &str) -> Result<Unit, UnitError> {
    parse::parse(name, text, None)
}

/// Parses unit `name` from `text` for the machine `machine` (`%m`, `%H` expanded).
pub fn parse_unit_on(name: &str, text: &str, machine: &MachineContext) -> Result<Unit, UnitError> {
    parse::parse(name, text, Some(machine))
}

impl Unit {
    /// The instance `instance` made from this template's text, as fleet does when only
    /// `web@.service` was submitted and `web@1.service` is asked for. The instance has the
    /// template's text and hash.
    pub fn for_instance(&self, instance: &UnitName) -> Result<Unit, UnitError> {
        let matches = self.name.is_template() && instance.template().as_ref() == Some(&self.name);
        if !matches {
            return Err(UnitError::file(
                instance.as_str(),
                format!("not an instance of {}", self.name),
            ));
        }
        parse_unit(instance.as_str(), &self.text)
    }

    /// This unit parsed again with `%m` and `%H` known (the agent on `machine`).
    pub fn for_machine(&self, machine: &MachineContext) -> Result<Unit, UnitError> {
        parse_unit_on(self.name.as_str(), &self.text, machine)
    }

    /// The name its published ports are registered under: `[Container] X-ServiceName=`, else
    /// the unit's prefix (`web` for `web@1.service`).
    pub fn service_name(&self) -> &str {
        self.container
            .as_ref()
            .and_then(|c| c.service_name.as_deref())
            .unwrap_or(self.name.prefix())
    }

    /// True for `[X-Fleet] Global=true`: run by every eligible machine, never placed.
    pub fn is_global(&self) -> bool {
        self.fleet.global
    }
}
