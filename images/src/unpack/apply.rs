//! Applies tar entries to a directory. Every path is resolved below the
//! root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS); the final
//! component is always created or removed relative to its parent's fd and
//! never followed, so no entry can reach outside the root.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::entry::{self, Meta, Node, Whiteout};
use super::{UnpackError, WhiteoutMode};
use crate::sys;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// One layer being applied to one root directory.
pub struct Applier {
    root: OwnedFd,
    mode: WhiteoutMode,
    chown: bool,
    /// The last parent directory used, by its normalized path.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Directory metadata applied at the end (children change mtimes, and a
    /// read-only mode must not block the entries below it).
    dirs: HashMap<Vec<u8>, Meta>,
    /// Paths this layer created (an opaque marker in flatten mode keeps them).
    seen: HashSet<Vec<u8>>,
    /// Directories made only because an entry below them needed a parent.
    implicit: std::cell::RefCell<HashSet<Vec<u8>>>,
    buf: Vec<u8>,
}

/// Where a failure happened, for errors.
struct Ctx<'a>(&'a str);

impl Ctx<'_> {
    fn fs(&self, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        move |errno| UnpackError::Fs {
            entry: self.0.to_string(),
            op,
            errno,
        }
    }

    fn hostile(&self, problem: impl Into<String>) -> UnpackError {
        UnpackError::Hostile {
            entry: self.0.to_string(),
            problem: problem.into(),
        }
    }
}

