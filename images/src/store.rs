//! The image store (default /var/lib/berth):
//!
//! ```text
//! lock                      flock: one writer at a time (imports, rm, run)
//! blobs/<alg>/<hex>         manifests, configs and layer blobs by digest
//! layers/<alg>/<hex>/       each layer unpacked once, by diff_id (lowerdir)
//! images.json               references -> manifest, config, layers
//! containers/<name>/        snapshots made by `image run` (record + dirs)
//! tmp/                      work in progress; cleaned by the next writer
//! tmp/work-*/, tmp/partial/ pulls running without the lock (see [`work`])
//! ```
//!
//! Everything is written under a temp name and renamed into place, and
//! `images.json` is written last, so a writer killed at any point leaves
//! nothing visible. Readers (`ls`, `inspect`) need no lock. Who holds which
//! lock when is written down in [`work`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest, HashingReader, VerifyError};
use crate::reference::Reference;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("store lock {path}: {errno}")]
    Lock {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("store index {path}: {source}")]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("store {store}: {source}")]
    Verify { store: PathBuf, source: VerifyError },
    #[error("image `{query}` not found in store {store}")]
    NotFound { query: String, store: PathBuf },
    #[error("`{query}` matches several images in store {store}: {matches}")]
    Ambiguous {
        query: String,
        store: PathBuf,
        matches: String,
    },
    #[error("store {store}: blob {digest} is missing")]
    MissingBlob { store: PathBuf, digest: Digest },
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A stored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<LayerRecord>,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Unix seconds of the import.
    pub imported: u64,
}

impl ImageRecord {
    /// Sum of the layer blob sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A container snapshot made from an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: String,
    pub image: String,
    pub layers: Vec<Digest>,
    /// "overlay" or "copy".
    pub kind: String,
    /// The process using the snapshot (`image run`), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::snapshot::Owner>,
    /// Remove the snapshot when its owner ends (`image run --rm`), also when
    /// it ends by SIGKILL: [`crate::snapshot::reap`] does it later.
    #[serde(default)]
    pub remove_with_owner: bool,
    /// The runtime state root (`berth --root`) whose container of the same
    /// name still uses the snapshot after its owner ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_root: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// A held store lock.
pub struct Lock {
    _lock: Flock<File>,
}

/// What `rm` freed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Freed {
    pub layers: Vec<Digest>,
    pub blobs: Vec<Digest>,
}

/// The store at a root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn mkdirs(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

