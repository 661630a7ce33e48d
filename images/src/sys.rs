//! The syscall seam: the only place with `unsafe`, and the thin wrappers
//! around openat2 that every path resolution in this crate goes through.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Creates the file `name` in `dir` for writing: exclusively (an existing entry, a
/// symlink included, fails with EEXIST), mode 0600 until its metadata is applied.
pub fn create_file_at<Fd: std::os::fd::AsFd>(dir: Fd, name: &OsStr) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
}

/// Opens `path` below `dir` with `openat2(RESOLVE_IN_ROOT)`: `..` and
/// absolute symlinks are clamped to `dir`, so nothing outside can be
/// reached. With `no_symlinks`, any symlink in the path fails with ELOOP.
pub fn open_in_root(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    no_symlinks: bool,
) -> Result<OwnedFd, Errno> {
    let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if no_symlinks {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
    }
    let path: &Path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(resolve);
    // openat2 asks callers to retry EAGAIN (a concurrent rename raced `..`).
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir, path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Sets an extended attribute on an open (non-O_PATH) file.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is a live descriptor for the duration of the call, `name`
    // is a NUL-terminated string we own and `value` is a valid slice whose
    // pointer and length describe readable memory.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Reads an extended attribute of an open file (None when it is absent).
#[cfg(test)]
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `fd` is live, `name` is NUL-terminated and `buf` is a writable
    // buffer of exactly `buf.len()` bytes.
    let rc = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match Errno::result(rc) {
        Ok(n) => {
            buf.truncate(usize::try_from(n).unwrap_or(0));
            Ok(Some(buf))
        }
        Err(Errno::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the running kernel knows overlayfs (from /proc/filesystems).
pub fn overlay_in_proc_filesystems() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// `mount -t overlay overlay -o <data> <target>`.
pub fn mount_overlay(target: &Path, data: &str) -> Result<(), Errno> {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data),
    )
}

/// Detaches the mount at `target`.
pub fn unmount(target: &Path) -> Result<(), Errno> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
}

/// Whether `path` is a mount point (its device differs from its parent's,
/// or it appears in /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Some(Ok(b))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) {
        if a.dev() != b.dev() {
            return true;
        }
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp).as_slice() == want)
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Lists the extended attribute names of an open (non-O_PATH) file.
pub fn flistxattr(fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `fd` is live and `buf` is writable for `buf.len()` bytes.
        let rc = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(usize::try_from(n).unwrap_or(0));
                return Ok(buf
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(Errno::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// Reads an extended attribute of an open file, any size.
pub fn fgetxattr_all(fd: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `fd` is live, `cname` is NUL-terminated and `buf` is
        // writable for `buf.len()` bytes.
        let rc = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(usize::try_from(n).unwrap_or(0));
                return Ok(Some(buf));
            }
            Err(Errno::ENODATA) => return Ok(None),
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

/// Copies `len` bytes between two files in the kernel when it can; returns
/// false when copy_file_range is not usable here (the caller copies).
pub fn copy_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: u64) -> Result<bool, Errno> {
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match nix::fcntl::copy_file_range(from, None, to, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EINVAL | Errno::EOPNOTSUPP)
                if left == len =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Mounts overlayfs at `target` through the new mount API (fsopen, fsconfig,
/// fsmount, move_mount), giving each lower layer alone with `lowerdir+`
/// (Linux 6.8+; older kernels answer EINVAL), so mount(2)'s one-page limit
/// on the option string does not bound the number of layers. `lowers` top
/// first.
pub fn mount_overlay_layers(
    target: &Path,
    lowers: &[std::path::PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), Errno> {
    use std::os::fd::FromRawFd;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| Errno::EINVAL);
    let fstype = cstr(b"overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new
    // descriptor or -1, checked before use.
    let fs =
        Errno::result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: `fs` is a descriptor fsopen just returned, owned from here on.
    let fs = unsafe { OwnedFd::from_raw_fd(i32::try_from(fs).map_err(|_| Errno::EBADF)?) };
    let set = |key: &[u8], value: &[u8]| -> Result<(), Errno> {
        let (k, v) = (cstr(key)?, cstr(value)?);
        // SAFETY: `fs` is a live fs context; key and value are NUL-terminated
        // strings that outlive the call; aux is unused (0) for SET_STRING.
        Errno::result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        })
        .map(drop)
    };
    for l in lowers {
        set(b"lowerdir+", l.as_os_str().as_bytes())?;
    }
    set(b"upperdir", upper.as_os_str().as_bytes())?;
    set(b"workdir", work.as_os_str().as_bytes())?;
    // SAFETY: CMD_CREATE takes no key or value (null pointers) on a live context.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on a created context returns a new mount descriptor or -1.
    let mnt = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0)
    })?;
    // SAFETY: `mnt` is a descriptor fsmount just returned, owned from here on.
    let mnt = unsafe { OwnedFd::from_raw_fd(i32::try_from(mnt).map_err(|_| Errno::EBADF)?) };
    let empty = cstr(b"")?;
    let to = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: move_mount from the detached mount `mnt` (empty path) to the
    // absolute path `to`; both strings are NUL-terminated and live.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}
