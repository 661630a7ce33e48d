//! Where images come from: an OCI image layout directory, an oci-archive (a
//! tar of a layout) or a docker-archive (`manifest.json` plus layer tars).
//! Archives are indexed once and read in place (no extraction). Resolving a
//! source yields the verified manifest and config and where each layer is.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{verify_stream, Digest, VerifyError};
use crate::manifest::{
    self, parse_config, parse_manifest_or_index, select_platform, Descriptor, ImageConfig,
    Manifest, ManifestError, Parsed, Platform, ANNOTATION_REF_NAME,
};
use crate::reference::Reference;

/// Largest manifest, index or config accepted (they are read into memory).
const MAX_JSON: u64 = 16 << 20;

/// Errors of reading an image source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an image: {reason}")]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{path}: `{file}` is missing")]
    Missing { path: PathBuf, file: String },
    #[error("{path}: `{file}`: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        file: String,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Verify { path: PathBuf, source: VerifyError },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("{path}: {reason}")]
    Select { path: PathBuf, reason: String },
}

/// The kind of source detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OciLayout,
    OciArchive,
    DockerArchive,
}

#[derive(Debug)]
enum Files {
    Dir(PathBuf),
    /// name -> (data offset, size) in the archive file.
    Tar(PathBuf, HashMap<String, (u64, u64)>),
}

/// An opened image source.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    kind: Kind,
    files: Files,
}

/// Where one layer of a resolved image is.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// Path inside the source.
    pub path: String,
    pub size: u64,
    /// Known for OCI sources; docker-archive layers are hashed on ingest.
    pub digest: Option<Digest>,
    pub media_type: String,
    pub diff_id: Digest,
}

/// A resolved image, manifest and config verified.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The manifest blob (None for docker-archive: made after ingest).
    pub manifest: Option<(Digest, Vec<u8>)>,
    pub config_digest: Digest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// The name the source gives the image, if any (`busybox:latest`, or
    /// only a tag from an OCI `ref.name` annotation).
    pub source_name: Option<String>,
}

