//! Registry credentials and the token flow, pure parts: the containers and
//! docker auth file conventions, `WWW-Authenticate` challenges, and a cache
//! of bearer tokens per scope. Credentials are kept in [`Secret`], whose
//! Debug and Display never show them, and are never put into an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// A value that must never reach a log, an error or argv.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// A user name and password for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> Secret {
        let raw = format!("{}:{}", self.username, self.password.0);
        Secret(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

/// Errors of auth files.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an auth file (want JSON with \"auths\"): {reason}")]
    Format { path: PathBuf, reason: String },
}

/// The auth files consulted, first match wins: `$REGISTRY_AUTH_FILE`,
/// `/run/containers/<uid>/auth.json`, `$HOME/.docker/config.json`.
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from(format!(
        "/run/containers/{}/auth.json",
        nix::unistd::geteuid().as_raw()
    )));
    if let Some(home) = std::env::var_os("HOME") {
        out.push(Path::new(&home).join(".docker/config.json"));
    }
    out
}

/// The key forms a registry may appear under in `auths`.
fn keys_for(registry: &str) -> Vec<String> {
    let mut k = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == super::name::DOCKER_HUB {
        k.push("https://index.docker.io/v1/".into());
        k.push("index.docker.io".into());
    }
    k
}

/// Decodes an `auths.<host>.auth` value (`base64(user:password)`).
pub fn decode_auth(value: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials {
        username: u.to_string(),
        password: Secret(p.to_string()),
    })
}

/// The credentials for `registry` in one auth file's JSON (None: none).
pub fn find_in(json: &serde_json::Value, registry: &str) -> Option<Credentials> {
    let auths = json.get("auths")?.as_object()?;
    keys_for(registry).iter().find_map(|k| {
        let entry = auths.get(k)?;
        if let Some(a) = entry.get("auth").and_then(|v| v.as_str()) {
            return decode_auth(a);
        }
        Some(Credentials {
            username: entry.get("username")?.as_str()?.to_string(),
            password: Secret(entry.get("password")?.as_str()?.to_string()),
        })
    })
}

