//! Path resolution confined to a root directory (openat2 RESOLVE_IN_ROOT), so that no
//! symlink inside a container's rootfs can lead a mount or a mknod out of it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// open(2) of a host path.
pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open reads the NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` as if `root` were "/": `..` and absolute symlinks stay inside.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` strictly inside the one mount `dir` is on: no symlink, no `..` above
/// `dir`, no crossing into another mount. For procfs, where the path must lead to the
/// kernel's own file and nothing a container could have put in its way.
pub fn open_beneath(dir: RawFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat2(
        dir,
        path,
        flags,
        RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
}

/// openat2(2) of `path` (made relative) from `dir` with the given RESOLVE_* flags,
/// retried when a concurrent rename made it answer EAGAIN.
fn openat2(dir: RawFd, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &rel
    })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    loop {
        // SAFETY: openat2 reads the path and the open_how struct we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // EAGAIN: a concurrent rename raced the lookup; try again.
            if e.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
}

/// `path` without its leading `/`, with `.` dropped.
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}

/// What to create at the end of a path that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Dir,
    File,
}

/// Resolves `path` inside `root`, creating missing directories (mode 0755) and, if
/// asked, an empty file at the end. Returns an O_PATH descriptor of the result.
/// A dangling symlink on the way is followed inside the root (its target is created
/// there), as runc does; nothing is ever created outside `root`.
pub fn mkdir_all_in_root(root: RawFd, path: &Path, leaf: Leaf) -> io::Result<OwnedFd> {
    mkdir_all_depth(root, &relative(path), leaf, 0)
}

fn mkdir_all_depth(root: RawFd, rel: &Path, leaf: Leaf, depth: u32) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    // Fast path: it all exists.
    match open_in_root(root, rel, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let mut parent = open_in_root(root, Path::new(""), libc::O_PATH | libc::O_DIRECTORY)?;
    let mut walked = PathBuf::new();
    for (i, comp) in comps.iter().enumerate() {
        let parent_path = walked.clone();
        walked.push(comp);
        let last = i + 1 == comps.len();
        match open_in_root(root, &walked, libc::O_PATH) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // A dangling symlink: continue from its target, still inside the root.
        if let Some(target) = readlink_at(&parent, comp)? {
            let rest: PathBuf = comps[i + 1..].iter().collect();
            let next = if target.is_absolute() {
                relative(&target).join(rest)
            } else {
                parent_path.join(target).join(rest)
            };
            return mkdir_all_depth(root, &next, leaf, depth + 1);
        }
        let name = CString::new(comp.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if last && leaf == Leaf::File {
            // SAFETY: openat reads the NUL-terminated name relative to our dirfd.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            } else {
                // SAFETY: we own the descriptor we just created; closing it is all we do.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        } else {
            // SAFETY: mkdirat reads the NUL-terminated name relative to our dirfd.
            let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
        }
        parent = open_in_root(root, &walked, libc::O_PATH)?;
    }
    Ok(parent)
}

/// The target of `name` in `dir` if it is a symlink.
fn readlink_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<Option<PathBuf>> {
    let c =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into our buffer.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(buf))))
}

/// The /proc/self/fd path of a descriptor: mount(2) and friends follow it to the
/// exact object the descriptor holds, with no further path lookup.
pub fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// fstat of a descriptor's file type bits.
pub fn file_type(fd: &OwnedFd) -> io::Result<u32> {
    // SAFETY: stat is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into our local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT)
}

/// The file type bits and device number of what a descriptor refers to.
pub fn type_and_rdev(fd: &OwnedFd) -> io::Result<(u32, u64)> {
    // SAFETY: stat is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into our local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_mode & libc::S_IFMT, st.st_rdev))
}

