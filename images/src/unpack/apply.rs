//! Applies tar entries to a directory, with the OCI image-spec layer rules:
//!
//! - Parent directories are resolved inside the root by [`super::resolve`]
//!   (symlinks followed inside the root, also those of lower layers in
//!   overlay mode); the final component is created or removed relative to
//!   its parent's descriptor and never followed, so no entry reaches outside.
//! - A whiteout `.wh.NAME` removes NAME from the layers *below* only: what
//!   this layer itself writes at NAME (before or after the whiteout) stays,
//!   and a directory of this layer there keeps its own entries but hides the
//!   lower ones (it becomes opaque).
//! - An opaque marker `DIR/.wh..wh..opq` hides everything the lower layers
//!   have in DIR, whatever the entry order; at the layer's root it hides the
//!   lower layers entirely (the root directory gets the opaque xattr, which
//!   snapshots and flattening honour).
//! - A hard link must name a file this layer created (a whited-out path is
//!   not one).
//!
//! In [`WhiteoutMode::Overlay`] a whiteout is a 0/0 character device and an
//! opaque directory carries `trusted.overlay.opaque=y`, as overlayfs reads
//! them; in [`WhiteoutMode::Flatten`] lower content is deleted from the root.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::entry::{self, Meta, Node, Whiteout};
use super::resolve::{self, is_whiteout, join, kind, os, LowerView, Missing, WalkHooks};
use super::sparse::{check, read_map_10, Sparse, SparseMap};
use super::{EntryAt, UnpackError, WhiteoutMode};
use crate::sys;

/// What this layer did, by canonical path (no symlink in it).
#[derive(Default)]
struct Book {
    overlay: bool,
    /// Paths this layer created (any type).
    created: HashSet<Vec<u8>>,
    /// Proper ancestors of created paths (and directories that carry an
    /// opaque marker): this layer's own directories.
    ancestors: HashSet<Vec<u8>>,
    /// Paths this layer whited out (overlay mode: a 0/0 device is there).
    whited: HashSet<Vec<u8>>,
    /// Directories this layer made opaque (overlay mode).
    opaque: HashSet<Vec<u8>>,
    /// Directories made only as parents of entries.
    implicit: HashSet<Vec<u8>>,
}

impl Book {
    fn own(&mut self, path: &[u8]) {
        self.created.insert(path.to_vec());
        self.whited.remove(path);
        self.own_ancestors(path);
    }

    fn own_ancestors(&mut self, path: &[u8]) {
        let mut p = path;
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if !self.ancestors.insert(p.to_vec()) {
                break;
            }
        }
        self.ancestors.insert(Vec::new());
    }

    fn mine(&self, path: &[u8]) -> bool {
        self.created.contains(path) || self.ancestors.contains(path)
    }
}

fn set_opaque(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    sys::fsetxattr(fd.as_fd(), b"trusted.overlay.opaque", b"y")
}

impl WalkHooks for Book {
    fn implicit(&mut self, path: &[u8]) {
        self.implicit.insert(path.to_vec());
    }

    fn whited_out(&self, path: &[u8]) -> bool {
        self.overlay && self.whited.contains(path)
    }

    fn reopen_whiteout(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), Errno> {
        // This layer deleted the lower `path` and now puts entries below it:
        // a directory that hides the lower one.
        nix::unistd::unlinkat(dir, os(name), UnlinkatFlags::NoRemoveDir)?;
        nix::sys::stat::mkdirat(dir, os(name), Mode::from_bits_truncate(0o755))?;
        set_opaque(dir, os(name))?;
        self.whited.remove(path);
        self.opaque.insert(path.to_vec());
        Ok(())
    }

    fn opaque(&self, path: &[u8]) -> bool {
        self.opaque.contains(path)
    }
}

/// One layer being applied to one root directory.
pub struct Applier<'l> {
    root: OwnedFd,
    chown: bool,
    lower: Option<&'l dyn LowerView>,
    /// The last parent resolved: raw key, canonical path, descriptor.
    cache: Option<(Vec<u8>, Vec<Vec<u8>>, OwnedFd)>,
    /// Directory metadata applied at the end (children change mtimes, and a
    /// read-only mode must not block the entries below it).
    dirs: HashMap<Vec<u8>, Meta>,
    book: Book,
    buf: Vec<u8>,
}

/// Where a failure happened, for errors.
struct Ctx<'a>(&'a EntryAt);

