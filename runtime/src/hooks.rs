//! OCI hooks: run one with the container's state JSON on its stdin, its args and env,
//! and its timeout.
//!
//! The runtime-spec decides what a failure means, and the caller applies it:
//! a failing prestart, createRuntime, createContainer or startContainer hook fails
//! the operation (the container is cleaned up); a failing poststart or poststop hook
//! is logged as a warning and the operation carries on. [`HookKind::is_fatal`] says
//! which, [`run_hooks`] stops at the first failure and [`run_hooks_all`] runs every
//! hook and returns all failures.
//!
//! As in runc: `args[0]` is the hook's argv[0]; without `env` the hook inherits the
//! runtime's environment; its stdout and stderr are captured (into memory files, so
//! a hook that leaves a daemon holding them open cannot hang the runtime) and quoted
//! in the error when it fails. A hook still running at its timeout is killed.

use std::io::{Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

/// The hook points of the runtime-spec, in the order they occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];

    /// The name used in config.json and features.json.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// Whether a failure of this hook fails the operation (otherwise: warn and go on).
    pub fn is_fatal(self) -> bool {
        !matches!(self, HookKind::Poststart | HookKind::Poststop)
    }

    /// The hooks of this kind in `hooks`, in order.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let v = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        v.as_deref().unwrap_or(&[])
    }
}

/// Names of every hook point Berth runs (for features.json).
pub fn supported_hooks() -> Vec<&'static str> {
    HookKind::ALL.iter().map(|k| k.name()).collect()
}

/// Why a hook failed; every variant names the hook's path.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {path}: invalid timeout {value}: it must be a positive number of seconds")]
    InvalidTimeout { path: PathBuf, value: i64 },
    #[error("hook {path}: the file does not exist")]
    NotFound { path: PathBuf },
    #[error("hook {path}: not executable: {source}")]
    NotExecutable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hook {path}: cannot start it: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hook {path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("hook {path}: {status}{}", output_suffix(.stdout, .stderr))]
    Failed {
        path: PathBuf,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("hook {path}: timed out after {secs}s and was killed{}", output_suffix(.stdout, .stderr))]
    Timeout {
        path: PathBuf,
        secs: i64,
        stdout: String,
        stderr: String,
    },
}

fn output_suffix(stdout: &str, stderr: &str) -> String {
    let mut s = String::new();
    if !stdout.is_empty() {
        s.push_str(&format!(", stdout: {stdout:?}"));
    }
    if !stderr.is_empty() {
        s.push_str(&format!(", stderr: {stderr:?}"));
    }
    s
}

/// At most this much of a hook's stdout/stderr is quoted in an error.
const OUTPUT_LIMIT: u64 = 4096;

fn memfd(path: &std::path::Path, name: &std::ffi::CStr) -> Result<std::fs::File, HookError> {
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| HookError::Io {
            path: path.to_path_buf(),
            step: "creating its output buffer",
            source: e.into(),
        })
}

fn read_back(mut f: std::fs::File) -> String {
    let mut buf = Vec::new();
    if f.rewind().is_ok() {
        let _ = Read::by_ref(&mut f)
            .take(OUTPUT_LIMIT)
            .read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

/// Runs one hook with `state` (the container's state JSON) on its stdin and waits for
/// it, killing it at its timeout. Ok only if it exits with status 0.
pub fn run_hook(hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    let timeout = match hook.timeout() {
        None => None,
        Some(t) if t > 0 => Some(Duration::from_secs(t as u64)),
        Some(t) => return Err(HookError::InvalidTimeout { path, value: t }),
    };
    let mut input = memfd(&path, c"berth-hook-state")?;
    let out = memfd(&path, c"berth-hook-stdout")?;
    let err = memfd(&path, c"berth-hook-stderr")?;
    let io_err = |step, source| HookError::Io {
        path: path.clone(),
        step,
        source,
    };
    let mut cmd = Command::new(&path);
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    if let Some(env) = hook.env() {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            cmd.env(k, v);
        }
    }
    // The state goes in through a memory file rather than a pipe: a hook that does
    // not read it (or leaves a child holding it) cannot block the runtime.
    input
        .write_all(state)
        .and_then(|_| input.rewind())
        .map_err(|e| io_err("writing the state for its stdin", e))?;
    cmd.stdin(Stdio::from(input))
        .stdout(
            out.try_clone()
                .map_err(|e| io_err("duplicating stdout", e))?,
        )
        .stderr(
            err.try_clone()
                .map_err(|e| io_err("duplicating stderr", e))?,
        );
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => HookError::NotFound { path: path.clone() },
        std::io::ErrorKind::PermissionDenied => HookError::NotExecutable {
            path: path.clone(),
            source,
        },
        _ if source.raw_os_error() == Some(libc::ENOEXEC) => HookError::NotExecutable {
            path: path.clone(),
            source,
        },
        _ => HookError::Spawn {
            path: path.clone(),
            source,
        },
    })?;
    drop(cmd);
    let started = Instant::now();
    let mut delay = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(io_err("waiting for it", e)),
        }
        if let Some(limit) = timeout {
            let elapsed = started.elapsed();
            if elapsed >= limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    path,
                    secs: limit.as_secs() as i64,
                    stdout: read_back(out),
                    stderr: read_back(err),
                });
            }
            delay = delay.min(limit - elapsed);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("ended with {status}"),
    };
    Err(HookError::Failed {
        path,
        status,
        stdout: read_back(out),
        stderr: read_back(err),
    })
}

