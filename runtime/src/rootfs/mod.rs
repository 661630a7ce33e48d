//! Building the container's root filesystem inside its mount namespace: propagation,
//! the rootfs bind, the spec's mounts (destinations resolved inside the rootfs with
//! openat2 RESOLVE_IN_ROOT, mounts attached by descriptor: see [`mounts`]), devices,
//! pivot_root, then sysctls, masked and read-only paths through the container's own
//! procfs ([`procfs`]).

mod copyup;
pub mod devices;
pub mod idmap;
mod mountinfo;
pub mod mounts;
pub mod procfs;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::cgroups::CgroupHandle;
use crate::process::protocol::InitError;
use crate::spec::{MountKind, NsKind, Plan};
use crate::sys::fs::{self as sfs, Leaf};
use crate::sys::mount::{mount, umount2};
use crate::sys::mountfd;

type Result<T> = std::result::Result<T, InitError>;

fn io<'a>(step: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InitError + 'a {
    let step = step.to_string();
    move |e| InitError::io(step, Some(path), &e)
}

/// The rootfs, ready for pivot_root.
pub struct Rootfs {
    /// The rootfs directory (the bind of it onto itself).
    pub root: OwnedFd,
    /// The procfs mounted at the container's /proc, if the spec has one.
    pub proc: Option<procfs::Proc>,
}

