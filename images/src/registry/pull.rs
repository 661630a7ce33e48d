//! Pulling an image into the store, in three phases (the locking is
//! written down in [`crate::store::work`]):
//!
//! 1. Without the store lock: the manifest (negotiated by `Accept`; from an
//!    index, the host's platform) and the config, both checked by digest.
//! 2. Under the store lock, briefly: a work area pinning every blob and
//!    layer of the image, the manifest and config stored, the layers'
//!    work planned ([`commit::plan`]).
//! 3. Without the store lock: the layer jobs, `parallel` at a time, bottom
//!    first, each streaming its blob from the registry into its unpack as
//!    it arrives ([`super::download`]: partial files, `Range` resume,
//!    size and digest checked on every byte; blobs already stored are read
//!    from the store).
//! 4. Under the store lock: the new layers placed, the reference recorded,
//!    the work area dropped, and what nothing references any more removed
//!    (a failed pull leaves no image and no blob; partial downloads stay
//!    for the next pull to resume).

use std::sync::Arc;

use super::client::Client;
use super::download::Downloads;
use super::{auth, name, PullError, PullOptions};
use crate::digest::Digest;
use crate::import::{commit, ImportError, ImportOptions};
use crate::manifest::{self, Manifest, Parsed, Platform};
use crate::progress::Progress;
use crate::store::{ImageRecord, Pins, Store};

/// The largest image config accepted.
pub const MAX_CONFIG: u64 = 4 << 20;

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

/// The image manifest for `rr` (through an index to `platform`'s entry):
/// its bytes, digest and parsed form.
fn resolve(
    c: &Client,
    rr: &name::RemoteRef,
    platform: &Platform,
) -> Result<(Vec<u8>, Digest, Manifest), PullError> {
    let (bytes, media_type) = c.manifest(&rr.manifest_ref())?;
    let digest = Digest::sha256_of(&bytes);
    if let Some(d) = &rr.digest {
        check_digest(&format!("manifest {d}"), &bytes, d)?;
    }
    let idx = match manifest::parse_manifest_or_index(&media_type, &digest, &bytes)? {
        Parsed::Manifest(m) => return Ok((bytes, digest, m)),
        Parsed::Index(idx) => idx,
    };
    let d = manifest::select_platform(&idx.manifests, platform)?.clone();
    let (bytes, mt) = c.manifest(&d.digest.to_string())?;
    check_digest(&format!("manifest {}", d.digest), &bytes, &d.digest)?;
    match manifest::parse_manifest_or_index(&mt, &d.digest, &bytes)? {
        Parsed::Manifest(m) => Ok((bytes, d.digest, m)),
        Parsed::Index(_) => Err(PullError::Config(format!(
            "{}/{}: manifest {} is an index inside an index",
            rr.registry, rr.repository, d.digest
        ))),
    }
}

/// The image config's bytes, from the store or the registry, checked.
fn config_bytes(store: &Store, c: &Client, m: &Manifest) -> Result<Vec<u8>, PullError> {
    let d = &m.config.digest;
    if store.has_blob(d) {
        return Ok(store.read_blob(d)?);
    }
    let bytes = c.small_blob(d, MAX_CONFIG.min(m.config.size.max(1)))?;
    check_digest(&format!("config {d}"), &bytes, d)?;
    Ok(bytes)
}

/// What the pull relies on while it runs without the store lock.
fn pins(manifest_digest: &Digest, m: &Manifest, diff_ids: &[Digest]) -> Pins {
    let mut blobs = vec![manifest_digest.clone(), m.config.digest.clone()];
    blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
    Pins {
        blobs,
        layers: diff_ids.to_vec(),
    }
}

/// Pulls `reference` into `store` (see the module doc).
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, PullError> {
    let rr = name::parse(reference)?;
    let c = Client::new(&rr, &opts.registry, Arc::new(auth::TokenCache::default()))?;
    let (manifest_bytes, digest, m) = resolve(&c, &rr, &opts.platform)?;
    let config_bytes = config_bytes(store, &c, &m)?;
    let config = manifest::parse_config(&m.config.digest, &config_bytes, &m)?;
    for l in &m.layers {
        manifest::layer_kind(l)?;
        opts.limits
            .check_compressed(l.size)
            .map_err(|source| ImportError::Layer {
                digest: l.digest.clone(),
                source,
            })?;
    }
    let store_ref = rr.store_reference()?.without_digest_if_tagged();
    let pinned = pins(&digest, &m, &config.rootfs.diff_ids);
    let config_desc = m.config.clone();

    let (work, plan) = {
        let lock = store.lock()?;
        let work = store.begin_work(&lock, &pinned)?;
        let planned = (|| -> Result<commit::Plan, PullError> {
            store.ingest_blob(
                &lock,
                Some(&config_desc.digest),
                Some(config_desc.size),
                &config_bytes[..],
            )?;
            store.ingest_blob(
                &lock,
                Some(&digest),
                Some(manifest_bytes.len() as u64),
                &manifest_bytes[..],
            )?;
            Ok(commit::plan(store, m, config)?)
        })();
        match planned {
            Ok(p) => (work, p),
            Err(e) => {
                drop(work);
                if let Err(g) = store.gc(&lock) {
                    tracing::warn!(error = %g, "cleaning up after a pull");
                }
                return Err(e);
            }
        }
    };

    let iopts = ImportOptions {
        name: None,
        limits: opts.limits,
        platform: opts.platform.clone(),
    };
    let source = Downloads {
        store,
        client: &c,
        work: &work,
        progress,
    };
    let fresh = commit::run_jobs(store, &plan, &source, opts.parallel, &iopts);

    let lock = store.lock()?;
    let result = fresh
        .and_then(|f| commit::finish(store, &lock, &store_ref, &digest, &plan, f))
        .map_err(PullError::from);
    drop(work);
    if let Err(e) = store.gc(&lock) {
        tracing::warn!(error = %e, "cleaning up after a pull");
    }
    result
}
