//! Importing an image into the store: blobs are ingested (verified), then
//! [`commit_image`] unpacks the missing layers in parallel (each into its
//! own temp directory, renamed into place once its diff_id checks) and
//! records the reference. A registry puller would feed `ingest_blob` and
//! call `commit_image` the same way.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, ImageConfig, Manifest, Platform};
use crate::progress::{Counting, Progress};
use crate::reference::{Reference, ReferenceError};
use crate::source::{Source, SourceError};
use crate::store::{ImageRecord, LayerRecord, Lock, Store, StoreError};
use crate::unpack::{self, UnpackError, UnpackOptions, WhiteoutMode};

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

/// Layers unpacked by this commit: diff_id -> (temp root, implicit dirs).
type Fresh = HashMap<Digest, (PathBuf, Vec<Vec<u8>>)>;

/// Unpacks the layers of a manifest whose blobs are all in the store, then
/// records `reference` -> manifest. Layers already unpacked are shared.
pub fn commit_image(
    store: &Store,
    lock: &Lock,
    reference: &Reference,
    manifest_digest: &Digest,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImportError> {
    let (m, config) = load_manifest(store, manifest_digest)?;
    let todo = plan_layers(store, &m, &config.rootfs.diff_ids)?;
    let board = lowers::Board::new(
        todo.iter()
            .filter(|j| j.work == LayerWork::Unpack)
            .map(|j| j.diff_id.clone()),
    );
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<ImportError>> = Mutex::new(Vec::new());
    let done: Mutex<Fresh> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = todo.get(i) else {
                    break;
                };
                let r = match job.work {
                    LayerWork::Unpack => {
                        let below =
                            crate::snapshot::effective_lowers(&config.rootfs.diff_ids[..job.index]);
                        let lowers = lowers::Lowers::new(below, store, &board);
                        let r = unpack_one(
                            store,
                            lock,
                            &job.desc,
                            &job.diff_id,
                            opts,
                            progress,
                            &lowers,
                        );
                        match &r {
                            Ok((root, _)) => board.done(&job.diff_id, root),
                            Err(_) => board.failed(&job.diff_id),
                        }
                        r.map(Some)
                    }
                    LayerWork::Verify => {
                        verify_one(store, &job.desc, &job.diff_id, opts, progress).map(|()| None)
                    }
                };
                match r {
                    Ok(Some(r)) => {
                        if let Ok(mut d) = done.lock() {
                            d.insert(job.diff_id.clone(), r);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                        // Stop taking new layers; running ones finish.
                        next.store(todo.len(), Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
    });
    let done = done.into_inner().unwrap_or_default();
    let first_error = errors
        .into_inner()
        .ok()
        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)));
    let result = match first_error {
        Some(e) => Err(e),
        None => place_layers(store, &config.rootfs.diff_ids, &done),
    };
    // Whatever was not renamed into place goes (the temp dirs of this run).
    for (root, _) in done.values() {
        if let Some(tmp) = root.parent() {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
    result?;
    store.sync()?;
    let record = ImageRecord {
        reference: reference.to_string(),
        manifest: manifest_digest.clone(),
        config: m.config.digest.clone(),
        layers: m
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| LayerRecord {
                digest: d.digest.clone(),
                diff_id: diff_id.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            })
            .collect(),
        platform: {
            let mut p = format!("{}/{}", config.os, config.architecture);
            if let Some(v) = &config.variant {
                p = format!("{p}/{v}");
            }
            p
        },
        created: config.created.clone(),
        imported: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    store.put_image(lock, record.clone())?;
    Ok(record)
}

/// What a commit does with one layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerWork {
    /// Unpack it (its diff_id is checked on the way).
    Unpack,
    /// Its layer is already unpacked (from another blob, or earlier in this
    /// image): hash the blob's uncompressed bytes against the diff_id only.
    Verify,
}

#[derive(Debug)]
struct LayerJob {
    desc: Descriptor,
    diff_id: Digest,
    work: LayerWork,
    /// Its (first) position in the image, bottom = 0.
    index: usize,
}

/// Decides, for every layer of a manifest, whether it is unpacked, verified
/// or already proven. A blob proves its diff_id only by its own bytes: a
/// stored layer with that diff_id is shared only when this very blob (by
/// digest) already produced it in a committed image, or after hashing it.
fn plan_layers(
    store: &Store,
    m: &Manifest,
    diff_ids: &[Digest],
) -> Result<Vec<LayerJob>, ImportError> {
    let proven: std::collections::HashSet<(Digest, Digest)> = store
        .images()?
        .into_iter()
        .flat_map(|i| i.layers.into_iter().map(|l| (l.digest, l.diff_id)))
        .collect();
    let mut todo: Vec<LayerJob> = Vec::new();
    for (index, (d, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        manifest::layer_kind(d)?;
        if !store.has_blob(&d.digest) {
            return Err(StoreError::MissingBlob {
                store: store.root().to_path_buf(),
                digest: d.digest.clone(),
            }
            .into());
        }
        let pair = (d.digest.clone(), diff_id.clone());
        if proven.contains(&pair)
            || todo
                .iter()
                .any(|j| j.desc.digest == d.digest && &j.diff_id == diff_id)
        {
            continue;
        }
        let unpacking = todo
            .iter()
            .any(|j| &j.diff_id == diff_id && j.work == LayerWork::Unpack);
        let work = if store.has_layer(diff_id) || unpacking {
            LayerWork::Verify
        } else {
            LayerWork::Unpack
        };
        todo.push(LayerJob {
            desc: d.clone(),
            diff_id: diff_id.clone(),
            work,
            index,
        });
    }
    Ok(todo)
}

/// Hashes a stored layer blob's uncompressed bytes against `diff_id`.
fn verify_one(
    store: &Store,
    desc: &Descriptor,
    diff_id: &Digest,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(), ImportError> {
    let blob = store.blob_path(&desc.digest);
    let f = File::open(&blob).map_err(|source| ImportError::LayerIo {
        digest: desc.digest.clone(),
        path: blob.display().to_string(),
        source,
    })?;
    let id = desc.digest.short().to_string();
    progress.start(&id, "verifying", desc.size);
    let reader = Counting {
        inner: f,
        id: id.clone(),
        progress,
    };
    let layer_err = |source| ImportError::Layer {
        digest: desc.digest.clone(),
        source,
    };
    opts.limits.check_compressed(desc.size).map_err(layer_err)?;
    unpack::verify_diff_id(reader, opts.limits.for_blob(desc.size), diff_id).map_err(layer_err)?;
    progress.finish(&id, "verified");
    Ok(())
}

fn unpack_one(
    store: &Store,
    lock: &Lock,
    desc: &Descriptor,
    diff_id: &Digest,
    opts: &ImportOptions,
    progress: &dyn Progress,
    lower: &dyn unpack::LowerView,
) -> Result<(PathBuf, Vec<Vec<u8>>), ImportError> {
    let layer_err = |source| ImportError::Layer {
        digest: desc.digest.clone(),
        source,
    };
    let io_err = |path: &Path, source| ImportError::LayerIo {
        digest: desc.digest.clone(),
        path: path.display().to_string(),
        source,
    };
    opts.limits.check_compressed(desc.size).map_err(layer_err)?;
    let tmp = store.tmp_dir(lock, "layer-")?;
    let root = tmp.join("fs");
    std::fs::create_dir(&root).map_err(|e| io_err(&root, e))?;
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| io_err(&root, e))?;
    let blob = store.blob_path(&desc.digest);
    let f = File::open(&blob).map_err(|e| io_err(&blob, e))?;
    let id = desc.digest.short().to_string();
    progress.start(&id, "unpacking", desc.size);
    let mut uopts = UnpackOptions::new(WhiteoutMode::Overlay);
    uopts.max_size = opts.limits.for_blob(desc.size);
    let reader = Counting {
        inner: f,
        id: id.clone(),
        progress,
    };
    match unpack::unpack_layer_over(reader, &root, &uopts, Some(diff_id), Some(lower)) {
        Ok(u) => {
            progress.finish(&id, "done");
            Ok((root, u.implicit_dirs))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(layer_err(e))
        }
    }
}

/// Gives implicitly created directories of the new layers their lower
/// layers' metadata (bottom up, so lowers are final first), then renames
/// each new layer into place. Before the renames nothing is visible.
fn place_layers(store: &Store, diff_ids: &[Digest], done: &Fresh) -> Result<(), ImportError> {
    let dir_of = |d: &Digest| {
        done.get(d)
            .map_or_else(|| store.layer_dir(d), |(root, _)| root.clone())
    };
    for (i, d) in diff_ids.iter().enumerate() {
        if let Some((root, implicit)) = done.get(d) {
            let lowers: Vec<PathBuf> = diff_ids[..i].iter().rev().map(dir_of).collect();
            crate::flatten::inherit_implicit_dirs(root, &lowers, implicit)?;
        }
    }
    for (d, (root, _)) in done {
        let dest = store.layer_dir(d);
        let io_err = |path: &Path, source| ImportError::LayerIo {
            digest: d.clone(),
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        std::fs::rename(root, &dest).map_err(|e| io_err(&dest, e))?;
    }
    Ok(())
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

mod lowers;
#[cfg(test)]
mod tests;
