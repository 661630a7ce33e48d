//! Device nodes in the container's /dev: the defaults every container gets, the spec's
//! own, and the standard symlinks. Inside a user namespace, where mknod is refused,
//! the host's node is bind-mounted onto an empty file instead.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::process::protocol::InitError;
use crate::spec::{DevicePlan, Plan};
use crate::sys::fs::{self as sfs, Leaf};
use crate::sys::mount::mount;

/// (name, major, minor): null, zero, full, random, urandom, tty.
pub const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// (link name in /dev, target).
pub const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// The full device list: defaults first, then the spec's (which may override them).
pub fn device_list(plan: &Plan) -> Vec<DevicePlan> {
    let mut out: Vec<DevicePlan> = DEFAULT_DEVICES
        .iter()
        .map(|(name, major, minor)| DevicePlan {
            path: PathBuf::from("/dev").join(name),
            kind: 'c',
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect();
    for d in &plan.devices {
        out.retain(|x| x.path != d.path);
        out.push(d.clone());
    }
    out
}

pub fn create(root: &OwnedFd, plan: &Plan, in_userns: bool) -> Result<(), InitError> {
    let root_fd = root.as_raw_fd();
    // Most nodes share /dev: its descriptor is looked up once, not once per node.
    let mut last_dir: Option<(PathBuf, OwnedFd)> = None;
    for d in device_list(plan) {
        let parent = d.path.parent().unwrap_or(Path::new("/dev"));
        let name = d
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| InitError::msg("creating device", Some(&d.path), "no file name"))?;
        if in_userns {
            let target = sfs::mkdir_all_in_root(root_fd, &d.path, Leaf::File)
                .map_err(|e| InitError::io("creating device mount point", Some(&d.path), &e))?;
            mount(
                Some(&d.path.to_string_lossy()),
                &sfs::proc_fd_path(&target),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| InitError::io("bind-mounting device", Some(&d.path), &e))?;
            continue;
        }
        let dir = match &last_dir {
            Some((p, fd)) if p == parent => fd,
            _ => {
                let dir = sfs::mkdir_all_in_root(root_fd, parent, Leaf::Dir)
                    .map_err(|e| InitError::io("creating device directory", Some(parent), &e))?;
                // A real directory descriptor: mknodat refuses O_PATH ones on some kernels.
                let dir = sfs::open_in_root(root_fd, parent, libc::O_DIRECTORY | libc::O_RDONLY)
                    .unwrap_or(dir);
                &last_dir.insert((parent.to_path_buf(), dir)).1
            }
        };
        let type_bits = match d.kind {
            'b' => libc::S_IFBLK,
            'p' => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let dev = libc::makedev(d.major as u32, d.minor as u32);
        sfs::make_node(dir, &name, type_bits, d.mode, dev, d.uid, d.gid)
            .map_err(|e| InitError::io("creating device", Some(&d.path), &e))?;
    }
    let dev = match last_dir {
        Some((p, fd)) if p == Path::new("/dev") => fd,
        _ => {
            let dev = sfs::mkdir_all_in_root(root_fd, Path::new("/dev"), Leaf::Dir)
                .map_err(|e| InitError::io("opening", Some(Path::new("/dev")), &e))?;
            sfs::open_in_root(
                root_fd,
                Path::new("/dev"),
                libc::O_DIRECTORY | libc::O_RDONLY,
            )
            .unwrap_or(dev)
        }
    };
    for (name, target) in DEV_SYMLINKS {
        sfs::symlink_at(&dev, target, name).map_err(|e| {
            InitError::io("creating symlink", Some(&Path::new("/dev").join(name)), &e)
        })?;
    }
    // With a devpts instance at /dev/pts, /dev/ptmx must be its ptmx.
    let has_pts = plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/pts") && m.fstype == "devpts");
    if has_pts {
        sfs::symlink_at(&dev, "pts/ptmx", "ptmx")
            .map_err(|e| InitError::io("creating symlink", Some(Path::new("/dev/ptmx")), &e))?;
    }
    Ok(())
}
