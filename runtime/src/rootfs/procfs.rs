//! procfs by descriptor (CVE-2025-52881 class). The container's /proc is mounted
//! detached and attached onto its mount point, and berth keeps the mount's own root
//! descriptor, checked to be procfs; sysctls, oom_score_adj, and the masked and
//! read-only paths under /proc are reached from it, never by a path another container
//! sharing this rootfs could swap. After pivot_root every other path is resolved from
//! the container's root and every mount attached by descriptor. Last, the container's
//! /proc must still be that mount, or the start is refused.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{io, Result};
use crate::process::protocol::InitError;
use crate::spec::{NsKind, Plan};
use crate::sys::fs as sfs;
use crate::sys::mountfd::{self, Attrs, MOUNT_ATTR_RDONLY};

/// A procfs instance berth made: the container's /proc mount, or a private one that
/// is never attached (when the spec mounts no /proc but sets sysctls).
pub struct Proc {
    root: OwnedFd,
    /// It is the mount at the container's /proc, to be found there at the end.
    at_proc: bool,
}

impl Proc {
    /// Wraps the root of a procfs mount berth just made, after checking its magic.
    pub fn mounted(root: OwnedFd, at_proc: bool) -> Result<Proc> {
        let magic = mountfd::fs_magic(root.as_fd())
            .map_err(|e| InitError::io("checking procfs", Some(Path::new("/proc")), &e))?;
        if magic != libc::PROC_SUPER_MAGIC {
            return Err(InitError::msg(
                "checking procfs",
                Some(Path::new("/proc")),
                format!("filesystem magic {magic:#x} is not procfs"),
            ));
        }
        Ok(Proc { root, at_proc })
    }

    /// A private procfs of this pid namespace, attached nowhere.
    pub fn private() -> Result<Proc> {
        let root = mountfd::new_fs("proc", "", 0)
            .map_err(|e| InitError::io("mounting a private procfs", None, &e))?;
        Proc::mounted(root, false)
    }

    /// Opens `rel` (relative to /proc) strictly inside this procfs.
    fn open(&self, rel: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        sfs::open_beneath(self.root.as_raw_fd(), rel, flags)
    }

    /// Writes `value` to `rel` (relative to /proc).
    fn write(&self, rel: &Path, value: &str) -> Result<()> {
        let shown = Path::new("/proc").join(rel);
        let fd = self
            .open(rel, libc::O_WRONLY)
            .map_err(io("opening", &shown))?;
        std::fs::File::from(fd)
            .write_all(value.as_bytes())
            .map_err(io("writing", &shown))
    }
}

/// The namespaced sysctls, each written through the container's procfs.
pub fn write_sysctls(proc: &Proc, sysctl: &[(String, String)]) -> Result<()> {
    for (k, v) in sysctl {
        let rel = PathBuf::from("sys").join(k.replace('.', "/"));
        proc.write(&rel, v)?;
    }
    Ok(())
}

/// process.oomScoreAdj, for init itself.
pub fn write_oom_score_adj(proc: &Proc, adj: i32) -> Result<()> {
    let rel = PathBuf::from(std::process::id().to_string()).join("oom_score_adj");
    proc.write(&rel, &adj.to_string())
}

/// Where a masked or read-only path is: inside the container's procfs (by its
/// descriptor) or anywhere else in the container's root. `None` when it does not exist.
fn resolve(root: &OwnedFd, proc: Option<&Proc>, path: &Path) -> Result<Option<OwnedFd>> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW;
    let under_proc = proc
        .filter(|p| p.at_proc)
        .and_then(|p| path.strip_prefix("/proc").ok().map(|rel| (p, rel)));
    let found = match under_proc {
        Some((p, rel)) => p.open(rel, flags),
        None => sfs::open_in_root(root.as_raw_fd(), path, flags),
    };
    match found {
        Ok(fd) => Ok(Some(fd)),
        // EXDEV: inside procfs, the path runs into a mount berth made (a mask or a
        // read-only bind over it or a parent), which already covers it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EXDEV)) => Ok(None),
        Err(e) => Err(InitError::io("opening", Some(path), &e)),
    }
}

