//! Committing an image whose manifest and config are known, in three
//! phases that a caller may run under different locks:
//!
//! 1. [`plan`] (under the store lock): for every layer, unpack it, only
//!    verify its blob against the diff_id, or nothing (already proven).
//! 2. [`run_jobs`]: those jobs in parallel, bottom layer first, reading
//!    blobs from a [`BlobSource`] (the store's files for an import; for a
//!    pull, downloads streamed into the unpack as they arrive) and
//!    unpacking into directories nobody else sees.
//! 3. [`finish`] (under the store lock): new layers renamed into place
//!    (one placed meanwhile by someone else is kept and ours dropped), then
//!    the reference recorded.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{lowers, ImportError, ImportOptions};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, ImageConfig, Manifest};
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, Lock, Store, StoreError};
use crate::unpack::{self, UnpackOptions, WhiteoutMode};

/// Layers unpacked by this commit: diff_id -> (temp root, implicit dirs).
pub type Fresh = HashMap<Digest, (PathBuf, Vec<Vec<u8>>)>;

/// What a commit does with one layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerWork {
    /// Unpack it (its diff_id is checked on the way).
    Unpack,
    /// Its layer is already unpacked (from another blob, or earlier in this
    /// image): hash the blob's uncompressed bytes against the diff_id only.
    Verify,
}

#[derive(Debug)]
pub struct LayerJob {
    pub desc: Descriptor,
    pub diff_id: Digest,
    pub work: LayerWork,
    /// Its (first) position in the image, bottom = 0.
    index: usize,
}

/// An image to commit and the work its layers need.
#[derive(Debug)]
pub struct Plan {
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub jobs: Vec<LayerJob>,
}

/// Where layer jobs read blobs from and unpack to.
pub trait BlobSource: Sync {
    /// The blob's bytes from its first, reported to progress as it likes.
    fn open(&self, job: &LayerJob) -> Result<Box<dyn BlobStream + '_>, ImportError>;
    /// A fresh directory for one layer's unpack, invisible to others.
    fn scratch(&self) -> Result<PathBuf, ImportError>;
}

/// A blob being read by a layer job.
pub trait BlobStream: Read + Send {
    /// Called once the job is done with the stream (`job_ok`: whether the
    /// unpack or verification succeeded): checks the blob itself. An error
    /// here explains a job's failure better than the job's own (a download
    /// that broke, bytes that are not the blob).
    fn finish(self: Box<Self>, job_ok: bool) -> Result<(), ImportError>;
}

/// Decides, for every layer of a manifest, whether it is unpacked, verified
/// or already proven. A blob proves its diff_id only by its own bytes: a
/// stored layer with that diff_id is shared only when this very blob (by
/// digest) already produced it in a committed image, or after hashing it.
pub fn plan(store: &Store, manifest: Manifest, config: ImageConfig) -> Result<Plan, ImportError> {
    let proven: std::collections::HashSet<(Digest, Digest)> = store
        .images()?
        .into_iter()
        .flat_map(|i| i.layers.into_iter().map(|l| (l.digest, l.diff_id)))
        .collect();
    let mut jobs: Vec<LayerJob> = Vec::new();
    for (index, (d, diff_id)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        manifest::layer_kind(d)?;
        let pair = (d.digest.clone(), diff_id.clone());
        if proven.contains(&pair)
            || jobs
                .iter()
                .any(|j| j.desc.digest == d.digest && &j.diff_id == diff_id)
        {
            continue;
        }
        let unpacking = jobs
            .iter()
            .any(|j| &j.diff_id == diff_id && j.work == LayerWork::Unpack);
        let work = if store.has_layer(diff_id) || unpacking {
            LayerWork::Verify
        } else {
            LayerWork::Unpack
        };
        jobs.push(LayerJob {
            desc: d.clone(),
            diff_id: diff_id.clone(),
            work,
            index,
        });
    }
    Ok(Plan {
        manifest,
        config,
        jobs,
    })
}

