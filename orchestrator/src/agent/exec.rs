//! `berthctl exec UNIT -- CMD...` on the machine that runs the unit: `berth exec` into its
//! container on a thread of its own (an exec may take as long as its timeout; the agent's
//! two workers stay free for starts and stops), its stdout and stderr kept up to
//! [`MAX_OUTPUT`] (256 KiB) each (the rest is read and dropped, and the result says so), and
//! its exit status. At its timeout the program is killed (SIGKILL to the pid `berth exec`
//! wrote, then to `berth exec`). At most [`MAX_EXECS`] run at once on a machine.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::berth::Berth;
use super::runner::Agent;
use super::sys;

/// Most bytes kept of each of stdout and stderr (both, base64 in JSON, stay under the
/// 1 MiB a peer link queues while it connects).
pub const MAX_OUTPUT: usize = 256 << 10;
/// Most execs running at once on one machine.
pub const MAX_EXECS: usize = 16;
/// Longest timeout a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the output pipes are read after the program ended (a child it left behind
/// may hold them open).
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// What an exec gave: exactly one of `exit_code`, `signal` or `error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The program (or `berth exec`) was killed by this signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why it did not run or did not finish (timeout, unit not running here, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
    /// Output beyond [`MAX_OUTPUT`] was dropped.
    #[serde(default)]
    pub truncated: bool,
    /// The machine it ran on.
    #[serde(default)]
    pub machine: String,
}

impl ExecOutcome {
    pub fn failed(machine: &str, error: String) -> ExecOutcome {
        ExecOutcome {
            error: Some(error),
            machine: machine.to_string(),
            ..ExecOutcome::default()
        }
    }
}

/// Bytes as base64 in JSON (output need not be text).
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// A finished exec, for the daemon (`request` is the daemon's own id).
#[derive(Debug)]
pub struct ExecDone {
    pub request: u64,
    pub outcome: ExecOutcome,
}

/// One `berth exec`.
struct ExecJob {
    berth: Berth,
    cid: String,
    args: Vec<String>,
    timeout: Duration,
    pid_file: PathBuf,
    machine: String,
}

impl ExecJob {
    fn run(self) -> ExecOutcome {
        let _ = std::fs::remove_file(&self.pid_file);
        let mut cmd = Command::new(&self.berth.binary);
        super::sys::unblock_signals_in_child(&mut cmd);
        cmd.arg("--root")
            .arg(&self.berth.root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&self.pid_file)
            .arg("--")
            .arg(&self.cid)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return ExecOutcome::failed(
                    &self.machine,
                    format!("cannot run {}: {e}", self.berth.binary.display()),
                )
            }
        };
        let out = Bounded::start(child.stdout.take());
        let err = Bounded::start(child.stderr.take());
        let pidfd = sys::pidfd_open(child.id());
        let mut outcome = ExecOutcome {
            machine: self.machine.clone(),
            ..ExecOutcome::default()
        };
        let finished = match &pidfd {
            Ok(fd) => wait_readable(fd, self.timeout),
            Err(_) => true, // gone already: wait() below returns at once
        };
        if !finished {
            self.kill_program(&mut child);
            outcome.error = Some(format!(
                "timed out after {} s; killed",
                self.timeout.as_secs()
            ));
        }
        match child.wait() {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                outcome.exit_code = status.code();
                outcome.signal = status.signal();
            }
            Err(e) => outcome.error = Some(format!("waiting for berth exec: {e}")),
        }
        if outcome.error.is_some() {
            outcome.exit_code = None;
            outcome.signal = None;
        }
        let deadline = Instant::now() + PIPE_GRACE;
        let (stdout, t1) = out.take(deadline);
        let (stderr, t2) = err.take(deadline);
        outcome.stdout = stdout;
        outcome.stderr = stderr;
        outcome.truncated = t1 || t2;
        let _ = std::fs::remove_file(&self.pid_file);
        outcome
    }

    /// SIGKILL to the program in the container (its pid from `--pid-file`), then to berth.
    fn kill_program(&self, child: &mut std::process::Child) {
        use nix::sys::signal::{kill, Signal};
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        if let Some(p) = pid {
            let _ = kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = child.kill();
    }
}

/// Whether `fd` became readable (the process exited) within `timeout`.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(nix::errno::Errno::EINTR) if Instant::now() < deadline => {}
            _ => return false,
        }
    }
}

/// A pipe read on a thread into a bounded buffer.
struct Bounded {
    rx: std::sync::mpsc::Receiver<(Vec<u8>, bool)>,
}