/// Masked paths (a read-only tmpfs over a directory, the container's /dev/null over
/// anything else), then read-only paths (a read-only bind of each over itself, masks
/// below included); each made detached and attached onto the descriptor of its target.
pub fn protect(root: &OwnedFd, proc: Option<&Proc>, plan: &Plan) -> Result<()> {
    let mut dev_null: Option<OwnedFd> = None;
    // One empty read-only tmpfs covers every masked directory: the first is mounted,
    // the others are binds of it (no superblock each to make, and to tear down when
    // the container exits).
    let mut empty_dir: Option<OwnedFd> = None;
    for p in &plan.masked_paths {
        let Some(target) = resolve(root, proc, p)? else {
            continue;
        };
        let is_dir = sfs::file_type(&target).map_err(io("masking", p))? == libc::S_IFDIR;
        let cover = if is_dir {
            match &empty_dir {
                Some(first) => mountfd::clone_tree(first.as_raw_fd(), Path::new(""), false)
                    .map_err(io("masking", p))?,
                None => {
                    mountfd::new_fs("tmpfs", "", MOUNT_ATTR_RDONLY).map_err(io("masking", p))?
                }
            }
        } else {
            if dev_null.is_none() {
                dev_null = Some(container_dev_null(root)?);
            }
            let null = dev_null.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            mountfd::clone_tree(null, Path::new(""), false).map_err(io("masking", p))?
        };
        mountfd::attach(&cover, target.as_fd()).map_err(io("masking", p))?;
        if is_dir && empty_dir.is_none() {
            // Attached now, so in this mount namespace: a source open_tree may clone.
            empty_dir = Some(cover);
        }
    }
    let in_userns = plan.namespaces.has(NsKind::User);
    for p in &plan.readonly_paths {
        let Some(target) = resolve(root, proc, p)? else {
            continue;
        };
        let tree = mountfd::clone_tree(target.as_raw_fd(), Path::new(""), true)
            .map_err(io("bind-mounting read-only path", p))?;
        let ro = Attrs {
            set: MOUNT_ATTR_RDONLY,
            ..Attrs::default()
        };
        match mountfd::set_attrs(tree.as_fd(), false, ro) {
            Ok(()) => mountfd::attach(&tree, target.as_fd()).map_err(io("bind-mounting", p))?,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                mountfd::attach(&tree, target.as_fd()).map_err(io("bind-mounting", p))?;
                super::mounts::remount_in_root(root.as_raw_fd(), p, libc::MS_RDONLY, in_userns)?;
            }
            Err(e) => return Err(InitError::io("remounting read-only", Some(p), &e)),
        }
    }
    Ok(())
}

/// The container's /dev/null, checked to be the null device (c 1:3).
fn container_dev_null(root: &OwnedFd) -> Result<OwnedFd> {
    let p = Path::new("/dev/null");
    let fd = sfs::open_in_root(root.as_raw_fd(), p, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(io("opening", p))?;
    let (kind, rdev) = sfs::type_and_rdev(&fd).map_err(io("checking", p))?;
    if kind != libc::S_IFCHR || rdev != libc::makedev(1, 3) {
        return Err(InitError::msg(
            "masking paths",
            Some(p),
            "the container's /dev/null is not the null device (c 1:3)",
        ));
    }
    Ok(fd)
}

/// The container's /proc must still be the procfs berth mounted: refuses the start
/// when it was replaced (another container renaming the mount point away and putting
/// something else at /proc).
pub fn check_still_mounted(root: &OwnedFd, proc: Option<&Proc>) -> Result<()> {
    let Some(p) = proc.filter(|p| p.at_proc) else {
        return Ok(());
    };
    let here = sfs::open_in_root(
        root.as_raw_fd(),
        Path::new("/proc"),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(io("checking", Path::new("/proc")))?;
    let ids =
        mountfd::mount_id(here.as_fd()).and_then(|h| Ok((h, mountfd::mount_id(p.root.as_fd())?)));
    match ids {
        Ok((h, ours)) if h == ours => Ok(()),
        Ok(_) => Err(InitError::msg(
            "checking",
            Some(Path::new("/proc")),
            "the container's /proc is no longer the procfs berth mounted (was it replaced during the start?)",
        )),
        Err(e) => Err(InitError::io("checking", Some(Path::new("/proc")), &e)),
    }
}