fn norm(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Source {
    /// Opens `path`, detecting its kind.
    pub fn open(path: &Path) -> Result<Source, SourceError> {
        let io_err = |source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            let s = Source {
                path: path.to_path_buf(),
                kind: Kind::OciLayout,
                files: Files::Dir(path.to_path_buf()),
            };
            s.check_layout()?;
            return Ok(s);
        }
        let mut f = File::open(path).map_err(io_err)?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(io_err)?;
        if crate::unpack::sniff(&head[..n]) != crate::unpack::Compression::None {
            return Err(SourceError::NotAnImage {
                path: path.to_path_buf(),
                reason: "compressed archive; decompress it first (oci-archive and docker-archive are plain tars)".into(),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let index = index_tar(f).map_err(|e| SourceError::NotAnImage {
            path: path.to_path_buf(),
            reason: format!("not a readable tar archive: {e}"),
        })?;
        let kind = if index.contains_key("oci-layout") {
            Kind::OciArchive
        } else if index.contains_key("manifest.json") {
            Kind::DockerArchive
        } else {
            return Err(SourceError::NotAnImage {
                path: path.to_path_buf(),
                reason: "archive has neither `oci-layout` (oci-archive) nor `manifest.json` (docker-archive)".into(),
            });
        };
        let s = Source {
            path: path.to_path_buf(),
            kind,
            files: Files::Tar(path.to_path_buf(), index),
        };
        if kind == Kind::OciArchive {
            s.check_layout()?;
        }
        Ok(s)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a file of the source, returning a reader and its size.
    pub fn open_file(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), SourceError> {
        let missing = || SourceError::Missing {
            path: self.path.clone(),
            file: name.to_string(),
        };
        match &self.files {
            Files::Dir(dir) => {
                let p = dir.join(norm(name));
                let f = File::open(&p).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        missing()
                    } else {
                        SourceError::Io {
                            path: p.clone(),
                            source: e,
                        }
                    }
                })?;
                let size = f
                    .metadata()
                    .map_err(|source| SourceError::Io {
                        path: p.clone(),
                        source,
                    })?
                    .len();
                Ok((Box::new(f), size))
            }
            Files::Tar(archive, index) => {
                let &(off, size) = index.get(&norm(name)).ok_or_else(missing)?;
                let io_err = |source| SourceError::Io {
                    path: archive.clone(),
                    source,
                };
                let mut f = File::open(archive).map_err(io_err)?;
                f.seek(SeekFrom::Start(off)).map_err(io_err)?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let (r, size) = self.open_file(name)?;
        if size > MAX_JSON {
            return Err(SourceError::NotAnImage {
                path: self.path.clone(),
                reason: format!("`{name}` is {size} bytes, larger than {MAX_JSON}"),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        r.take(MAX_JSON)
            .read_to_end(&mut buf)
            .map_err(|source| SourceError::Io {
                path: self.path.join(name),
                source,
            })?;
        Ok(buf)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, SourceError> {
        let bytes = self.read_small(name)?;
        serde_json::from_slice(&bytes).map_err(|source| SourceError::Json {
            path: self.path.clone(),
            file: name.to_string(),
            source,
        })
    }

    fn check_layout(&self) -> Result<(), SourceError> {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let l: Layout = self.json("oci-layout")?;
        if !l.version.starts_with("1.") {
            return Err(SourceError::NotAnImage {
                path: self.path.clone(),
                reason: format!("unsupported imageLayoutVersion `{}`", l.version),
            });
        }
        Ok(())
    }

    /// Reads a blob of an OCI layout fully, verifying digest and size.
    fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        if desc.size > MAX_JSON {
            return Err(SourceError::NotAnImage {
                path: self.path.clone(),
                reason: format!(
                    "blob {} is {} bytes, too large for JSON",
                    desc.digest, desc.size
                ),
            });
        }
        let (r, _) = self.open_file(&blob_path(&desc.digest))?;
        let mut out = Vec::new();
        verify_stream(r, &mut out, &desc.digest, Some(desc.size)).map_err(|source| {
            SourceError::Verify {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(out)
    }

    /// Picks one image of the source (by `want`, or the only one, or the
    /// host platform of a multi-platform index) and verifies its manifest
    /// and config.
    pub fn resolve(
        &self,
        want: Option<&Reference>,
        host: &Platform,
    ) -> Result<Resolved, SourceError> {
        match self.kind {
            Kind::OciLayout | Kind::OciArchive => self.resolve_oci(want, host),
            Kind::DockerArchive => self.resolve_docker(want),
        }
    }

    fn manifest_err(&self, source: ManifestError) -> SourceError {
        SourceError::Manifest {
            path: self.path.clone(),
            source,
        }
    }

    fn resolve_oci(
        &self,
        want: Option<&Reference>,
        host: &Platform,
    ) -> Result<Resolved, SourceError> {
        let index: manifest::Index = self.json("index.json")?;
        let named = |d: &&Descriptor| d.annotations.get(ANNOTATION_REF_NAME).cloned();
        let mut candidates: Vec<&Descriptor> = index.manifests.iter().collect();
        if let Some(want) = want {
            let matching: Vec<&Descriptor> = candidates
                .iter()
                .copied()
                .filter(|d| {
                    named(d)
                        .is_some_and(|n| Some(n.as_str()) == want.tag() || n == want.to_string())
                })
                .collect();
            if !matching.is_empty() {
                candidates = matching;
            }
        }
        let chosen: &Descriptor = match candidates.as_slice() {
            [] => {
                return Err(SourceError::Select {
                    path: self.path.clone(),
                    reason: "index.json lists no manifests".into(),
                })
            }
            [one] => one,
            many if many.iter().all(|d| d.platform.is_some()) => {
                let owned: Vec<Descriptor> = many.iter().map(|d| (*d).clone()).collect();
                let pick = select_platform(&owned, host).map_err(|e| self.manifest_err(e))?;
                many.iter()
                    .copied()
                    .find(|d| d.digest == pick.digest)
                    .unwrap_or(many[0])
            }
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|d| named(d).unwrap_or_else(|| d.digest.to_string()))
                    .collect();
                return Err(SourceError::Select {
                    path: self.path.clone(),
                    reason: format!(
                        "holds {} images ({}); pass --name with one of their tags",
                        many.len(),
                        names.join(", ")
                    ),
                });
            }
        };
        let source_name = named(&chosen);
        let mut desc = chosen.clone();
        // Follow nested indexes down to a manifest.
        for _ in 0..4 {
            let bytes = self.read_blob(&desc)?;
            match parse_manifest_or_index(&desc.media_type, &desc.digest, &bytes)
                .map_err(|e| self.manifest_err(e))?
            {
                Parsed::Index(ix) => {
                    desc = select_platform(&ix.manifests, host)
                        .map_err(|e| self.manifest_err(e))?
                        .clone();
                }
                Parsed::Manifest(m) => return self.finish_oci(desc.digest, bytes, m, source_name),
            }
        }
        Err(SourceError::Select {
            path: self.path.clone(),
            reason: "indexes nested more than 4 deep".into(),
        })
    }

    fn finish_oci(
        &self,
        digest: Digest,
        bytes: Vec<u8>,
        m: Manifest,
        source_name: Option<String>,
    ) -> Result<Resolved, SourceError> {
        let config_bytes = self.read_blob(&m.config)?;
        let config =
            parse_config(&m.config.digest, &config_bytes, &m).map_err(|e| self.manifest_err(e))?;
        let mut layers = Vec::new();
        for (d, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            manifest::layer_kind(d).map_err(|e| self.manifest_err(e))?;
            layers.push(LayerRef {
                path: blob_path(&d.digest),
                size: d.size,
                digest: Some(d.digest.clone()),
                media_type: d.media_type.clone(),
                diff_id: diff_id.clone(),
            });
        }
        Ok(Resolved {
            manifest: Some((digest, bytes)),
            config_digest: m.config.digest.clone(),
            config_bytes,
            config,
            layers,
            source_name,
        })
    }

    fn resolve_docker(&self, want: Option<&Reference>) -> Result<Resolved, SourceError> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers")]
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.json("manifest.json")?;
        let tags = |e: &Entry| e.repo_tags.clone().unwrap_or_default();
        let entry = match entries.as_slice() {
            [] => {
                return Err(SourceError::Select {
                    path: self.path.clone(),
                    reason: "manifest.json lists no images".into(),
                })
            }
            [one] => one,
            many => {
                let wanted = want.map(|w| w.to_string());
                match many
                    .iter()
                    .find(|e| wanted.as_ref().is_some_and(|w| tags(e).contains(w)))
                {
                    Some(e) => e,
                    None => {
                        let all: Vec<String> = many.iter().flat_map(tags).collect();
                        return Err(SourceError::Select {
                            path: self.path.clone(),
                            reason: format!(
                                "holds {} images ({}); pass --name with one of their tags",
                                many.len(),
                                all.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        let config_bytes = self.read_small(&entry.config)?;
        let config_digest = Digest::sha256_of(&config_bytes);
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| SourceError::Json {
                path: self.path.clone(),
                file: entry.config.clone(),
                source,
            })?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(self.manifest_err(ManifestError::LayerCount {
                digest: config_digest.to_string(),
                layers: entry.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            }));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (_, size) = self.open_file(path)?;
            layers.push(LayerRef {
                path: path.clone(),
                size,
                digest: None,
                media_type: String::new(),
                diff_id: diff_id.clone(),
            });
        }
        Ok(Resolved {
            manifest: None,
            config_digest,
            config_bytes,
            config,
            layers,
            source_name: entry.repo_tags.as_ref().and_then(|t| t.first().cloned()),
        })
    }
}

/// `blobs/<alg>/<hex>`.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// Lists a tar's regular files (following symlinks and hard links between
/// its own entries) without reading their data.
fn index_tar(f: File) -> io::Result<HashMap<String, (u64, u64)>> {
    let mut archive = tar::Archive::new(f);
    let mut files = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for e in archive.entries_with_seek()? {
        let e = e?;
        let name = norm(&String::from_utf8_lossy(&e.path_bytes()));
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                files.insert(name, (e.raw_file_position(), e.size()));
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(t) = e.link_name_bytes() {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    let target = if e.header().entry_type() == tar::EntryType::Symlink {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        norm(&format!("{dir}/{t}"))
                    } else {
                        norm(&t)
                    };
                    links.push((name, target));
                }
            }
            _ => {}
        }
    }
    for _ in 0..8 {
        for (name, target) in &links {
            if let Some(&v) = files.get(target) {
                files.entry(name.clone()).or_insert(v);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
