//! A unit as an OCI runtime-spec `config.json` (pure: the caller passes the image config, the
//! user databases and the environment files' contents; nothing is read here).
//!
//! Give it the unit parsed for the machine that runs it ([`Unit::for_machine`](super::Unit::for_machine)),
//! so `%m` and `%H` are expanded.
//!
//! **`[Container]` units** start from `berth_images::bundle::generate(image, users,
//! overrides)` (umoci's translation of the image config on runc's default spec), then:
//!
//! | key | becomes |
//! |---|---|
//! | `Exec` | replaces the image's Cmd (`process.args` = Entrypoint + Exec) |
//! | `EnvironmentFile`, `Environment` | `process.env` over the image's: files first (podman format), then `Environment=`, later names win |
//! | `User` | `process.user` resolved in the image's /etc/passwd and /etc/group |
//! | `WorkingDir` | `process.cwd` |
//! | `Volume` | a `bind` mount: options `rbind` (or `bind`), `rw`/`ro`, the propagation and flags given |
//! | `ReadOnly=yes` | `root.readonly`, plus tmpfs on /tmp, /var/tmp (mode 1777) and /run (mode 755), as podman |
//! | `AddCapability`, `DropCapability` | bounding/effective/permitted: runc's defaults (AUDIT_WRITE, KILL, NET_BIND_SERVICE), minus the dropped (`all`: every one), plus the added (`all`: every one the kernel headers know) |
//! | `Network` | `host`: no network namespace (the machine's); `none`: a new empty one; a name, or unset (the cluster network `berth`): join `netns_path` (required: the agent makes it and attaches the network), and bind `resolv_conf` read-only on `/etc/resolv.conf` when given |
//! | `PublishPort`, `HealthCmd`, `X-ServiceName` | nothing here: the agent registers ports and runs health checks |
//!
//! **fleet-era units** (`[Service] ExecStart=`, no `[Container]`) run on the machine's own
//! files: `root` is `/` read-only; new pid, ipc, uts and mount namespaces and the machine's
//! network; /proc, /dev (tmpfs with /dev/pts, /dev/shm, /dev/mqueue), /sys read-only and a
//! private /tmp tmpfs; runc's masked and read-only paths. The process is what systemd would
//! run: `ExecStart=` with `$VAR`/`${VAR}` substituted (below) unless `:`; `Environment=` then
//! `EnvironmentFile=`s (systemd format; files win, as in systemd) over
//! `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, plus `HOME`, and
//! `USER`/`LOGNAME` when `User=` is given; `User=` resolved in the machine's user database;
//! `WorkingDirectory=` or `/`. Like a systemd service, root gets every capability and no
//! `noNewPrivileges`; another user gets none. RLIMIT_NOFILE is systemd's 1024/524288.
//!
//! **Both**: `MemoryMax` -> `linux.resources.memory.limit` (a percentage of `host.memory_bytes`;
//! `infinity`: no limit), `CPUQuota` -> `linux.resources.cpu` quota per 100 ms period,
//! `TasksMax` -> `linux.resources.pids.limit` (a percentage of `host.pids_max`); `hostname`
//! is the caller's; annotations `org.berth.unit` (name) and `org.berth.unit.hash`.
//!
//! Variable substitution in `ExecStart=` (systemd.service(5)): `${NAME}` anywhere in a word is
//! replaced by the value (empty when unset); a word that is exactly `$NAME` becomes the value
//! split at whitespace (no word when empty or unset); `$$` is a literal `$`; any other `$` is
//! kept.

mod container;
mod host;
#[cfg(test)]
mod tests;

use serde_json::{json, Value};

use berth_images::bundle::{BundleError, UserDb};
use berth_images::manifest::ImageConfig;

use super::{Limit, Unit};

/// What the caller knows about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Physical memory in bytes (`MemoryMax=N%`).
    pub memory_bytes: u64,
    /// The kernel's task limit (`TasksMax=N%`): the smaller of pid_max and threads-max.
    pub pids_max: u64,
}

/// The caller's inputs besides the unit.
#[derive(Debug, Clone, Copy)]
pub struct OciContext<'a> {
    /// The container's host name (chosen by the machine).
    pub hostname: &'a str,
    /// The network namespace to join (a CNI network's); see the `Network` row above.
    pub netns_path: Option<&'a str>,
    /// A host file to bind on `/etc/resolv.conf` (with `netns_path`).
    pub resolv_conf: Option<&'a str>,
    /// For percentages.
    pub host: HostLimits,
    /// The contents of the unit's `EnvironmentFile=`s, in the unit's order (`[Container]`'s or
    /// `[Service]`'s); an optional (`-`) file that is missing is passed as "".
    pub env_files: &'a [String],
}

