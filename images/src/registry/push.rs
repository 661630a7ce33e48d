//! Pushing a stored image to a registry (OCI distribution spec, "Push"):
//! each blob (config and layers) is checked with `HEAD` and skipped when the
//! repository has it; else, when another repository of the same registry is
//! known to hold it (a stored image pulled from there lists it), the
//! registry is asked to mount it from there; else it is uploaded, in one
//! request or in chunks (`chunk_size`). Blobs go `parallel` at a time. The
//! manifest is put last, and only once every blob is there, so a push that
//! fails or is killed midway tags nothing; the registry then holds at most
//! unreferenced blobs, which its garbage collection removes. The manifest is
//! sent byte for byte as stored, so the image keeps its digest.
//!
//! The store is read without holding its lock: the blob files are opened
//! under the shared lock, then the lock is released; an `image rm` during
//! the push unlinks files whose open descriptors stay readable.

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::client::{Client, RegistryError, RegistryOptions};
use super::upload::{BlobFile, Mounted};
use super::{auth, name};
use crate::digest::Digest;
use crate::manifest;
use crate::progress::Progress;
use crate::store::{ImageRecord, Store, StoreError};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub registry: RegistryOptions,
    /// Blobs sent at once.
    pub parallel: usize,
    /// Upload in `PATCH` chunks of this many bytes (None: one request).
    pub chunk_size: Option<u64>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            registry: RegistryOptions::default(),
            parallel: 3,
            chunk_size: None,
        }
    }
}

/// Errors of pushing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Manifest(#[from] manifest::ManifestError),
    #[error("`{0}` names no registry: give the destination as host[:port]/repository[:tag]")]
    NoRegistry(String),
    #[error("{dest}: the registry computed digest {actual} for the manifest, not {expected}")]
    Digest {
        dest: String,
        expected: Digest,
        actual: Digest,
    },
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPushed {
    /// The repository had it already.
    Existed,
    /// Mounted from this repository of the same registry.
    Mounted(String),
    Uploaded,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Where it went (`registry/repository:tag` or `@digest`).
    pub reference: String,
    pub digest: Digest,
    pub blobs: Vec<(Digest, BlobPushed)>,
}

/// One blob to push, with a repository it may be mounted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPlan {
    pub digest: Digest,
    pub size: u64,
    pub mount_from: Option<String>,
}

/// The blobs of `image` (config first, each once) and, for each, another
/// repository of `registry` that a stored image says holds it (the first by
/// name: a refused mount opens an ordinary upload, so one is asked). Pure.
pub fn plan_blobs(
    image: &ImageRecord,
    config_size: u64,
    images: &[ImageRecord],
    registry: &str,
    repository: &str,
) -> Vec<BlobPlan> {
    let mut blobs: Vec<(Digest, u64)> = vec![(image.config.clone(), config_size)];
    for l in &image.layers {
        if !blobs.iter().any(|(d, _)| d == &l.digest) {
            blobs.push((l.digest.clone(), l.size));
        }
    }
    blobs
        .into_iter()
        .map(|(digest, size)| {
            let mut from = BTreeSet::new();
            for i in images {
                let Ok(rr) = name::parse(&i.reference) else {
                    continue;
                };
                let has = i.config == digest || i.layers.iter().any(|l| l.digest == digest);
                if has
                    && name::names_registry(&i.reference)
                    && rr.registry == registry
                    && rr.repository != repository
                {
                    from.insert(rr.repository);
                }
            }
            BlobPlan {
                digest,
                size,
                mount_from: from.into_iter().next(),
            }
        })
        .collect()
}

/// The media type to put a stored manifest with: its own `mediaType`, else
/// Docker's when its config is a Docker config, else OCI's.
pub fn manifest_media_type(m: &manifest::Manifest) -> &str {
    match &m.media_type {
        Some(mt) if !mt.is_empty() => mt,
        _ if m.config.media_type == manifest::DOCKER_CONFIG => manifest::DOCKER_MANIFEST,
        _ => manifest::OCI_MANIFEST,
    }
}

/// An image's blobs opened for reading, and its manifest.
struct Opened {
    image: ImageRecord,
    manifest_bytes: Vec<u8>,
    manifest: manifest::Manifest,
    plan: Vec<BlobPlan>,
    files: Vec<File>,
}

