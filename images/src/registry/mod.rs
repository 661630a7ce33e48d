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
//!   parallel (bounded) and unpacked as they arrive ([`download`]), resumed
//!   with `Range` after an interruption, size, digest and diff_id checked;
//!   the store lock is held only to plan and to commit. A failed pull leaves
//!   nothing referenced in the store.
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

pub mod auth;
pub mod client;
pub mod config;
pub mod download;
pub mod fetch;
pub mod name;
pub mod pull;
pub mod push;
pub mod upload;

use std::path::Path;

use crate::digest::Digest;
use crate::import::ImportError;
use crate::manifest::{self, Platform};
use crate::progress::Progress;
use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack::SizeLimits;
pub use client::{RegistryError, RegistryOptions};
pub use pull::pull;
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
