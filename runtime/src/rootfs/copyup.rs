//! `tmpcopyup` (runc's extension, which podman puts on every tmpfs it makes): the
//! rootfs's content at a tmpfs's destination is copied into the new tmpfs while it is
//! still detached, then the tmpfs is attached over it. Directories, regular files,
//! symlinks, device nodes and fifos are copied with their owners, modes, extended
//! attributes (of files and directories) and times; sockets are skipped. The source is
//! walked by descriptors, one name at a time and never through a symlink, so a rootfs
//! changed during the copy cannot lead it outside; the copy goes into a tmpfs no one
//! else can reach yet.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, Mode, SFlag};

use crate::sys::fs as sfs;

/// Directories deeper than this are refused rather than walked.
const MAX_DEPTH: u32 = 128;

/// Copies the content of directory `src` (any descriptor of it) into directory `dst`.
pub fn copy_dir(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let s = reopen_dir(src)?;
    copy_entries(&s, dst, 0)
}

fn reopen_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_child(dir: &OwnedFd, name: &std::ffi::OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        Path::new(name),
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn copy_entries(src: &OwnedFd, dst: &OwnedFd, depth: u32) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let listing = nix::dir::Dir::from_fd(src.try_clone()?)?;
    let mut names = Vec::new();
    for entry in listing.into_iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsString::from_vec(name.to_vec()));
        }
    }
    for name in &names {
        copy_entry(src, dst, name, depth)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", Path::new(name).display())))?;
    }
    Ok(())
}

fn copy_entry(src: &OwnedFd, dst: &OwnedFd, name: &std::ffi::OsStr, depth: u32) -> io::Result<()> {
    let st = fstatat(src, Path::new(name), AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    let p = Path::new(name);
    if kind == SFlag::S_IFDIR {
        nix::sys::stat::mkdirat(dst, p, Mode::from_bits_truncate(0o700))?;
        let s = open_child(src, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let d = open_child(dst, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        copy_entries(&s, &d, depth + 1)?;
        finish(&s, &d, &st)
    } else if kind == SFlag::S_IFREG {
        let s = open_child(src, name, OFlag::O_RDONLY)?;
        let d = openat(
            dst,
            p,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let (mut from, mut to) = (std::fs::File::from(s), std::fs::File::from(d));
        io::copy(&mut from, &mut to)?;
        finish(&OwnedFd::from(from), &OwnedFd::from(to), &st)
    } else if kind == SFlag::S_IFLNK {
        let target = nix::fcntl::readlinkat(src, p)?;
        nix::unistd::symlinkat(target.as_os_str(), dst, p)?;
        nix::unistd::fchownat(
            dst,
            p,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    } else if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK || kind == SFlag::S_IFIFO {
        mknodat(dst, p, kind, mode, st.st_rdev)?;
        let d = open_child(dst, name, OFlag::O_PATH)?;
        sfs::chown_fd(&d, st.st_uid, st.st_gid)?;
        // The tmpfs is ours alone: following the name there is safe.
        nix::sys::stat::fchmodat(dst, p, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)?;
        Ok(())
    } else {
        // Sockets belong to a process that is not there: nothing to copy.
        Ok(())
    }
}

/// Owner, mode (after the owner: chown clears set-id bits), extended attributes and
/// times of a copied file or directory.
fn finish(src: &OwnedFd, dst: &OwnedFd, st: &libc::stat) -> io::Result<()> {
    nix::unistd::fchown(
        dst,
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    )?;
    nix::sys::stat::fchmod(dst, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    for (name, value) in sfs::xattrs(src)? {
        sfs::set_xattr(dst, &name, &value)?;
    }
    let atime = nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    nix::sys::stat::futimens(dst.as_fd(), &atime, &mtime)?;
    Ok(())
}
