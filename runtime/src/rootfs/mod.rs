//! Building the container's root filesystem inside its mount namespace: propagation,
//! the rootfs bind, the spec's mounts (destinations resolved inside the rootfs with
//! openat2 RESOLVE_IN_ROOT), devices, pivot_root, masked and read-only paths.

pub mod devices;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::cgroups::CgroupHandle;
use crate::process::protocol::InitError;
use crate::spec::{MountKind, MountPlan, NsKind, Plan, REMOUNT_FLAGS};
use crate::sys::fs::{self as sfs, Leaf};
use crate::sys::mount::{mount, umount2};

type Result<T> = std::result::Result<T, InitError>;

fn io<'a>(step: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InitError + 'a {
    let step = step.to_string();
    move |e| InitError::io(step, Some(path), &e)
}

/// Everything before pivot_root: returns the rootfs descriptor.
/// `enter_cgroup` is called once, before the first cgroup mount and the device nodes
/// (or at the end): init may start mounting before its cgroup exists.
pub fn prepare(
    plan: &Plan,
    cgroup: &CgroupHandle,
    cgroup_rel: &Path,
    enter_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<OwnedFd> {
    mount(None, Path::new("/"), None, plan.rootfs_propagation, None)
        .map_err(io("setting rootfs propagation on", Path::new("/")))?;
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
    for m in &plan.mounts {
        if m.kind == MountKind::Cgroup {
            enter_cgroup()?;
        }
        mount_one(&root, m, cgroup, in_userns, cgroup_rel)?;
    }
    enter_cgroup()?;
    devices::create(&root, plan, in_userns)?;
    // The cwd is created now, while the host's view is still at hand.
    sfs::mkdir_all_in_root(
        std::os::fd::AsRawFd::as_raw_fd(&root),
        &plan.process.cwd,
        Leaf::Dir,
    )
    .map_err(io("creating cwd", &plan.process.cwd))?;
    Ok(root)
}

fn mount_one(
    root: &OwnedFd,
    m: &MountPlan,
    cgroup: &CgroupHandle,
    in_userns: bool,
    cgroup_rel: &Path,
) -> Result<()> {
    let root_fd = std::os::fd::AsRawFd::as_raw_fd(root);
    let dest = &m.destination;
    let leaf = if m.kind == MountKind::Bind && !sfs::is_dir(Path::new(&m.source)) {
        Leaf::File
    } else {
        Leaf::Dir
    };
    let target =
        sfs::mkdir_all_in_root(root_fd, dest, leaf).map_err(io("creating mount point", dest))?;
    let tpath = sfs::proc_fd_path(&target);
    let step = format!(
        "mounting {} ({})",
        m.source,
        if m.fstype.is_empty() {
            "bind"
        } else {
            &m.fstype
        }
    );
    match m.kind {
        MountKind::Bind => {
            mount(
                Some(&m.source),
                &tpath,
                None,
                m.flags & (libc::MS_BIND | libc::MS_REC),
                None,
            )
            .map_err(io(&step, dest))?;
            if let Some(flags) = m.remount_flags {
                remount_in_root(root_fd, dest, flags, in_userns)?;
            }
        }
        MountKind::Sysfs => {
            let flags = m.flags & !libc::MS_RDONLY;
            match mount(Some("sysfs"), &tpath, Some("sysfs"), flags, Some(&m.data)) {
                Ok(()) => {}
                // Without a private network namespace inside a user namespace the
                // kernel refuses sysfs: bind the host's instead, as runc does.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    mount(
                        Some("/sys"),
                        &tpath,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )
                    .map_err(io("bind-mounting /sys", dest))?;
                }
                Err(e) => return Err(InitError::io(step, Some(dest), &e)),
            }
            if m.flags & libc::MS_RDONLY != 0 {
                remount_in_root(root_fd, dest, m.flags & REMOUNT_FLAGS, in_userns)?;
            }
        }
        MountKind::Cgroup => mount_cgroup(root_fd, m, cgroup, in_userns, cgroup_rel)?,
        MountKind::Proc | MountKind::Devpts | MountKind::Other => {
            let fstype = if m.fstype.is_empty() {
                None
            } else {
                Some(m.fstype.as_str())
            };
            let source = if m.source.is_empty() {
                m.fstype.as_str()
            } else {
                m.source.as_str()
            };
            mount(Some(source), &tpath, fstype, m.flags, Some(&m.data)).map_err(io(&step, dest))?;
        }
    }
    for p in &m.propagation {
        let t =
            sfs::open_in_root(root_fd, dest, libc::O_PATH).map_err(io("reopening mount", dest))?;
        mount(None, &sfs::proc_fd_path(&t), None, *p, None)
            .map_err(io("changing propagation of", dest))?;
    }
    Ok(())
}

