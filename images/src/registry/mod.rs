//! Pulling images from and pushing them to registries over the OCI
//! distribution API v2.
//!
//! - [`name`] turns `[docker://][host/]path[:tag][@digest]` into registry,
//!   repository and tag or digest (Docker Hub short names: `busybox` is
//!   `docker.io/library/busybox:latest`).
//! - [`auth`]: auth files (`$REGISTRY_AUTH_FILE`,
//!   `/run/containers/<uid>/auth.json`, `~/.docker/config.json`), challenges,
//!   bearer tokens cached per scope; credentials never reach a log or error.
//! - [`config`]: `registries.conf` (insecure registries, mirrors tried in
//!   order before the registry) and the certs.d layout (CAs, client certs).
//! - [`client`]: the HTTP side, ureq on rustls (synchronous, no async
//!   runtime, as the rest of Berth), with the auth flow for every request;
//!   [`fetch`] its pull requests, [`upload`] its push requests.
//! - [`push`]: blobs checked, mounted from another repository or uploaded
//!   (whole or chunked), then the manifest.
//! - [`pull`] / [`ensure`]: manifest negotiation (OCI and Docker v2
//!   manifests and indexes; schema 1 refused), the host's platform from an
//!   index, blobs already in the store skipped, missing layers downloaded in
//!   parallel (bounded) with size and digest checked while they stream, then
//!   unpacked in parallel by [`crate::import::commit_image`], which checks
//!   every diff_id. A failed pull leaves nothing referenced in the store.
//!
//! The seam for other programs (the orchestrator's agent): [`ensure`] makes
//! sure a reference is in a store, pulling it when missing, and reports
//! progress through a [`crate::progress::Progress`]; it blocks, so call it
//! from a worker thread:
//!
//! ```ignore
//! let opts = PullOptions::for_node(Path::new("/etc/containers/registries.conf"))?;
//! let record = ensure(&store, "registry:5000/team/app:1.2", &opts, &my_progress)?;
//! ```
//!
//! Not yet: layers are unpacked once all are downloaded (not as each
//! arrives), an interrupted download restarts the blob (no `Range` resume;
//! blobs that completed are kept and not fetched again), the store's lock is
//! held for the whole pull.

pub mod auth;
pub mod client;
pub mod config;
pub mod fetch;
pub mod name;
pub mod push;
pub mod upload;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::import::{self, ImportError, ImportOptions};
use crate::manifest::{self, Parsed, Platform};
use crate::progress::{Counting, Progress};
use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack::SizeLimits;
pub use client::{RegistryError, RegistryOptions};
pub use push::{push, PushError, PushOptions, Pushed};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    pub platform: Platform,
    pub limits: SizeLimits,
    /// Layers downloaded at once.
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: Platform::host(),
            limits: SizeLimits::default(),
            parallel: 3,
        }
    }
}

impl PullOptions {
    /// The node's defaults with `registries_conf` read (missing: empty).
    pub fn for_node(registries_conf: &Path) -> Result<PullOptions, PullError> {
        let mut o = PullOptions::default();
        o.registry.registries = config::RegistriesConfig::load(registries_conf)
            .map_err(|e| PullError::Config(e.to_string()))?;
        Ok(o)
    }
}

