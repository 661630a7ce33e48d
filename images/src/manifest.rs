//! OCI and Docker v2 manifests, indexes (manifest lists) and image configs,
//! and picking the host platform out of a multi-platform index. Pure data.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors of manifest and config handling.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} {digest}: invalid JSON: {source}")]
    Json {
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
    #[error("{what} {digest}: unsupported media type `{media_type}`")]
    MediaType {
        what: &'static str,
        digest: String,
        media_type: String,
    },
    #[error("{what} {digest}: unsupported schemaVersion {version} (want 2)")]
    SchemaVersion {
        what: &'static str,
        digest: String,
        version: u32,
    },
    #[error("index has no manifest for the host platform {host}; it has: {available}")]
    NoMatchingPlatform { host: Platform, available: String },
    #[error("image config {digest}: {layers} layers in the manifest but {diff_ids} diff_ids in rootfs.diff_ids")]
    LayerCount {
        digest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("image config {digest}: rootfs.type is `{found}`, want `layers`")]
    RootfsType { digest: String, found: String },
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OS/architecture pair, with an optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform this binary runs on, in OCI's GOARCH spelling.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: std::env::consts::OS.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image built for `self` runs on `host`.
    pub fn runs_on(&self, host: &Platform) -> bool {
        if self.os != host.os || self.architecture != host.architecture {
            return false;
        }
        match (&self.variant, &host.variant) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// An image config (OCI or Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ExecConfig>,
    pub rootfs: RootFs,
}

/// What a blob that may be a manifest or an index turned out to be.
#[derive(Debug, Clone)]
pub enum Parsed {
    Index(Index),
    Manifest(Manifest),
}

fn json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what,
        digest: digest.to_string(),
        source,
    })
}

/// Parses a manifest or index blob. `media_type` is the descriptor's media
/// type (may be empty); the blob's own `mediaType` and shape decide when the
/// descriptor says nothing.
pub fn parse_manifest_or_index(
    media_type: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Parsed, ManifestError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = json("manifest", digest, bytes)?;
    let mt = if media_type.is_empty() {
        probe.media_type.clone().unwrap_or_default()
    } else {
        media_type.to_string()
    };
    let version = probe.schema_version.unwrap_or(0);
    if version != 2 {
        return Err(ManifestError::SchemaVersion {
            what: "manifest",
            digest: digest.to_string(),
            version,
        });
    }
    let is_index = match mt.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => probe.manifests.is_some(),
        other => {
            return Err(ManifestError::MediaType {
                what: "manifest",
                digest: digest.to_string(),
                media_type: other.to_string(),
            })
        }
    };
    if is_index {
        Ok(Parsed::Index(json("index", digest, bytes)?))
    } else {
        Ok(Parsed::Manifest(json("manifest", digest, bytes)?))
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Tar,
    Gzip,
    Zstd,
}

/// Checks a layer descriptor's media type.
pub fn layer_kind(desc: &Descriptor) -> Result<LayerKind, ManifestError> {
    let mt = desc.media_type.as_str();
    let base = mt.strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.");
    match (mt, base) {
        (OCI_LAYER_TAR | DOCKER_LAYER_TAR | "", _) | (_, Some("tar")) => Ok(LayerKind::Tar),
        (OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_GZIP, _) | (_, Some("tar+gzip")) => {
            Ok(LayerKind::Gzip)
        }
        (OCI_LAYER_ZSTD, _) | (_, Some("tar+zstd")) => Ok(LayerKind::Zstd),
        _ => Err(ManifestError::MediaType {
            what: "layer",
            digest: desc.digest.to_string(),
            media_type: mt.to_string(),
        }),
    }
}