/// A device node (or fifo) `name` in `dir`, made through descriptors only: mknodat
/// with the umask cleared (the exact mode, no chmod afterwards), then the new entry
/// opened without following it and checked to be the node asked for before its owner
/// is set on that descriptor. So a node swapped for a symlink after mknod (a second
/// container writing this one's /dev, CVE-2024-45310 class) is refused instead of
/// having its target's owner or mode changed. An existing entry must already be the
/// same node (then it is left as it is); anything else there is an error.
pub fn make_node(
    dir: &OwnedFd,
    name: &str,
    kind: u32,
    mode: u32,
    dev: u64,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // SAFETY: mknodat reads the NUL-terminated name relative to our dirfd.
    let r = unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), kind | (mode & 0o7777), dev) };
    let made = if r == 0 {
        Ok(true)
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Ok(false),
            _ => Err(e),
        }
    };
    nix::sys::stat::umask(old);
    let made = made?;
    // SAFETY: openat reads the NUL-terminated name relative to our dirfd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let node = unsafe { OwnedFd::from_raw_fd(fd) };
    let (got_kind, got_dev) = type_and_rdev(&node)?;
    if got_kind != kind || (kind != libc::S_IFIFO && got_dev != dev) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "something other than the device node asked for is there",
        ));
    }
    if made {
        // SAFETY: fchownat with AT_EMPTY_PATH changes the file the descriptor holds.
        let r = unsafe {
            libc::fchownat(
                node.as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// fchownat(fd, "", AT_EMPTY_PATH): the owner of what the descriptor (O_PATH too) holds.
pub fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchownat with AT_EMPTY_PATH changes the file the descriptor holds.
    let r = unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The extended attributes of an open file: (name, value) pairs.
pub fn xattrs(fd: &OwnedFd) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: flistxattr writes at most names.len() bytes into our buffer.
        let n = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut value = vec![0u8; 4096];
        loop {
            // SAFETY: fgetxattr reads the NUL-terminated name and writes at most
            // value.len() bytes into our buffer.
            let r = unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if r >= 0 {
                value.truncate(r as usize);
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if value.len() < 1 << 20 => value.resize(value.len() * 4, 0),
                _ => return Err(e),
            }
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Sets one extended attribute on an open file.
pub fn set_xattr(fd: &OwnedFd, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: fsetxattr reads the NUL-terminated name and value.len() bytes of value.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// symlinkat relative to a directory descriptor; an existing entry is left alone.
pub fn symlink_at(dir: &OwnedFd, target: &str, name: &str) -> io::Result<()> {
    let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: symlinkat reads both NUL-terminated strings.
    let r = unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// mkdirat (an existing directory is fine) and an O_PATH descriptor of it, never
/// following a symlink: for a single `name` in a directory that only we can write.
pub fn mkdir_and_open_at(dir: &OwnedFd, name: &str, mode: u32) -> io::Result<OwnedFd> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mkdirat reads the NUL-terminated name relative to our dirfd.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as libc::mode_t) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    // SAFETY: openat reads the NUL-terminated name relative to our dirfd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fchdir(2).
pub fn fchdir(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fchdir only reads the descriptor number.
    if unsafe { libc::fchdir(fd.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// statfs flags (ST_RDONLY, ST_NOSUID, ...) of a mounted path, as MS_* flags, so a
/// remount keeps the ones the kernel would refuse to drop.
pub fn mount_flags_of(path: &Path) -> io::Result<u64> {
    let c = cstr(path)?;
    // SAFETY: statvfs is plain data that the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads the path and writes into our local.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let f = st.f_flag;
    let mut out = 0u64;
    for (st_flag, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms;
        }
    }
    Ok(out)
}

/// Is `path` (already canonical, in the current root) a directory?
pub fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

/// flock(LOCK_EX), waiting; released when the descriptor closes.
pub fn flock_exclusive(fd: &OwnedFd) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_symlinks_followed_inside_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        // An absolute symlink to a host path that exists only outside the root.
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("mnt/escape")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("mnt/up")).unwrap();
        let rfd = open(&root, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/mnt/escape/sub"), Leaf::Dir).unwrap();
        assert!(root.join(relative(&outside)).join("sub").is_dir());
        assert!(!outside.join("sub").exists(), "created outside the root");
        mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/mnt/up/x/file"), Leaf::File).unwrap();
        assert!(root.join("x/file").is_file());
        assert!(!tmp.path().join("x").exists());
    }
}