fn open_image(
    store: &Store,
    source: &str,
    registry: &str,
    repository: &str,
) -> Result<Opened, PushError> {
    let _shared = store.lock_shared()?;
    let image = store.find(source)?;
    let manifest_bytes = store.read_blob(&image.manifest)?;
    let manifest = match manifest::parse_manifest_or_index("", &image.manifest, &manifest_bytes)? {
        manifest::Parsed::Manifest(m) => m,
        manifest::Parsed::Index(_) => {
            return Err(manifest::ManifestError::MediaType {
                what: "manifest",
                digest: image.manifest.to_string(),
                media_type: manifest::OCI_INDEX.into(),
            }
            .into())
        }
    };
    let plan = plan_blobs(
        &image,
        manifest.config.size,
        &store.images()?,
        registry,
        repository,
    );
    let files = plan
        .iter()
        .map(|b| {
            let p = store.blob_path(&b.digest);
            File::open(&p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::MissingBlob {
                        store: store.root().to_path_buf(),
                        digest: b.digest.clone(),
                    }
                } else {
                    StoreError::Io { path: p, source: e }
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Opened {
        image,
        manifest_bytes,
        manifest,
        plan,
        files,
    })
}

/// Pushes the stored image `source` to `dest` (default: `source`'s own
/// reference, which must then name a registry). See the module doc.
pub fn push(
    store: &Store,
    source: &str,
    dest: Option<&str>,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed, PushError> {
    let dest = match dest {
        Some(d) => d.to_string(),
        None => store.find(source)?.reference,
    };
    if !name::names_registry(&dest) {
        return Err(PushError::NoRegistry(crate::escape::text(&dest)));
    }
    let rr = name::parse(&dest)?;
    let opened = open_image(store, source, &rr.registry, &rr.repository)?;
    if let Some(d) = &rr.digest {
        if d != &opened.image.manifest {
            return Err(PushError::Digest {
                dest: crate::escape::text(&dest),
                expected: d.clone(),
                actual: opened.image.manifest.clone(),
            });
        }
    }
    let client = Client::for_push(&rr, &opts.registry, Arc::new(auth::TokenCache::default()))?;
    let blobs = push_blobs(&client, &opened, opts, progress)?;
    let tag = rr.manifest_ref();
    let media_type = manifest_media_type(&opened.manifest);
    let computed = client.put_manifest(&tag, media_type, &opened.manifest_bytes)?;
    if let Some(actual) = computed {
        if actual != opened.image.manifest {
            return Err(PushError::Digest {
                dest: crate::escape::text(&dest),
                expected: opened.image.manifest.clone(),
                actual,
            });
        }
    }
    let sep = if rr.tag.is_some() { ':' } else { '@' };
    Ok(Pushed {
        reference: format!("{}/{}{sep}{tag}", rr.registry, rr.repository),
        digest: opened.image.manifest.clone(),
        blobs,
    })
}

/// Sends every blob that the repository lacks, `parallel` at a time.
fn push_blobs(
    client: &Client,
    opened: &Opened,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Vec<(Digest, BlobPushed)>, PushError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, BlobPushed)>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<RegistryError>> = Mutex::new(None);
    let n = opened.plan.len();
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, 16).min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let (Some(b), Some(file)) = (opened.plan.get(i), opened.files.get(i)) else {
                    return;
                };
                match push_blob(client, b, file, opts, progress) {
                    Ok(r) => {
                        if let Ok(mut v) = results.lock() {
                            v.push((i, r));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        next.store(n, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    if let Ok(Some(e)) = failed.into_inner() {
        return Err(e.into());
    }
    let mut done = results.into_inner().unwrap_or_default();
    done.sort_by_key(|(i, _)| *i);
    Ok(done
        .into_iter()
        .map(|(i, r)| (opened.plan[i].digest.clone(), r))
        .collect())
}

fn push_blob(
    client: &Client,
    b: &BlobPlan,
    file: &File,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<BlobPushed, RegistryError> {
    let id = b.digest.short().to_string();
    let told = |what: &str| {
        progress.start(&id, what, b.size);
        progress.finish(&id, what);
    };
    if client.blob_exists(&b.digest)? {
        told("exists");
        return Ok(BlobPushed::Existed);
    }
    let up = match &b.mount_from {
        Some(from) => match client.mount(&b.digest, from)? {
            Mounted::Yes => {
                told(&format!("mounted from {from}"));
                return Ok(BlobPushed::Mounted(from.clone()));
            }
            Mounted::No(up) => up,
        },
        None => client.start_upload(&b.digest)?,
    };
    progress.start(&id, "uploading", b.size);
    let blob = BlobFile {
        digest: &b.digest,
        file,
        size: b.size,
        progress,
        id: &id,
    };
    match opts.chunk_size {
        Some(chunk) => client.upload_chunked(up, &blob, chunk)?,
        None => client.upload_whole(up, &blob)?,
    }
    progress.finish(&id, "uploaded");
    Ok(BlobPushed::Uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LayerRecord;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn image(reference: &str, config: char, layers: &[char]) -> ImageRecord {
        ImageRecord {
            reference: reference.into(),
            manifest: d('f'),
            config: d(config),
            layers: layers
                .iter()
                .map(|&c| LayerRecord {
                    digest: d(c),
                    diff_id: d('e'),
                    size: 10,
                    media_type: String::new(),
                })
                .collect(),
            platform: "linux/amd64".into(),
            created: None,
            imported: 0,
        }
    }

    #[test]
    fn blobs_are_mounted_only_from_other_repositories_of_the_same_registry() {
        let me = image("bb:1", 'c', &['a', 'b', 'a']);
        let others = vec![
            me.clone(),
            image("reg:5000/team/one:1", '1', &['a']),
            image("reg:5000/team/two:1", '2', &['b']),
            image("reg:5000/team/dest:0", '3', &['b']),
            image("other:5000/team/one:1", '4', &['b']),
            image("team/one:1", '5', &['b']),
        ];
        let plan = plan_blobs(&me, 7, &others, "reg:5000", "team/dest");
        assert_eq!(
            plan,
            vec![
                BlobPlan {
                    digest: d('c'),
                    size: 7,
                    mount_from: None
                },
                BlobPlan {
                    digest: d('a'),
                    size: 10,
                    mount_from: Some("team/one".into())
                },
                BlobPlan {
                    digest: d('b'),
                    size: 10,
                    mount_from: Some("team/two".into())
                },
            ]
        );
    }

    #[test]
    fn manifests_keep_their_media_type() {
        let mut m: manifest::Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": manifest::DOCKER_CONFIG, "digest": d('a').to_string(), "size": 1},
            "layers": []
        }))
        .unwrap();
        assert_eq!(manifest_media_type(&m), manifest::DOCKER_MANIFEST);
        m.config.media_type = manifest::OCI_CONFIG.into();
        assert_eq!(manifest_media_type(&m), manifest::OCI_MANIFEST);
        m.media_type = Some(manifest::DOCKER_MANIFEST.into());
        assert_eq!(manifest_media_type(&m), manifest::DOCKER_MANIFEST);
    }
}
