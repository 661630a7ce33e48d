//! Specifiers (systemd.unit(5) "Specifiers"), the subset fleet users wrote:
//!
//! | spec | meaning | example for `web@1.service` |
//! |---|---|---|
//! | `%n` | full unit name | `web@1.service` |
//! | `%N` | name without the suffix | `web@1` |
//! | `%p` | prefix (before `@`, or the whole stem) | `web` |
//! | `%i` | instance (empty for a plain unit) | `1` |
//! | `%m` | machine id of the machine running the unit | `n3` |
//! | `%H` | host name of that machine | `host3` |
//! | `%%` | a literal `%` | |
//!
//! Any other `%x`, or a `%` ending the value, is an error. `%m` and `%H` are known only once
//! the unit is on a machine: a parse without a [`MachineContext`] keeps them verbatim (the
//! agent parses again with one, see `Unit::for_machine`), and `[X-Fleet]` refuses them, since
//! placement is decided before any machine is known (fleet did not support them there either).

use super::name::UnitName;

/// The machine a unit runs on, for `%m` and `%H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineContext {
    /// The machine's id (berthd's node name), for `%m`.
    pub machine_id: String,
    /// The machine's host name, for `%H`.
    pub hostname: String,
}

/// What specifiers expand to while one unit is parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Specifiers<'a> {
    pub name: &'a UnitName,
    pub machine: Option<&'a MachineContext>,
    /// `[X-Fleet]`: machine specifiers are refused.
    pub placement: bool,
}

impl Specifiers<'_> {
    /// Expands every specifier in `s`.
    pub fn expand(&self, s: &str) -> Result<String, String> {
        if !s.contains('%') {
            return Ok(s.to_string());
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(spec) = chars.next() else {
                return Err("'%' at the end of the value (write %% for a literal %)".into());
            };
            match spec {
                '%' => out.push('%'),
                'n' => out.push_str(self.name.as_str()),
                'N' => out.push_str(self.name.stem()),
                'p' => out.push_str(self.name.prefix()),
                'i' => out.push_str(self.name.instance().unwrap_or("")),
                'm' | 'H' if self.placement => {
                    return Err(format!(
                        "%{spec} is not known in [X-Fleet]: placement is decided before a machine is chosen"
                    ))
                }
                'm' | 'H' => match self.machine {
                    Some(m) if spec == 'm' => out.push_str(&m.machine_id),
                    Some(m) => out.push_str(&m.hostname),
                    None => {
                        out.push('%');
                        out.push(spec);
                    }
                },
                other => {
                    return Err(format!(
                        "unknown specifier %{} (known: %n %N %p %i %m %H %%)",
                        other.escape_debug()
                    ))
                }
            }
        }
        Ok(out)
    }
}
