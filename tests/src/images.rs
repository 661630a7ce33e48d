//! Helpers for the image tests (tests/tests/images.rs).
//!
//! - [`ImageEnv`]: runs `berth image ...` against its own temporary store and runtime root,
//!   and on drop removes every container and mount it left, even when the test panicked.
//! - [`fixture`]: the multi-layer busybox image built with the real `umoci` and `skopeo`.
//! - [`layout`]: hand-made OCI layouts and raw tar entries (hostile ones included).
//! - [`tree`]: a file-by-file description of a rootfs, for comparing two unpacks.

pub mod corpus;
pub mod fake_registry;
pub mod fixture;
pub mod layout;
pub mod proxy;
pub mod registry;
pub mod token_server;
pub mod tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single `berth` command may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The result of one finished command, with everything needed to explain a failure.
#[derive(Debug)]
pub struct Outcome {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the command, exit status and both streams unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.status.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command failed (non-zero exit, not killed by a signal).
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "command should have failed with an error: {self}"
        );
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with stdout/stderr captured through files (no pipe deadlock),
/// killing it and panicking after [`COMMAND_TIMEOUT`].
pub fn run_command(cmd: Command, scratch: &Path) -> Outcome {
    run_command_within(cmd, scratch, COMMAND_TIMEOUT)
}

/// [`run_command`] with another bound on how long the command may take.
pub fn run_command_within(mut cmd: Command, scratch: &Path, timeout: Duration) -> Outcome {
    let cmdline = format!("{cmd:?}");
    let (out_path, err_path) = capture_paths(scratch);
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout capture"))
        .stderr(fs::File::create(&err_path).expect("create stderr capture"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let status = wait_with_timeout(&mut child, timeout)
        .unwrap_or_else(|| panic!("{cmdline} did not finish within {timeout:?}"));
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    Outcome {
        cmdline,
        status,
        stdout,
        stderr,
    }
}

fn capture_paths(scratch: &Path) -> (PathBuf, PathBuf) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (
        scratch.join(format!("cmd-{n}.stdout")),
        scratch.join(format!("cmd-{n}.stderr")),
    )
}

/// Polls `child` until it exits or `timeout` passes (then kills it and returns None).
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a program that must succeed (a fixture tool such as umoci or skopeo).
#[track_caller]
pub fn run_tool(program: &str, args: &[&str], scratch: &Path) -> Outcome {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, scratch).ok()
}

/// A private image store and runtime root for one test, torn down on drop.
pub struct ImageEnv {
    pub berth: PathBuf,
    dir: tempfile::TempDir,
}

impl Default for ImageEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageEnv {
    /// Checks the prerequisites (root, the built `berth` and the `berth-image` it hands
    /// `image` commands to) and makes the directories.
    pub fn new() -> Self {
        crate::require_root();
        let berth = crate::workspace_bin("berth");
        crate::workspace_bin("berth-image");
        let dir = tempfile::Builder::new()
            .prefix("berth-img-")
            .tempdir()
            .expect("create test dir");
        for sub in ["store", "root", "scratch", "work"] {
            fs::create_dir(dir.path().join(sub)).expect("create test subdir");
        }
        Self { berth, dir }
    }

