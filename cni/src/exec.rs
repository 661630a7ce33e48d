//! Running one plugin: find its binary, start it with the `CNI_*` environment and its
//! config on stdin, wait at most the timeout (through a pidfd), and turn its exit into a
//! result or an [`Error`] carrying the plugin's own code, message and details.
//!
//! [`PluginRunner`] is the seam the invoker is generic over, so chain logic is tested with a
//! recording fake and no root.
//!
//! The plugin's stdout and stderr are read on threads until they end; once the plugin has
//! exited they get at most `PIPE_GRACE` (500 ms) more, so a child the plugin left behind holding
//! them open cannot hold the run.
//!
//! A daemon that reaps children with `waitpid(-1)` must not do so while a plugin runs on
//! one of its threads: that would take the plugin's exit status from this code.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{clean, Error, FailedOutput, PluginError};
use crate::plan::Command;

/// One plugin run.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub plugin: String,
    pub command: Command,
    pub network: String,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

/// Runs plugins. `Ok` is the plugin's stdout after a successful exit.
pub trait PluginRunner {
    fn run(&self, inv: &Invocation) -> Result<Vec<u8>, Error>;

    /// Whether the plugin can be run at all (checked for a whole chain before ADD starts,
    /// so a missing binary fails before anything is done).
    fn available(&self, _plugin: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// Runs the real plugin binaries.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    pub plugin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// Bounds on what is kept of a plugin's output.
const MAX_STDOUT: usize = 4 << 20;
const MAX_STDERR: usize = 64 << 10;
/// How much of a plugin's text goes into an error message.
const SHOWN: usize = 2048;

impl ProcessRunner {
    /// The plugin's binary: the first directory holding an executable file of that name.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, Error> {
        use std::os::unix::fs::PermissionsExt;
        for dir in &self.plugin_dirs {
            let p = dir.join(plugin);
            if let Ok(meta) = std::fs::metadata(&p) {
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        Err(Error::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: self.plugin_dirs.clone(),
        })
    }
}

impl PluginRunner for ProcessRunner {
    fn available(&self, plugin: &str) -> Result<(), Error> {
        self.find(plugin).map(|_| ())
    }

    fn run(&self, inv: &Invocation) -> Result<Vec<u8>, Error> {
        let path = self.find(&inv.plugin)?;
        let io = |step: &'static str| {
            let plugin = inv.plugin.clone();
            let command = inv.command.as_str();
            move |source: std::io::Error| Error::Io {
                plugin,
                command,
                step,
                source,
            }
        };
        let mut child = Process::new(&path)
            .env_clear()
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("start"))?;
        let stdin = child.stdin.take();
        let input = inv.stdin.clone();
        // Not joined: a plugin's child that keeps the pipe open must not hold the run.
        std::thread::spawn(move || {
            // A plugin that exits without reading its input closes the pipe: not our error.
            if let Some(mut s) = stdin {
                let _ = s.write_all(&input);
            }
        });
        let out = Capture::start(child.stdout.take(), MAX_STDOUT);
        let err = Capture::start(child.stderr.take(), MAX_STDERR);
        let waited = wait_timeout(&mut child, self.timeout).map_err(io("wait"));
        // The plugin has exited (or was killed): its output is complete unless a child of
        // its own still holds the pipes; wait for the end of the pipes only briefly then.
        let deadline = Instant::now() + PIPE_GRACE;
        let stdout = out.take(deadline);
        let stderr = err.take(deadline);
        match waited? {
            Some(status) if status.success() => Ok(stdout),
            Some(status) => Err(failure(inv, &describe(status), &stdout, &stderr)),
            None => Err(Error::Timeout {
                plugin: inv.plugin.clone(),
                command: inv.command.as_str(),
                network: inv.network.clone(),
                after: self.timeout,
            }),
        }
    }
}

