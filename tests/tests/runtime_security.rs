//! Escape paths from runc's advisory classes, reproduced against the runtime: each test
//! plays the container (or a second container writing this one's rootfs) and asserts
//! that nothing of the host is reached. Racing tests repeat their race a fixed number
//! of times, chosen so that the unfixed runtime lost it in every run tried; the count
//! is given in each test.
//!
//! exec.rs: processes entering a container (CVE-2019-5736 and CVE-2024-21626 classes,
//! the exec trampoline, cleanup of a failed exec). mounts.rs: a second container
//! racing berth over this one's rootfs (CVE-2021-30465, CVE-2024-45310 and
//! CVE-2025-52881 classes).

#[path = "runtime_security/exec.rs"]
mod exec;
#[path = "runtime_security/mounts.rs"]
mod mounts;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_tests::runtime::TestEnv;

/// A file that exists only on the host, at a path no container has: a process that
/// finds it through /proc/<pid>/root, cwd or fd has reached the host's filesystem.
pub struct HostMarker {
    pub path: PathBuf,
}

impl HostMarker {
    pub fn new(env: &TestEnv) -> HostMarker {
        let path = env.path().join("host-only-marker");
        fs::write(&path, "host").expect("write the host marker");
        HostMarker { path }
    }
}

/// The runtime binary under test, checked to be on a writable filesystem (otherwise
/// reaching it proves nothing), as `dev:ino`.
pub fn writable_runtime_binary(env: &TestEnv) -> (PathBuf, String) {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let bin = fs::canonicalize(&env.rt.bin).expect("resolve the runtime binary");
    let flags = statvfs(&bin)
        .expect("statvfs of the runtime binary")
        .flags();
    assert!(
        !flags.contains(FsFlags::ST_RDONLY),
        "the test needs the runtime binary on a writable filesystem ({})",
        bin.display()
    );
    let meta = fs::metadata(&bin).expect("stat of the runtime binary");
    let dev_ino = format!("{}:{}", meta.dev(), meta.ino());
    (bin, dev_ino)
}

/// `../` enough times to climb from any host directory to `/`.
pub fn up_to_root() -> String {
    "../".repeat(24)
}

/// The path of `p` relative to `/` (for appending to a climb).
pub fn rel(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}
