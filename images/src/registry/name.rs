//! Where a reference lives: `[docker://][host[:port]/]path[:tag][@digest]`
//! split into registry host, repository and what to fetch, with Docker
//! Hub's short names: a first component without `.` or `:` that is not
//! `localhost` is a path on `docker.io`, and a single-component path on
//! `docker.io` is under `library/` (`busybox` is
//! `docker.io/library/busybox:latest`). Pure.

use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};

/// Docker Hub's name and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A reference resolved to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// As written in auth files and registries.conf (`docker.io`, `host:5000`).
    pub registry: String,
    /// The repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// The tag (always set: `latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl RemoteRef {
    /// The tag or digest to ask the manifest endpoint for.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The name the store keeps the image under: `registry/repository:tag`
    /// (a digest-only pull is stored as `registry/repository@digest`).
    pub fn store_reference(&self) -> Result<Reference, ReferenceError> {
        let name = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (Some(t), _) => Reference::with_tag(&name, t),
            (None, Some(d)) => format!("{name}@{d}").parse(),
            (None, None) => Reference::with_tag(&name, "latest"),
        }
    }
}

/// The API host for a registry name (Docker Hub's differs from its name).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Whether a first path component names a registry host (it has a `.` or
/// a `:`, or is `localhost`) rather than a Docker Hub namespace.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Whether `input` names its registry explicitly (`host[:port]/path`),
/// rather than being a Docker Hub short name (`busybox`, `team/app`).
pub fn names_registry(input: &str) -> bool {
    let s = input.strip_prefix("docker://").unwrap_or(input);
    s.split_once('/').is_some_and(|(first, _)| is_host(first))
}

/// Parses and normalizes a pull reference.
pub fn parse(input: &str) -> Result<RemoteRef, ReferenceError> {
    let s = input.strip_prefix("docker://").unwrap_or(input);
    let r: Reference = s.parse()?;
    let name = r.name();
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if is_host(first) => (first.to_string(), rest.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tag = match (r.tag(), r.digest()) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".into()),
    };
    Ok(RemoteRef {
        registry,
        repository,
        tag,
        digest: r.digest().cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String, String) {
        let r = parse(s).unwrap();
        (r.registry.clone(), r.repository.clone(), r.manifest_ref())
    }

    #[test]
    fn docker_hub_short_names_and_explicit_registries() {
        let d = "docker.io".to_string();
        assert_eq!(
            p("busybox"),
            (d.clone(), "library/busybox".into(), "latest".into())
        );
        assert_eq!(
            p("docker://alpine:3.19"),
            (d.clone(), "library/alpine".into(), "3.19".into())
        );
        assert_eq!(p("team/app:1"), (d.clone(), "team/app".into(), "1".into()));
        assert_eq!(
            p("docker.io/busybox"),
            (d.clone(), "library/busybox".into(), "latest".into())
        );
        assert_eq!(p("index.docker.io/x/y"), (d, "x/y".into(), "latest".into()));
        assert_eq!(
            p("registry:5000/team/app:1.2"),
            ("registry:5000".into(), "team/app".into(), "1.2".into())
        );
        assert_eq!(
            p("localhost/app"),
            ("localhost".into(), "app".into(), "latest".into())
        );
        assert_eq!(
            p("127.0.0.1:5000/a/b/c"),
            ("127.0.0.1:5000".into(), "a/b/c".into(), "latest".into())
        );
        let dg = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("quay.io/x/y@{dg}")).unwrap();
        assert_eq!(r.manifest_ref(), dg);
        assert_eq!(
            r.store_reference().unwrap().to_string(),
            format!("quay.io/x/y@{dg}")
        );
        assert_eq!(
            parse("busybox:1")
                .unwrap()
                .store_reference()
                .unwrap()
                .to_string(),
            "docker.io/library/busybox:1"
        );
        assert!(parse("UPPER/case").is_err());
        assert!(names_registry("docker://localhost:5000/a"));
        assert!(names_registry("quay.io/x/y:1"));
        assert!(!names_registry("bb:1"));
        assert!(!names_registry("team/app:1"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    }
}