    /// The image store (`berth image --store`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The runtime state root (`berth --root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A directory the test may fill with fixtures and outputs.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// `berth --root ROOT image --store STORE ARGS...`, not yet started.
    pub fn image_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.berth);
        cmd.arg("--root")
            .arg(self.root())
            .arg("image")
            .arg("--store")
            .arg(self.store())
            .args(args);
        cmd
    }

    /// Runs `berth image ARGS...` to completion with `input` on its stdin (a password
    /// for `login --password-stdin`).
    pub fn image_with_stdin(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::process::Stdio;
        let mut cmd = self.image_command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        crate::output_with_input(&mut cmd, input.as_bytes()).expect("run berth image")
    }

    /// Runs `berth image ARGS...` to completion.
    pub fn image(&self, args: &[&str]) -> Outcome {
        run_command(self.image_command(args), &self.scratch())
    }

    /// Runs `berth image ARGS...` and panics if it takes longer than `timeout` (a command
    /// that blocks forever on a hostile image).
    pub fn image_within(&self, args: &[&str], timeout: Duration) -> Outcome {
        run_command_within(self.image_command(args), &self.scratch(), timeout)
    }

    /// Snapshot directories under the store's containers/ (what `image run` made).
    pub fn snapshot_dirs(&self) -> Vec<String> {
        fs::read_dir(self.store().join("containers"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs any command with this environment's capture directory.
    pub fn run(&self, cmd: Command) -> Outcome {
        run_command(cmd, &self.scratch())
    }

    /// `berth image import PATH --name REF`.
    pub fn import(&self, path: &Path, name: &str) -> Outcome {
        let path = path.to_str().expect("utf-8 fixture path");
        self.image(&["import", path, "--name", name])
    }

    /// `berth image unpack REF DIR`, which must succeed.
    #[track_caller]
    pub fn unpack(&self, reference: &str, bundle: &Path) {
        let bundle = bundle.to_str().expect("utf-8 bundle path");
        self.image(&["unpack", reference, bundle]).ok();
    }

    /// The images `image ls --format json` reports (a JSON array).
    #[track_caller]
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.image(&["ls", "--format", "json"]).ok();
        let value: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("`image ls --format json` is not JSON ({e}): {out}"));
        match value {
            serde_json::Value::Array(items) => items,
            other => panic!("`image ls --format json` is not an array: {other}"),
        }
    }

    /// Panics unless the store lists no image at all.
    #[track_caller]
    pub fn assert_store_empty(&self, context: &str) {
        let images = self.list();
        assert!(
            images.is_empty(),
            "{context}: the store should list no image, it lists {images:?}"
        );
    }

    /// Total bytes of regular files under the store (mounts inside it are not entered).
    pub fn store_bytes(&self) -> u64 {
        tree::bytes_under(&self.store())
    }

    /// Paths under the store whose file name is `name` (mounts inside it are not entered).
    pub fn find_in_store(&self, name: &str) -> Vec<PathBuf> {
        tree::find_named(&self.store(), name)
    }

    /// Panics if a container is left in the runtime root or a mount under the test dir.
    #[track_caller]
    pub fn assert_nothing_left_running(&self, context: &str) {
        let containers: Vec<_> = fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            containers.is_empty(),
            "{context}: containers left in the runtime root: {containers:?}"
        );
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "{context}: mounts left: {mounts:?}");
    }

    /// Deletes every container in the runtime root and unmounts everything under our dir.
    fn cleanup(&self) {
        if let Ok(entries) = fs::read_dir(self.root()) {
            for entry in entries.flatten() {
                let id = entry.file_name();
                let mut cmd = Command::new(&self.berth);
                cmd.arg("--root")
                    .arg(self.root())
                    .arg("delete")
                    .arg("--force")
                    .arg(&id);
                let _ = run_command(cmd, &self.scratch());
                if let Some(runtime) = std::env::var_os("BERTH_IMAGE_RUNTIME") {
                    let mut cmd = Command::new(runtime);
                    cmd.arg("--root")
                        .arg(self.root())
                        .arg("delete")
                        .arg("--force")
                        .arg(&id);
                    let _ = run_command(cmd, &self.scratch());
                }
            }
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for ImageEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Mount points at or below `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Undoes the octal escapes (`\040` for space) of /proc/self/mountinfo.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file outside every root whose content and link count must never change.
pub struct Sentinel {
    dir: tempfile::TempDir,
}

/// What a sentinel file holds; any change means an entry escaped its root.
pub const SENTINEL_CONTENT: &str = "sentinel: must stay unchanged\n";

impl Default for Sentinel {
    fn default() -> Self {
        Self::new()
    }
}

impl Sentinel {
    /// A fresh directory under /tmp (short path, so hostile names fit a tar header)
    /// holding the file `sentinel`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bs")
            .tempdir_in("/tmp")
            .expect("create sentinel dir");
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join("sentinel");
        fs::write(&file, SENTINEL_CONTENT).expect("write sentinel");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod sentinel");
        Self { dir }
    }

    /// The sentinel directory, absolute.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sentinel directory without its leading `/`.
    pub fn dir_relative(&self) -> String {
        self.dir()
            .to_str()
            .expect("utf-8 tmp path")
            .trim_start_matches('/')
            .to_string()
    }

    /// Panics unless the directory holds exactly the untouched sentinel file.
    #[track_caller]
    pub fn assert_unchanged(&self, context: &str) {
        use std::os::unix::fs::MetadataExt;
        let file = self.dir().join("sentinel");
        let meta = fs::symlink_metadata(&file)
            .unwrap_or_else(|e| panic!("{context}: sentinel {} is gone: {e}", file.display()));
        assert!(meta.is_file(), "{context}: sentinel replaced by a non-file");
        assert_eq!(
            fs::read_to_string(&file).expect("read sentinel"),
            SENTINEL_CONTENT,
            "{context}: sentinel content changed"
        );
        assert_eq!(
            meta.nlink(),
            1,
            "{context}: sentinel got a hard link from somewhere"
        );
        assert_eq!(
            meta.mode() & 0o7777,
            0o644,
            "{context}: sentinel mode changed"
        );
        let names: Vec<_> = fs::read_dir(self.dir())
            .expect("read sentinel dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("sentinel")],
            "{context}: something was created next to the sentinel"
        );
    }
}

/// The host's OCI architecture name.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
