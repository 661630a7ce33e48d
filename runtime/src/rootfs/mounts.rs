//! The spec's mounts, each onto a descriptor of its mount point resolved inside the
//! rootfs. Binds are made detached (open_tree), given their read-only, nosuid, ...
//! attributes while no one can reach them, and only then attached: a mount point
//! swapped after the bind cannot leave a read-only volume writable (CVE-2021-30465
//! family). Kernels without mount_setattr (before 5.12) get the old remount, by path.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::{io, Result};
use crate::cgroups::CgroupHandle;
use crate::process::protocol::InitError;
use crate::spec::{MountKind, MountPlan, REMOUNT_FLAGS};
use crate::sys::fs::{self as sfs, Leaf};
use crate::sys::mount::mount;
use crate::sys::mountfd::{self, Attrs};

/// A tree the parent built for a mount, for init to attach.
pub enum Prebuilt<'a> {
    /// An idmapped bind's, made by `create` before the clone (see [`super::idmap`]).
    Idmapped(&'a OwnedFd),
    /// The first cgroup mount's, made after the clone ([`cgroup_v1_tree`]).
    CgroupTree(OwnedFd),
}

/// Makes mount `m` inside the rootfs `root`, from `prebuilt` when the parent made it.
/// Returns the root of a procfs it mounted (see [`super::procfs`]), which is `pid_ns`'s when given (init outside a pid namespace
/// it joins: see `init::spawn_into_pid_ns`), else init's own pid namespace's.
pub fn mount_one(
    root: &OwnedFd,
    m: &MountPlan,
    prebuilt: Option<Prebuilt<'_>>,
    cgroup: &CgroupHandle,
    in_userns: bool,
    cgroup_rel: &Path,
    pid_ns: Option<BorrowedFd<'_>>,
) -> Result<Option<OwnedFd>> {
    let (prepared, cgroup_tree) = match prebuilt {
        Some(Prebuilt::Idmapped(fd)) => (Some(fd), None),
        Some(Prebuilt::CgroupTree(fd)) => (None, Some(fd)),
        None => (None, None),
    };
    let root_fd = root.as_raw_fd();
    let dest = &m.destination;
    let leaf = if m.kind == MountKind::Bind && !sfs::is_dir(Path::new(&m.source)) {
        Leaf::File
    } else {
        Leaf::Dir
    };
    let target =
        sfs::mkdir_all_in_root(root_fd, dest, leaf).map_err(io("creating mount point", dest))?;
    let step = format!(
        "mounting {} ({})",
        m.source,
        if m.fstype.is_empty() {
            "bind"
        } else {
            &m.fstype
        }
    );
    let made: Option<OwnedFd> = match m.kind {
        MountKind::Bind => Some(bind(root_fd, &target, m, prepared, in_userns)?),
        MountKind::Sysfs => Some(sysfs(root_fd, &target, m, in_userns, &step)?),
        MountKind::Cgroup => Some(mount_cgroup(
            root_fd,
            &target,
            m,
            cgroup,
            in_userns,
            cgroup_rel,
            cgroup_tree,
        )?),
        MountKind::Proc => {
            let attrs = Attrs::from_ms(m.flags).set;
            let fd = match pid_ns {
                Some(ns) => mountfd::new_procfs_of(ns, &m.data, attrs),
                None => mountfd::new_fs("proc", &m.data, attrs),
            }
            .map_err(io(&step, dest))?;
            mountfd::attach(&fd, target.as_fd()).map_err(io(&step, dest))?;
            Some(fd)
        }
        MountKind::Devpts | MountKind::Other => other(&target, m, &step)?,
    };
    // Recursive attributes of the mounts not made as a detached tree (a bind got them
    // before it was attached), through the new mount's own descriptor.
    if m.kind != MountKind::Bind && (m.rec_set != 0 || m.rec_clear != 0) {
        if let Some(fd) = &made {
            mountfd::set_attrs(fd.as_fd(), true, rec_attrs(m))
                .map_err(io("setting recursive mount attributes of", dest))?;
        }
    }
    for p in &m.propagation {
        // The mount just made, by its own descriptor when there is one.
        let t = match &made {
            Some(fd) => fd.try_clone().map_err(io("reopening mount", dest))?,
            None => sfs::open_in_root(root_fd, dest, libc::O_PATH)
                .map_err(io("reopening mount", dest))?,
        };
        mount(None, &sfs::proc_fd_path(&t), None, *p, None)
            .map_err(io("changing propagation of", dest))?;
    }
    Ok(if m.kind == MountKind::Proc {
        made
    } else {
        None
    })
}