impl Bounded {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Bounded {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut dropped = false;
            if let Some(mut p) = pipe {
                let mut buf = [0u8; 16 << 10];
                loop {
                    match p.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let room = MAX_OUTPUT.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                            dropped |= n > room;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let _ = tx.send((kept, dropped));
        });
        Bounded { rx }
    }

    /// The output (and whether some was dropped), waiting at most until `deadline`.
    fn take(self, deadline: Instant) -> (Vec<u8>, bool) {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx.recv_timeout(left).unwrap_or_default()
    }
}

/// The agent's execs in flight and the channel their threads answer on.
pub(super) struct Execs {
    running: usize,
    tx: Sender<ExecDone>,
    rx: std::sync::mpsc::Receiver<ExecDone>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Execs {
    pub(super) fn new(wake: Arc<dyn Fn() + Send + Sync>) -> Execs {
        let (tx, rx) = std::sync::mpsc::channel();
        Execs {
            running: 0,
            tx,
            rx,
            wake,
        }
    }
}

impl Agent {
    /// Runs `args` in `unit`'s container; the outcome comes back through
    /// [`Agent::finished_execs`] with `request`. An error now: the unit does not run here,
    /// or too many execs are running.
    pub fn exec(
        &mut self,
        request: u64,
        unit: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<(), String> {
        let machine = self.cfg.machine.clone();
        let slot = self
            .slots
            .get(unit)
            .filter(|s| s.inst.running_pid().is_some())
            .ok_or_else(|| format!("{unit} is not running on {machine}"))?;
        if self.execs.running >= MAX_EXECS {
            return Err(format!(
                "{MAX_EXECS} execs already run on {machine}; try again later"
            ));
        }
        let job = ExecJob {
            berth: self.berth.clone(),
            cid: slot.cid.clone(),
            args,
            timeout: timeout.min(MAX_TIMEOUT),
            pid_file: slot.dir.join(format!("exec-{request}.pid")),
            machine,
        };
        let tx = self.execs.tx.clone();
        let wake = Arc::clone(&self.execs.wake);
        std::thread::Builder::new()
            .name("agent-exec".into())
            .spawn(move || {
                let outcome = job.run();
                let _ = tx.send(ExecDone { request, outcome });
                wake();
            })
            .map_err(|e| format!("cannot start a thread for the exec: {e}"))?;
        self.execs.running += 1;
        Ok(())
    }

    /// Execs that finished since the last call.
    pub fn finished_execs(&mut self) -> Vec<ExecDone> {
        let done: Vec<ExecDone> = self.execs.rx.try_iter().collect();
        self.execs.running = self.execs.running.saturating_sub(done.len());
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_travel_as_json_with_base64_output() {
        let o = ExecOutcome {
            exit_code: Some(3),
            stdout: b"hi\n".to_vec(),
            stderr: vec![0xff, 0x00],
            machine: "n1".into(),
            ..ExecOutcome::default()
        };
        let s = serde_json::to_string(&o).expect("encode");
        assert!(s.contains("\"stdout\":\"aGkK\""), "{s}");
        assert!(!s.contains("signal"), "{s}");
        assert_eq!(serde_json::from_str::<ExecOutcome>(&s).expect("decode"), o);
        assert!(serde_json::from_str::<ExecOutcome>(r#"{"stdout":"!!","stderr":""}"#).is_err());
    }

    #[test]
    fn a_command_runs_with_bounded_output_and_a_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        // A stand-in for berth: `exec --pid-file P -- ID ARGS...` runs ARGS with sh.
        let fake = dir.path().join("berth");
        std::fs::write(
            &fake,
            "#!/bin/sh\nshift 3\necho $$ > \"$2\"\nshift 4\nexec sh -c \"$*\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let job = |args: &[&str], timeout: Duration| ExecJob {
            berth: Berth {
                binary: fake.clone(),
                root: dir.path().into(),
            },
            cid: "c".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            timeout,
            pid_file: dir.path().join("exec.pid"),
            machine: "n1".into(),
        };
        let o = job(&["echo out; echo err >&2; exit 7"], Duration::from_secs(10)).run();
        assert_eq!(o.exit_code, Some(7), "{o:?}");
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
        assert!(!o.truncated && o.error.is_none());
        let o = job(&["head -c 3000000 /dev/zero"], Duration::from_secs(10)).run();
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.stdout.len(), MAX_OUTPUT);
        assert!(o.truncated);
        let t = Instant::now();
        let o = job(&["sleep 30"], Duration::from_millis(300)).run();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(o.exit_code, None);
        assert!(
            o.error.as_deref().is_some_and(|e| e.contains("timed out")),
            "{o:?}"
        );
    }
}
