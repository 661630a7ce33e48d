//! Shared helpers for Berth's end-to-end tests.
//!
//! Every test here runs real binaries as root against the real kernel. A missing
//! prerequisite is a failure with a message saying what to install, never a silent pass.

pub mod cluster;
pub mod images;
pub mod packaging;
pub mod runtime;

use std::path::PathBuf;

/// The directory holding the workspace's built binaries (`target/<profile>`),
/// found from the running test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Path of a workspace binary (`berth`, `berthd`, `berthctl`), or a panic telling
/// how to build it. `BERTH_BIN_DIR` overrides the directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("BERTH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(target_dir);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// Panics unless running as root: these tests need real namespaces, mounts and cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "Berth's integration tests must run as root (they create namespaces, mounts and cgroups)"
    );
}

/// Panics with an install hint unless `program` is on PATH.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{program}` is required by this test: install it with `apt-get install -y {debian_package}`");
}

/// Runs `cmd` with `input` on its stdin (closed once written) and waits for it: its
/// status and whatever of stdout and stderr the caller piped.
pub fn output_with_input(
    cmd: &mut std::process::Command,
    input: &[u8],
) -> std::io::Result<std::process::Output> {
    use std::io::Write as _;
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    child.wait_with_output()
}
