//! Work done without the store lock (pulls), and what the store's cleaners
//! leave alone while it runs:
//!
//! ```text
//! tmp/work-XXXX/lock        flocked by the pull that owns the directory
//! tmp/work-XXXX/pins.json   blobs and layers (diff_ids) the pull relies on
//! tmp/work-XXXX/layer-XXXX/ layers it unpacked, until they are placed
//! tmp/partial/<alg>-<hex>   a blob being downloaded, flocked while written
//! ```
//!
//! The locking, all flock(2) (released by the kernel when a process dies):
//! - The store lock (`lock`) is exclusive for writers of `images.json`,
//!   `blobs/`, `layers/` and `containers/`, and for every cleanup (`gc`,
//!   `clean_tmp`); shared for readers that need layers to stay (unpack).
//! - A pull takes the store lock twice, briefly: to open its work area,
//!   pin what it relies on and plan (so no cleanup runs between the pin and
//!   the plan's checks), and at the end to place its layers and record the
//!   image. Between the two it downloads and unpacks holding only its work
//!   area's lock, so `image run`, `rm`, imports and other pulls go on.
//! - Cleanups skip work areas whose lock someone holds, and keep the blobs
//!   and layers their pins name; a work area whose lock is free belongs to
//!   a dead pull and is removed.
//! - A partial blob is written only by the holder of its flock; the holder
//!   renames it into `blobs/` or unlinks it while still holding the flock,
//!   and whoever takes the flock checks that the path still names the file
//!   it locked. A pull never waits for another's flock: a blob being
//!   downloaded by another pull is downloaded again into its own work area
//!   (waiting could deadlock, see [`BlobAt::Busy`]). Completed blobs are
//!   renamed into `blobs/` without the store lock: they are pinned, and a
//!   blob is the same bytes whoever writes it.
//! - Partial blobs nobody holds are kept for [`PARTIAL_MAX_AGE`] after
//!   their last write (a later pull resumes them), then removed by the next
//!   cleanup; `image prune` removes them all.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{mkdirs, Lock, Store, StoreError};
use crate::digest::Digest;

/// How long an unused partial download is kept for a later pull to resume.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What a running pull relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub blobs: Vec<Digest>,
    pub layers: Vec<Digest>,
}

/// A live work area under tmp/ (see the module doc). Dropping it removes
/// the directory, then releases its lock.
pub struct Work {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Work {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh directory inside the work area.
    pub fn fresh_dir(&self, prefix: &str) -> Result<PathBuf, StoreError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.dir)
            .map(tempfile::TempDir::keep)
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "removing a work area");
        }
    }
}

/// Where a blob being fetched is.
pub enum BlobAt {
    /// Already in `blobs/`.
    Stored,
    /// Being downloaded: the partial file, locked by us.
    Partial(Partial),
    /// Another pull is downloading it now. Waiting for it could deadlock
    /// (two pulls whose images hold two layers in opposite orders, each
    /// unpack waiting for its own lower layer), so the caller downloads it
    /// again into a [`Partial::private`] file.
    Busy,
}

/// A partial download, flocked (see the module doc).
pub struct Partial {
    path: PathBuf,
    file: Flock<File>,
}

impl Partial {
    /// A partial file of this pull's own in the work area `dir` (see
    /// [`BlobAt::Busy`]): not resumed by a later pull.
    pub fn private(dir: &Path) -> Result<Partial, StoreError> {
        let path = dir.join("blob");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let file =
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Lock {
                path: path.clone(),
                errno,
            })?;
        Ok(Partial { path, file })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the complete, verified blob into `blobs/`.
    pub fn complete(self, store: &Store, digest: &Digest) -> Result<(), StoreError> {
        let dest = store.blob_path(digest);
        let parent = dest.parent().unwrap_or(store.root()).to_path_buf();
        mkdirs(&parent).map_err(|e| store.io(&parent, e))?;
        fs::rename(&self.path, &dest).map_err(|e| store.io(&dest, e))
    }