/// Errors of pulling.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{0}")]
    Config(String),
    #[error("{what}: the registry sent content with digest {actual}, not {expected}")]
    Digest {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

/// Returns the stored image for `reference`, pulling it first when the
/// store does not have it. Blocking: call it from a worker thread.
pub fn ensure(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, PullError> {
    let rr = name::parse(reference)?;
    let stored = rr.store_reference()?.to_string();
    match store.find(&stored) {
        Ok(rec) => Ok(rec),
        Err(StoreError::NotFound { .. }) => pull(store, reference, opts, progress),
        Err(e) => Err(e.into()),
    }
}

fn check_digest(what: &str, bytes: &[u8], expected: &Digest) -> Result<(), PullError> {
    let actual = Digest::sha256_of(bytes);
    if &actual != expected {
        return Err(PullError::Digest {
            what: what.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// Pulls `reference` into `store` (see the module doc).
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, PullError> {
    let rr = name::parse(reference)?;
    let tokens = Arc::new(auth::TokenCache::default());
    let c = client::Client::new(&rr, &opts.registry, tokens)?;
    let (mut bytes, media_type) = c.manifest(&rr.manifest_ref())?;
    let mut digest = Digest::sha256_of(&bytes);
    if let Some(d) = &rr.digest {
        check_digest(&format!("manifest {d}"), &bytes, d)?;
    }
    let m = match manifest::parse_manifest_or_index(&media_type, &digest, &bytes)? {
        Parsed::Manifest(m) => m,
        Parsed::Index(idx) => {
            let d = manifest::select_platform(&idx.manifests, &opts.platform)?.clone();
            let (b, mt) = c.manifest(&d.digest.to_string())?;
            check_digest(&format!("manifest {}", d.digest), &b, &d.digest)?;
            bytes = b;
            digest = d.digest.clone();
            match manifest::parse_manifest_or_index(&mt, &digest, &bytes)? {
                Parsed::Manifest(m) => m,
                Parsed::Index(_) => {
                    return Err(PullError::Config(format!(
                        "{}/{}: manifest {digest} is an index inside an index",
                        rr.registry, rr.repository
                    )))
                }
            }
        }
    };
    let store_ref = rr.store_reference()?.without_digest_if_tagged();
    let lock = store.lock()?;
    let result = (|| -> Result<ImageRecord, PullError> {
        if !store.has_blob(&m.config.digest) {
            let r = c.blob(&m.config.digest)?;
            store.ingest_blob(&lock, Some(&m.config.digest), Some(m.config.size), r)?;
        }
        store.ingest_blob(&lock, Some(&digest), Some(bytes.len() as u64), &bytes[..])?;
        let mut missing: Vec<&manifest::Descriptor> = Vec::new();
        for l in &m.layers {
            manifest::layer_kind(l)?;
            opts.limits
                .check_compressed(l.size)
                .map_err(|source| ImportError::Layer {
                    digest: l.digest.clone(),
                    source,
                })?;
            if !store.has_blob(&l.digest) && !missing.iter().any(|x| x.digest == l.digest) {
                missing.push(l);
            }
        }
        download(store, &lock, &c, &missing, opts.parallel, progress)?;
        let iopts = ImportOptions {
            name: None,
            limits: opts.limits,
            platform: opts.platform.clone(),
        };
        Ok(import::commit_image(
            store, &lock, &store_ref, &digest, &iopts, progress,
        )?)
    })();
    if let Err(e) = store.gc(&lock) {
        tracing::warn!(error = %e, "cleaning up after a pull");
    }
    result
}

/// Downloads `blobs` into the store, `parallel` at a time.
fn download(
    store: &Store,
    lock: &crate::store::Lock,
    c: &client::Client,
    blobs: &[&manifest::Descriptor],
    parallel: usize,
    progress: &dyn Progress,
) -> Result<(), PullError> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<PullError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, 16).min(blobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(d) = blobs.get(i) else { return };
                let id = d.digest.short().to_string();
                progress.start(&id, "downloading", d.size);
                let r = c
                    .blob(&d.digest)
                    .map_err(PullError::from)
                    .and_then(|reader| {
                        let counting = Counting {
                            inner: reader,
                            id: id.clone(),
                            progress,
                        };
                        store
                            .ingest_blob(lock, Some(&d.digest), Some(d.size), counting)
                            .map_err(PullError::from)
                    });
                match r {
                    Ok(_) => progress.finish(&id, "downloaded"),
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        next.store(blobs.len(), Ordering::SeqCst);
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