impl Store {
    /// Opens (creating) the store at `root`. The path is made absolute and
    /// canonical: overlay options and mount points are compared by path.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let io = |p: &Path, source| StoreError::Io {
            path: p.to_path_buf(),
            source,
        };
        for d in ["blobs", "layers", "containers", "tmp"] {
            mkdirs(&root.join(d)).map_err(|e| io(&root.join(d), e))?;
        }
        let root = fs::canonicalize(root).map_err(|e| io(root, e))?;
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Takes the store's exclusive lock, waiting for other writers.
    pub fn lock(&self) -> Result<Lock, StoreError> {
        self.lock_as(FlockArg::LockExclusive)
    }

    /// Takes the lock shared: readers that need layers to stay put (unpack)
    /// run together but never alongside a writer.
    pub fn lock_shared(&self) -> Result<Lock, StoreError> {
        self.lock_as(FlockArg::LockShared)
    }

    fn lock_as(&self, how: FlockArg) -> Result<Lock, StoreError> {
        let path = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        let lock = Flock::lock(f, how).map_err(|(_, errno)| StoreError::Lock { path, errno })?;
        Ok(Lock { _lock: lock })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where the layer with this diff_id is (or will be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(diff_id.algorithm().name())
            .join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// A fresh directory under tmp/.
    pub fn tmp_dir(&self, _lock: &Lock, prefix: &str) -> Result<PathBuf, StoreError> {
        let tmp = self.root.join("tmp");
        let d = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(|e| self.io(&tmp, e))?;
        Ok(d.keep())
    }

    /// Removes what killed writers left in tmp/: everything but the work
    /// areas of running pulls and partial downloads younger than
    /// [`work::PARTIAL_MAX_AGE`].
    pub fn clean_tmp(&self, lock: &Lock) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        self.clean_partials(lock, work::PARTIAL_MAX_AGE)?;
        for e in fs::read_dir(&tmp).map_err(|e| self.io(&tmp, e))? {
            let p = e.map_err(|e| self.io(&tmp, e))?.path();
            if self.keep_in_tmp(&p)? {
                continue;
            }
            let r = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| self.io(&p, e))?;
        }
        Ok(())
    }

    /// Streams a blob into the store, verifying its digest (when known) and
    /// size (when known); returns its digest. An existing blob is kept.
    pub fn ingest_blob<R: Read>(
        &self,
        lock: &Lock,
        expected: Option<&Digest>,
        size: Option<u64>,
        reader: R,
    ) -> Result<Digest, StoreError> {
        if let Some(d) = expected {
            if self.has_blob(d) {
                return Ok(d.clone());
            }
        }
        let dir = self.tmp_dir(lock, "blob-")?;
        let tmp = dir.join("data");
        let r = self.write_blob(&tmp, expected, size, reader);
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let dest = self.blob_path(&d);
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        mkdirs(&parent).map_err(|e| self.io(&parent, e))?;
        fs::rename(&tmp, &dest).map_err(|e| self.io(&dest, e))?;
        let _ = fs::remove_dir(&dir);
        Ok(d)
    }

    fn write_blob<R: Read>(
        &self,
        tmp: &Path,
        expected: Option<&Digest>,
        size: Option<u64>,
        reader: R,
    ) -> Result<Digest, StoreError> {
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| self.io(tmp, e))?;
        let verify = |source| StoreError::Verify {
            store: self.root.clone(),
            source,
        };
        let d = match expected {
            Some(d) => {
                crate::digest::verify_stream(reader, &mut f, d, size).map_err(verify)?;
                d.clone()
            }
            None => {
                let mut hr =
                    HashingReader::new(reader, Algorithm::Sha256, size.unwrap_or(u64::MAX - 1));
                crate::digest::copy_big(&mut hr, &mut f).map_err(|e| self.io(tmp, e))?;
                let (d, n) = hr.finish().map_err(|e| self.io(tmp, e))?;
                if let Some(want) = size {
                    if n != want {
                        return Err(verify(VerifyError::Size {
                            digest: d,
                            expected: want,
                            actual: n,
                        }));
                    }
                }
                d
            }
        };
        f.flush().map_err(|e| self.io(tmp, e))?;
        Ok(d)
    }

    /// Reads a whole blob (manifests and configs).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    store: self.root.clone(),
                    digest: d.clone(),
                }
            } else {
                self.io(&p, e)
            }
        })
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// All stored images.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let p = self.index_path();
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&p, e)),
        };
        let idx: IndexFile = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::Index { path: p, source })?;
        Ok(idx.images)
    }

    /// Replaces the index atomically (temp file, fsync, rename).
    pub fn write_images(&self, _lock: &Lock, images: Vec<ImageRecord>) -> Result<(), StoreError> {
        let p = self.index_path();
        let idx = IndexFile { version: 1, images };
        let bytes = serde_json::to_vec_pretty(&idx).map_err(|source| StoreError::Index {
            path: p.clone(),
            source,
        })?;
        write_atomic(&p, &bytes).map_err(|e| self.io(&p, e))
    }

    /// Adds or replaces the image with `record.reference`.
    pub fn put_image(&self, lock: &Lock, record: ImageRecord) -> Result<(), StoreError> {
        let mut images = self.images()?;
        images.retain(|i| i.reference != record.reference);
        images.push(record);
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        self.write_images(lock, images)
    }

    /// Finds an image by reference (`name:tag`, `name@digest`), or by
    /// manifest digest or a hex prefix of it (at least 6 characters).
    pub fn find(&self, query: &str) -> Result<ImageRecord, StoreError> {
        let images = self.images()?;
        let matches = match_images(&images, query);
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::NotFound {
                query: query.to_string(),
                store: self.root.clone(),
            }),
            many => {
                // Several references to one manifest are one image.
                if many.iter().all(|i| i.manifest == many[0].manifest) {
                    return Ok(many[0].clone());
                }
                Err(StoreError::Ambiguous {
                    query: query.to_string(),
                    store: self.root.clone(),
                    matches: many
                        .iter()
                        .map(|i| i.reference.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }

    /// Snapshot records of `image run` containers.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| self.io(&dir, e))? {
            let p = e
                .map_err(|e| self.io(&dir, e))?
                .path()
                .join("snapshot.json");
            match fs::read(&p) {
                Ok(b) => out.push(
                    serde_json::from_slice(&b)
                        .map_err(|source| StoreError::Index { path: p, source })?,
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&p, e)),
            }
        }
        Ok(out)
    }

    /// Removes an image reference and frees what nothing references any more.
    pub fn remove_image(
        &self,
        lock: &Lock,
        query: &str,
    ) -> Result<(ImageRecord, Freed), StoreError> {
        let record = self.find(query)?;
        let mut images = self.images()?;
        let exact = images.iter().any(|i| i.reference == record.reference);
        if exact {
            images.retain(|i| i.reference != record.reference);
        }
        self.write_images(lock, images)?;
        let freed = self.gc(lock)?;
        Ok((record, freed))
    }

    /// Deletes layers and blobs that no image, no snapshot and no running
    /// pull references (reference counting over the index, the snapshot
    /// records and the pulls' pins), and whatever killed writers left in
    /// tmp/.
    pub fn gc(&self, lock: &Lock) -> Result<Freed, StoreError> {
        self.clean_tmp(lock)?;
        let images = self.images()?;
        let snapshots = self.snapshots()?;
        let (mut blob_refs, mut layer_refs) = reference_counts(&images, &snapshots);
        let pins = self.live_pins(lock)?;
        for d in pins.blobs {
            *blob_refs.entry(d).or_insert(0) += 1;
        }
        for d in pins.layers {
            *layer_refs.entry(d).or_insert(0) += 1;
        }
        let mut freed = Freed::default();
        for (kind, refs, out) in [
            ("layers", &layer_refs, &mut freed.layers),
            ("blobs", &blob_refs, &mut freed.blobs),
        ] {
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let dir = self.root.join(kind).join(alg.name());
                let rd = match fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io(&dir, e)),
                };
                for e in rd {
                    let e = e.map_err(|e| self.io(&dir, e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Ok(d) = format!("{}:{name}", alg.name()).parse::<Digest>() else {
                        continue;
                    };
                    if refs.get(&d).copied().unwrap_or(0) > 0 {
                        continue;
                    }
                    let p = e.path();
                    let r = if kind == "layers" {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    r.map_err(|e| self.io(&p, e))?;
                    out.push(d);
                }
            }
        }
        freed.layers.sort();
        freed.blobs.sort();
        Ok(freed)
    }

    /// Makes everything written so far durable (one syncfs on the store).
    pub fn sync(&self) -> Result<(), StoreError> {
        let f = File::open(&self.root).map_err(|e| self.io(&self.root, e))?;
        nix::unistd::syncfs(&f).map_err(|e| self.io(&self.root, io::Error::from(e)))
    }
}

