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
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

/// The parent of every test container's cgroup (`linux.cgroupsPath = /berth-test/<id>`).
pub const CGROUP_PARENT: &str = "berth-test";
/// Generous bound on any one runtime command: only a hung runtime ever reaches it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Generous bound on waiting for a container to reach a status or print something.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary under test: `$BERTH_TEST_RUNTIME`, else the workspace's `berth`.
pub fn runtime_bin() -> PathBuf {
    match std::env::var_os("BERTH_TEST_RUNTIME") {
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

fn busybox_applets() -> &'static (PathBuf, Vec<String>) {
    static APPLETS: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let path = crate::require_program("busybox", "busybox-static");
        let path = fs::canonicalize(&path).expect("resolve busybox");
        let out = run_command(Command::new(&path).arg("--list"));
        out.ok();
        let applets = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox");
        (path, applets.map(String::from).collect())
    })
}

/// Builds a busybox rootfs at `rootfs`: /bin/busybox plus a symlink per applet, the usual
/// directories, and /etc/passwd and /etc/group with root, a user 1000 and nobody.
pub fn make_busybox_rootfs(rootfs: &Path) {
    let (busybox, applets) = busybox_applets();
    for dir in [
        "bin", "proc", "sys", "dev", "etc", "root", "home", "var", "run", "mnt", "tmp",
    ] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in rootfs");
        fs::set_permissions(rootfs.join(dir), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755)).expect("chmod rootfs");
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod busybox");
    for applet in applets {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:\ndialout:x:20:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
}

/// A bundle directory: a busybox rootfs and a config.json being edited as JSON.
pub struct Bundle {
    dir: Option<TempDir>,
    pub id: String,
    pub config: Value,
}

impl Bundle {
    /// Creates the rootfs, runs `<runtime> spec --bundle`, and normalises the config:
    /// terminal off, args `true`, namespaces pid/network/ipc/uts/mount, cgroupsPath
    /// `/berth-test/<id>`.
    pub fn new(rt: &Runtime, id: &str) -> Bundle {
        let dir = open_tempdir("berth-bundle-");
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let bundle_arg = dir.path().to_str().expect("utf-8 temp path");
        rt.run(&["spec", "--bundle", bundle_arg]).ok();
        let text =
            fs::read_to_string(dir.path().join("config.json")).expect("spec wrote config.json");
        let mut config: Value = serde_json::from_str(&text).expect("spec's config.json is JSON");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["true"]);
        config["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        config["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{id}"));
        Bundle {
            dir: Some(dir),
            id: id.to_string(),
            config,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("bundle dir present until drop")
            .path()
    }

    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("utf-8 bundle path")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `process.args = ["sh", "-c", script]`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Sets the value at a JSON pointer (`/process/user/uid`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut node = &mut self.config;
        for key in pointer.trim_start_matches('/').split('/') {
            if !node.is_object() {
                *node = json!({});
            }
            node = node
                .as_object_mut()
                .expect("object")
                .entry(key.to_string())
                .or_insert(Value::Null);
        }
        *node = value;
        self
    }

    /// Appends `value` to the array at `pointer` (created when absent).
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if self.config.pointer(pointer).is_none_or(|v| !v.is_array()) {
            self.set(pointer, json!([]));
        }
        self.config
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .expect("array just made")
            .push(value);
        self
    }

    /// Replaces the namespace of type `kind` (adding it if absent); `path` joins one.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let ns = match path {
            Some(p) => json!({"type": kind, "path": p}),
            None => json!({"type": kind}),
        };
        self.push("/linux/namespaces", ns)
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(list) = self
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            list.retain(|ns| ns["type"] != kind);
        }
        self
    }

    /// The host directory of this container's cgroup for a v1 controller (or `unified`).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(CGROUP_PARENT)
            .join(&self.id)
    }

    /// Writes config.json.
    pub fn write(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialise config");
        fs::write(self.path().join("config.json"), text).expect("write config.json");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // Never recurse through a mount that leaked into the host: detach what is left
        // under the bundle, and keep the directory if anything is still mounted there.
        let mounts = mounts_under(dir.path());
        for mountpoint in mounts.iter().rev() {
            let _ = nix::mount::umount2(mountpoint.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        if mounts_under(dir.path()).is_empty() {
            drop(dir);
        } else {
            let kept = dir.keep();
            eprintln!("bundle {} still has mounts; left in place", kept.display());
        }
    }
}

/// Mount points in this process's /proc/self/mountinfo at or below `path`.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .filter(|mp| mp.starts_with(path))
        .collect()
}

/// Decodes the octal escapes (`\040` for space) of a mountinfo field.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).expect("ascii digits");
            out.push(u8::from_str_radix(octal, 8).expect("octal digits"));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything a container could leave behind, described; empty when clean.
/// `id` is the id given on the command line; the bundle gives the cgroup and paths.
pub fn leftovers(rt: &Runtime, id: &str, bundle: &Bundle) -> Vec<String> {
    let mut found = Vec::new();
    if !id.is_empty() && !id.contains('/') && id != "." && id != ".." && rt.root.join(id).exists() {
        found.push(format!("state directory {}", rt.root.join(id).display()));
    }
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        for entry in controllers.flatten() {
            let dir = entry.path().join(CGROUP_PARENT).join(&bundle.id);
            if dir.exists() {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
    }
    for mp in mounts_under(bundle.path()) {
        found.push(format!("mount {}", mp.display()));
    }
    let cgroup = format!("/{CGROUP_PARENT}/{}", bundle.id);
    if let Ok(procs) = fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let in_cgroup = fs::read_to_string(entry.path().join("cgroup"))
                .map(|c| c.lines().any(|l| l.ends_with(&cgroup)))
                .unwrap_or(false);
            let rooted = fs::read_link(entry.path().join("root"))
                .is_ok_and(|r| r.starts_with(bundle.path()));
            if in_cgroup || rooted {
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push(format!("process {pid} ({cmdline})"));
            }
        }
    }
    found
}