impl Applier {
    pub fn new(root: &Path, mode: WhiteoutMode, chown: bool) -> Result<Applier, UnpackError> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| UnpackError::Root {
            path: root.to_path_buf(),
            errno,
        })?;
        Ok(Applier {
            root: root_fd,
            mode,
            chown,
            cache: None,
            dirs: HashMap::new(),
            seen: HashSet::new(),
            implicit: std::cell::RefCell::new(HashSet::new()),
            buf: vec![0u8; 256 * 1024],
        })
    }

    /// Opens (and with `create`, makes) the directory `comps` below the root.
    /// Returns None when it does not exist and `create` is false.
    fn open_dir(
        &self,
        ctx: &Ctx<'_>,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let path = join(comps);
        match sys::open_in_root(self.root.as_fd(), Path::new(os(&path)), flags, true) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) if create => {}
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.resolve_error(ctx, &path, e)),
        }
        // Walk and create the missing directories (parents may lack entries).
        let mut cur = sys::open_in_root(self.root.as_fd(), Path::new("."), flags, true)
            .map_err(ctx.fs("open root"))?;
        for (i, c) in comps.iter().enumerate() {
            let name = os(c);
            match sys::open_in_root(cur.as_fd(), Path::new(name), flags, true) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(
                        cur.as_fd(),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) => {
                            self.implicit.borrow_mut().insert(join(&comps[..=i]));
                        }
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(ctx.fs("mkdir parent")(e)),
                    }
                    nix::sys::stat::fchmodat(
                        cur.as_fd(),
                        name,
                        Mode::from_bits_truncate(0o755),
                        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                    )
                    .or_else(|e| {
                        if e == Errno::EOPNOTSUPP {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(ctx.fs("chmod parent"))?;
                    cur = sys::open_in_root(cur.as_fd(), Path::new(name), flags, true)
                        .map_err(|e| self.resolve_error(ctx, &join(&comps[..=i]), e))?;
                }
                Err(e) => return Err(self.resolve_error(ctx, &join(&comps[..=i]), e)),
            }
        }
        Ok(Some(cur))
    }

    fn resolve_error(&self, ctx: &Ctx<'_>, path: &[u8], e: Errno) -> UnpackError {
        match e {
            Errno::ELOOP => ctx.hostile(format!(
                "its path `{}` goes through a symlink",
                entry::display(path)
            )),
            Errno::EXDEV => ctx.hostile(format!(
                "its path `{}` escapes the root",
                entry::display(path)
            )),
            Errno::ENOTDIR => ctx.hostile(format!(
                "`{}` in its path is not a directory",
                entry::display(path)
            )),
            e => UnpackError::Fs {
                entry: ctx.0.to_string(),
                op: "resolve parent",
                errno: e,
            },
        }
    }

    /// The parent directory fd for `parent`, from the one-entry cache when
    /// the previous entry had the same parent. Entries only ever remove
    /// children of the directory they resolve, so the cached fd stays valid.
    fn take_parent(
        &mut self,
        ctx: &Ctx<'_>,
        parent: &[&[u8]],
        create: bool,
    ) -> Result<Option<(Vec<u8>, OwnedFd)>, UnpackError> {
        let key = join(parent);
        if let Some((k, fd)) = self.cache.take() {
            if k == key {
                return Ok(Some((k, fd)));
            }
        }
        Ok(self.open_dir(ctx, parent, create)?.map(|fd| (key, fd)))
    }

    /// Applies one entry. `raw` is its name as written in the tar.
    pub fn apply<R: Read>(
        &mut self,
        raw: &[u8],
        node: Node,
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), UnpackError> {
        let shown = entry::display(raw);
        let ctx = Ctx(&shown);
        let comps = entry::normalize(raw).map_err(|p| ctx.hostile(p.to_string()))?;
        let Some((name, parent)) = comps.split_last() else {
            return match node {
                Node::Dir => {
                    self.dirs.insert(Vec::new(), meta.clone());
                    if self.chown {
                        nix::unistd::fchownat(
                            self.root.as_fd(),
                            ".",
                            Some(Uid::from_raw(meta.uid)),
                            Some(Gid::from_raw(meta.gid)),
                            AtFlags::empty(),
                        )
                        .map_err(ctx.fs("chown"))?;
                    }
                    Ok(())
                }
                _ => Err(ctx.hostile("a non-directory entry names the root itself")),
            };
        };
        match entry::classify(name).map_err(|p| ctx.hostile(p.to_string()))? {
            Whiteout::Meta => Ok(()),
            Whiteout::Remove(target) => self.whiteout(&ctx, parent, target),
            Whiteout::Opaque => self.opaque(&ctx, parent),
            Whiteout::No => {
                let (key, pfd) = self
                    .take_parent(&ctx, parent, true)?
                    .ok_or_else(|| ctx.hostile("parent vanished"))?;
                let r = self.create(&ctx, pfd.as_fd(), name, node, meta, data, &comps);
                self.cache = Some((key, pfd));
                r?;
                if self.mode == WhiteoutMode::Flatten {
                    self.seen.insert(join(&comps));
                }
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        node: Node,
        meta: &Meta,
        data: &mut R,
        comps: &[&[u8]],
    ) -> Result<(), UnpackError> {
        let name = os(name);
        // Create optimistically; what is in the way is looked at only on
        // EEXIST (a fresh layer directory rarely has anything there).
        if let Node::Dir = node {
            match mkdir(pfd, name) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let st =
                        fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(ctx.fs("stat"))?;
                    if !is_dir(&st) {
                        remove_all(pfd, name).map_err(ctx.fs("replace"))?;
                        mkdir(pfd, name).map_err(ctx.fs("mkdir"))?;
                    }
                }
                Err(e) => return Err(ctx.fs("mkdir")(e)),
            }
            self.own(ctx, pfd, name, meta)?;
            if !meta.xattrs.is_empty() {
                let fd = nix::fcntl::openat(
                    pfd,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(ctx.fs("open dir"))?;
                set_xattrs(ctx, fd.as_fd(), meta)?;
            }
            self.implicit.borrow_mut().remove(&join(comps));
            self.dirs.insert(join(comps), meta.clone());
            return Ok(());
        }
        // Hard links to the very file already there are a no-op.
        if let Node::Hardlink(target) = &node {
            let existing = match fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(ctx.fs("stat")(e)),
            };
            let tcomps: Vec<&[u8]> = target.iter().map(Vec::as_slice).collect();
            let (tname, tparent) = tcomps
                .split_last()
                .ok_or_else(|| ctx.hostile("hard link to the root"))?;
            let tpfd = self.open_dir(ctx, tparent, false)?.ok_or_else(|| {
                ctx.hostile(format!(
                    "hard link target `{}` does not exist in this layer",
                    entry::display(&join(&tcomps))
                ))
            })?;
            let tst = match fstatat(tpfd.as_fd(), os(tname), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => {
                    return Err(ctx.hostile(format!(
                        "hard link target `{}` does not exist in this layer",
                        entry::display(&join(&tcomps))
                    )))
                }
                Err(e) => return Err(ctx.fs("stat link target")(e)),
            };
            if is_dir(&tst) {
                return Err(ctx.hostile("hard link to a directory"));
            }
            if let Some(st) = existing {
                if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                    return Ok(());
                }
                remove_all(pfd, name).map_err(ctx.fs("replace"))?;
            }
            nix::unistd::linkat(tpfd.as_fd(), os(tname), pfd, name, AtFlags::empty())
                .map_err(ctx.fs("link"))?;
            return Ok(());
        }
        match node {
            Node::File => {
                let fd = replacing(pfd, name, || sys::create_file_at(pfd, name))
                    .map_err(ctx.fs("create"))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = match data.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(source) => return Err(UnpackError::Tar { source }),
                    };
                    file.write_all(&self.buf[..n])
                        .map_err(|e| UnpackError::Fs {
                            entry: ctx.0.to_string(),
                            op: "write",
                            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                        })?;
                }
                if self.chown {
                    nix::unistd::fchown(
                        file.as_fd(),
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                    )
                    .map_err(ctx.fs("chown"))?;
                }
                nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(meta.mode))
                    .map_err(ctx.fs("chmod"))?;
                set_xattrs(ctx, file.as_fd(), meta)?;
                let t = times(meta);
                nix::sys::stat::futimens(file.as_fd(), &t, &t).map_err(ctx.fs("set times"))?;
                Ok(())
            }
            Node::Symlink(target) => {
                replacing(pfd, name, || nix::unistd::symlinkat(os(&target), pfd, name))
                    .map_err(ctx.fs("symlink"))?;
                self.own(ctx, pfd, name, meta)?;
                let t = times(meta);
                nix::sys::stat::utimensat(pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(ctx.fs("set times"))?;
                Ok(())
            }
            Node::Char(..) | Node::Block(..) | Node::Fifo => {
                let (kind, dev) = match node {
                    Node::Char(ma, mi) => (SFlag::S_IFCHR, libc::makedev(ma, mi)),
                    Node::Block(ma, mi) => (SFlag::S_IFBLK, libc::makedev(ma, mi)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                replacing(pfd, name, || {
                    mknodat(pfd, name, kind, Mode::from_bits_truncate(0o600), dev)
                })
                .map_err(ctx.fs("mknod"))?;
                self.own(ctx, pfd, name, meta)?;
                nix::sys::stat::fchmodat(
                    pfd,
                    name,
                    Mode::from_bits_truncate(meta.mode),
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                )
                .map_err(ctx.fs("chmod"))?;
                let t = times(meta);
                nix::sys::stat::utimensat(pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(ctx.fs("set times"))?;
                Ok(())
            }
            Node::Dir | Node::Hardlink(_) => Ok(()),
        }
    }

    fn own(
        &self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if !self.chown {
            return Ok(());
        }
        nix::unistd::fchownat(
            pfd,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(ctx.fs("chown"))
    }

    fn whiteout(
        &mut self,
        ctx: &Ctx<'_>,
        parent: &[&[u8]],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let create = self.mode == WhiteoutMode::Overlay;
        let Some((key, pfd)) = self.take_parent(ctx, parent, create)? else {
            return Ok(());
        };
        let name = os(target);
        let r = (|| match self.mode {
            WhiteoutMode::Flatten => match remove_all(pfd.as_fd(), name) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(ctx.fs("remove whited-out path")(e)),
            },
            WhiteoutMode::Overlay => {
                match remove_all(pfd.as_fd(), name) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(ctx.fs("replace")(e)),
                }
                // Overlayfs's whiteout: a 0/0 character device.
                mknodat(
                    pfd.as_fd(),
                    name,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    libc::makedev(0, 0),
                )
                .map_err(ctx.fs("mknod whiteout"))
            }
        })();
        self.cache = Some((key, pfd));
        r
    }

    fn opaque(&mut self, ctx: &Ctx<'_>, dir: &[&[u8]]) -> Result<(), UnpackError> {
        match self.mode {
            WhiteoutMode::Flatten => {
                let Some(fd) = self.open_dir(ctx, dir, false)? else {
                    return Ok(());
                };
                let prefix = join(dir);
                for child in list_dir(fd.as_fd()).map_err(ctx.fs("read opaque dir"))? {
                    let mut full = prefix.clone();
                    if !full.is_empty() {
                        full.push(b'/');
                    }
                    full.extend_from_slice(&child);
                    if !self.seen.contains(&full) {
                        remove_all(fd.as_fd(), os(&child)).map_err(ctx.fs("clear opaque dir"))?;
                    }
                }
                Ok(())
            }
            WhiteoutMode::Overlay => {
                drop(self.open_dir(ctx, dir, true)?);
                let fd = sys::open_in_root(
                    self.root.as_fd(),
                    Path::new(os(&join(dir))),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                    true,
                )
                .map_err(|e| self.resolve_error(ctx, &join(dir), e))?;
                sys::fsetxattr(fd.as_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(ctx.fs("set trusted.overlay.opaque"))
            }
        }
    }

    /// Applies the deferred directory modes and times, deepest first, and
    /// returns the directories that were created implicitly (no entry of
    /// their own), sorted: their metadata belongs to the layers below.
    pub fn finish(mut self) -> Result<Vec<Vec<u8>>, UnpackError> {
        self.cache = None;
        let mut dirs: Vec<(Vec<u8>, Meta)> = self.dirs.drain().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (path, meta) in dirs {
            let shown = entry::display(&path);
            let ctx = Ctx(&shown);
            let fd = match sys::open_in_root(
                self.root.as_fd(),
                Path::new(os(&path)),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                true,
            ) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry: nothing to set.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(ctx.fs("open dir")(e)),
            };
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(meta.mode))
                .map_err(ctx.fs("chmod"))?;
            let t = times(&meta);
            nix::sys::stat::futimens(fd.as_fd(), &t, &t).map_err(ctx.fs("set times"))?;
        }
        let mut implicit: Vec<Vec<u8>> = self.implicit.into_inner().into_iter().collect();
        implicit.sort();
        Ok(implicit)
    }
}