/// Reads `path` (missing: Ok(None)).
pub fn read_auth_file(path: &Path) -> Result<Option<serde_json::Value>, AuthFileError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| AuthFileError::Format {
                path: path.to_path_buf(),
                // serde's message may quote the file: only its position.
                reason: format!("line {} column {}", e.line(), e.column()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Looks `registry` up in `files`, in order.
pub fn lookup(files: &[PathBuf], registry: &str) -> Result<Option<Credentials>, AuthFileError> {
    for f in files {
        if let Some(json) = read_auth_file(f)? {
            if let Some(c) = find_in(&json, registry) {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Writes or removes `registry`'s entry in the auth file at `path` (0600,
/// replaced atomically), keeping everything else in it.
pub fn store(
    path: &Path,
    registry: &str,
    creds: Option<&Credentials>,
) -> Result<bool, AuthFileError> {
    let io = |source| AuthFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut json = read_auth_file(path)?.unwrap_or_else(|| serde_json::json!({"auths": {}}));
    if !json.get("auths").is_some_and(|a| a.is_object()) {
        json["auths"] = serde_json::json!({});
    }
    let auths = json["auths"]
        .as_object_mut()
        .ok_or_else(|| AuthFileError::Format {
            path: path.to_path_buf(),
            reason: "\"auths\" is not an object".into(),
        })?;
    let mut changed = false;
    for k in keys_for(registry) {
        changed |= auths.remove(&k).is_some();
    }
    if let Some(c) = creds {
        let raw = format!("{}:{}", c.username, c.password.0);
        auths.insert(
            registry.to_string(),
            serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(raw)}),
        );
        changed = true;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| io(std::io::Error::other(e)))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(changed)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic ...`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

/// `k="v", k2=v2` (quoted values may hold commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs.min(b.len())..i.min(b.len())].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

/// The scopes of `wanted` and `challenged` together (space-separated
/// `type:name:actions` items), each resource once with the union of its
/// actions (`pull`, `push`, then others by name): a token asked for once
/// then serves every request of the kind that asked. Pure.
pub fn merge_scopes(wanted: &str, challenged: &str) -> String {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for item in wanted
        .split_whitespace()
        .chain(challenged.split_whitespace())
    {
        let (resource, actions) = match item.rsplit_once(':') {
            Some((r, a)) if r.contains(':') => (r, a),
            _ => (item, ""),
        };
        let i = match out.iter().position(|(r, _)| r == resource) {
            Some(i) => i,
            None => {
                out.push((resource.to_string(), Vec::new()));
                out.len() - 1
            }
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if !out[i].1.iter().any(|x| x == a) {
                out[i].1.push(a.to_string());
            }
        }
    }
    let rank = |a: &str| match a {
        "pull" => 0,
        "push" => 1,
        _ => 2,
    };
    out.into_iter()
        .map(|(r, mut actions)| {
            actions.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
            if actions.is_empty() {
                r
            } else {
                format!("{r}:{}", actions.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bearer tokens per (registry, scope) until they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (Secret, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, registry: &str, scope: &str) -> Option<Secret> {
        let t = self.tokens.lock().ok()?;
        let (tok, until) = t.get(&(registry.to_string(), scope.to_string()))?;
        (Instant::now() < *until).then(|| tok.clone())
    }

    /// Keeps `token` for `expires_in` seconds (the spec's default is 60),
    /// minus a margin.
    pub fn put(&self, registry: &str, scope: &str, token: Secret, expires_in: Option<u64>) {
        let secs = expires_in.unwrap_or(60).max(10) - 5;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(
                (registry.to_string(), scope.to_string()),
                (token, Instant::now() + Duration::from_secs(secs)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="http://127.0.0.1:1/t",scope="repository:a:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn auth_files_follow_the_conventions_and_hide_secrets() {
        let json = serde_json::json!({"auths": {
            "registry:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p:w")},
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:secret")},
        }});
        let c = find_in(&json, "registry:5000").unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(c.password.0, "p:w");
        assert_eq!(find_in(&json, "docker.io").unwrap().username, "hub");
        assert!(find_in(&json, "other").is_none());
        assert!(!format!("{c:?}").contains("p:w"));
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("d/auth.json");
        assert!(store(&f, "h:1", Some(&c)).unwrap());
        assert_eq!(lookup(std::slice::from_ref(&f), "h:1").unwrap(), Some(c));
        let mode = std::fs::metadata(&f).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(store(&f, "h:1", None).unwrap());
        assert_eq!(lookup(&[f], "h:1").unwrap(), None);
    }

    #[test]
    fn scopes_merge_per_resource() {
        assert_eq!(
            merge_scopes("repository:a:pull,push", "repository:a:pull"),
            "repository:a:pull,push"
        );
        assert_eq!(
            merge_scopes(
                "repository:c:pull,push repository:a:pull",
                "repository:c:push,pull repository:a:pull"
            ),
            "repository:c:pull,push repository:a:pull"
        );
        assert_eq!(
            merge_scopes("repository:a:pull", "registry:catalog:*"),
            "repository:a:pull registry:catalog:*"
        );
        assert_eq!(
            merge_scopes("", "repository:a:delete,pull"),
            "repository:a:pull,delete"
        );
        assert_eq!(merge_scopes("repository:a:pull", ""), "repository:a:pull");
    }

    #[test]
    fn tokens_are_cached_per_scope() {
        let c = TokenCache::default();
        c.put("r", "repository:a:pull", Secret("t".into()), Some(300));
        assert_eq!(c.get("r", "repository:a:pull"), Some(Secret("t".into())));
        assert_eq!(c.get("r", "repository:b:pull"), None);
    }
}