/// Runs `hooks` in order, stopping at the first failure (for the fatal hook points).
pub fn run_hooks(hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks.iter().try_for_each(|h| run_hook(h, state))
}

/// Runs every hook in order and returns the failures (for poststart and poststop,
/// whose failures are warnings).
pub fn run_hooks_all(hooks: &[Hook], state: &[u8]) -> Vec<HookError> {
    hooks
        .iter()
        .filter_map(|h| run_hook(h, state).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn hook(path: &std::path::Path) -> HookBuilder {
        HookBuilder::default().path(path)
    }

    #[test]
    fn state_on_stdin_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // /bin/sh as the hook binary itself, so argv[0] is observable in /proc.
        let body = format!(
            "cat > {o}.stdin; head -c 7 /proc/$$/cmdline > {o}.argv0; \
             echo \"$0|$1|$FOO|${{HOME:-unset}}\" > {o}.args",
            o = out.display()
        );
        let h = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "my-hook".to_string(),
                "-c".to_string(),
                body,
                "zero".to_string(),
                "a b".to_string(),
            ])
            .env(vec!["FOO=bar=baz".to_string()])
            .timeout(30)
            .build()
            .unwrap();
        let state =
            br#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#;
        run_hook(&h, state).unwrap();
        assert_eq!(std::fs::read(out.with_extension("stdin")).unwrap(), state);
        assert_eq!(
            std::fs::read_to_string(out.with_extension("argv0")).unwrap(),
            "my-hook"
        );
        assert_eq!(
            std::fs::read_to_string(out.with_extension("args")).unwrap(),
            "zero|a b|bar=baz|unset\n"
        );
    }

    #[test]
    fn failure_names_path_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "fail", "echo oops >&2; exit 3");
        let e = run_hook(&hook(&p).build().unwrap(), b"{}").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, HookError::Failed { .. }));
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains("exited with status 3") && msg.contains("oops"),
            "{msg}"
        );
    }

    #[test]
    fn timeout_kills_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let p = script(
            dir.path(),
            "slow",
            &format!("echo $$ > {}; exec sleep 600", pidfile.display()),
        );
        let e = run_hook(&hook(&p).timeout(1).build().unwrap(), b"{}").unwrap_err();
        assert!(matches!(e, HookError::Timeout { secs: 1, .. }), "{e}");
        assert!(e.to_string().contains("timed out"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed and reaped: the pid no longer exists as our child.
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err();
        assert!(gone, "hook {pid} still running");
    }

    #[test]
    fn not_executable_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = run_hook(&hook(&p).build().unwrap(), b"{}").unwrap_err();
        assert!(matches!(e, HookError::NotExecutable { .. }), "{e}");
        assert!(e.to_string().contains("plain"), "{e}");
        let missing = dir.path().join("missing");
        let e = run_hook(&hook(&missing).build().unwrap(), b"{}").unwrap_err();
        assert!(matches!(e, HookError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        let e = run_hook(&hook(&missing).timeout(0).build().unwrap(), b"{}").unwrap_err();
        assert!(
            matches!(e, HookError::InvalidTimeout { value: 0, .. }),
            "{e}"
        );
    }

    #[test]
    fn hook_ignoring_stdin_and_backgrounding_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bgpid");
        // Leaves a child holding stdin/stdout/stderr open and reads nothing; the
        // runtime must not wait for it.
        let p = script(
            dir.path(),
            "bg",
            &format!("(exec sleep 600) & echo $! > {}; exit 0", pidfile.display()),
        );
        let big = vec![b'x'; 1 << 20];
        let r = run_hook(&hook(&p).timeout(30).build().unwrap(), &big);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        r.unwrap();
    }

    #[test]
    fn run_all_collects_and_run_stops() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let bad = hook(&script(dir.path(), "bad", "exit 1")).build().unwrap();
        let good = hook(&script(
            dir.path(),
            "good",
            &format!("touch {}", marker.display()),
        ))
        .build()
        .unwrap();
        assert!(run_hooks(&[bad.clone(), good.clone()], b"{}").is_err());
        assert!(!marker.exists());
        let errs = run_hooks_all(&[bad.clone(), good, bad], b"{}");
        assert_eq!(errs.len(), 2);
        assert!(marker.exists());
        assert!(HookKind::Prestart.is_fatal() && !HookKind::Poststop.is_fatal());
        assert_eq!(supported_hooks().len(), 6);
    }
}
