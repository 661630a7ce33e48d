//! Harness for the runtime end-to-end tests (tests/tests/runtime_*.rs).
//!
//! The runtime under test is the binary named by `BERTH_TEST_RUNTIME` (for example
//! `/usr/sbin/runc`, to validate the tests against the reference), else the workspace's
//! `berth`. Everything goes through the runc command line contract.
//!
//! Each test makes a [`TestEnv`] (its own `--root` state directory) and any number of
//! [`Bundle`]s (a temp dir with a busybox rootfs and a config.json from `<runtime> spec`,
//! edited as JSON). A [`Container`] guard runs the verbs and, when dropped, force-deletes
//! the container and removes the bundle, so nothing leaks even when a test panics.
//! Container ids are unique per process and per test, and every container's cgroup is
//! `/berth-test/<id>` (set explicitly so that every runtime uses the same path), so tests
//! run in parallel threads and the leak scanner knows where to look.

use std::fmt;
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

mod bundle;
mod container;
mod inspect;

pub use bundle::{make_busybox_rootfs, Bundle};
pub use container::Container;
pub use inspect::{
    assert_no_leftovers, assert_only_listed_devices, leftovers, mounts_under, parse_mountinfo,
    parse_status, read_trim, unescape_mountinfo, HostMounts, MountEntry,
};

/// The parent of every test container's cgroup (`linux.cgroupsPath = /berth-test/<id>`).
pub const CGROUP_PARENT: &str = "berth-test";
/// Generous bound on any one runtime command: only a hung runtime ever reaches it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Generous bound on waiting for a container to reach a status or print something.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary under test: `$BERTH_TEST_RUNTIME`, else the workspace's `berth`.
pub fn runtime_bin() -> PathBuf {
    match std::env::var_os("BERTH_TEST_RUNTIME").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => crate::workspace_bin("berth"),
    }
}

/// What a finished command did: exit code or signal, and everything it printed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub command: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole outcome unless the command exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panics unless the command exited with a non-zero code (not killed by a signal).
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "command should have failed with an error:\n{self}"
        );
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit code: {:?}, signal: {:?}", self.code, self.signal)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| format!("{:?}", a.to_string_lossy())));
    words.join(" ")
}

/// A command started in the background with its stdout and stderr going to files.
pub struct Running {
    pub child: Child,
    pub command: String,
    stdout: fs::File,
    stderr: fs::File,
}

fn read_all(file: &mut fs::File) -> String {
    let mut bytes = Vec::new();
    if let Err(e) = file.rewind().and_then(|_| file.read_to_end(&mut bytes)) {
        return format!("<cannot read captured output: {e}>");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Running {
    /// Starts `cmd` with stdin from /dev/null and stdout/stderr to the given files
    /// (anonymous temp files when `None`). Files, not pipes: a detached container that
    /// inherits them must not keep the test waiting for an end of file.
    pub fn spawn(cmd: &mut Command, stdout: Option<&Path>, stderr: Option<&Path>) -> Running {
        let open = |path: Option<&Path>| match path {
            Some(p) => fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display())),
            None => tempfile::tempfile().expect("temp file"),
        };
        let (stdout, stderr) = (open(stdout), open(stderr));
        let command = describe(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("dup stdout file"))
            .stderr(stderr.try_clone().expect("dup stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        Running {
            child,
            command,
            stdout,
            stderr,
        }
    }

    /// Waits for the command to exit (killing it and panicking after `timeout`).
    pub fn wait(self, timeout: Duration) -> Outcome {
        self.try_wait_for(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Running::wait`] but never panics (for use in `Drop`): a command still
    /// running after `timeout` is killed and described in the error.
    pub fn try_wait_for(mut self, timeout: Duration) -> Result<Outcome, String> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for {}: {e}", self.command)),
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "command did not finish within {timeout:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.command,
                    read_all(&mut self.stdout),
                    read_all(&mut self.stderr)
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(Outcome {
            command: self.command,
            code: status.code(),
            signal: status.signal(),
            stdout: read_all(&mut self.stdout),
            stderr: read_all(&mut self.stderr),
        })
    }
}

/// Runs `cmd` to completion, capturing its output.
pub fn run_command(cmd: &mut Command) -> Outcome {
    Running::spawn(cmd, None, None).wait(COMMAND_TIMEOUT)
}

/// Polls `probe` until it returns `Some`, panicking with `what` after [`WAIT_TIMEOUT`].
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The runtime binary plus the `--root` state directory every command gets.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Runtime {
    /// `<bin> --root <root> <args>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    /// Runs a verb to completion.
    pub fn run(&self, args: &[&str]) -> Outcome {
        run_command(&mut self.command(args))
    }

    /// `state <id>` parsed, or `None` when the command fails (no such container).
    pub fn try_state(&self, id: &str) -> Option<Value> {
        let out = self.run(&["state", id]);
        if !out.success() {
            return None;
        }
        Some(
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("state is not JSON ({e}):\n{out}")),
        )
    }

    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.run(&["state", id]);
        out.ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state is not JSON ({e}):\n{out}"))
    }

    /// Polls `state` until the status is `want`; returns that state.
    pub fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} never reached status {want}; last state {state}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One test's world: a temp dir with the `--root` state directory.
pub struct TestEnv {
    dir: TempDir,
    pub rt: Runtime,
    name: String,
    counter: AtomicU32,
}

/// Makes a temp dir that other users may traverse (user-namespace and non-root
/// containers need to reach their rootfs).
pub fn open_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

impl TestEnv {
    /// Requires root and busybox-static; `name` prefixes this test's container ids.
    pub fn new(name: &str) -> TestEnv {
        crate::require_root();
        let dir = open_tempdir("berth-rt-");
        let root = dir.path().join("state");
        TestEnv {
            rt: Runtime {
                bin: runtime_bin(),
                root,
            },
            dir,
            name: name.to_string(),
            counter: AtomicU32::new(0),
        }
    }

    /// A directory the test may use for its own files (outside every bundle).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh container id, unique in this process.
    pub fn new_id(&self) -> String {
        static GLOBAL: AtomicU32 = AtomicU32::new(0);
        let n =
            GLOBAL.fetch_add(1, Ordering::Relaxed) + self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", self.name, std::process::id())
    }

    /// A bundle with a fresh id and the default config (see [`Bundle::new`]).
    pub fn bundle(&self) -> Bundle {
        Bundle::new(&self.rt, &self.new_id())
    }

    /// A container guard over a fresh bundle; `edit` adjusts the config first.
    pub fn container(&self, edit: impl FnOnce(&mut Bundle)) -> Container {
        let mut bundle = self.bundle();
        edit(&mut bundle);
        Container::new(&self.rt, bundle)
    }
}