/// Panics listing the leftovers of `id` / `bundle`, if any.
#[track_caller]
pub fn assert_no_leftovers(rt: &Runtime, id: &str, bundle: &Bundle) {
    let found = leftovers(rt, id, bundle);
    assert!(
        found.is_empty(),
        "container {id:?} left things behind: {found:#?}"
    );
}

/// A container made from a bundle. Drop force-deletes it (ignoring errors) and then
/// the bundle removes its directory.
pub struct Container {
    pub rt: Runtime,
    pub bundle: Bundle,
    pub id: String,
}

impl Container {
    /// Writes the bundle's config and takes ownership of it.
    pub fn new(rt: &Runtime, bundle: Bundle) -> Container {
        bundle.write();
        Container {
            rt: rt.clone(),
            id: bundle.id.clone(),
            bundle,
        }
    }

    /// Rewrites config.json after further edits to `self.bundle.config`.
    pub fn rewrite(&self) {
        self.bundle.write();
    }

    /// File receiving the container's (and the creating command's) stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.bundle.path().join("container.stdout")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.bundle.path().join("container.stderr")
    }

    /// Starts a verb whose stdio the container inherits (create, run).
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(
            &mut self.rt.command(args),
            Some(&self.stdout_path()),
            Some(&self.stderr_path()),
        )
    }

    /// `create --bundle B <id>` (the container's stdio goes to the container files).
    pub fn create(&self) -> Outcome {
        self.spawn(&["create", "--bundle", self.bundle.path_str(), &self.id])
            .wait(COMMAND_TIMEOUT)
    }

    /// `run --bundle B <id>` in the foreground, to completion.
    pub fn run(&self) -> Outcome {
        self.spawn(&["run", "--bundle", self.bundle.path_str(), &self.id])
            .wait(COMMAND_TIMEOUT)
    }

    /// Runs another verb on this container: `<verb> <extra...> <id> <after...>`.
    pub fn verb(&self, verb: &str, extra: &[&str], after: &[&str]) -> Outcome {
        let mut args = vec![verb];
        args.extend_from_slice(extra);
        args.push(&self.id);
        args.extend_from_slice(after);
        self.rt.run(&args)
    }

    pub fn start(&self) -> Outcome {
        self.verb("start", &[], &[])
    }

    pub fn kill(&self, signal: &str) -> Outcome {
        self.verb("kill", &[], &[signal])
    }

    pub fn delete(&self, force: bool) -> Outcome {
        self.verb("delete", if force { &["--force"] } else { &[] }, &[])
    }

    pub fn state(&self) -> Value {
        self.rt.state(&self.id)
    }

    pub fn wait_status(&self, want: &str) -> Value {
        self.rt.wait_status(&self.id, want)
    }

    /// The host pid from `state`.
    pub fn pid(&self) -> i32 {
        let state = self.state();
        let pid = state["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {state}"));
        i32::try_from(pid).expect("pid fits i32")
    }

    /// create + start, panicking on failure.
    pub fn create_and_start(&self) {
        self.create().ok();
        self.start().ok();
    }

    /// What the container has printed so far on stdout.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Waits until the container's stdout contains `text`; returns all of stdout.
    pub fn wait_stdout(&self, text: &str) -> String {
        wait_for(&format!("{text:?} on the stdout of {}", self.id), || {
            let out = self.stdout();
            out.contains(text).then_some(out)
        })
    }

    /// Creates, starts, waits for the container to stop, deletes it and returns its
    /// stdout; panics (with stderr) on any failure.
    pub fn output(&self) -> String {
        self.create_and_start();
        self.wait_status("stopped");
        self.delete(false).ok();
        self.stdout()
    }

    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        self.bundle.cgroup_dir(controller)
    }

    /// Leftovers after the container is gone.
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        assert_no_leftovers(&self.rt, &self.id, &self.bundle);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if self.rt.root.join(&self.id).exists() {
            let mut cmd = self.rt.command(&["delete", "--force", &self.id]);
            if let Err(e) =
                Running::spawn(&mut cmd, None, None).try_wait_for(Duration::from_secs(30))
            {
                eprintln!("cleanup of container {}: {e}", self.id);
            }
        }
    }
}

/// Fields of one /proc/self/mountinfo line.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub root: String,
    pub mount_point: String,
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

/// Parses mountinfo text (as printed by `cat /proc/self/mountinfo` in a container).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || sep < 6 {
            continue;
        }
        entries.push(MountEntry {
            root: unescape_mountinfo(fields[3]),
            mount_point: unescape_mountinfo(fields[4]),
            options: fields[5].split(',').map(String::from).collect(),
            fs_type: fields[sep + 1].to_string(),
            source: unescape_mountinfo(fields[sep + 2]),
            super_options: fields[sep + 3].split(',').map(String::from).collect(),
        });
    }
    entries
}

/// Parses `/proc/<pid>/status` text into `Key -> value` (value trimmed).
pub fn parse_status(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