fn rec_attrs(m: &MountPlan) -> Attrs {
    Attrs {
        set: m.rec_set,
        clear: m.rec_clear,
        ..Attrs::default()
    }
}

/// Any other filesystem (tmpfs, devpts, mqueue, ...). With `tmpcopyup` or recursive
/// attributes it is made detached (fsopen/fsmount), filled from the rootfs and
/// attached, and its descriptor returned; otherwise one mount(2) onto the target's
/// descriptor.
fn other(target: &OwnedFd, m: &MountPlan, step: &str) -> Result<Option<OwnedFd>> {
    let dest = &m.destination;
    let source = if m.source.is_empty() {
        m.fstype.as_str()
    } else {
        m.source.as_str()
    };
    if !m.tmpcopyup && m.rec_set == 0 && m.rec_clear == 0 {
        let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
        let tpath = sfs::proc_fd_path(target);
        mount(Some(source), &tpath, fstype, m.flags, Some(&m.data))
            .map_err(|e| mount_error(m, step, e))?;
        return Ok(None);
    }
    let fs = mountfd::new_fs_from(
        &m.fstype,
        Some(source),
        &m.data,
        Attrs::from_ms(m.flags).set,
    )
    .map_err(|e| mount_error(m, step, e))?;
    if m.tmpcopyup {
        super::copyup::copy_dir(target, &fs).map_err(io("copying up into the tmpfs at", dest))?;
    }
    mountfd::attach(&fs, target.as_fd()).map_err(io(step, dest))?;
    Ok(Some(fs))
}

/// A failed mount's error; for EINVAL, naming the option the kernel refuses when it
/// can tell which (options berth does not know go to the filesystem as data).
fn mount_error(m: &MountPlan, step: &str, e: std::io::Error) -> InitError {
    if e.raw_os_error() == Some(libc::EINVAL) && !m.fstype.is_empty() {
        if let Some((opt, refused)) = mountfd::refused_option(&m.fstype, &m.data) {
            let opt: String = opt.chars().take(80).collect();
            let mut err = InitError::io(step, Some(&m.destination), &refused);
            err.message = format!("the kernel refuses option {opt:?}: {}", err.message);
            return err;
        }
    }
    InitError::io(step, Some(&m.destination), &e)
}

/// A bind of the mount's source onto `target`: cloned detached (with every mount below
/// it for rbind), dressed ([`dress`]), attached; or, for an idmapped bind, the tree
/// `create` prepared. Returns the attached mount.
fn bind(
    root_fd: RawFd,
    target: &OwnedFd,
    m: &MountPlan,
    prepared: Option<&OwnedFd>,
    in_userns: bool,
) -> Result<OwnedFd> {
    let dest = &m.destination;
    let source = Path::new(&m.source);
    let (tree, later) = match prepared {
        Some(t) => (
            t.try_clone()
                .map_err(io("reopening the idmapped bind", dest))?,
            false,
        ),
        None => {
            let recursive = m.flags & libc::MS_REC != 0;
            let tree = mountfd::clone_tree(libc::AT_FDCWD, source, recursive)
                .map_err(io("cloning the bind source", source))?;
            let later = dress(&tree, m).map_err(io("setting mount attributes of", dest))?;
            (tree, later)
        }
    };
    mountfd::attach(&tree, target.as_fd()).map_err(io("attaching bind mount", dest))?;
    if later {
        remount_in_root(root_fd, dest, m.remount_flags.unwrap_or(0), in_userns)?;
    }
    Ok(tree)
}

