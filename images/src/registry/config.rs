//! Per-registry settings, read from the containers conventions:
//! `registries.conf` (TOML, v2 format: `[[registry]]` tables with
//! `location`, `insecure` and `[[registry.mirror]]` `location`s; other keys
//! are ignored) and the certs.d layout (`<dir>/<host:port>/*.crt` CAs,
//! `*.cert` + `*.key` client certificates). Parsing is pure.

use std::path::{Path, PathBuf};

/// Default locations.
pub const REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
pub const CERTS_DIR: &str = "/etc/containers/certs.d";

/// What the node knows about registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConfig {
    pub registries: Vec<RegistryEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `host[:port]` (a path prefix after it is not supported yet).
    pub location: String,
    /// Plain HTTP (or TLS without verification is never used: plain HTTP).
    pub insecure: bool,
    /// Tried in order before the registry itself.
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RegistriesConfig {
    /// Parses registries.conf text.
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConfig, ConfigError> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            registry: Vec<Reg>,
        }
        #[derive(serde::Deserialize)]
        struct Reg {
            location: String,
            #[serde(default)]
            insecure: bool,
            #[serde(default)]
            mirror: Vec<Mir>,
        }
        #[derive(serde::Deserialize)]
        struct Mir {
            location: String,
            #[serde(default)]
            insecure: bool,
        }
        let f: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: crate::escape::text(e.message()),
        })?;
        Ok(RegistriesConfig {
            registries: f
                .registry
                .into_iter()
                .map(|r| RegistryEntry {
                    location: r.location,
                    insecure: r.insecure,
                    mirrors: r
                        .mirror
                        .into_iter()
                        .map(|m| Mirror {
                            location: m.location,
                            insecure: m.insecure,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Reads `path` (missing: empty).
    pub fn load(path: &Path) -> Result<RegistriesConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Self::parse(&t, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn entry(&self, registry: &str) -> Option<&RegistryEntry> {
        self.registries.iter().find(|r| r.location == registry)
    }

    /// The endpoints to try for `registry`, in order: its mirrors, then the
    /// registry itself; each with whether it is plain HTTP.
    pub fn endpoints(&self, registry: &str, insecure_flag: bool) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        if let Some(e) = self.entry(registry) {
            for m in &e.mirrors {
                out.push((m.location.clone(), m.insecure));
            }
            out.push((
                super::name::api_host(registry).to_string(),
                e.insecure || insecure_flag,
            ));
        } else {
            out.push((super::name::api_host(registry).to_string(), insecure_flag));
        }
        out
    }
}

/// TLS material for one host from a certs.d directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCerts {
    /// PEM files of extra CAs.
    pub cas: Vec<PathBuf>,
    /// A client certificate and its key (mTLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Reads `<certs_dir>/<host>/`.
pub fn host_certs(certs_dir: &Path, host: &str) -> HostCerts {
    let dir = certs_dir.join(host);
    let mut out = HostCerts::default();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in &names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => out.cas.push(p.clone()),
            Some("cert") => {
                let key = p.with_extension("key");
                if key.exists() {
                    out.client = Some((p.clone(), key));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_conf_insecure_and_mirrors() {
        let c = RegistriesConfig::parse(
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "localhost:5000"
insecure = true
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000"
insecure = true
[[registry.mirror]]
location = "mirror2.local"
"#,
            Path::new("r.conf"),
        )
        .unwrap();
        assert_eq!(
            c.endpoints("localhost:5000", false),
            vec![("localhost:5000".into(), true)]
        );
        assert_eq!(
            c.endpoints("docker.io", false),
            vec![
                ("mirror.local:5000".into(), true),
                ("mirror2.local".into(), false),
                ("registry-1.docker.io".into(), false)
            ]
        );
        assert_eq!(c.endpoints("other:1", true), vec![("other:1".into(), true)]);
        assert!(RegistriesConfig::parse("[[registry]]\ninsecure = 3", Path::new("x")).is_err());
    }

    #[test]
    fn certs_d_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("reg:5000");
        std::fs::create_dir(&d).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "notes.txt"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let c = host_certs(tmp.path(), "reg:5000");
        assert_eq!(c.cas, vec![d.join("ca.crt")]);
        assert_eq!(
            c.client,
            Some((d.join("client.cert"), d.join("client.key")))
        );
        assert_eq!(host_certs(tmp.path(), "none"), HostCerts::default());
    }
}
