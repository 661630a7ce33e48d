//! Named network namespaces for containers, as `ip netns add` makes them: a new namespace
//! kept alive by a bind mount of it on a file (for example `/run/berth/netns/<id>`), whose
//! path is what CNI plugins get as `CNI_NETNS` and what config.json names as the
//! container's network namespace.
//!
//! [`create`] makes the namespace on a short-lived thread of its own (unshare affects only
//! the calling thread), so it is safe in a multithreaded daemon: no fork happens. The
//! caller's own namespace never changes.
//!
//! Not done (iproute2 does it for /run/netns): making the directory a shared mount, so that
//! unmounting a namespace file also unmounts copies in mount namespaces created while it
//! existed. A container whose rootfs is pivoted (berth's, runc's) drops those copies.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// What failed, with the path and the step.
#[derive(Debug, thiserror::Error)]
#[error("network namespace {path}: {step}: {source}")]
pub struct NetnsError {
    pub path: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path, step: &'static str) -> impl FnOnce(io::Error) -> NetnsError {
    let path = path.to_path_buf();
    move |source| NetnsError { path, step, source }
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates a new network namespace held at `path` (which must not exist; its directory
/// must). On failure nothing is left behind.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(err(path, "create the mount point"))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), (&'static str, io::Error)> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare(CLONE_NEWNET)", errno(e)))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| ("bind mount /proc/thread-self/ns/net", errno(e)))
    })
    .join();
    let result = match made {
        Ok(Ok(())) => return Ok(()),
        Ok(Err((step, source))) => NetnsError {
            path: path.to_path_buf(),
            step,
            source,
        },
        Err(_) => NetnsError {
            path: path.to_path_buf(),
            step: "namespace thread",
            source: io::Error::other("panicked"),
        },
    };
    let _ = std::fs::remove_file(path);
    Err(result)
}

/// Releases the namespace held at `path` (it ends once no process is in it) and removes
/// the file. A path that does not exist is fine (already removed). Every mount stacked on
/// the file is detached (a copy propagated onto it would otherwise keep it busy).
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    if !path.exists() {
        return Ok(());
    }
    for _ in 0..MAX_STACKED {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) => break, // not (or no longer) mounted
            Err(e) => return Err(err(path, "unmount")(errno(e))),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(path, "remove")(e)),
    }
}

/// Most mounts [`remove`] detaches from one file.
const MAX_STACKED: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn create_holds_a_new_namespace_and_remove_releases_it() {
        assert!(
            root(),
            "needs root (a new network namespace and a bind mount)"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ns1");
        create(&p).unwrap();
        let held = std::fs::metadata(&p).unwrap();
        let mine = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        assert_eq!(held.dev(), mine.dev(), "an nsfs file is mounted there");
        assert_ne!(held.ino(), mine.ino(), "a namespace other than ours");
        // a second one is another namespace
        let q = d.path().join("ns2");
        create(&q).unwrap();
        assert_ne!(std::fs::metadata(&q).unwrap().ino(), held.ino());
        assert!(create(&p)
            .unwrap_err()
            .to_string()
            .contains("create the mount point"));
        remove(&p).unwrap();
        remove(&q).unwrap();
        assert!(!p.exists() && !q.exists());
        remove(&p).unwrap();
    }

    #[test]
    fn remove_detaches_mounts_stacked_on_the_file() {
        assert!(root(), "needs root (bind mounts)");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ns");
        create(&p).unwrap();
        // a second mount of the same namespace on top of the first
        mount(Some(&p), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&p.display().to_string()), "{mounts}");
    }

    #[test]
    fn create_in_a_missing_directory_fails_cleanly() {
        let e = create(Path::new("/nonexistent-berth-dir/ns")).unwrap_err();
        assert_eq!(e.step, "create the mount point");
        assert!(e.to_string().contains("/nonexistent-berth-dir/ns"));
    }
}
