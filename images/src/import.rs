//! Importing an image into the store: blobs are ingested (verified), then
//! [`commit_image`] unpacks the missing layers in parallel (each into its
//! own temp directory, renamed into place once its diff_id checks) and
//! records the reference. A pull runs the phases of [`commit`] itself,
//! with blobs streamed from the registry.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, ImageConfig, Manifest, Platform};
use crate::progress::{Counting, Progress};
use crate::reference::{Reference, ReferenceError};
use crate::source::{Source, SourceError};
use crate::store::{ImageRecord, Lock, Store, StoreError};
use crate::unpack::{self, UnpackError};

/// Errors of importing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Manifest(#[from] manifest::ManifestError),
    #[error("image {path} has no name; pass --name")]
    NoName { path: String },
    #[error("--name `{0}`: a name for the store cannot carry a digest")]
    NameWithDigest(String),
    #[error("layer {digest}: {source}")]
    Layer { digest: Digest, source: UnpackError },
    #[error(transparent)]
    Flatten(#[from] crate::flatten::FlattenError),
    /// Fetching a blob failed (a registry's error, named there).
    #[error(transparent)]
    Fetch(Box<dyn std::error::Error + Send + Sync>),
    #[error("layer {digest}: {path}: {source}")]
    LayerIo {
        digest: Digest,
        path: String,
        source: std::io::Error,
    },
}

/// Import settings.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The reference to store the image under (and to pick it in the source).
    pub name: Option<Reference>,
    /// Bounds on each layer's uncompressed size.
    pub limits: unpack::SizeLimits,
    pub platform: Platform,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            name: None,
            limits: unpack::SizeLimits::default(),
            platform: Platform::host(),
        }
    }
}

/// Derives a repository name from a file name: `busybox.tar` -> `busybox`.
pub fn name_from_path(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy().to_lowercase();
    let mut out = String::new();
    for c in stem.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// The reference an import stores its image under.
pub fn choose_reference(
    given: Option<&Reference>,
    source_name: Option<&str>,
    path: &Path,
) -> Result<Reference, ImportError> {
    if let Some(r) = given {
        if r.digest().is_some() {
            return Err(ImportError::NameWithDigest(r.to_string()));
        }
        return Ok(r.clone());
    }
    let no_name = || ImportError::NoName {
        path: path.display().to_string(),
    };
    let Some(n) = source_name else {
        return Err(no_name());
    };
    // A full reference (docker RepoTags, or a ref.name like `busybox:1`).
    if n.contains(':') || n.contains('/') {
        if let Ok(r) = n.parse::<Reference>() {
            return Ok(r.without_digest());
        }
    }
    // Only a tag (`latest`): name it after the file.
    let repo = name_from_path(path).ok_or_else(no_name)?;
    Ok(Reference::with_tag(&repo, n)?)
}

/// Imports the image at `path` (layout dir, oci-archive or docker-archive).
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImportError> {
    let source = Source::open(path)?;
    let resolved = source.resolve(opts.name.as_ref(), &opts.platform)?;
    let reference = choose_reference(opts.name.as_ref(), resolved.source_name.as_deref(), path)?;
    let lock = store.lock()?;
    store.clean_tmp(&lock)?;
    let result = (|| {
        let mut layer_descs = Vec::new();
        for l in &resolved.layers {
            let (reader, size) = source.open_file(&l.path)?;
            let id = l
                .digest
                .as_ref()
                .map_or_else(|| short_path(&l.path), |d| d.short().to_string());
            progress.start(&id, "copying", size);
            let counting = Counting {
                inner: reader,
                id: id.clone(),
                progress,
            };
            let digest = store.ingest_blob(&lock, l.digest.as_ref(), Some(l.size), counting)?;
            progress.finish(&id, "copied");
            let media_type = if l.media_type.is_empty() {
                sniff_layer_type(store, &digest)?
            } else {
                l.media_type.clone()
            };
            layer_descs.push(Descriptor {
                media_type,
                digest,
                size: l.size,
                platform: None,
                annotations: BTreeMap::new(),
            });
        }
        let config_digest = store.ingest_blob(
            &lock,
            Some(&resolved.config_digest),
            Some(resolved.config_bytes.len() as u64),
            &resolved.config_bytes[..],
        )?;
        let (manifest_digest, manifest_bytes) = match &resolved.manifest {
            Some((d, b)) => (d.clone(), b.clone()),
            None => {
                let m = Manifest {
                    schema_version: 2,
                    media_type: Some(manifest::OCI_MANIFEST.to_string()),
                    config: Descriptor {
                        media_type: manifest::OCI_CONFIG.to_string(),
                        digest: config_digest,
                        size: resolved.config_bytes.len() as u64,
                        platform: None,
                        annotations: BTreeMap::new(),
                    },
                    layers: layer_descs,
                    annotations: BTreeMap::new(),
                };
                let b = serde_json::to_vec(&m).map_err(|source| StoreError::Index {
                    path: store.root().join("blobs"),
                    source,
                })?;
                (Digest::sha256_of(&b), b)
            }
        };
        store.ingest_blob(
            &lock,
            Some(&manifest_digest),
            Some(manifest_bytes.len() as u64),
            &manifest_bytes[..],
        )?;
        let record = commit_image(store, &lock, &reference, &manifest_digest, opts, progress)?;
        // Free what a replaced image under the same reference held alone.
        store.gc(&lock)?;
        Ok(record)
    })();
    if result.is_err() {
        // Leave nothing of a failed import behind.
        if let Err(e) = store.gc(&lock) {
            tracing::warn!(error = %e, "cleaning up after a failed import");
        }
    }
    result
}

fn short_path(p: &str) -> String {
    let s: String = p
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    if s.is_empty() {
        "layer".into()
    } else {
        s
    }
}

fn sniff_layer_type(store: &Store, d: &Digest) -> Result<String, ImportError> {
    let p = store.blob_path(d);
    let mut head = [0u8; 4];
    let n = File::open(&p)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| StoreError::Io { path: p, source })?;
    Ok(match unpack::sniff(&head[..n]) {
        unpack::Compression::None => manifest::OCI_LAYER_TAR,
        unpack::Compression::Gzip => manifest::OCI_LAYER_GZIP,
        unpack::Compression::Zstd => manifest::OCI_LAYER_ZSTD,
    }
    .to_string())
}