/// Parses an image config and checks it against the manifest's layers.
pub fn parse_config(
    digest: &Digest,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<ImageConfig, ManifestError> {
    let config: ImageConfig = json("image config", digest, bytes)?;
    if config.rootfs.kind != "layers" {
        return Err(ManifestError::RootfsType {
            digest: digest.to_string(),
            found: config.rootfs.kind.clone(),
        });
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ManifestError::LayerCount {
            digest: digest.to_string(),
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    Ok(config)
}

/// Picks the manifest for `host` out of an index's entries. Entries without
/// a platform are taken only when they are the only entry.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    host: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.runs_on(host)))
        .collect();
    // Prefer an exact variant match over an entry without a variant.
    if let Some(exact) = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p == host))
    {
        return Ok(exact);
    }
    if let Some(first) = candidates.first() {
        return Ok(first);
    }
    if manifests.len() == 1 && manifests[0].platform.is_none() {
        return Ok(&manifests[0]);
    }
    let available: Vec<String> = manifests
        .iter()
        .map(|d| {
            d.platform
                .as_ref()
                .map_or_else(|| format!("(no platform: {})", d.digest), |p| p.to_string())
        })
        .collect();
    Err(ManifestError::NoMatchingPlatform {
        host: host.clone(),
        available: if available.is_empty() {
            "nothing".to_string()
        } else {
            available.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: Option<(&str, &str, Option<&str>)>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            platform: platform.map(|(os, arch, v)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: v.map(Into::into),
            }),
            annotations: BTreeMap::new(),
        }
    }

    fn arm64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        }
    }

    #[test]
    fn host_platform_is_linux() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.is_empty());
    }

    #[test]
    fn selects_matching_platform() {
        let ms = vec![
            desc(Some(("linux", "amd64", None)), 1),
            desc(Some(("linux", "arm64", None)), 2),
            desc(Some(("linux", "arm64", Some("v8"))), 3),
        ];
        assert_eq!(select_platform(&ms, &arm64()).unwrap().digest, ms[2].digest);
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(select_platform(&ms, &amd).unwrap().digest, ms[0].digest);
    }

    #[test]
    fn lists_platforms_when_none_match() {
        let ms = vec![
            desc(Some(("linux", "s390x", None)), 1),
            desc(Some(("windows", "arm64", None)), 2),
            desc(Some(("linux", "arm", Some("v6"))), 3),
        ];
        let err = select_platform(&ms, &arm64()).unwrap_err().to_string();
        assert!(
            err.contains("linux/s390x, windows/arm64, linux/arm/v6"),
            "{err}"
        );
        assert!(err.contains("linux/arm64/v8"), "{err}");
    }

    #[test]
    fn single_unplatformed_manifest_is_taken() {
        let ms = vec![desc(None, 1)];
        assert!(select_platform(&ms, &arm64()).is_ok());
    }

    #[test]
    fn parses_docker_manifest_and_rejects_unknown_media_type() {
        let d = Digest::sha256_of(b"x");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":3}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{d}","size":4}}]}}"#
        );
        match parse_manifest_or_index("", &d, m.as_bytes()).unwrap() {
            Parsed::Manifest(m) => {
                assert_eq!(m.layers.len(), 1);
                assert_eq!(layer_kind(&m.layers[0]).unwrap(), LayerKind::Gzip);
            }
            Parsed::Index(_) => panic!("parsed as index"),
        }
        let err = parse_manifest_or_index("application/x-foo", &d, m.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("application/x-foo"));
        let bad = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+encrypted".into(),
            ..desc(None, 1)
        };
        assert!(layer_kind(&bad)
            .unwrap_err()
            .to_string()
            .contains("+encrypted"));
    }

    #[test]
    fn config_layer_count_must_match() {
        let d = Digest::sha256_of(b"x");
        let manifest = Manifest {
            schema_version: 2,
            media_type: None,
            config: desc(None, 0),
            layers: vec![desc(None, 1), desc(None, 2)],
            annotations: BTreeMap::new(),
        };
        let cfg = format!(
            r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let err = parse_config(&d, cfg.as_bytes(), &manifest).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::LayerCount {
                layers: 2,
                diff_ids: 1,
                ..
            }
        ));
    }
}