/// Where the unit's files come from.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    /// A `[Container]` unit: the image's config and its /etc/passwd and /etc/group.
    Image {
        /// The image config.
        config: &'a ImageConfig,
        /// The image's users.
        users: &'a UserDb,
    },
    /// A fleet-era unit: the machine's own user database.
    Host {
        /// The machine's users.
        users: &'a UserDb,
    },
}

/// Why a unit cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// From the image's translation (user, command, environment, cwd).
    #[error("{unit}: {source}")]
    Bundle {
        /// The unit.
        unit: String,
        /// What the image translation refused.
        source: BundleError,
    },
    /// An environment file's content.
    #[error("{unit}: EnvironmentFile {path}:{line}: {reason}")]
    EnvFile {
        /// The unit.
        unit: String,
        /// The file's path as the unit names it.
        path: String,
        /// The line in the file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The caller gave fewer environment file contents than the unit names.
    #[error("{unit}: the unit names {want} EnvironmentFile(s), {got} contents given")]
    EnvFileCount {
        /// The unit.
        unit: String,
        /// How many the unit names.
        want: usize,
        /// How many were given.
        got: usize,
    },
    /// `[Container]` with `Root::Host`, or no `[Container]` with `Root::Image`.
    #[error("{unit}: {reason}")]
    WrongRoot {
        /// The unit.
        unit: String,
        /// Which way round.
        reason: &'static str,
    },
    /// A named network without a namespace to join.
    #[error("{unit}: Network={network} needs a network namespace path from the caller")]
    NoNetns {
        /// The unit.
        unit: String,
        /// The network's name.
        network: String,
    },
}

/// The runtime config of `unit` (see the module doc for what each key becomes).
pub fn runtime_config(
    unit: &Unit,
    root: Root<'_>,
    ctx: &OciContext<'_>,
) -> Result<Value, OciError> {
    let mut config = match (root, &unit.container) {
        (Root::Image { config, users }, Some(c)) => container::config(unit, c, config, users, ctx)?,
        (Root::Host { users }, None) => host::config(unit, users, ctx)?,
        (Root::Image { .. }, None) => {
            return Err(OciError::WrongRoot {
                unit: unit.name.to_string(),
                reason: "a unit without [Container] runs on the host's root, not an image",
            })
        }
        (Root::Host { .. }, Some(_)) => {
            return Err(OciError::WrongRoot {
                unit: unit.name.to_string(),
                reason: "a [Container] unit runs from its image, not the host's root",
            })
        }
    };
    apply_resources(unit, ctx.host, &mut config);
    config["annotations"]["org.berth.unit"] = json!(unit.name.as_str());
    config["annotations"]["org.berth.unit.hash"] = json!(unit.hash);
    Ok(config)
}

fn apply_resources(unit: &Unit, host: HostLimits, config: &mut Value) {
    let s = &unit.service;
    let resources = &mut config["linux"]["resources"];
    if let Some(limit) = s.memory_max.and_then(|l| l.resolve(host.memory_bytes)) {
        resources["memory"] = json!({ "limit": limit });
    }
    if let Some(q) = s.cpu_quota {
        resources["cpu"] = json!({ "quota": q * 10, "period": 100_000 });
    }
    if let Some(limit) = s.tasks_max.and_then(|l: Limit| l.resolve(host.pids_max)) {
        resources["pids"] = json!({ "limit": limit });
    }
}

/// Parses the environment files' contents (in the unit's order) into assignments.
fn env_files(
    unit: &Unit,
    paths: &[&str],
    contents: &[String],
    format: super::EnvFileFormat,
) -> Result<Vec<(String, String)>, OciError> {
    if contents.len() < paths.len() {
        return Err(OciError::EnvFileCount {
            unit: unit.name.to_string(),
            want: paths.len(),
            got: contents.len(),
        });
    }
    let mut out = Vec::new();
    for (path, text) in paths.iter().zip(contents) {
        let vars =
            super::parse_env_file(text, format).map_err(|(line, reason)| OciError::EnvFile {
                unit: unit.name.to_string(),
                path: path.to_string(),
                line,
                reason,
            })?;
        out.extend(vars);
    }
    Ok(out)
}

/// `NAME=value` strings; a later assignment of a name drops the earlier one.
fn merged_env(base: &[String], vars: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for (k, v) in vars {
        let prefix = format!("{k}=");
        out.retain(|e| !e.starts_with(&prefix));
        out.push(format!("{k}={v}"));
    }
    out
}