/// Remounts the (bind) mount at `dest` with `flags`, keeping flags the kernel locks
/// in a user namespace (nosuid, nodev, noexec, atime).
fn remount_in_root(root_fd: i32, dest: &Path, flags: u64, in_userns: bool) -> Result<()> {
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
/// each hierarchy; on v2 a bind of its directory. Read-only when asked.
fn mount_cgroup(
    root_fd: i32,
    m: &MountPlan,
    cgroup: &CgroupHandle,
    in_userns: bool,
    cgroup_rel: &Path,
) -> Result<()> {
    let dest = &m.destination;
    let ro = m.flags & libc::MS_RDONLY != 0;
    let bind_flags = libc::MS_BIND | libc::MS_REC;
    match cgroup {
        CgroupHandle::V2 { dir } => {
            let t = sfs::open_in_root(root_fd, dest, libc::O_PATH).map_err(io("opening", dest))?;
            mount(
                Some(&dir.to_string_lossy()),
                &sfs::proc_fd_path(&t),
                None,
                bind_flags,
                None,
            )
            .map_err(io("bind-mounting cgroup", dir))?;
            remount_in_root(root_fd, dest, m.flags & REMOUNT_FLAGS, in_userns)?;
        }
        CgroupHandle::V1 { dirs, unified } => {
            let t = sfs::open_in_root(root_fd, dest, libc::O_PATH).map_err(io("opening", dest))?;
            mount(
                Some("tmpfs"),
                &sfs::proc_fd_path(&t),
                Some("tmpfs"),
                m.flags & !libc::MS_RDONLY,
                Some("mode=755"),
            )
            .map_err(io("mounting tmpfs for cgroups on", dest))?;
            // One bind per hierarchy, named after its mount point (memory, cpu, systemd...).
            let mut seen: Vec<PathBuf> = Vec::new();
            let mut entries: Vec<(String, PathBuf)> = Vec::new();
            for dir in dirs.values() {
                let Some(name) = hierarchy_name(dir, cgroup_rel) else {
                    continue;
                };
                if seen.contains(dir) {
                    continue;
                }
                seen.push(dir.clone());
                entries.push((name, dir.clone()));
            }
            if let Some(u) = unified {
                entries.push(("unified".to_string(), u.clone()));
            }
            // The mount points go into the tmpfs just mounted, which no other process
            // can reach yet: made and opened relative to it, two calls each, instead of
            // a walk from the rootfs's root per hierarchy.
            let tmpfs = sfs::open_in_root(root_fd, dest, libc::O_DIRECTORY | libc::O_RDONLY)
                .map_err(io("opening", dest))?;
            for (name, dir) in &entries {
                let sub = dest.join(name);
                let st =
                    sfs::mkdir_and_open_at(&tmpfs, name, 0o755).map_err(io("creating", &sub))?;
                mount(
                    Some(&dir.to_string_lossy()),
                    &sfs::proc_fd_path(&st),
                    None,
                    bind_flags,
                    None,
                )
                .map_err(io("bind-mounting cgroup", dir))?;
            }
            if ro {
                // The tmpfs and every bind under it at once; one remount per mount where
                // mount_setattr(2) is missing. Atime flags other than relatime (what the
                // binds and the tmpfs have already) need the remounts too.
                let odd_atime =
                    m.flags & (libc::MS_NOATIME | libc::MS_NODIRATIME | libc::MS_STRICTATIME) != 0;
                let t = sfs::open_in_root(root_fd, dest, libc::O_PATH)
                    .map_err(io("reopening mount", dest))?;
                let done = !odd_atime
                    && crate::sys::mount::set_attrs_recursive(
                        std::os::fd::AsFd::as_fd(&t),
                        m.flags & REMOUNT_FLAGS,
                    )
                    .is_ok();
                if !done {
                    for (name, _) in &entries {
                        let sub = dest.join(name);
                        remount_in_root(root_fd, &sub, m.flags & REMOUNT_FLAGS, in_userns)?;
                    }
                    remount_in_root(root_fd, dest, m.flags & REMOUNT_FLAGS, in_userns)?;
                }
            }
        }
    }
    Ok(())
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

/// Inside the new root: read-only paths, masked paths, then a read-only root.
pub fn finish(plan: &Plan) -> Result<()> {
    let in_userns = plan.namespaces.has(NsKind::User);
    for p in &plan.readonly_paths {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(
            Some(&p.to_string_lossy()),
            p,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(io("bind-mounting read-only path", p))?;
        let cur = sfs::mount_flags_of(p).map_err(io("reading mount flags of", p))?;
        mount(
            None,
            p,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | cur,
            None,
        )
        .map_err(io("remounting read-only", p))?;
    }
    for p in &plan.masked_paths {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            mount(Some("tmpfs"), p, Some("tmpfs"), libc::MS_RDONLY, None)
                .map_err(io("masking", p))?;
        } else {
            mount(Some("/dev/null"), p, None, libc::MS_BIND, None).map_err(io("masking", p))?;
        }
    }
    if plan.root_readonly {
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        if in_userns {
            flags |= sfs::mount_flags_of(Path::new("/"))
                .map_err(io("reading mount flags of", Path::new("/")))?
                & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        }
        mount(None, Path::new("/"), None, flags, None)
            .map_err(io("remounting root read-only", Path::new("/")))?;
    }
    Ok(())
}