/// Reads a stored manifest and its config.
pub fn load_manifest(
    store: &Store,
    manifest_digest: &Digest,
) -> Result<(Manifest, ImageConfig), ImportError> {
    let bytes = store.read_blob(manifest_digest)?;
    let m = match manifest::parse_manifest_or_index("", manifest_digest, &bytes)? {
        manifest::Parsed::Manifest(m) => m,
        manifest::Parsed::Index(_) => {
            return Err(ImportError::Manifest(manifest::ManifestError::MediaType {
                what: "manifest",
                digest: manifest_digest.to_string(),
                media_type: manifest::OCI_INDEX.to_string(),
            }))
        }
    };
    let cbytes = store.read_blob(&m.config.digest)?;
    let config = manifest::parse_config(&m.config.digest, &cbytes, &m)?;
    Ok((m, config))
}

/// Unpacks the layers of a manifest whose blobs are all in the store, then
/// records `reference` -> manifest (the three phases of [`commit`], all
/// under `lock`). Layers already unpacked are shared.
pub fn commit_image(
    store: &Store,
    lock: &Lock,
    reference: &Reference,
    manifest_digest: &Digest,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImportError> {
    let (m, config) = load_manifest(store, manifest_digest)?;
    let plan = commit::plan(store, m, config)?;
    if let Some(j) = plan.jobs.iter().find(|j| !store.has_blob(&j.desc.digest)) {
        return Err(StoreError::MissingBlob {
            store: store.root().to_path_buf(),
            digest: j.desc.digest.clone(),
        }
        .into());
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let source = StoredBlobs {
        store,
        lock,
        progress,
    };
    let fresh = commit::run_jobs(store, &plan, &source, workers, opts)?;
    commit::finish(store, lock, reference, manifest_digest, &plan, fresh)
}

/// Layer blobs read from the store's files (an import ingested them,
/// verified, before).
struct StoredBlobs<'a> {
    store: &'a Store,
    lock: &'a Lock,
    progress: &'a dyn Progress,
}

/// A stored blob read by a layer job, with progress.
struct StoredStream<'a> {
    reader: Counting<'a, File>,
    done: &'static str,
}

impl Read for StoredStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl commit::BlobStream for StoredStream<'_> {
    fn finish(self: Box<Self>, job_ok: bool) -> Result<(), ImportError> {
        if job_ok {
            self.reader.progress.finish(&self.reader.id, self.done);
        }
        Ok(())
    }
}

impl commit::BlobSource for StoredBlobs<'_> {
    fn open(
        &self,
        job: &commit::LayerJob,
    ) -> Result<Box<dyn commit::BlobStream + '_>, ImportError> {
        stored_stream(self.store, job, self.progress)
    }

    fn scratch(&self) -> Result<PathBuf, ImportError> {
        Ok(self.store.tmp_dir(self.lock, "layer-")?)
    }
}

/// A layer job's stream over a blob in the store, with progress.
pub(crate) fn stored_stream<'a>(
    store: &Store,
    job: &commit::LayerJob,
    progress: &'a dyn Progress,
) -> Result<Box<dyn commit::BlobStream + 'a>, ImportError> {
    {
        let blob = store.blob_path(&job.desc.digest);
        let f = File::open(&blob).map_err(|source| ImportError::LayerIo {
            digest: job.desc.digest.clone(),
            path: blob.display().to_string(),
            source,
        })?;
        let id = job.desc.digest.short().to_string();
        let (what, done) = match job.work {
            commit::LayerWork::Unpack => ("unpacking", "done"),
            commit::LayerWork::Verify => ("verifying", "verified"),
        };
        progress.start(&id, what, job.desc.size);
        Ok(Box::new(StoredStream {
            reader: Counting {
                inner: f,
                id,
                progress,
            },
            done,
        }))
    }
}

/// Merges the image's unpacked layers, in order, into one directory (for
/// `image unpack` and the copy fallback of snapshots). No decompression:
/// the layers were unpacked at import.
pub fn flatten(store: &Store, image: &ImageRecord, rootfs: &Path) -> Result<(), ImportError> {
    let dirs: Vec<std::path::PathBuf> = image
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect();
    crate::flatten::merge_layers(&dirs, rootfs)?;
    Ok(())
}

pub mod commit;
mod lowers;
#[cfg(test)]
mod tests;
