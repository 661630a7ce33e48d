//! `[Unit]` and `[Service]`.
//!
//! `[Unit]`: `Description=` is read. fleet scheduled without looking at the rest of `[Unit]` and
//! left it to the machine's systemd; berth has no systemd dependency graph between units, so
//! these keys are accepted and ignored (listed in `Unit::ignored`): `Documentation`, `After`,
//! `Before`, `Wants`, `Requires`, `Requisite`, `BindsTo`, `PartOf`, `Conflicts` (systemd's own,
//! not `[X-Fleet]`'s). Co-location is `[X-Fleet] MachineOf=`. Any other key is an error.
//!
//! `[Service]` keys, with systemd's syntax and defaults:
//!
//! | key | value | default |
//! |---|---|---|
//! | `ExecStart` | one command (see [`ExecCommand`]); only without `[Container]` | required without `[Container]` |
//! | `Type` | `simple` or `exec` (both mean: the process is the service) | `simple` |
//! | `Restart` | `no`, `on-failure`, `always` | `no` |
//! | `RestartSec` | time span | 100 ms |
//! | `TimeoutStartSec` | time span or `infinity` | 90 s |
//! | `TimeoutStopSec` | time span or `infinity` (then no SIGKILL) | 90 s; 10 s with `[Container]` (podman's) |
//! | `KillSignal` | signal name or number | SIGTERM |
//! | `MemoryMax` | size (`K M G T P E`, base 1024), `N%` of RAM, `infinity` | none |
//! | `CPUQuota` | `N%` of one CPU (may exceed 100%) | none |
//! | `TasksMax` | count, `N%` of the kernel's limit, `infinity` | none |
//! | `Environment` | `NAME=value` words; repeatable | |
//! | `EnvironmentFile` | absolute path, `-` prefix = may be missing; repeatable | |
//! | `User` | user name or uid (the host's user database) | root |
//! | `WorkingDirectory` | absolute path | `/` |
//!
//! `Environment`, `EnvironmentFile`, `User`, `WorkingDirectory` and `ExecStart` belong to the
//! process of a fleet-era unit; with `[Container]` they are refused in favour of
//! `[Container]`'s `Environment`, `EnvironmentFile`, `User`, `WorkingDir` and `Exec`.
//! `ExecStartPre`, `ExecStartPost`, `ExecStop`, `ExecStopPost` and `ExecReload` are refused:
//! berth runs one process per unit. Keys starting with `X-` are ignored. An empty assignment
//! resets a key to its default, and for lists clears them (systemd's rule).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::UnitError;
use super::parse::Ctx;
use super::syntax::Entry;
use super::values::{self, Limit};
use super::IgnoredKey;

/// One command line (`ExecStart=`), systemd's syntax: optional prefixes, then words.
///
/// Prefixes: `-` (a failure exit counts as success, so `Restart=on-failure` does not restart),
/// `:` (no `$VAR` substitution). `@`, `+`, `!` and `!!` are refused (no separate argv\[0\], no
/// privilege changes). A bare `;` word (systemd's old command separator) is refused; `\;` is
/// a literal `;`. `$NAME`/`${NAME}` are substituted when the process starts
/// (see `unit::oci`), unless `:` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The program and its arguments, specifiers expanded, variables not yet substituted.
    pub argv: Vec<String>,
    /// `-`: an unsuccessful exit status is not a failure.
    pub ignore_failure: bool,
    /// False with `:`: `$` is taken literally.
    pub substitute_env: bool,
}

/// `Restart=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after an unclean exit: a non-zero status, a signal, or a timeout.
    OnFailure,
    /// Restart whatever the exit.
    Always,
}

/// An `EnvironmentFile=` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileRef {
    /// Absolute path on the machine.
    pub path: String,
    /// `-` prefix: a missing file is not an error.
    pub optional: bool,
}

