//! Resolving an entry's parent directory inside a layer root, following
//! symlinks the way containerd's applier does: every parent component is
//! resolved inside the root (a symlink's target is taken relative to the
//! root, `..` stops at the root), the final component is never followed.
//!
//! The walk is done one component at a time from directory descriptors
//! (`openat` with `O_NOFOLLOW`, symlink targets read and spliced into the
//! remaining path by this code), so no path ever leaves the root. When a
//! layer is unpacked into its own directory, a component missing there is
//! looked up in the layers below ([`LowerView`]): a symlink there (a
//! usrmerged base's `lib -> usr/lib`) is followed as if the layers were
//! already stacked, so a later layer's `lib/x.so` lands in `usr/lib/x.so`.
//! Other missing components are created as plain directories (implicit
//! parents).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};

use super::entry;
use crate::sys;

/// Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS.
pub const MAX_HOPS: u32 = 40;

pub fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(b)
}

/// Joins canonical components into a relative path (`""` for the root).
pub fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

pub fn kind(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// A 0/0 character device: overlayfs's whiteout.
pub fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == libc::S_IFCHR && st.st_rdev == 0
}

/// What the stacked layers below show at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowerKind {
    Missing,
    Dir,
    Symlink(Vec<u8>),
    Other,
}

/// Looks paths up in layers below the one being unpacked (overlay form,
/// top first), as an overlay mount of them would show them.
pub trait LowerView {
    /// `path` is canonical (its parent is a directory in the stacked view).
    fn lookup(&self, path: &[Vec<u8>]) -> Result<LowerKind, String>;
}

/// Layer directories opened once: the real [`LowerView`].
pub struct LowerDirs {
    /// Top first; the bottom one may have an opaque root (nothing below it
    /// was included by the caller).
    layers: Vec<OwnedFd>,
}

impl LowerDirs {
    pub fn open(dirs: &[std::path::PathBuf]) -> Result<LowerDirs, String> {
        let layers = dirs
            .iter()
            .map(|d| {
                nix::fcntl::open(
                    d,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| format!("opening lower layer {}: {e}", d.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LowerDirs { layers })
    }
}

/// What one layer says about a path.
enum Says {
    /// Nothing there: ask the next layer down.
    Nothing,
    /// The answer, and nothing below counts.
    Final(LowerKind),
    /// A directory; `opaque` hides the layers below.
    Dir { opaque: bool },
}

fn layer_says(layer: BorrowedFd<'_>, path: &[Vec<u8>]) -> Result<Says, Errno> {
    let open = |dir: BorrowedFd<'_>, name: &[u8]| {
        nix::fcntl::openat(
            dir,
            os(name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let opaque = |fd: BorrowedFd<'_>| -> Result<bool, Errno> {
        Ok(sys::fgetxattr_all(fd, b"trusted.overlay.opaque")?.is_some_and(|v| v == b"y"))
    };
    let mut cur: Option<OwnedFd> = None;
    let mut opaque_above = false;
    for (i, c) in path.iter().enumerate() {
        let dir = cur.as_ref().map_or(layer, |f| f.as_fd());
        let st = match fstatat(dir, os(c), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) if opaque_above => return Ok(Says::Final(LowerKind::Missing)),
            Err(Errno::ENOENT) => return Ok(Says::Nothing),
            Err(e) => return Err(e),
        };
        let last = i + 1 == path.len();
        if is_whiteout(&st) {
            return Ok(Says::Final(LowerKind::Missing));
        }
        match kind(&st) {
            libc::S_IFDIR => {
                let fd = open(dir, c)?;
                let o = opaque(fd.as_fd())?;
                if last {
                    return Ok(Says::Dir { opaque: o });
                }
                opaque_above |= o;
                cur = Some(fd);
            }
            libc::S_IFLNK if last => {
                let t = nix::fcntl::readlinkat(dir, os(c))?;
                return Ok(Says::Final(LowerKind::Symlink(t.as_bytes().to_vec())));
            }
            // A non-directory hides everything below it at this path.
            _ if last => return Ok(Says::Final(LowerKind::Other)),
            _ => return Ok(Says::Final(LowerKind::Missing)),
        }
    }
    // The root itself.
    Ok(Says::Dir { opaque: false })
}

impl LowerView for LowerDirs {
    fn lookup(&self, path: &[Vec<u8>]) -> Result<LowerKind, String> {
        let mut seen_dir = false;
        for layer in &self.layers {
            match layer_says(layer.as_fd(), path).map_err(|e| {
                format!(
                    "looking up `{}` in a lower layer: {e}",
                    entry::display(&join(path))
                )
            })? {
                Says::Nothing => {}
                // A directory above merges only with directories below.
                Says::Final(k) => return Ok(if seen_dir { LowerKind::Dir } else { k }),
                Says::Dir { opaque } => {
                    seen_dir = true;
                    if opaque {
                        break;
                    }
                }
            }
        }
        Ok(if seen_dir {
            LowerKind::Dir
        } else {
            LowerKind::Missing
        })
    }
}

/// Why a path could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveProblem {
    /// More than [`MAX_HOPS`] symlinks.
    Loop,
    /// A component (shown) is neither a directory nor a symlink.
    NotDir(Vec<u8>),
    /// A syscall failed on a component.
    Fs(&'static str, Errno),
    /// The lower layers could not be read.
    Lower(String),
}

impl std::fmt::Display for ResolveProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveProblem::Loop => write!(f, "more than {MAX_HOPS} symlinks in its path"),
            ResolveProblem::NotDir(p) => {
                write!(f, "`{}` in its path is not a directory", entry::display(p))
            }
            ResolveProblem::Fs(op, e) => write!(f, "{op}: {e}"),
            ResolveProblem::Lower(e) => write!(f, "{e}"),
        }
    }
}