/// Runs the plan's jobs, `workers` at a time, bottom layer first. On an
/// error, running jobs finish, no new one starts, and what was unpacked is
/// removed.
pub fn run_jobs(
    store: &Store,
    plan: &Plan,
    source: &dyn BlobSource,
    workers: usize,
    opts: &ImportOptions,
) -> Result<Fresh, ImportError> {
    let diff_ids = &plan.config.rootfs.diff_ids;
    let board = lowers::Board::new(
        plan.jobs
            .iter()
            .filter(|j| j.work == LayerWork::Unpack)
            .map(|j| j.diff_id.clone()),
    );
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<ImportError>> = Mutex::new(Vec::new());
    let done: Mutex<Fresh> = Mutex::new(HashMap::new());
    let n = plan.jobs.len();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, 16).min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = plan.jobs.get(i) else {
                    break;
                };
                let r = match job.work {
                    LayerWork::Unpack => {
                        let below = crate::snapshot::effective_lowers(&diff_ids[..job.index]);
                        let lowers = lowers::Lowers::new(below, store, &board);
                        let r = unpack_one(source, job, opts, &lowers);
                        match &r {
                            Ok((root, _)) => board.done(&job.diff_id, root),
                            Err(_) => board.failed(&job.diff_id),
                        }
                        r.map(Some)
                    }
                    LayerWork::Verify => verify_one(source, job, opts).map(|()| None),
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
                        next.store(n, Ordering::SeqCst);
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
    match first_error {
        Some(e) => {
            discard(&done);
            Err(e)
        }
        None => Ok(done),
    }
}

/// Removes the temp directories of unpacked layers.
fn discard(done: &Fresh) {
    for (root, _) in done.values() {
        if let Some(tmp) = root.parent() {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

/// Runs one job's reading of its blob, then lets the stream check the blob;
/// the stream's error wins over the job's.
fn with_stream<T>(
    source: &dyn BlobSource,
    job: &LayerJob,
    f: impl FnOnce(&mut (dyn BlobStream + '_)) -> Result<T, ImportError>,
) -> Result<T, ImportError> {
    let mut stream = source.open(job)?;
    let r = f(stream.as_mut());
    let checked = stream.finish(r.is_ok());
    match (r, checked) {
        (_, Err(e)) => Err(e),
        (r, Ok(())) => r,
    }
}

/// Hashes a layer blob's uncompressed bytes against the job's diff_id.
fn verify_one(
    source: &dyn BlobSource,
    job: &LayerJob,
    opts: &ImportOptions,
) -> Result<(), ImportError> {
    let layer_err = |source| ImportError::Layer {
        digest: job.desc.digest.clone(),
        source,
    };
    opts.limits
        .check_compressed(job.desc.size)
        .map_err(layer_err)?;
    with_stream(source, job, |r| {
        unpack::verify_diff_id(r, opts.limits.for_blob(job.desc.size), &job.diff_id)
            .map(|_| ())
            .map_err(layer_err)
    })
}

fn unpack_one(
    source: &dyn BlobSource,
    job: &LayerJob,
    opts: &ImportOptions,
    lower: &dyn unpack::LowerView,
) -> Result<(PathBuf, Vec<Vec<u8>>), ImportError> {
    let desc = &job.desc;
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
    let tmp = source.scratch()?;
    let r = (|| {
        let root = tmp.join("fs");
        std::fs::create_dir(&root).map_err(|e| io_err(&root, e))?;
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| io_err(&root, e))?;
        let mut uopts = UnpackOptions::new(WhiteoutMode::Overlay);
        uopts.max_size = opts.limits.for_blob(desc.size);
        with_stream(source, job, |r| {
            unpack::unpack_layer_over(r, &root, &uopts, Some(&job.diff_id), Some(lower))
                .map_err(layer_err)
        })
        .map(|u| (root, u.implicit_dirs))
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r
}

/// Places the new layers (see the module doc) and records `reference` ->
/// manifest. Every layer blob must be in the store by now.
pub fn finish(
    store: &Store,
    lock: &Lock,
    reference: &Reference,
    manifest_digest: &Digest,
    plan: &Plan,
    fresh: Fresh,
) -> Result<ImageRecord, ImportError> {
    let m = &plan.manifest;
    let config = &plan.config;
    let placed = (|| {
        for l in &m.layers {
            if !store.has_blob(&l.digest) {
                return Err(ImportError::Store(StoreError::MissingBlob {
                    store: store.root().to_path_buf(),
                    digest: l.digest.clone(),
                }));
            }
        }
        place_layers(store, &config.rootfs.diff_ids, &fresh)
    })();
    // Whatever was not renamed into place goes (the temp dirs of this run).
    discard(&fresh);
    placed?;
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

/// Gives implicitly created directories of the new layers their lower
/// layers' metadata (bottom up, so lowers are final first), then renames
/// each new layer into place, unless one with its diff_id got there first.
/// Before the renames nothing is visible.
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
        if store.has_layer(d) {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        std::fs::rename(root, &dest).map_err(|e| io_err(&dest, e))?;
    }
    Ok(())
}