/// The parsed `[Service]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// `ExecStart=` (fleet-era units without `[Container]`).
    pub exec_start: Option<ExecCommand>,
    /// `Restart=`.
    pub restart: RestartPolicy,
    /// `RestartSec=`.
    pub restart_sec: Duration,
    /// `TimeoutStartSec=`; `None` = infinity.
    pub timeout_start: Option<Duration>,
    /// `TimeoutStopSec=`: from the stop signal to SIGKILL; `None` = infinity (no SIGKILL).
    pub timeout_stop: Option<Duration>,
    /// `KillSignal=`.
    pub kill_signal: Signal,
    /// `MemoryMax=`.
    pub memory_max: Option<Limit>,
    /// `CPUQuota=`, in hundredths of a percent of one CPU (`150%` = 15000).
    pub cpu_quota: Option<u64>,
    /// `TasksMax=`.
    pub tasks_max: Option<Limit>,
    /// `Environment=` assignments in order (a later one for the same name wins).
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=`s in order (systemd format, see `unit::EnvFileFormat::Systemd`).
    pub environment_files: Vec<EnvFileRef>,
    /// `User=`.
    pub user: Option<String>,
    /// `WorkingDirectory=`.
    pub working_directory: Option<String>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            exec_start: None,
            restart: RestartPolicy::No,
            restart_sec: Duration::from_millis(100),
            timeout_start: Some(Duration::from_secs(90)),
            timeout_stop: Some(Duration::from_secs(90)),
            kill_signal: Signal::SIGTERM,
            memory_max: None,
            cpu_quota: None,
            tasks_max: None,
            environment: Vec::new(),
            environment_files: Vec::new(),
            user: None,
            working_directory: None,
        }
    }
}

const UNIT_IGNORED: &[&str] = &[
    "Documentation",
    "After",
    "Before",
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "PartOf",
    "Conflicts",
];

/// Reads `[Unit]`: the description; records the ignored keys.
pub(crate) fn parse_unit_section(
    ctx: &Ctx<'_>,
    entries: &[&Entry],
    ignored: &mut Vec<IgnoredKey>,
) -> Result<Option<String>, UnitError> {
    let mut description = None;
    for e in entries {
        if e.key == "Description" {
            let v = ctx.expand(e)?;
            description = (!v.is_empty()).then_some(v);
        } else if UNIT_IGNORED.contains(&e.key.as_str()) || e.key.starts_with("X-") {
            ignored.push(IgnoredKey::of(ctx.section, e));
        } else {
            return Err(ctx.unknown_key(e, "Description; ignored: Documentation, After, Before, Wants, Requires, Requisite, BindsTo, PartOf, Conflicts"));
        }
    }
    Ok(description)
}

/// `TimeoutStopSec=` of a `[Container]` unit that does not set it (podman's default).
pub const CONTAINER_TIMEOUT_STOP: Duration = Duration::from_secs(10);

const SERVICE_KEYS: &str = "ExecStart, Type, Restart, RestartSec, TimeoutStartSec, TimeoutStopSec, KillSignal, MemoryMax, CPUQuota, TasksMax, Environment, EnvironmentFile, User, WorkingDirectory";
const PROCESS_KEYS: &[(&str, &str)] = &[
    ("ExecStart", "Exec"),
    ("Environment", "Environment"),
    ("EnvironmentFile", "EnvironmentFile"),
    ("User", "User"),
    ("WorkingDirectory", "WorkingDir"),
];

/// Reads `[Service]`.
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    entries: &[&Entry],
    has_container: bool,
    ignored: &mut Vec<IgnoredKey>,
) -> Result<ServiceOptions, UnitError> {
    let mut s = ServiceOptions::default();
    if has_container {
        // podman's default stop timeout: a container's init often ignores SIGTERM (pid 1 of
        // its namespace has no default handlers), and 90 s is a long wait for that.
        s.timeout_stop = Some(CONTAINER_TIMEOUT_STOP);
    }
    for e in entries {
        if e.key.starts_with("X-") {
            ignored.push(IgnoredKey::of(ctx.section, e));
            continue;
        }
        if has_container {
            if let Some((_, instead)) = PROCESS_KEYS.iter().find(|(k, _)| *k == e.key) {
                return Err(ctx.err(
                    e,
                    None,
                    format!("not used with [Container]; write [Container] {instead}= instead"),
                ));
            }
        }
        entry(ctx, e, &mut s)?;
    }
    Ok(s)
}

/// Keys whose values systemd reads with specifiers expanded (the others are numbers, names
/// and enums, where systemd does not expand them and `%` is literal, as in `CPUQuota=50%`).
const EXPANDED: &[&str] = &["User", "WorkingDirectory", "EnvironmentFile"];

fn entry(ctx: &Ctx<'_>, e: &Entry, s: &mut ServiceOptions) -> Result<(), UnitError> {
    if e.value.is_empty() {
        return reset(ctx, e, s);
    }
    let v = if EXPANDED.contains(&e.key.as_str()) {
        ctx.expand(e)?
    } else {
        e.value.clone()
    };
    let bad = |r: String| ctx.err(e, Some(&v), r);
    match e.key.as_str() {
        "ExecStart" => {
            if s.exec_start.is_some() {
                return Err(ctx.err(e, None, "given twice: a service runs one command (an empty ExecStart= clears the previous one)"));
            }
            s.exec_start = Some(exec_command(ctx, e)?);
        }
        "Type" if v == "simple" || v == "exec" => {}
        "Type" => return Err(bad("only simple and exec are supported".into())),
        "Restart" => {
            s.restart = match v.as_str() {
                "no" => RestartPolicy::No,
                "on-failure" => RestartPolicy::OnFailure,
                "always" => RestartPolicy::Always,
                _ => return Err(bad("want no, on-failure or always".into())),
            }
        }
        "RestartSec" => s.restart_sec = values::parse_timespan(&v).map_err(bad)?,
        "TimeoutStartSec" => {
            s.timeout_start = values::parse_timespan_or_infinity(&v).map_err(bad)?
        }
        "TimeoutStopSec" => s.timeout_stop = values::parse_timespan_or_infinity(&v).map_err(bad)?,
        "KillSignal" => s.kill_signal = values::parse_signal(&v).map_err(bad)?,
        "MemoryMax" => s.memory_max = Some(values::parse_memory_limit(&v).map_err(bad)?),
        "CPUQuota" => s.cpu_quota = Some(values::parse_cpu_quota(&v).map_err(bad)?),
        "TasksMax" => s.tasks_max = Some(values::parse_tasks_limit(&v).map_err(bad)?),
        "Environment" => s.environment.extend(ctx.assignments(e)?),
        "EnvironmentFile" => {
            let (optional, path) = match v.strip_prefix('-') {
                Some(p) => (true, p),
                None => (false, v.as_str()),
            };
            if !path.starts_with('/') {
                return Err(bad(
                    "want an absolute path (with an optional '-' prefix)".into()
                ));
            }
            s.environment_files.push(EnvFileRef {
                path: path.to_string(),
                optional,
            });
        }
        "User" => s.user = Some(user_name(&v).map_err(bad)?),
        "WorkingDirectory" => {
            if !v.starts_with('/') {
                return Err(bad("want an absolute path".into()));
            }
            s.working_directory = Some(v);
        }
        "ExecStartPre" | "ExecStartPost" | "ExecStop" | "ExecStopPost" | "ExecReload" => {
            return Err(ctx.err(
                e,
                None,
                "not supported: berth runs one process per unit (ExecStart=)",
            ))
        }
        _ => return Err(ctx.unknown_key(e, SERVICE_KEYS)),
    }
    Ok(())
}

fn reset(ctx: &Ctx<'_>, e: &Entry, s: &mut ServiceOptions) -> Result<(), UnitError> {
    let d = ServiceOptions::default();
    match e.key.as_str() {
        "ExecStart" => s.exec_start = None,
        "Type" => {}
        "Restart" => s.restart = d.restart,
        "RestartSec" => s.restart_sec = d.restart_sec,
        "TimeoutStartSec" => s.timeout_start = d.timeout_start,
        "TimeoutStopSec" => s.timeout_stop = d.timeout_stop,
        "KillSignal" => s.kill_signal = d.kill_signal,
        "MemoryMax" => s.memory_max = None,
        "CPUQuota" => s.cpu_quota = None,
        "TasksMax" => s.tasks_max = None,
        "Environment" => s.environment.clear(),
        "EnvironmentFile" => s.environment_files.clear(),
        "User" => s.user = None,
        "WorkingDirectory" => s.working_directory = None,
        _ => return Err(ctx.unknown_key(e, SERVICE_KEYS)),
    }
    Ok(())
}

/// A user as `User=` takes it: a name or a number, nothing else.
pub(crate) fn user_name(v: &str) -> Result<String, String> {
    let ok = v.len() <= 256
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
        && !v.starts_with('-');
    if ok {
        Ok(v.to_string())
    } else {
        Err("not a user name or uid".into())
    }
}

/// Parses `ExecStart=`'s prefixes and words.
fn exec_command(ctx: &Ctx<'_>, e: &Entry) -> Result<ExecCommand, UnitError> {
    let mut cmd = ExecCommand {
        argv: Vec::new(),
        ignore_failure: false,
        substitute_env: true,
    };
    let mut rest = e.value.as_str();
    while let Some(c) = rest.chars().next() {
        match c {
            '-' => cmd.ignore_failure = true,
            ':' => cmd.substitute_env = false,
            '@' | '+' | '!' => {
                return Err(ctx.err(
                    e,
                    Some(&e.value),
                    format!("the {c} prefix is not supported"),
                ))
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    for w in ctx.raw_words(e, rest)? {
        if w.bare_semicolon {
            return Err(ctx.err(
                e,
                Some(&e.value),
                "';' separates commands, and a service runs one (write \\; for a literal ';')",
            ));
        }
        let t = ctx
            .spec
            .expand(&w.text)
            .map_err(|r| ctx.err(e, Some(&w.text), r))?;
        cmd.argv.push(t);
    }
    match cmd.argv.first() {
        None => Err(ctx.err(e, Some(&e.value), "no command")),
        Some(p) if p.is_empty() => Err(ctx.err(e, Some(&e.value), "empty program name")),
        Some(_) => Ok(cmd),
    }
}