impl Ctx<'_> {
    fn fs(&self, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        move |errno| UnpackError::Fs {
            at: self.0.clone(),
            op,
            errno,
        }
    }

    fn hostile(&self, problem: impl Into<String>) -> UnpackError {
        UnpackError::Hostile {
            at: self.0.clone(),
            problem: problem.into(),
        }
    }

    fn resolve(&self, p: resolve::ResolveProblem) -> UnpackError {
        match p {
            resolve::ResolveProblem::Fs(op, errno) => UnpackError::Fs {
                at: self.0.clone(),
                op,
                errno,
            },
            p => self.hostile(p.to_string()),
        }
    }
}

impl<'l> Applier<'l> {
    /// `lower` (overlay mode only): the layers below, for parent symlinks.
    pub fn new(
        root: &Path,
        mode: WhiteoutMode,
        chown: bool,
        lower: Option<&'l dyn LowerView>,
    ) -> Result<Applier<'l>, UnpackError> {
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
            chown,
            lower: lower.filter(|_| mode == WhiteoutMode::Overlay),
            cache: None,
            dirs: HashMap::new(),
            book: Book {
                overlay: mode == WhiteoutMode::Overlay,
                ..Book::default()
            },
            buf: vec![0u8; 256 * 1024],
        })
    }

    /// Resolves the directory `comps` (see [`resolve::resolve_dir`]), from
    /// the one-entry cache when the previous entry had the same parent.
    fn dir(
        &mut self,
        ctx: &Ctx<'_>,
        comps: &[&[u8]],
        missing: Missing,
    ) -> Result<Option<resolve::Resolved>, UnpackError> {
        let key = comps.join(&b'/');
        if let Some((k, canon, fd)) = &self.cache {
            if *k == key {
                let dup = fd.try_clone().map_err(|e| ctx.fs("dup")(errno_of(&e)))?;
                return Ok(Some((canon.clone(), dup)));
            }
        }
        let r = resolve::resolve_dir(
            self.root.as_fd(),
            comps,
            missing,
            self.lower,
            &mut self.book,
        )
        .map_err(|p| ctx.resolve(p))?;
        if let Some((canon, fd)) = &r {
            if let Ok(dup) = fd.try_clone() {
                self.cache = Some((key, canon.clone(), dup));
            }
        }
        Ok(r)
    }

    /// Forgets the cached parent if `path` (just replaced or removed) is it
    /// or one of its ancestors.
    fn invalidate(&mut self, path: &[u8]) {
        if let Some((_, canon, _)) = &self.cache {
            let c = join(canon);
            if c == path
                || c.starts_with(path) && c.get(path.len()) == Some(&b'/')
                || path.is_empty()
            {
                self.cache = None;
            }
        }
    }

    /// Applies one entry. `raw` is its name as written in the tar.
    pub fn apply<R: Read>(
        &mut self,
        at: &EntryAt,
        raw: &[u8],
        node: Node,
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), UnpackError> {
        let ctx = Ctx(at);
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
                let Some((pc, pfd)) = self.dir(&ctx, parent, Missing::Create)? else {
                    return Err(ctx.hostile("parent vanished"));
                };
                let mut path = join(&pc);
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                self.invalidate(&path);
                self.create(&ctx, pfd.as_fd(), name, &path, node, meta, data)?;
                self.book.own(&path);
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
        path: &[u8],
        node: Node,
        meta: &Meta,
        data: &mut R,
    ) -> Result<(), UnpackError> {
        let name = os(name);
        match node {
            Node::Dir => self.make_dir(ctx, pfd, name, path, meta),
            Node::Hardlink(target) => self.hardlink(ctx, pfd, name, &target),
            Node::File => self.write_file(ctx, pfd, name, meta, data, None),
            Node::Sparse(sp) => self.write_file(ctx, pfd, name, meta, data, Some(&sp)),
            Node::Symlink(target) => {
                replacing(pfd, name, || nix::unistd::symlinkat(os(&target), pfd, name))
                    .map_err(ctx.fs("symlink"))?;
                self.own_at(ctx, pfd, name, meta)?;
                let t = times(meta);
                nix::sys::stat::utimensat(pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(ctx.fs("set times"))
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
                self.own_at(ctx, pfd, name, meta)?;
                nix::sys::stat::fchmodat(
                    pfd,
                    name,
                    Mode::from_bits_truncate(meta.mode),
                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                )
                .map_err(ctx.fs("chmod"))?;
                let t = times(meta);
                nix::sys::stat::utimensat(pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(ctx.fs("set times"))
            }
        }
    }

    /// Creates the regular file `name` with the entry's data (a sparse
    /// file's chunks at their offsets, holes between them).
    fn write_file<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        data: &mut R,
        sparse: Option<&Sparse>,
    ) -> Result<(), UnpackError> {
        let fd =
            replacing(pfd, name, || sys::create_file_at(pfd, name)).map_err(ctx.fs("create"))?;
        let mut file = std::fs::File::from(fd);
        match sparse {
            None => self.copy_data(ctx, data, &mut file, None)?,
            Some(sp) => {
                let (map, consumed) = match &sp.map {
                    SparseMap::Given(m) => (m.clone(), 0),
                    SparseMap::InData => read_map_10(data).map_err(|p| ctx.hostile(p))?,
                };
                let left = sp.data_size.saturating_sub(consumed);
                check(&map, sp.real_size, left).map_err(|p| ctx.hostile(p))?;
                for (off, len) in map {
                    file.seek(SeekFrom::Start(off))
                        .map_err(|e| ctx.fs("seek")(errno_of(&e)))?;
                    self.copy_data(ctx, data, &mut file, Some(len))?;
                }
                file.set_len(sp.real_size)
                    .map_err(|e| ctx.fs("set sparse file size")(errno_of(&e)))?;
            }
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
        nix::sys::stat::futimens(file.as_fd(), &t, &t).map_err(ctx.fs("set times"))
    }

    /// Copies the entry's data (or exactly `len` bytes of it) into `file`.
    fn copy_data<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        data: &mut R,
        file: &mut std::fs::File,
        len: Option<u64>,
    ) -> Result<(), UnpackError> {
        let mut left = len.unwrap_or(u64::MAX);
        // Runs of zeros become holes (no disk blocks for zero-filled files or
        // a bomb's zeros); the length is set at the end.
        let mut hole_at_end = false;
        while left > 0 {
            let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) if len.is_some() => {
                    return Err(ctx.hostile("the entry's data ends inside a sparse chunk"))
                }
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Tar {
                        at: Some(ctx.0.clone()),
                        error: source,
                    })
                }
            };
            if self.buf[..n].iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(n as i64))
                    .map_err(|e| ctx.fs("seek")(errno_of(&e)))?;
                hole_at_end = true;
            } else {
                file.write_all(&self.buf[..n])
                    .map_err(|e| ctx.fs("write")(errno_of(&e)))?;
                hole_at_end = false;
            }
            left -= n as u64;
        }
        if hole_at_end {
            let end = file
                .stream_position()
                .map_err(|e| ctx.fs("seek")(errno_of(&e)))?;
            file.set_len(end)
                .map_err(|e| ctx.fs("set file size")(errno_of(&e)))?;
        }
        Ok(())
    }

    fn make_dir(
        &mut self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        path: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match mkdir(pfd, name) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st =
                    fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(ctx.fs("stat"))?;
                if kind(&st) != libc::S_IFDIR {
                    let reopens_whiteout = is_whiteout(&st) && self.book.whited_out(path);
                    remove_all(pfd, name).map_err(ctx.fs("replace"))?;
                    mkdir(pfd, name).map_err(ctx.fs("mkdir"))?;
                    if reopens_whiteout {
                        // The lower directory stays deleted: only this layer's entries show.
                        set_opaque(pfd, name).map_err(ctx.fs("set trusted.overlay.opaque"))?;
                        self.book.opaque.insert(path.to_vec());
                    }
                }
            }
            Err(e) => return Err(ctx.fs("mkdir")(e)),
        }
        self.own_at(ctx, pfd, name, meta)?;
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
        self.book.implicit.remove(path);
        self.dirs.insert(path.to_vec(), meta.clone());
        Ok(())
    }

    fn hardlink(
        &mut self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        target: &[Vec<u8>],
    ) -> Result<(), UnpackError> {
        let tcomps: Vec<&[u8]> = target.iter().map(Vec::as_slice).collect();
        let (tname, tparent) = tcomps
            .split_last()
            .ok_or_else(|| ctx.hostile("hard link to the root"))?;
        let not_here = || {
            ctx.hostile(format!(
                "hard link target `{}` is not a file of this layer",
                entry::display(&tcomps.join(&b'/'))
            ))
        };
        let (tc, tpfd) = resolve::resolve_dir(
            self.root.as_fd(),
            tparent,
            Missing::Stop,
            self.lower,
            &mut self.book,
        )
        .map_err(|p| ctx.resolve(p))?
        .ok_or_else(not_here)?;
        let mut tpath = join(&tc);
        if !tpath.is_empty() {
            tpath.push(b'/');
        }
        tpath.extend_from_slice(tname);
        if !self.book.created.contains(&tpath) {
            return Err(not_here());
        }
        let tst = match fstatat(tpfd.as_fd(), os(tname), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Err(not_here()),
            Err(e) => return Err(ctx.fs("stat link target")(e)),
        };
        if kind(&tst) == libc::S_IFDIR {
            return Err(ctx.hostile("hard link to a directory"));
        }
        match fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev => return Ok(()),
            Ok(_) => remove_all(pfd, name).map_err(ctx.fs("replace"))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.fs("stat")(e)),
        }
        nix::unistd::linkat(tpfd.as_fd(), os(tname), pfd, name, AtFlags::empty())
            .map_err(ctx.fs("link"))
    }

    fn own_at(
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
        let missing = if self.book.overlay {
            Missing::IfBelow
        } else {
            Missing::Stop
        };
        let Some((pc, pfd)) = self.dir(ctx, parent, missing)? else {
            return Ok(());
        };
        let mut path = join(&pc);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(target);
        let name = os(target);
        if self.book.mine(&path) {
            // This layer's own entry stays; a directory of it hides the lower one.
            return match fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if kind(&st) == libc::S_IFDIR => {
                    self.hide_lower(ctx, pfd.as_fd(), name, &path)
                }
                Ok(_) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(ctx.fs("stat")(e)),
            };
        }
        self.invalidate(&path);
        match remove_all(pfd.as_fd(), name) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.fs("remove whited-out path")(e)),
        }
        if self.book.overlay {
            // overlayfs's whiteout: a 0/0 character device.
            mknodat(
                pfd.as_fd(),
                name,
                SFlag::S_IFCHR,
                Mode::empty(),
                libc::makedev(0, 0),
            )
            .map_err(ctx.fs("mknod whiteout"))?;
            self.book.whited.insert(path);
        }
        Ok(())
    }

    /// Makes the directory `name` in `pfd` (canonical `path`) show only
    /// this layer's entries.
    fn hide_lower(
        &mut self,
        ctx: &Ctx<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        if self.book.overlay {
            set_opaque(pfd, name).map_err(ctx.fs("set trusted.overlay.opaque"))?;
            self.book.opaque.insert(path.to_vec());
            return Ok(());
        }
        let fd = nix::fcntl::openat(
            pfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(ctx.fs("open dir"))?;
        for child in list_dir(fd.as_fd()).map_err(ctx.fs("read dir"))? {
            let mut cpath = path.to_vec();
            if !cpath.is_empty() {
                cpath.push(b'/');
            }
            cpath.extend_from_slice(&child);
            if !self.book.mine(&cpath) {
                remove_all(fd.as_fd(), os(&child)).map_err(ctx.fs("remove lower entry"))?;
                continue;
            }
            match fstatat(fd.as_fd(), os(&child), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if kind(&st) == libc::S_IFDIR => {
                    self.hide_lower(ctx, fd.as_fd(), os(&child), &cpath)?
                }
                Ok(_) => {}
                Err(e) => return Err(ctx.fs("stat")(e)),
            }
        }
        Ok(())
    }

    fn opaque(&mut self, ctx: &Ctx<'_>, dir: &[&[u8]]) -> Result<(), UnpackError> {
        let missing = if self.book.overlay {
            Missing::IfBelow
        } else {
            Missing::Stop
        };
        let Some((dc, dfd)) = self.dir(ctx, dir, missing)? else {
            return Ok(());
        };
        let path = join(&dc);
        self.book.ancestors.insert(path.clone());
        self.book.own_ancestors(&path);
        if path.is_empty() {
            // The layer's root: no parent descriptor to name it from.
            if self.book.overlay {
                let fd = sys::open_in_root(
                    self.root.as_fd(),
                    Path::new("."),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                    true,
                )
                .map_err(ctx.fs("open root"))?;
                sys::fsetxattr(fd.as_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(ctx.fs("set trusted.overlay.opaque"))?;
                self.book.opaque.insert(Vec::new());
                return Ok(());
            }
            let root = self
                .root
                .try_clone()
                .map_err(|e| ctx.fs("dup")(errno_of(&e)))?;
            return self.hide_lower(ctx, root.as_fd(), OsStr::new("."), b"");
        }
        let name = dc.last().map(Vec::as_slice).unwrap_or_default().to_vec();
        let parent = sys::open_in_root(
            self.root.as_fd(),
            Path::new(os(&join(&dc[..dc.len() - 1]))),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            true,
        )
        .map_err(ctx.fs("open parent"))?;
        drop(dfd);
        self.hide_lower(ctx, parent.as_fd(), os(&name), &path)
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
            let at = EntryAt {
                entry: entry::display(&path),
                offset: None,
            };
            let ctx = Ctx(&at);
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
        let mut implicit: Vec<Vec<u8>> = self.book.implicit.into_iter().collect();
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

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
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
                tracing::debug!(entry = %ctx.0, xattr = %entry::display(k), "filesystem refuses xattr");
            }
            Err(errno) => {
                return Err(UnpackError::Xattr {
                    at: ctx.0.clone(),
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