/// How long the pipes may stay open after the plugin exited.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// A pipe read to its end on a thread of its own, keeping at most `limit` bytes (the rest
/// is read and dropped, so the plugin never blocks on a full pipe).
struct Capture {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Capture {
    fn start<R: Read + Send + 'static>(pipe: Option<R>, limit: usize) -> Self {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let sink = kept.clone();
        std::thread::spawn(move || {
            if let Some(mut p) = pipe {
                let mut chunk = [0u8; 8192];
                loop {
                    match p.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut buf = sink.lock().unwrap_or_else(|e| e.into_inner());
                            let room = limit.saturating_sub(buf.len());
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let _ = tx.send(());
        });
        Capture { kept, done }
    }

    /// What was read, once the pipe ended or at `deadline`, whichever is first.
    fn take(self, deadline: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let mut buf = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *buf)
    }
}

/// Waits for the child's exit for at most `timeout`; `None` after killing it at the
/// deadline. Uses a pidfd (no signal handler, no polling); falls back to polling
/// `try_wait` on kernels without pidfd_open.
fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let pidfd = pidfd_open(child.id());
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => poll_readable(fd, left)?,
            None => std::thread::sleep(left.min(Duration::from_millis(2))),
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; the
    // child is not yet reaped (we hold its `Child`), so the pid names it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor this process owns and nothing else refers to.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn poll_readable(fd: &OwnedFd, timeout: Duration) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, its count, a bounded timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[derive(Deserialize)]
struct WireError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// The error for a failed run: the plugin's JSON error when stdout holds one (the spec's
/// channel), else the exit status with the output it gave.
pub fn failure(inv: &Invocation, status: &str, stdout: &[u8], stderr: &[u8]) -> Error {
    let stderr = clean(&String::from_utf8_lossy(stderr), SHOWN);
    match serde_json::from_slice::<WireError>(stdout) {
        Ok(w) => Error::Plugin {
            plugin: inv.plugin.clone(),
            command: inv.command.as_str(),
            network: inv.network.clone(),
            error: Box::new(PluginError {
                code: w.code,
                msg: clean(&w.msg, SHOWN),
                details: clean(&w.details, SHOWN),
            }),
            stderr,
        },
        Err(_) => Error::Failed {
            plugin: inv.plugin.clone(),
            command: inv.command.as_str(),
            network: inv.network.clone(),
            output: Box::new(FailedOutput {
                status: status.to_string(),
                stdout: clean(&String::from_utf8_lossy(stdout), SHOWN),
                stderr,
            }),
        },
    }
}

/// Whether `path` is executable by someone (for callers that list plugin directories).
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv(plugin: &str) -> Invocation {
        Invocation {
            plugin: plugin.into(),
            command: Command::Add,
            network: "net".into(),
            env: vec![
                ("CNI_COMMAND".into(), "ADD".into()),
                ("X".into(), "y".into()),
            ],
            stdin: b"{\"hello\":1}".to_vec(),
        }
    }

    fn runner(dirs: Vec<PathBuf>, ms: u64) -> ProcessRunner {
        ProcessRunner {
            plugin_dirs: dirs,
            timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn passes_env_and_stdin_and_returns_stdout() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "echoer",
            r#"printf '%s|%s|%s|' "$CNI_COMMAND" "$X" "${HOME:-nohome}"; cat"#,
        );
        let out = runner(vec![d.path().into()], 10_000)
            .run(&inv("echoer"))
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ADD|y|nohome|{\"hello\":1}"
        );
    }

    #[test]
    fn finds_plugins_in_directory_order_and_skips_non_executables() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("p"), "not executable").unwrap();
        script(b.path(), "p", "true");
        let r = runner(
            vec!["/nonexistent".into(), a.path().into(), b.path().into()],
            1000,
        );
        assert_eq!(r.find("p").unwrap(), b.path().join("p"));
        let e = r.find("q").unwrap_err().to_string();
        assert!(
            e.starts_with("CNI plugin \"q\" not found in /nonexistent, "),
            "{e}"
        );
    }

    #[test]
    fn plugin_error_json_is_carried_with_stderr() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "bad",
            r#"cat >/dev/null; echo 'log line' >&2; echo '{"cniVersion":"1.0.0","code":7,"msg":"no subnet","details":"ipam.subnet missing"}'; exit 1"#,
        );
        match runner(vec![d.path().into()], 10_000).run(&inv("bad")) {
            Err(Error::Plugin { error, stderr, .. }) => {
                assert_eq!(error.code, 7);
                assert_eq!(error.msg, "no subnet");
                assert_eq!(error.details, "ipam.subnet missing");
                assert_eq!(stderr, "log line");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_without_json_reports_status_and_output() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "crash", "echo 'panic: \x1b[31mboom' >&2; exit 3");
        let e = runner(vec![d.path().into()], 10_000)
            .run(&inv("crash"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ADD crash (network net): exit status 3; stderr: panic: \\u{1b}[31mboom"),
            "{e}"
        );
    }

    #[test]
    fn a_background_child_holding_the_pipes_does_not_block_the_run() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        // the plugin answers and exits, leaving a child that keeps stdout and stderr open
        script(
            d.path(),
            "forks",
            &format!(
                "sleep 600 & echo $! > {}; echo '{{\"cniVersion\":\"1.0.0\"}}'",
                pidfile.display()
            ),
        );
        let out = runner(vec![d.path().into()], 20_000).run(&inv("forks"));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap().trim(),
            r#"{"cniVersion":"1.0.0"}"#
        );
    }

    #[test]
    fn a_hanging_plugin_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        script(
            d.path(),
            "hang",
            &format!("echo $$ > {}; exec sleep 600", pidfile.display()),
        );
        let e = runner(vec![d.path().into()], 300)
            .run(&inv("hang"))
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("ADD hang (network net): no answer after 300ms; killed"),
            "{e}"
        );
        // killed and reaped, not left running
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "plugin {pid} still exists"
        );
    }
}
