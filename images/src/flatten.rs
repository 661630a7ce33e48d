//! Merging unpacked layer directories (overlay form: 0/0 character devices
//! for whiteouts, `trusted.overlay.opaque` on opaque directories) into one
//! plain rootfs, bottom layer first. Used by `image unpack` and by the copy
//! fallback of snapshots: no decompression, file data copied in the kernel
//! (copy_file_range). All work goes through directory fds opened with
//! O_NOFOLLOW, so symlinks inside the layers are never followed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::sys;
use crate::unpack::{list_dir, remove_all};

/// Errors of merging layers.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("{path}: {op}: {errno}")]
    Fs {
        path: PathBuf,
        op: &'static str,
        errno: Errno,
    },
}

/// A name in a directory and its layer stat.
type Named = (Vec<u8>, FileStat);

struct Merge<'a> {
    layer: &'a Path,
    src_root: BorrowedFd<'a>,
    dst_root: BorrowedFd<'a>,
    chown: bool,
    /// Per directory (relative path), the non-directory entries to copy:
    /// copied by worker threads once the directory tree exists.
    jobs: Vec<(Vec<u8>, Vec<Named>)>,
    /// Multiply-linked regular files (relative paths): copied once and
    /// linked, serially, after the jobs.
    linked: Vec<(Vec<u8>, FileStat)>,
    /// Directories whose metadata is set last, deepest first.
    dirs: Vec<(Vec<u8>, FileStat)>,
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn kind(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl Merge<'_> {
    fn err(&self, rel: &[u8], op: &'static str) -> impl FnOnce(Errno) -> FlattenError + '_ {
        let path = self.layer.join(os(rel));
        move |errno| FlattenError::Fs { path, op, errno }
    }

    fn copy_xattrs(
        &self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
    ) -> Result<(), FlattenError> {
        for name in sys::flistxattr(src).map_err(self.err(rel, "list xattrs"))? {
            if !crate::unpack::entry::xattr_allowed(&name) {
                continue;
            }
            if let Some(v) = sys::fgetxattr_all(src, &name).map_err(self.err(rel, "get xattr"))? {
                match sys::fsetxattr(dst, &name, &v) {
                    Ok(()) | Err(Errno::EOPNOTSUPP) => {}
                    Err(e) => return Err(self.err(rel, "set xattr")(e)),
                }
            }
        }
        Ok(())
    }

    fn own_at(
        &self,
        rel: &[u8],
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<(), FlattenError> {
        if self.chown {
            nix::unistd::fchownat(
                dir,
                name,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(self.err(rel, "chown"))?;
        }
        Ok(())
    }

    /// Walks the children of `src` (a layer dir): makes directories and
    /// applies whiteouts now, queues everything else.
    fn dir(
        &mut self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        fresh: bool,
    ) -> Result<(), FlattenError> {
        let mut files = Vec::new();
        for name in list_dir(src).map_err(self.err(rel, "read dir"))? {
            let mut crel = rel.to_vec();
            if !crel.is_empty() {
                crel.push(b'/');
            }
            crel.extend_from_slice(&name);
            if let Some(st) = self.entry(&crel, src, dst, os(&name), fresh)? {
                files.push((name, st));
            }
        }
        if !files.is_empty() {
            self.jobs.push((rel.to_vec(), files));
        }
        Ok(())
    }

    fn entry(
        &mut self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        fresh: bool,
    ) -> Result<Option<FileStat>, FlattenError> {
        let st = fstatat(src, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(self.err(rel, "stat"))?;
        // In a directory this merge created, nothing can be in the way.
        let existing = if fresh {
            None
        } else {
            match fstatat(dst, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(self.err(rel, "stat target")(e)),
            }
        };
        let is_whiteout = kind(&st) == libc::S_IFCHR && st.st_rdev == 0;
        if is_whiteout {
            if existing.is_some() {
                remove_all(dst, name).map_err(self.err(rel, "remove whited-out path"))?;
            }
            return Ok(None);
        }
        if kind(&st) == libc::S_IFDIR {
            let sfd = open_dir_at(src, name).map_err(self.err(rel, "open dir"))?;
            let opaque = sys::fgetxattr_all(sfd.as_fd(), b"trusted.overlay.opaque")
                .map_err(self.err(rel, "read opaque xattr"))?
                .is_some_and(|v| v == b"y");
            let child_fresh = !matches!(&existing, Some(e) if kind(e) == libc::S_IFDIR);
            match existing {
                Some(e) if kind(&e) == libc::S_IFDIR => {
                    if opaque {
                        let d = open_dir_at(dst, name).map_err(self.err(rel, "open target dir"))?;
                        for child in
                            list_dir(d.as_fd()).map_err(self.err(rel, "read target dir"))?
                        {
                            remove_all(d.as_fd(), os(&child))
                                .map_err(self.err(rel, "clear opaque dir"))?;
                        }
                    }
                }
                Some(_) => {
                    remove_all(dst, name).map_err(self.err(rel, "replace"))?;
                    nix::sys::stat::mkdirat(dst, name, Mode::from_bits_truncate(0o700))
                        .map_err(self.err(rel, "mkdir"))?;
                }
                None => {
                    nix::sys::stat::mkdirat(dst, name, Mode::from_bits_truncate(0o700))
                        .map_err(self.err(rel, "mkdir"))?;
                }
            }
            let dfd = open_dir_at(dst, name).map_err(self.err(rel, "open target dir"))?;
            self.dir(rel, sfd.as_fd(), dfd.as_fd(), child_fresh)?;
            self.dirs.push((rel.to_vec(), st));
            return Ok(None);
        }
        if existing.is_some() {
            remove_all(dst, name).map_err(self.err(rel, "replace"))?;
        }
        if st.st_nlink > 1 && kind(&st) == libc::S_IFREG {
            self.linked.push((rel.to_vec(), st));
            return Ok(None);
        }
        Ok(Some(st))
    }

    /// Creates one non-directory entry `name` of `src` in `dst`.
    fn copy_node(
        &self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        buf: &mut [u8],
    ) -> Result<(), FlattenError> {
        let st = *st;
        let (atime, mtime) = times(&st);
        match kind(&st) {
            libc::S_IFREG => {
                let sfd = nix::fcntl::openat(
                    src,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.err(rel, "open"))?;
                let dfd = sys::create_file_at(dst, name).map_err(self.err(rel, "create"))?;
                let size = u64::try_from(st.st_size).unwrap_or(0);
                if size > 0
                    && !sys::copy_range(sfd.as_fd(), dfd.as_fd(), size)
                        .map_err(self.err(rel, "copy"))?
                {
                    self.copy_slow(rel, &sfd, &dfd, buf)?;
                }
                if self.chown {
                    nix::unistd::fchown(
                        dfd.as_fd(),
                        Some(Uid::from_raw(st.st_uid)),
                        Some(Gid::from_raw(st.st_gid)),
                    )
                    .map_err(self.err(rel, "chown"))?;
                }
                nix::sys::stat::fchmod(dfd.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
                    .map_err(self.err(rel, "chmod"))?;
                self.copy_xattrs(rel, sfd.as_fd(), dfd.as_fd())?;
                nix::sys::stat::futimens(dfd.as_fd(), &atime, &mtime)
                    .map_err(self.err(rel, "set times"))?;
            }
            libc::S_IFLNK => {
                let target =
                    nix::fcntl::readlinkat(src, name).map_err(self.err(rel, "readlink"))?;
                nix::unistd::symlinkat(target.as_os_str(), dst, name)
                    .map_err(self.err(rel, "symlink"))?;
                self.own_at(rel, dst, name, &st)?;
                nix::sys::stat::utimensat(
                    dst,
                    name,
                    &atime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(self.err(rel, "set times"))?;
            }
            k => {
                let sflag = match k {
                    libc::S_IFCHR => SFlag::S_IFCHR,
                    libc::S_IFBLK => SFlag::S_IFBLK,
                    libc::S_IFIFO => SFlag::S_IFIFO,
                    _ => SFlag::S_IFSOCK,
                };
                mknodat(
                    dst,
                    name,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    st.st_rdev,
                )
                .map_err(self.err(rel, "mknod"))?;
                self.own_at(rel, dst, name, &st)?;
                nix::sys::stat::fchmodat(
                    dst,
                    name,
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                )
                .map_err(self.err(rel, "chmod"))?;
                nix::sys::stat::utimensat(
                    dst,
                    name,
                    &atime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(self.err(rel, "set times"))?;
            }
        }
        Ok(())
    }

    fn copy_slow(
        &self,
        rel: &[u8],
        src: &OwnedFd,
        dst: &OwnedFd,
        buf: &mut [u8],
    ) -> Result<(), FlattenError> {
        use std::io::{Read, Write};
        let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let mut s = std::fs::File::from(
            src.try_clone()
                .map_err(|e| self.err(rel, "dup")(errno(e)))?,
        );
        let mut d = std::fs::File::from(
            dst.try_clone()
                .map_err(|e| self.err(rel, "dup")(errno(e)))?,
        );
        loop {
            let n = s.read(buf).map_err(|e| self.err(rel, "read")(errno(e)))?;
            if n == 0 {
                return Ok(());
            }
            d.write_all(&buf[..n])
                .map_err(|e| self.err(rel, "write")(errno(e)))?;
        }
    }

    fn finish_dir(
        &self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        st: &FileStat,
    ) -> Result<(), FlattenError> {
        if self.chown {
            nix::unistd::fchown(
                dst,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(self.err(rel, "chown"))?;
        }
        nix::sys::stat::fchmod(dst, Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(self.err(rel, "chmod"))?;
        self.copy_xattrs(rel, src, dst)?;
        let (atime, mtime) = times(st);
        nix::sys::stat::futimens(dst, &atime, &mtime).map_err(self.err(rel, "set times"))
    }
}

/// Opens the directory `p` (`how`: O_RDONLY to read it, O_PATH to resolve below it).
fn open_dir(p: &Path, how: OFlag) -> Result<OwnedFd, FlattenError> {
    nix::fcntl::open(
        p,
        how | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| FlattenError::Fs {
        path: p.to_path_buf(),
        op: "open",
        errno,
    })
}

/// Whether a layer directory's root carries the opaque xattr (the layer
/// had `.wh..wh..opq` at its root: the layers below it are hidden).
pub fn root_is_opaque(layer: &Path) -> bool {
    open_dir(layer, OFlag::O_RDONLY)
        .ok()
        .and_then(|fd| sys::fgetxattr_all(fd.as_fd(), b"trusted.overlay.opaque").ok())
        .flatten()
        .is_some_and(|v| v == b"y")
}

/// Merges `layers` (bottom first) into the existing directory `target`.
/// A layer whose root is opaque hides the layers below it: merging starts
/// at the topmost such layer.
pub fn merge_layers(layers: &[PathBuf], target: &Path) -> Result<(), FlattenError> {
    let open = |p: &Path| open_dir(p, OFlag::O_RDONLY);
    let dst = open(target)?;
    let chown = nix::unistd::geteuid().is_root();
    let start = layers.iter().rposition(|l| root_is_opaque(l)).unwrap_or(0);
    for layer in &layers[start..] {
        let src = open(layer)?;
        let mut m = Merge {
            layer,
            src_root: src.as_fd(),
            dst_root: dst.as_fd(),
            chown,
            jobs: Vec::new(),
            linked: Vec::new(),
            dirs: Vec::new(),
        };
        // The target starts empty for the first layer: nothing in the way.
        let fresh = list_dir(dst.as_fd())
            .map_err(|errno| FlattenError::Fs {
                path: target.to_path_buf(),
                op: "read dir",
                errno,
            })?
            .is_empty();
        m.dir(b"", src.as_fd(), dst.as_fd(), fresh)?;
        m.copy_jobs()?;
        m.copy_linked()?;
        m.dirs
            .sort_by_key(|(rel, _)| std::cmp::Reverse(rel.iter().filter(|&&b| b == b'/').count()));
        for (rel, st) in &m.dirs {
            let (s, d) = m.open_pair(rel)?;
            m.finish_dir(rel, s.as_fd(), d.as_fd(), st)?;
        }
        let st = nix::sys::stat::fstat(src.as_fd()).map_err(m.err(b"", "stat"))?;
        m.finish_dir(b"", src.as_fd(), dst.as_fd(), &st)?;
    }
    Ok(())
}

impl Merge<'_> {
    /// Opens directory `rel` in the layer and in the target (symlinks in
    /// the path refused: the walk made these directories).
    fn open_pair(&self, rel: &[u8]) -> Result<(OwnedFd, OwnedFd), FlattenError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let p = Path::new(os(rel));
        let s =
            sys::open_in_root(self.src_root, p, flags, true).map_err(self.err(rel, "open dir"))?;
        let d = sys::open_in_root(self.dst_root, p, flags, true)
            .map_err(self.err(rel, "open target dir"))?;
        Ok((s, d))
    }

    /// Copies the queued entries, directory by directory, on all cores.
    fn copy_jobs(&self) -> Result<(), FlattenError> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.jobs.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<FlattenError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((rel, files)) = self.jobs.get(i) else {
                            return;
                        };
                        let r = self.open_pair(rel).and_then(|(s, d)| {
                            files.iter().try_for_each(|(name, st)| {
                                let mut crel = rel.clone();
                                if !crel.is_empty() {
                                    crel.push(b'/');
                                }
                                crel.extend_from_slice(name);
                                self.copy_node(&crel, s.as_fd(), d.as_fd(), os(name), st, &mut buf)
                            })
                        });
                        if let Err(e) = r {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            next.store(self.jobs.len(), Ordering::SeqCst);
                            return;
                        }
                    }
                });
            }
        });
        match failed.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Copies multiply-linked files once per inode and links the others.
    fn copy_linked(&self) -> Result<(), FlattenError> {
        let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let mut buf = vec![0u8; 256 * 1024];
        let split = |rel: &[u8]| -> (Vec<u8>, Vec<u8>) {
            match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => (rel[..i].to_vec(), rel[i + 1..].to_vec()),
                None => (Vec::new(), rel.to_vec()),
            }
        };
        for (rel, st) in &self.linked {
            let (parent, name) = split(rel);
            let (s, d) = self.open_pair(&parent)?;
            match first.get(&(st.st_dev, st.st_ino)) {
                Some(target) => {
                    let (tparent, tname) = split(target);
                    let t = sys::open_in_root(
                        self.dst_root,
                        Path::new(os(&tparent)),
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                        true,
                    )
                    .map_err(self.err(rel, "open link target dir"))?;
                    nix::unistd::linkat(
                        t.as_fd(),
                        os(&tname),
                        d.as_fd(),
                        os(&name),
                        AtFlags::empty(),
                    )
                    .map_err(self.err(rel, "link"))?;
                }
                None => {
                    self.copy_node(rel, s.as_fd(), d.as_fd(), os(&name), st, &mut buf)?;
                    first.insert((st.st_dev, st.st_ino), rel.clone());
                }
            }
        }
        Ok(())
    }
}