/// Runs `make`; if something is in the way (EEXIST), removes it (never
/// following symlinks) and runs `make` once more.
fn replacing<T>(
    pfd: BorrowedFd<'_>,
    name: &OsStr,
    make: impl Fn() -> Result<T, Errno>,
) -> Result<T, Errno> {
    match make() {
        Err(Errno::EEXIST) => {
            remove_all(pfd, name)?;
            make()
        }
        other => other,
    }
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn mkdir(pfd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    nix::sys::stat::mkdirat(pfd, name, Mode::from_bits_truncate(0o700))
}

fn times(meta: &Meta) -> TimeSpec {
    TimeSpec::new(meta.mtime_sec, meta.mtime_nsec)
}

fn set_xattrs(ctx: &Ctx<'_>, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
    for (k, v) in &meta.xattrs {
        if !entry::xattr_allowed(k) {
            continue;
        }
        match sys::fsetxattr(fd, k, v) {
            Ok(()) => {}
            // "Where the filesystem takes them."
            Err(Errno::EOPNOTSUPP) => {
                tracing::debug!(entry = ctx.0, xattr = %entry::display(k), "filesystem refuses xattr");
            }
            Err(errno) => {
                return Err(UnpackError::Xattr {
                    entry: ctx.0.to_string(),
                    name: entry::display(k),
                    errno,
                })
            }
        }
    }
    Ok(())
}

/// The names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` below `pfd`, recursively for directories, never following
/// symlinks.
pub fn remove_all(pfd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match nix::unistd::unlinkat(pfd, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let fd = nix::fcntl::openat(
        pfd,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(fd.as_fd())? {
        remove_all(fd.as_fd(), os(&child))?;
    }
    nix::unistd::unlinkat(pfd, name, UnlinkatFlags::RemoveDir)
}