/// How many images and snapshots reference each blob and each layer.
pub fn reference_counts(
    images: &[ImageRecord],
    snapshots: &[SnapshotRecord],
) -> (
    std::collections::HashMap<Digest, usize>,
    std::collections::HashMap<Digest, usize>,
) {
    let mut blobs = std::collections::HashMap::new();
    let mut layers = std::collections::HashMap::new();
    for i in images {
        *blobs.entry(i.manifest.clone()).or_insert(0) += 1;
        *blobs.entry(i.config.clone()).or_insert(0) += 1;
        for l in &i.layers {
            *blobs.entry(l.digest.clone()).or_insert(0) += 1;
            *layers.entry(l.diff_id.clone()).or_insert(0) += 1;
        }
    }
    for s in snapshots {
        for l in &s.layers {
            *layers.entry(l.clone()).or_insert(0) += 1;
        }
    }
    (blobs, layers)
}

/// The images a query names (see [`Store::find`]).
pub fn match_images<'a>(images: &'a [ImageRecord], query: &str) -> Vec<&'a ImageRecord> {
    if let Ok(r) = query.parse::<Reference>() {
        let by_ref: Vec<&ImageRecord> = match r.digest() {
            Some(d) => images
                .iter()
                .filter(|i| {
                    &i.manifest == d
                        && i.reference
                            .parse::<Reference>()
                            .is_ok_and(|x| x.name() == r.name())
                })
                .collect(),
            None => images
                .iter()
                .filter(|i| i.reference == r.to_string())
                .collect(),
        };
        if !by_ref.is_empty() {
            return by_ref;
        }
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return images
            .iter()
            .filter(|i| i.manifest.hex().starts_with(hex))
            .collect();
    }
    Vec::new()
}

/// Writes `path` via a temp file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replace(path, bytes, true)
}

/// Writes `path` via a temp file and rename: readers see the old or the new
/// content, never a part; `durable` adds fsyncs of the file and directory.
pub fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub mod work;
pub use work::{BlobAt, Partial, Pins, Work};

#[cfg(test)]
mod tests;