    /// Removes the partial file (its bytes are wrong).
    pub fn discard(self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(error = %e, path = %self.path.display(), "removing a partial blob");
        }
    }
}

fn try_lock(f: File) -> Result<Option<Flock<File>>, Errno> {
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e),
    }
}

/// Whether `path` still names the file open as `f`.
fn same_file(path: &Path, f: &File) -> bool {
    match (fs::metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Store {
    fn work_prefix() -> &'static str {
        "work-"
    }

    fn partial_dir(&self) -> PathBuf {
        self.root.join("tmp").join("partial")
    }

    /// Where a download of `d` is kept while incomplete.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.partial_dir()
            .join(format!("{}-{}", d.algorithm().name(), d.hex()))
    }

    /// Opens a work area that pins `pins` (under the store lock, so that no
    /// cleanup runs between the pin and the caller's checks of the store).
    pub fn begin_work(&self, _lock: &Lock, pins: &Pins) -> Result<Work, StoreError> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix(Self::work_prefix())
            .tempdir_in(&tmp)
            .map(tempfile::TempDir::keep)
            .map_err(|e| self.io(&tmp, e))?;
        let lock_path = dir.join("lock");
        let f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| self.io(&lock_path, e))?;
        let lock =
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Lock {
                path: lock_path.clone(),
                errno,
            })?;
        let work = Work { dir, _lock: lock };
        let pins_path = work.dir.join("pins.json");
        let bytes = serde_json::to_vec(pins).map_err(|source| StoreError::Index {
            path: pins_path.clone(),
            source,
        })?;
        fs::write(&pins_path, bytes).map_err(|e| self.io(&pins_path, e))?;
        Ok(work)
    }

    /// Whether the work area `dir` belongs to a running pull.
    fn work_is_live(&self, dir: &Path) -> Result<bool, StoreError> {
        let lock_path = dir.join("lock");
        let f = match File::open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io(&lock_path, e)),
        };
        let held = try_lock(f).map_err(|errno| StoreError::Lock {
            path: lock_path.clone(),
            errno,
        })?;
        Ok(held.is_none())
    }

    /// The pins of every running pull.
    pub fn live_pins(&self, _lock: &Lock) -> Result<Pins, StoreError> {
        let mut all = Pins::default();
        for dir in self.work_dirs()? {
            if !self.work_is_live(&dir)? {
                continue;
            }
            let p = dir.join("pins.json");
            match fs::read(&p) {
                Ok(b) => {
                    let pins: Pins = serde_json::from_slice(&b)
                        .map_err(|source| StoreError::Index { path: p, source })?;
                    all.blobs.extend(pins.blobs);
                    all.layers.extend(pins.layers);
                }
                // Written right after the lock: a live area without pins
                // pins nothing yet.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&p, e)),
            }
        }
        Ok(all)
    }

    fn work_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let tmp = self.root.join("tmp");
        let mut out = Vec::new();
        for e in fs::read_dir(&tmp).map_err(|e| self.io(&tmp, e))? {
            let e = e.map_err(|e| self.io(&tmp, e))?;
            if e.file_name()
                .to_string_lossy()
                .starts_with(Self::work_prefix())
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Whether an entry of tmp/ must stay: the partial downloads' directory
    /// (cleaned by [`Store::clean_partials`]) and live work areas.
    pub(super) fn keep_in_tmp(&self, path: &Path) -> Result<bool, StoreError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match name.as_deref() {
            Some("partial") => Ok(true),
            Some(n) if n.starts_with(Self::work_prefix()) && path.is_dir() => {
                self.work_is_live(path)
            }
            _ => Ok(false),
        }
    }

    /// Takes the partial download of `d`; or says that the blob is stored
    /// already, or that another pull downloads it now.
    pub fn open_partial(&self, d: &Digest) -> Result<BlobAt, StoreError> {
        let path = self.partial_path(d);
        loop {
            if self.has_blob(d) {
                return Ok(BlobAt::Stored);
            }
            let dir = self.partial_dir();
            mkdirs(&dir).map_err(|e| self.io(&dir, e))?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| self.io(&path, e))?;
            let held = try_lock(f).map_err(|errno| StoreError::Lock {
                path: path.clone(),
                errno,
            })?;
            let Some(file) = held else {
                return Ok(BlobAt::Busy);
            };
            if !same_file(&path, &file) {
                // Renamed into blobs/ or removed between our open and lock.
                continue;
            }
            let partial = Partial { path, file };
            if self.has_blob(d) {
                partial.discard();
                return Ok(BlobAt::Stored);
            }
            return Ok(BlobAt::Partial(partial));
        }
    }

    /// Removes partial downloads nobody writes whose last write is older
    /// than `max_age`.
    pub fn clean_partials(&self, _lock: &Lock, max_age: Duration) -> Result<(), StoreError> {
        let dir = self.partial_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(&dir, e)),
        };
        let now = SystemTime::now();
        for e in rd {
            let path = e.map_err(|e| self.io(&dir, e))?.path();
            let Ok(f) = File::open(&path) else { continue };
            let held = try_lock(f).map_err(|errno| StoreError::Lock {
                path: path.clone(),
                errno,
            })?;
            let Some(f) = held else { continue };
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age >= max_age);
            if old && same_file(&path, &f) {
                fs::remove_file(&path).map_err(|e| self.io(&path, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn live_work_areas_and_their_pins_survive_cleanups_dead_ones_go() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let lock = store.lock().unwrap();
        let pins = Pins {
            blobs: vec![d('a')],
            layers: vec![d('b')],
        };
        let work = store.begin_work(&lock, &pins).unwrap();
        let inside = work.fresh_dir("layer-").unwrap();
        let dead = tmp.path().join("tmp/work-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("lock"), "").unwrap();
        store.clean_tmp(&lock).unwrap();
        assert!(inside.is_dir(), "a live work area was cleaned");
        assert!(!dead.exists(), "a dead work area was kept");
        assert_eq!(store.live_pins(&lock).unwrap(), pins);
        let dir = work.dir().to_path_buf();
        drop(work);
        assert!(!dir.exists());
        assert_eq!(store.live_pins(&lock).unwrap(), Pins::default());
    }

    #[test]
    fn partials_are_resumable_until_completed_discarded_or_stale() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let BlobAt::Partial(p) = store.open_partial(&d('a')).unwrap() else {
            panic!("not stored yet")
        };
        p.file().write_all(b"half").unwrap();
        let path = p.path().to_path_buf();
        drop(p);
        let lock = store.lock().unwrap();
        store.clean_tmp(&lock).unwrap();
        store.clean_partials(&lock, PARTIAL_MAX_AGE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"half", "a fresh partial went");
        let BlobAt::Partial(p) = store.open_partial(&d('a')).unwrap() else {
            panic!("not stored yet")
        };
        assert_eq!(p.file().metadata().unwrap().len(), 4);
        // Held: not removed, whatever its age, and another pull does not wait for it.
        store.clean_partials(&lock, Duration::ZERO).unwrap();
        assert!(path.exists());
        assert!(matches!(store.open_partial(&d('a')).unwrap(), BlobAt::Busy));
        let own = Partial::private(tmp.path()).unwrap();
        own.file().write_all(b"x").unwrap();
        own.discard();
        p.complete(&store, &d('a')).unwrap();
        assert!(store.has_blob(&d('a')) && !path.exists());
        assert!(matches!(
            store.open_partial(&d('a')).unwrap(),
            BlobAt::Stored
        ));
        assert!(!path.exists(), "a stored blob left an empty partial");
        let BlobAt::Partial(p) = store.open_partial(&d('b')).unwrap() else {
            panic!("not stored")
        };
        let pb = p.path().to_path_buf();
        drop(p);
        store.clean_partials(&lock, Duration::ZERO).unwrap();
        assert!(!pb.exists(), "prune keeps an unused partial");
    }
}