/// What to do with a component missing from the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create it as a directory (reported to `on_implicit`).
    Create,
    /// Stop: the path does not exist.
    Stop,
    /// Create it only where the layers below have a directory (or no lower
    /// view was given): a whiteout or an opaque marker in a directory that
    /// exists nowhere changes nothing, and makes no directory either.
    IfBelow,
}

/// Hooks of the walk into the applier's bookkeeping.
pub trait WalkHooks {
    /// A directory made as a parent (canonical path).
    fn implicit(&mut self, path: &[u8]);
    /// Whether this layer whited out `path` (its 0/0 device may be replaced
    /// by an opaque directory when an entry goes below it).
    fn whited_out(&self, path: &[u8]) -> bool;
    /// Replaces this layer's whiteout at `name` in `dir` (canonical `path`)
    /// with an opaque directory.
    fn reopen_whiteout(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), Errno>;
    /// Whether `path` is a directory this layer made opaque.
    fn opaque(&self, path: &[u8]) -> bool;
}

/// A resolved directory: its canonical components and an O_PATH descriptor.
pub type Resolved = (Vec<Vec<u8>>, OwnedFd);

/// Resolves the directory `comps` below `root` (see the module doc) and
/// returns its canonical components and an O_PATH descriptor, or None when a
/// component is missing and `missing` is [`Missing::Stop`].
pub fn resolve_dir(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
    missing: Missing,
    lower: Option<&dyn LowerView>,
    hooks: &mut dyn WalkHooks,
) -> Result<Option<Resolved>, ResolveProblem> {
    let fs = |op| move |e| ResolveProblem::Fs(op, e);
    let reopen = |stack: &[Vec<u8>]| {
        sys::open_in_root(
            root,
            Path::new(os(&join(stack))),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            true,
        )
        .map_err(fs("reopen resolved directory"))
    };
    let mut todo: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut cur = reopen(&stack)?;
    let mut hops = 0u32;
    // Lower layers show through until an opaque directory of this layer.
    let lower_at = |stack: &[Vec<u8>], hooks: &dyn WalkHooks| {
        lower.filter(|_| !(0..=stack.len()).any(|n| hooks.opaque(&join(&stack[..n]))))
    };
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                stack.pop();
                cur = reopen(&stack)?;
                continue;
            }
            _ => {}
        }
        let mut path = stack.clone();
        path.push(c.clone());
        let target = match fstatat(cur.as_fd(), os(&c), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == libc::S_IFDIR => None,
            Ok(st) if kind(&st) == libc::S_IFLNK => Some(
                nix::fcntl::readlinkat(cur.as_fd(), os(&c))
                    .map_err(fs("readlink"))?
                    .as_bytes()
                    .to_vec(),
            ),
            Ok(st) if is_whiteout(&st) && hooks.whited_out(&join(&path)) => {
                hooks
                    .reopen_whiteout(cur.as_fd(), &c, &join(&path))
                    .map_err(fs("replace whiteout with a directory"))?;
                None
            }
            Ok(_) => return Err(ResolveProblem::NotDir(join(&path))),
            Err(Errno::ENOENT) => {
                let below = match lower_at(&stack, hooks) {
                    Some(l) => l.lookup(&path).map_err(ResolveProblem::Lower)?,
                    None => LowerKind::Missing,
                };
                match below {
                    LowerKind::Symlink(t) => Some(t),
                    LowerKind::Other => {
                        return Err(ResolveProblem::NotDir(join(&path)));
                    }
                    below @ (LowerKind::Dir | LowerKind::Missing) => {
                        let create = match missing {
                            Missing::Create => true,
                            Missing::Stop => false,
                            Missing::IfBelow => lower.is_none() || below == LowerKind::Dir,
                        };
                        if !create {
                            return Ok(None);
                        }
                        match nix::sys::stat::mkdirat(
                            cur.as_fd(),
                            os(&c),
                            Mode::from_bits_truncate(0o755),
                        ) {
                            Ok(()) => hooks.implicit(&join(&path)),
                            Err(Errno::EEXIST) => {}
                            Err(e) => return Err(fs("mkdir parent")(e)),
                        }
                        // The umask may have cleared bits.
                        nix::sys::stat::fchmodat(
                            cur.as_fd(),
                            os(&c),
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
                        .map_err(fs("chmod parent"))?;
                        None
                    }
                }
            }
            Err(e) => return Err(fs("stat")(e)),
        };
        match target {
            None => {
                cur = nix::fcntl::openat(
                    cur.as_fd(),
                    os(&c),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| match e {
                    Errno::ENOTDIR | Errno::ELOOP => ResolveProblem::NotDir(join(&path)),
                    e => ResolveProblem::Fs("open directory", e),
                })?;
                stack.push(c);
            }
            Some(t) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(ResolveProblem::Loop);
                }
                if t.first() == Some(&b'/') {
                    stack.clear();
                }
                for part in t.split(|&b| b == b'/').rev() {
                    todo.push_front(part.to_vec());
                }
                cur = reopen(&stack)?;
            }
        }
    }
    Ok(Some((stack, cur)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHooks;
    impl WalkHooks for NoHooks {
        fn implicit(&mut self, _: &[u8]) {}
        fn whited_out(&self, _: &[u8]) -> bool {
            false
        }
        fn reopen_whiteout(&mut self, _: BorrowedFd<'_>, _: &[u8], _: &[u8]) -> Result<(), Errno> {
            Err(Errno::EPERM)
        }
        fn opaque(&self, _: &[u8]) -> bool {
            false
        }
    }

    fn resolve(
        root: &Path,
        path: &str,
        lower: Option<&dyn LowerView>,
    ) -> Result<Option<String>, ResolveProblem> {
        let fd = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let comps: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
        Ok(
            resolve_dir(fd.as_fd(), &comps, Missing::Create, lower, &mut NoHooks)?
                .map(|(s, _)| String::from_utf8(join(&s)).unwrap()),
        )
    }

    #[test]
    fn symlinks_in_parents_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        std::fs::write(r.join("file"), b"").unwrap();
        assert_eq!(resolve(r, "lib/sub", None).unwrap().unwrap(), "usr/lib/sub");
        assert_eq!(resolve(r, "abs", None).unwrap().unwrap(), "usr/lib");
        // `..` stops at the root: the host's /etc is never reached.
        assert_eq!(resolve(r, "up", None).unwrap().unwrap(), "etc");
        assert!(r.join("etc").is_dir());
        assert_eq!(resolve(r, "loop/x", None), Err(ResolveProblem::Loop));
        assert_eq!(
            resolve(r, "file/x", None),
            Err(ResolveProblem::NotDir(b"file".to_vec()))
        );
    }

    #[test]
    fn missing_parents_follow_symlinks_of_the_layers_below() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, mid, top) = (
            tmp.path().join("base"),
            tmp.path().join("mid"),
            tmp.path().join("top"),
        );
        for d in [&base, &mid, &top] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(base.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", base.join("gone")).unwrap();
        std::fs::write(base.join("plain"), b"").unwrap();
        // The middle layer whites out `gone`.
        if nix::unistd::geteuid().is_root() {
            nix::sys::stat::mknod(
                &mid.join("gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                Mode::empty(),
                0,
            )
            .unwrap();
        }
        let lower = LowerDirs::open(&[mid.clone(), base.clone()]).unwrap();
        assert_eq!(
            resolve(&top, "lib/x", Some(&lower)).unwrap().unwrap(),
            "usr/lib/x"
        );
        assert!(top.join("usr/lib/x").is_dir());
        assert!(!top.join("lib").exists());
        assert_eq!(
            resolve(&top, "plain/x", Some(&lower)),
            Err(ResolveProblem::NotDir(b"plain".to_vec()))
        );
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                resolve(&top, "gone/x", Some(&lower)).unwrap().unwrap(),
                "gone/x"
            );
        }
    }
}
