//! The descriptor-based mount API (Linux 5.2; mount_setattr 5.12): a mount is made
//! detached, given its attributes while no one can reach it, and attached onto a
//! descriptor of its mount point, so no path is looked up again after it was checked
//! (the race behind CVE-2021-30465 and its relatives).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cvt;

const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;

/// mount_setattr(2)'s attributes.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The atime mode field: relatime (0), noatime or strictatime.
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_IDMAP: u64 = 0x10_0000;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x20_0000;

/// What mount_setattr changes: attributes to set and to clear, a propagation type
/// (MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE; 0 leaves it), and for an idmapped
/// mount the user namespace whose mappings it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub set: u64,
    pub clear: u64,
    pub propagation: u64,
    pub userns: Option<RawFd>,
}

impl Attrs {
    /// The attributes of MS_* mount flags (read-only, nosuid, nodev, noexec, atime,
    /// nodiratime), set; an atime flag also clears the atime field first.
    pub fn from_ms(flags: u64) -> Attrs {
        let mut a = Attrs::default();
        for (ms, attr) in [
            (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
            (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
            (libc::MS_NODEV, MOUNT_ATTR_NODEV),
            (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
            (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
        ] {
            if flags & ms != 0 {
                a.set |= attr;
            }
        }
        let atime = if flags & libc::MS_NOATIME != 0 {
            Some(MOUNT_ATTR_NOATIME)
        } else if flags & libc::MS_STRICTATIME != 0 {
            Some(MOUNT_ATTR_STRICTATIME)
        } else if flags & libc::MS_RELATIME != 0 {
            Some(0)
        } else {
            None
        };
        if let Some(mode) = atime {
            a.clear |= MOUNT_ATTR__ATIME;
            a.set |= mode;
        }
        a
    }

    pub fn is_empty(&self) -> bool {
        *self == Attrs::default()
    }
}

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = cvt(r)?;
    // SAFETY: the syscall just returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached copy of the mount tree at `path` (resolved from `dir`, or the
/// descriptor `dir` itself when `path` is empty): open_tree(OPEN_TREE_CLONE), with
/// every mount below it when `recursive` (an rbind).
pub fn clone_tree(dir: RawFd, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let p = c(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    // SAFETY: open_tree reads the NUL-terminated path; the result is a new descriptor.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dir, p.as_ptr(), flags) })
}

/// mount_setattr(2) on the mount `fd` refers to, and every mount below it with
/// `recursive`. Kernels before 5.12 answer ENOSYS.
pub fn set_attrs(fd: BorrowedFd<'_>, recursive: bool, attrs: Attrs) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attrs.set,
        attr_clr: attrs.clear,
        propagation: attrs.propagation,
        userns_fd: attrs.userns.map_or(0, |f| f as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is an empty NUL-terminated string (AT_EMPTY_PATH: the descriptor
    // itself) and the attr struct, sized as passed, outlives the call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// Attaches the detached mount `from` onto the mount point `to` (a descriptor, of
/// the directory or file the mount goes on).
pub fn attach(from: &OwnedFd, to: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both paths are empty NUL-terminated strings: the descriptors themselves.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

/// A new, detached filesystem instance: fsopen(`fstype`), each option of `data`
/// (comma-separated; `key=value` or a flag `key`) given with fsconfig, then fsmount
/// with `attrs` (MOUNT_ATTR_*). The descriptor is the root of that mount, before and
/// after [`attach`].
pub fn new_fs(fstype: &str, data: &str, attrs: u64) -> io::Result<OwnedFd> {
    new_fs_from(fstype, None, data, attrs)
}

/// A new procfs ([`new_fs`]) for the pid namespace `pid_ns` (an nsfs descriptor)
/// instead of the caller's (the `pidns` parameter of recent kernels).
pub fn new_procfs_of(pid_ns: BorrowedFd<'_>, data: &str, attrs: u64) -> io::Result<OwnedFd> {
    let ctx = fs_context("proc")?;
    set_pidns(&ctx, pid_ns)?;
    configure(&ctx, None, data)?;
    create_and_mount(&ctx, attrs)
}

/// Whether this kernel's procfs takes a `pidns` parameter (tried on a context that is
/// never created).
pub fn procfs_takes_pidns(pid_ns: BorrowedFd<'_>) -> bool {
    fs_context("proc").is_ok_and(|ctx| set_pidns(&ctx, pid_ns).is_ok())
}

/// The first option of `data` (comma-separated) that the kernel refuses for a
/// `fstype` filesystem, each tried on one context that is never created: to name it
/// after a mount failed. `None` when every option is taken on its own (the kernel
/// refused a combination, or judges options only when the filesystem is made).
pub fn refused_option(fstype: &str, data: &str) -> Option<(String, io::Error)> {
    let ctx = fs_context(fstype).ok()?;
    data.split(',')
        .filter(|o| !o.is_empty())
        .find_map(|o| configure(&ctx, None, o).err().map(|e| (o.to_string(), e)))
}

fn set_pidns(ctx: &OwnedFd, pid_ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the key is a NUL-terminated literal; FSCONFIG_SET_FD takes no value
    // pointer and the descriptor as aux.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_SET_FD,
            c"pidns".as_ptr(),
            std::ptr::null::<libc::c_void>(),
            pid_ns.as_raw_fd(),
        )
    })
    .map(|_| ())
}

/// [`new_fs`] with a `source` (the device, or the name shown in mountinfo).
pub fn new_fs_from(
    fstype: &str,
    source: Option<&str>,
    data: &str,
    attrs: u64,
) -> io::Result<OwnedFd> {
    let ctx = fs_context(fstype)?;
    configure(&ctx, source, data)?;
    create_and_mount(&ctx, attrs)
}

/// fsopen(`fstype`).
fn fs_context(fstype: &str) -> io::Result<OwnedFd> {
    let ty = CString::new(fstype).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fsopen reads the NUL-terminated name; the result is a new descriptor.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, ty.as_ptr(), FSOPEN_CLOEXEC) })
}

/// fsconfig of the source and of each option of `data` (`key=value` or a flag `key`).
fn configure(ctx: &OwnedFd, source: Option<&str>, data: &str) -> io::Result<()> {
    let source = source.map(|s| format!("source={s}"));
    let opts = source.iter().map(String::as_str).chain(data.split(','));
    for opt in opts.filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let k = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let v = value
            .map(CString::new)
            .transpose()
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: key and value are NUL-terminated strings (or NULL for a flag) that
        // outlive the call.
        cvt(unsafe { libc::syscall(libc::SYS_fsconfig, ctx.as_raw_fd(), cmd, k.as_ptr(), vp, 0) })?;
    }
    Ok(())
}

/// Creates the filesystem and mounts it detached, with `attrs`.
fn create_and_mount(ctx: &OwnedFd, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes the context descriptor and flag words only.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// The id of the mount a descriptor is on (statx STATX_MNT_ID).
pub fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: statx is plain data that the call fills in.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx reads the empty path (AT_EMPTY_PATH: the descriptor itself) and
    // writes into our local.
    cvt(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    } as libc::c_long)?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(st.stx_mnt_id)
}

/// The filesystem magic (statfs f_type) of the filesystem a descriptor is on.
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain data that fstatfs fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into our local.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } as libc::c_long)?;
    Ok(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_flags_become_mount_attributes() {
        let a = Attrs::from_ms(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOATIME);
        assert_eq!(
            a.set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_eq!(a.clear, MOUNT_ATTR__ATIME);
        let a = Attrs::from_ms(libc::MS_RELATIME | libc::MS_NODEV);
        assert_eq!(a.set, MOUNT_ATTR_NODEV);
        assert_eq!(a.clear, MOUNT_ATTR__ATIME);
        assert!(Attrs::from_ms(libc::MS_BIND | libc::MS_REC).is_empty());
    }
}