/// Everything before pivot_root. `idmapped`: the trees `create` prepared for the
/// idmapped binds, by mount ([`idmap::prepare`]). `enter_cgroup` is called before each
/// cgroup mount and the device nodes (it acts once): init may start mounting before its
/// cgroup exists; it returns the tree the parent built for the first cgroup mount, if it
/// did ([`mounts::cgroup_v1_tree`]). `pid_ns`: the pid namespace a procfs is for, when not
/// init's own (see [`mounts::mount_one`]).
pub fn prepare(
    plan: &Plan,
    idmapped: &[Option<OwnedFd>],
    cgroup: &CgroupHandle,
    cgroup_rel: &Path,
    enter_cgroup: &mut dyn FnMut() -> Result<Option<OwnedFd>>,
    pid_ns: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<Rootfs> {
    let requested = plan.rootfs_propagation;
    mount(
        None,
        Path::new("/"),
        None,
        setup_propagation(requested),
        None,
    )
    .map_err(io("setting rootfs propagation on", Path::new("/")))?;
    if requested & libc::MS_REC == 0 {
        // Only / changed: the rootfs's own mount may still be shared, which neither
        // the rootfs bind (it would reach the host) nor pivot_root accepts.
        parent_mount_private(&plan.rootfs)?;
    }
    let rootfs = plan.rootfs.to_string_lossy();
    mount(
        Some(&rootfs),
        &plan.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(io("bind-mounting rootfs onto itself", &plan.rootfs))?;
    let root = sfs::open(&plan.rootfs, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(io("opening rootfs", &plan.rootfs))?;
    let in_userns = plan.namespaces.has(NsKind::User);
    let mut proc = None;
    for (i, m) in plan.mounts.iter().enumerate() {
        let prebuilt = if m.kind == MountKind::Cgroup {
            enter_cgroup()?.map(mounts::Prebuilt::CgroupTree)
        } else {
            idmapped
                .get(i)
                .and_then(Option::as_ref)
                .map(mounts::Prebuilt::Idmapped)
        };
        let made = mounts::mount_one(&root, m, prebuilt, cgroup, in_userns, cgroup_rel, pid_ns)?;
        // The procfs that counts is the last mount made at /proc.
        if m.destination == Path::new("/proc") {
            proc = match made {
                Some(fd) => Some(procfs::Proc::mounted(fd, true)?),
                None => None,
            };
        }
    }
    drop(enter_cgroup()?);
    devices::create(&root, plan, in_userns)?;
    // The cwd is created now, while the host's view is still at hand.
    sfs::mkdir_all_in_root(
        std::os::fd::AsRawFd::as_raw_fd(&root),
        &plan.process.cwd,
        Leaf::Dir,
    )
    .map_err(io("creating cwd", &plan.process.cwd))?;
    Ok(Rootfs { root, proc })
}

/// The propagation / gets while the rootfs is built: the requested slave or private
/// one; for shared or unbindable (which pivot_root, or the rootfs bind, would refuse),
/// rslave, the requested one being applied to the new root after pivot_root.
fn setup_propagation(requested: u64) -> u64 {
    if requested & (libc::MS_SLAVE | libc::MS_PRIVATE) != 0 {
        requested
    } else {
        libc::MS_SLAVE | libc::MS_REC
    }
}

/// Makes the mount holding `path` private when it is shared (runc's
/// rootfsParentMountPrivate), found in mountinfo as the longest mount point above it.
fn parent_mount_private(path: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading", Path::new("/proc/self/mountinfo")))?;
    let path = std::fs::canonicalize(path).map_err(io("resolving", path))?;
    let holder = mountinfo::mount_holding(&info, &path);
    if let Some((mount_point, shared)) = holder {
        if shared {
            mount(None, &mount_point, None, libc::MS_PRIVATE, None)
                .map_err(io("making the rootfs's mount private", &mount_point))?;
        }
    }
    Ok(())
}

/// pivot_root into the rootfs and detach the old root; with `no_pivot`, MS_MOVE and
/// chroot instead (for rootfs on ramfs, where pivot_root is impossible).
pub fn enter(root: &OwnedFd, rootfs: &Path, no_pivot: bool) -> Result<()> {
    sfs::fchdir(root).map_err(io("entering rootfs", rootfs))?;
    if no_pivot {
        mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
            .map_err(io("moving rootfs to /", rootfs))?;
        crate::sys::mount::chroot(Path::new(".")).map_err(io("chroot into", rootfs))?;
    } else {
        let old = sfs::open(Path::new("/"), libc::O_DIRECTORY | libc::O_RDONLY)
            .map_err(io("opening old root", Path::new("/")))?;
        crate::sys::mount::pivot_root_dot().map_err(io("pivot_root into", rootfs))?;
        sfs::fchdir(&old).map_err(io("entering old root", Path::new("/")))?;
        // Keep the unmount from propagating to the host, then drop the old root.
        mount(
            None,
            Path::new("."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )
        .map_err(io("making old root a slave", Path::new("/")))?;
        umount2(Path::new("."), libc::MNT_DETACH)
            .map_err(io("detaching old root", Path::new("/")))?;
    }
    std::env::set_current_dir("/").map_err(io("chdir to", Path::new("/")))?;
    Ok(())
}

/// Inside the new root: sysctls, masked and read-only paths (through `proc` where
/// they are under /proc), a read-only root, the check that /proc is still `proc`, and a
/// shared or unbindable rootfsPropagation.
/// Returns the procfs to reach /proc through from now on (a private one when the
/// container mounts none), if any was needed.
pub fn finish(plan: &Plan, proc: Option<procfs::Proc>) -> Result<Option<procfs::Proc>> {
    let root = sfs::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(io("opening the new root", Path::new("/")))?;
    let needs_proc = !plan.sysctl.is_empty() || plan.process.oom_score_adj.is_some();
    let proc = match proc {
        Some(p) => Some(p),
        None if needs_proc => Some(procfs::Proc::private()?),
        None => None,
    };
    if let Some(p) = &proc {
        procfs::write_sysctls(p, &plan.sysctl)?;
    }
    procfs::protect(&root, proc.as_ref(), plan)?;
    if plan.root_readonly {
        read_only_root(&root, plan.namespaces.has(NsKind::User))?;
    }
    procfs::check_still_mounted(&root, proc.as_ref())?;
    // Last (the masks above clone mounts, which an unbindable tree refuses): a shared
    // or unbindable rootfsPropagation on the new root.
    let requested = plan.rootfs_propagation;
    if requested & (libc::MS_SHARED | libc::MS_UNBINDABLE) != 0 {
        mount(None, Path::new("/"), None, requested, None)
            .map_err(io("setting rootfs propagation on", Path::new("/")))?;
    }
    Ok(proc)
}

/// root.readonly: the root mount made read-only through its descriptor (by remount on
/// kernels without mount_setattr, keeping the flags a user namespace locks).
fn read_only_root(root: &OwnedFd, in_userns: bool) -> Result<()> {
    let ro = mountfd::Attrs {
        set: mountfd::MOUNT_ATTR_RDONLY,
        ..mountfd::Attrs::default()
    };
    match mountfd::set_attrs(root.as_fd(), false, ro) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        Err(e) => {
            return Err(InitError::io(
                "remounting root read-only",
                Some(Path::new("/")),
                &e,
            ))
        }
    }
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    if in_userns {
        flags |= sfs::mount_flags_of(Path::new("/"))
            .map_err(io("reading mount flags of", Path::new("/")))?
            & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    }
    mount(None, Path::new("/"), None, flags, None)
        .map_err(io("remounting root read-only", Path::new("/")))
}
