//! The crate's one error type. Every variant names what was being done (plugin, command,
//! network, path) and carries the plugin's own code, message and details when it gave them.
//! Text that comes from a plugin or a config file is escaped and truncated by [`clean`]
//! before it is stored here, so printing an `Error` never sends raw control bytes to a log.

use std::path::PathBuf;
use std::time::Duration;

/// The error a plugin printed on stdout (CNI spec, "Error"): its own code, message and
/// details, cleaned for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The plugin's error code (1-99 are the spec's well-known codes, 100+ the plugin's own).
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {}", self.msg, self.code)?;
        if let Some(name) = well_known_code(self.code) {
            write!(f, ", {name}")?;
        }
        write!(f, ")")?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The spec's names for its reserved error codes.
pub fn well_known_code(code: u32) -> Option<&'static str> {
    Some(match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        50 => "plugin not available",
        51 => "plugin not available, limited connectivity",
        _ => return None,
    })
}

/// How a plugin without a JSON error ended, and what it printed (cleaned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedOutput {
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network configuration is malformed or invalid.
    #[error("network config {}: {reason}", source_name(.path))]
    Config {
        path: Option<PathBuf>,
        reason: String,
    },

    /// No config in the directory defines this network.
    #[error("no CNI network named {network:?} in {dir}{}", list_bad(.bad_files))]
    NetworkNotFound {
        network: String,
        dir: PathBuf,
        /// Files in that directory that could not be read (path: reason).
        bad_files: Vec<String>,
    },

    /// The caller's attachment (container id, interface name, netns) is invalid.
    #[error("invalid attachment: {field}: {reason}")]
    Attachment { field: &'static str, reason: String },

    /// The plugin binary is in none of the plugin directories.
    #[error("CNI plugin {plugin:?} not found in {}", join_paths(.dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    /// Starting or talking to the plugin process failed.
    #[error("{command} {plugin}: {step}: {source}")]
    Io {
        plugin: String,
        command: &'static str,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The plugin reported an error in the spec's JSON form.
    #[error("{command} {plugin} (network {network}): {error}{}", stderr_tail(.stderr))]
    Plugin {
        plugin: String,
        command: &'static str,
        network: String,
        error: Box<PluginError>,
        stderr: String,
    },

    /// The plugin failed without a JSON error on stdout.
    #[error("{command} {plugin} (network {network}): {}{}{}", .output.status, out_tail(&.output.stdout), stderr_tail(&.output.stderr))]
    Failed {
        plugin: String,
        command: &'static str,
        network: String,
        output: Box<FailedOutput>,
    },

    /// The plugin ran longer than the invoker's timeout and was killed.
    #[error("{command} {plugin} (network {network}): no answer after {after:?}; killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        network: String,
        after: Duration,
    },

    /// The plugin succeeded but its output is not a valid result of the expected version.
    #[error("{command} {plugin} (network {network}): bad result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        network: String,
        reason: String,
    },

    /// Reading or writing an attachment record failed.
    #[error("attachment record {path}: {step}: {source}")]
    Record {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A stored attachment record cannot be parsed.
    #[error("attachment record {path}: {reason}")]
    BadRecord { path: PathBuf, reason: String },

    /// ADD failed and the DEL run to undo it failed too; the record stays, so
    /// [`crate::Invoker::cleanup_leftovers`] retries the DEL later.
    #[error("{add}; undoing it with DEL failed too (kept for cleanup): {del}")]
    Rollback { add: Box<Error>, del: Box<Error> },

    /// A command that needs an earlier ADD found no record of one.
    #[error("no attachment of container {container_id:?} to network {network:?} as {ifname:?}")]
    NotAttached {
        network: String,
        container_id: String,
        ifname: String,
    },

    /// CHECK is defined from CNI 0.4.0 on; the network's config is older or disables it.
    #[error("CHECK not available for network {network:?}: {reason}")]
    CheckUnsupported { network: String, reason: String },
}

fn source_name(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "(inline)".to_string(),
    }
}

fn list_bad(bad: &[String]) -> String {
    if bad.is_empty() {
        String::new()
    } else {
        format!(" (unreadable configs there: {})", bad.join("; "))
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(", ")
}

fn stderr_tail(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; stderr: {s}")
    }
}

fn out_tail(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; stdout: {s}")
    }
}

/// Escapes control characters and truncates to `max` bytes (on a char boundary, with a
/// marker), for text taken from plugins or files before it reaches a log or terminal.
pub fn clean(text: &str, max: usize) -> String {
    let trimmed = text.trim();
    let mut out = String::with_capacity(trimmed.len().min(max) + 16);
    for c in trimmed.chars() {
        if out.len() >= max {
            out.push_str("...(truncated)");
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_controls_and_truncates() {
        assert_eq!(clean("a\x1b[31mb\n", 100), "a\\u{1b}[31mb");
        let long = "x".repeat(50);
        assert_eq!(
            clean(&long, 10),
            format!("{}...(truncated)", "x".repeat(10))
        );
        assert_eq!(clean("é€", 2), "é...(truncated)");
    }

    #[test]
    fn plugin_error_names_well_known_codes() {
        let e = PluginError {
            code: 7,
            msg: "bad".into(),
            details: "field x".into(),
        };
        assert_eq!(
            e.to_string(),
            "bad (code 7, invalid network config): field x"
        );
        let e = PluginError {
            code: 999,
            msg: "m".into(),
            details: String::new(),
        };
        assert_eq!(e.to_string(), "m (code 999)");
    }
}