/// Gives the directories a layer created only as parents (no entry of their
/// own) the metadata the layers below have for them (`lowers`: nearest
/// first), so an overlay of the layers shows what applying the tars in
/// order would. Directories no lower layer has keep 0755 root:root.
pub fn inherit_implicit_dirs(
    layer: &Path,
    lowers: &[PathBuf],
    implicit: &[Vec<u8>],
) -> Result<(), FlattenError> {
    if implicit.is_empty() {
        return Ok(());
    }
    let open_root = |p: &Path| open_dir(p, OFlag::O_PATH);
    let root = open_root(layer)?;
    let lower_fds = lowers
        .iter()
        .map(|p| open_root(p))
        .collect::<Result<Vec<_>, _>>()?;
    let chown = nix::unistd::geteuid().is_root();
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    // Deepest first, so setting a child's times cannot disturb its parent's.
    for rel in implicit.iter().rev() {
        let path = Path::new(os(rel));
        let err = |op: &'static str| {
            let path = layer.join(path);
            move |errno| FlattenError::Fs { path, op, errno }
        };
        let Some(st) = lower_fds.iter().find_map(|fd| {
            sys::open_in_root(fd.as_fd(), path, dir_flags, true)
                .ok()
                .and_then(|d| nix::sys::stat::fstat(d.as_fd()).ok())
        }) else {
            continue;
        };
        let d = match sys::open_in_root(root.as_fd(), path, dir_flags, true) {
            Ok(d) => d,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
            Err(e) => return Err(err("open")(e)),
        };
        if chown {
            nix::unistd::fchown(
                d.as_fd(),
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(err("chown"))?;
        }
        nix::sys::stat::fchmod(d.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(err("chmod"))?;
        let (atime, mtime) = times(&st);
        nix::sys::stat::futimens(d.as_fd(), &atime, &mtime).map_err(err("set times"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::unpack::{unpack_layer, UnpackOptions, WhiteoutMode};

    fn tar(entries: &[(&str, &str)]) -> Vec<u8> {
        crate::testutil::layer_tar(entries)
    }

    #[test]
    fn merging_overlay_layers_equals_flattening_the_tars() {
        if !nix::unistd::geteuid().is_root() {
            // Overlay-form layers need trusted.* xattrs (CAP_SYS_ADMIN):
            // without root the unpack must refuse, naming the opaque entry.
            let tmp = tempfile::tempdir().unwrap();
            let l = tar(&[("var/.wh..wh..opq", "")]);
            let err = unpack_layer(
                &l[..],
                tmp.path(),
                &UnpackOptions::new(WhiteoutMode::Overlay),
                None,
            )
            .unwrap_err();
            assert!(err.to_string().contains("var/.wh..wh..opq"), "{err}");
            return;
        }
        let layers = [
            tar(&[
                ("etc/", ""),
                ("etc/a", "1"),
                ("etc/b", "2"),
                ("var/", ""),
                ("var/x", "x"),
                ("bin/", ""),
                ("bin/f", "f"),
            ]),
            tar(&[
                ("etc/.wh.a", ""),
                ("var/.wh..wh..opq", ""),
                ("var/", ""),
                ("var/y", "y"),
                ("bin/.wh.f", ""),
                ("bin/f/", ""),
            ]),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let flat = tmp.path().join("flat");
        fs::create_dir(&flat).unwrap();
        let mut dirs = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            unpack_layer(
                &l[..],
                &flat,
                &UnpackOptions::new(WhiteoutMode::Flatten),
                None,
            )
            .unwrap();
            let d = tmp.path().join(format!("l{i}"));
            fs::create_dir(&d).unwrap();
            unpack_layer(&l[..], &d, &UnpackOptions::new(WhiteoutMode::Overlay), None).unwrap();
            dirs.push(d);
        }
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).unwrap();
        merge_layers(&dirs, &merged).unwrap();
        for p in ["etc/b", "var/y", "bin/f"] {
            let a = fs::symlink_metadata(flat.join(p)).unwrap();
            let b = fs::symlink_metadata(merged.join(p)).unwrap();
            assert_eq!(a.permissions().mode(), b.permissions().mode(), "{p}");
            assert_eq!(a.mtime(), b.mtime(), "{p}");
            assert_eq!(a.is_dir(), b.is_dir(), "{p}");
        }
        for gone in ["etc/a", "var/x"] {
            assert!(!merged.join(gone).exists(), "{gone}");
        }
        assert_eq!(fs::read(merged.join("var/y")).unwrap(), b"y");
    }

    #[test]
    fn hardlinks_and_symlinks_are_preserved() {
        let tmp = tempfile::tempdir().unwrap();
        let l = tmp.path().join("l");
        fs::create_dir_all(l.join("d")).unwrap();
        fs::write(l.join("d/f"), b"data").unwrap();
        fs::hard_link(l.join("d/f"), l.join("g")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", l.join("s")).unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        merge_layers(&[l], &out).unwrap();
        assert_eq!(
            fs::metadata(out.join("g")).unwrap().ino(),
            fs::metadata(out.join("d/f")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(out.join("s")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::read(out.join("d/f")).unwrap(), b"data");
    }
}
