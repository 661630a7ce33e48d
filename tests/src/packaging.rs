//! Harness for the packaging tests (tests/tests/packaging.rs): a scratch root in which a
//! package is installed for real and removed again, without touching this host.
//!
//! [`ScratchRoot`] is an overlay of this host's `/` (read-only lower layer) whose writes go
//! to an upper layer on a private tmpfs, mounted under a unique temp directory, with
//! `/proc` and `/dev` inside. Commands run in it with `chroot`, so apt, dpkg, the
//! maintainer scripts, systemd-analyze, man and the shells are this host's own. Everything
//! a command leaves behind is in the upper layer, which [`ScratchRoot::leftovers`] lists.
//! Dropping the root unmounts everything, also when a test panics.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::runtime::{Outcome, Running};

/// Bound on one command in the scratch root (apt, man, a shell): only a hang reaches it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// The PATH commands get in the scratch root.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the chrooted commands' home is (removed before leftovers are listed): fish, man
/// and the shells may write caches and histories there.
pub const HOME: &str = "/tmp/berth-packaging-home";

/// Upper-layer paths that only dpkg, apt and man-db's index write, kept after a package is
/// purged on every Debian system (its status, logs, caches), and what the checks write.
pub const BOOKKEEPING: &[&str] = &[
    "var/lib/dpkg/",
    "var/lib/apt/",
    "var/cache/apt/",
    "var/cache/debconf/",
    "var/cache/man/",
    "var/cache/ldconfig/",
    "var/log/apt/",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    // written by `systemd-analyze verify`, the tests' own check
    "run/systemd/systemd-units-load",
];

pub struct ScratchRoot {
    base: PathBuf,
    /// The merged view: the scratch root's `/` as seen from the host.
    pub merged: PathBuf,
    upper: PathBuf,
    mounted: Vec<PathBuf>,
}

impl ScratchRoot {
    /// Mounts a new scratch root (root only).
    pub fn create() -> ScratchRoot {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("berth-pkg-{}-{n}", std::process::id()));
        let mut root = ScratchRoot {
            merged: base.join("merged"),
            upper: base.join("rw/upper"),
            base,
            mounted: Vec::new(),
        };
        let rw = root.base.join("rw");
        for dir in [&rw, &root.merged] {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        // The upper layer lives on its own tmpfs: an upper directory on the lower layer's
        // filesystem (/) would overlap it, which overlayfs refuses.
        root.mount(
            Some("tmpfs"),
            &rw,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=2g"),
        );
        for dir in ["upper", "work"] {
            fs::create_dir(rw.join(dir)).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        }
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            root.upper.display(),
            rw.join("work").display()
        );
        let merged = root.merged.clone();
        root.mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(&options),
        );
        root.mount(
            Some("proc"),
            &merged.join("proc"),
            Some("proc"),
            MsFlags::empty(),
            None,
        );
        root.mount(
            Some("/dev"),
            &merged.join("dev"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        );
        root
    }

    fn mount(
        &mut self,
        src: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) {
        mount(src, target, fstype, flags, data).unwrap_or_else(|e| {
            panic!(
                "mount {src:?} on {} ({fstype:?}, {data:?}): {e}",
                target.display()
            )
        });
        self.mounted.push(target.to_path_buf());
    }

    /// The host path of `path` inside the scratch root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.merged.join(path.trim_start_matches('/'))
    }

    /// Runs `script` with `sh -c` inside the scratch root (clean environment, HOME=[`HOME`]).
    pub fn sh(&self, script: &str) -> Outcome {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.merged)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", HOME)
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        Running::spawn(&mut cmd, None, None).wait(STEP_TIMEOUT)
    }

    /// Everything in the upper layer that is not in this host's `/` already and is not in
    /// `allowed` (prefixes of paths relative to `/`): new files, symlinks and directories,
    /// and whiteouts (something of the host's removed). A directory of the host copied up
    /// because something was written inside it is no leftover by itself.
    pub fn leftovers(&self, allowed: &[&str]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        self.scan(&self.upper, allowed, &mut found);
        found
    }

    fn scan(&self, dir: &Path, allowed: &[&str], found: &mut BTreeSet<String>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
            let path = entry.path();
            let rel = path
                .strip_prefix(&self.upper)
                .unwrap_or(&path)
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let host = Path::new("/").join(&rel);
            if meta.is_dir() {
                if !fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir())
                    && !is_allowed(&rel, allowed)
                {
                    found.insert(format!("/{rel}/ (new directory)"));
                }
                self.scan(&path, allowed, found);
            } else if is_allowed(&rel, allowed) {
                continue;
            } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
                found.insert(format!("/{rel} (removed from the host's files)"));
            } else {
                found.insert(format!("/{rel}"));
            }
        }
    }
}

fn is_allowed(rel: &str, allowed: &[&str]) -> bool {
    allowed
        .iter()
        .any(|a| rel == a.trim_end_matches('/') || (a.ends_with('/') && rel.starts_with(a)))
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        // Innermost first; lazily, so that a process still inside cannot pin a mount.
        let mut all_unmounted = true;
        for target in self.mounted.iter().rev() {
            if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
                eprintln!("scratch root: unmounting {}: {e}", target.display());
                all_unmounted = false;
            }
        }
        // Never recursively: with a mount left, merged/dev would be the host's /dev.
        if all_unmounted {
            for dir in [&self.merged, &self.base.join("rw"), &self.base] {
                if let Err(e) = fs::remove_dir(dir) {
                    eprintln!("scratch root: removing {}: {e}", dir.display());
                }
            }
        }
    }
}