/// Gives a detached bind its flags (ro, nosuid, ...: only the bind itself, as runc's
/// remount) and its recursive attributes (`rro`, ...: every mount in it). Returns true
/// when the kernel has no mount_setattr and there are only plain flags, which the
/// caller then sets by remounting once attached.
pub fn dress(tree: &OwnedFd, m: &MountPlan) -> std::io::Result<bool> {
    let attrs = Attrs::from_ms(m.remount_flags.unwrap_or(0) & REMOUNT_FLAGS);
    let recursive = m.rec_set != 0 || m.rec_clear != 0;
    if !attrs.is_empty() {
        match mountfd::set_attrs(tree.as_fd(), false, attrs) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && !recursive => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    if recursive {
        mountfd::set_attrs(tree.as_fd(), true, rec_attrs(m))?;
    }
    Ok(false)
}

/// sysfs, read-only when asked, in one mount. Without a private network namespace
/// inside a user namespace the kernel refuses sysfs: the host's is bound instead, as
/// runc does.
fn sysfs(
    root_fd: RawFd,
    target: &OwnedFd,
    m: &MountPlan,
    in_userns: bool,
    step: &str,
) -> Result<OwnedFd> {
    let dest = &m.destination;
    let attrs = Attrs::from_ms(m.flags);
    match mountfd::new_fs("sysfs", &m.data, attrs.set) {
        Ok(fd) => {
            mountfd::attach(&fd, target.as_fd()).map_err(io(step, dest))?;
            Ok(fd)
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let mut host = m.clone();
            host.source = "/sys".to_string();
            host.flags |= libc::MS_BIND | libc::MS_REC;
            host.remount_flags = Some(m.flags & REMOUNT_FLAGS);
            bind(root_fd, target, &host, None, in_userns)
        }
        Err(e) => Err(InitError::io(step, Some(dest), &e)),
    }
}

/// Remounts the (bind) mount at `dest` with `flags`, keeping flags the kernel locks
/// in a user namespace (nosuid, nodev, noexec, atime). By path: only for kernels
/// without mount_setattr.
pub fn remount_in_root(root_fd: RawFd, dest: &Path, flags: u64, in_userns: bool) -> Result<()> {
    let t = sfs::open_in_root(root_fd, dest, libc::O_PATH).map_err(io("reopening mount", dest))?;
    let tpath = sfs::proc_fd_path(&t);
    let mut f = flags;
    if in_userns {
        let cur = sfs::mount_flags_of(&tpath).map_err(io("reading mount flags of", dest))?;
        f |= cur
            & (libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_NOATIME
                | libc::MS_NODIRATIME
                | libc::MS_RELATIME);
    }
    mount(
        None,
        &tpath,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | f,
        None,
    )
    .map_err(io("remounting", dest))
}

/// The cgroup mount: on v1 a tmpfs holding a bind of the container's own directory of
/// each hierarchy; on v2 a bind of its directory. Read-only when asked. Returns the
/// mount made at the destination.
fn mount_cgroup(
    root_fd: RawFd,
    target: &OwnedFd,
    m: &MountPlan,
    cgroup: &CgroupHandle,
    in_userns: bool,
    cgroup_rel: &Path,
    prebuilt: Option<OwnedFd>,
) -> Result<OwnedFd> {
    let dest = &m.destination;
    if let Some(tree) = prebuilt {
        mountfd::attach(&tree, target.as_fd()).map_err(io("attaching the cgroup tree on", dest))?;
        return Ok(tree);
    }
    match cgroup {
        CgroupHandle::V2 { dir } => {
            let mut b = m.clone();
            b.source = dir.to_string_lossy().into_owned();
            b.flags |= libc::MS_BIND | libc::MS_REC;
            b.remount_flags = Some(m.flags & REMOUNT_FLAGS);
            b.rec_set = 0;
            b.rec_clear = 0;
            bind(root_fd, target, &b, None, in_userns)
        }
        CgroupHandle::V1 { dirs, unified } => {
            let attrs = Attrs::from_ms(m.flags & !libc::MS_RDONLY);
            let tmpfs = mountfd::new_fs("tmpfs", "mode=755", attrs.set)
                .map_err(io("mounting tmpfs for cgroups on", dest))?;
            mountfd::attach(&tmpfs, target.as_fd())
                .map_err(io("mounting tmpfs for cgroups on", dest))?;
            let entries = hierarchies(dirs.values(), unified.as_ref(), cgroup_rel);
            bind_hierarchies(&tmpfs, &entries)
                .map_err(|(step, path, e)| InitError::io(step, Some(&dest.join(path)), &e))?;
            if m.flags & libc::MS_RDONLY != 0 {
                read_only_v1(root_fd, &tmpfs, m, &entries, in_userns)?;
            }
            Ok(tmpfs)
        }
    }
}

/// Binds each hierarchy's directory of the container on a mount point made inside the
/// cgroup tmpfs, reached through the tmpfs's own descriptor (attached or not): two
/// calls each, no walk from the rootfs's root. A failure names its step and entry.
fn bind_hierarchies(
    tmpfs: &OwnedFd,
    entries: &[(String, PathBuf)],
) -> std::result::Result<(), (&'static str, PathBuf, std::io::Error)> {
    for (name, dir) in entries {
        let st = sfs::mkdir_and_open_at(tmpfs, name, 0o755)
            .map_err(|e| ("creating", PathBuf::from(name), e))?;
        let tree = mountfd::clone_tree(libc::AT_FDCWD, dir, true)
            .map_err(|e| ("cloning cgroup", dir.clone(), e))?;
        mountfd::attach(&tree, st.as_fd()).map_err(|e| ("bind-mounting cgroup", dir.clone(), e))?;
    }
    Ok(())
}

/// The tree of cgroup mount `m` on a v1 (or hybrid) host, built detached by the parent
/// while init makes its network namespace and earlier mounts: the cgroup tmpfs with a
/// bind of each hierarchy's directory of the container, read-only when `m` is. init
/// attaches it (see [`mount_one`]) instead of making the eleven mounts itself. An
/// error (a kernel that cannot mount on a detached tree, say) leaves that to init.
pub fn cgroup_v1_tree(
    m: &MountPlan,
    cgroup: &CgroupHandle,
    cgroup_rel: &Path,
) -> std::io::Result<OwnedFd> {
    let CgroupHandle::V1 { dirs, unified } = cgroup else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let attrs = Attrs::from_ms(m.flags & !libc::MS_RDONLY);
    let tmpfs = mountfd::new_fs("tmpfs", "mode=755", attrs.set)?;
    let entries = hierarchies(dirs.values(), unified.as_ref(), cgroup_rel);
    bind_hierarchies(&tmpfs, &entries).map_err(|(_, _, e)| e)?;
    if m.flags & libc::MS_RDONLY != 0 {
        mountfd::set_attrs(tmpfs.as_fd(), true, Attrs::from_ms(m.flags & REMOUNT_FLAGS))?;
    }
    Ok(tmpfs)
}

/// (name under /sys/fs/cgroup, host directory) of each v1 hierarchy of the container,
/// once per directory (co-mounted controllers share one), and the unified one.
fn hierarchies<'a>(
    dirs: impl Iterator<Item = &'a PathBuf>,
    unified: Option<&PathBuf>,
    cgroup_rel: &Path,
) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Some(name) = hierarchy_name(dir, cgroup_rel) else {
            continue;
        };
        if entries.iter().any(|(_, d)| d == dir) {
            continue;
        }
        entries.push((name, dir.clone()));
    }
    if let Some(u) = unified {
        entries.push(("unified".to_string(), u.clone()));
    }
    entries
}

/// The v1 cgroup tmpfs and every bind under it made read-only at once, through the
/// tmpfs's descriptor; one remount per mount, by path, where mount_setattr is missing.
fn read_only_v1(
    root_fd: RawFd,
    tmpfs: &OwnedFd,
    m: &MountPlan,
    entries: &[(String, PathBuf)],
    in_userns: bool,
) -> Result<()> {
    let dest = &m.destination;
    let flags = m.flags & REMOUNT_FLAGS;
    match mountfd::set_attrs(tmpfs.as_fd(), true, Attrs::from_ms(flags)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            for (name, _) in entries {
                remount_in_root(root_fd, &dest.join(name), flags, in_userns)?;
            }
            remount_in_root(root_fd, dest, flags, in_userns)
        }
        Err(e) => Err(InitError::io("making read-only", Some(dest), &e)),
    }
}

/// The directory name a v1 hierarchy is known by under /sys/fs/cgroup: the last
/// component of its mount point (`dir` is `<mount point>/<cgroup_rel>`).
fn hierarchy_name(dir: &Path, cgroup_rel: &Path) -> Option<String> {
    let depth = cgroup_rel.components().count();
    dir.ancestors()
        .nth(depth)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}
