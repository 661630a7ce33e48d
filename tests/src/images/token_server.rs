//! A token server for docker-registry's `auth: token:` (the distribution token
//! specification): `GET /token?service=..&scope=..` answers a JWT signed RS256 by a key whose
//! certificate (in the header's `x5c`) chains to a CA the registry trusts. The CA, the
//! signing certificate and every signature are made by `openssl`. Users are checked by
//! HTTP Basic; a known user gets what it asks for, anyone else only `pull` under `public/`.
//! Every token request is recorded. Served over the fake registry's HTTP server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::json;

use super::fake_registry::{FakeRegistry, Reply, Request};
use super::registry::{openssl, TokenAuth};

/// One token request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic user, when credentials were sent and were right.
    pub user: Option<String>,
    pub scopes: Vec<String>,
}

/// A running token server.
pub struct TokenServer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    ca: PathBuf,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    _http: FakeRegistry,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes `%XX` escapes (and `+` as space) of a query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signing material in `dir`: a CA, and a signing certificate and key under it.
fn make_keys(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token-ca.key",
            "-out",
            "token-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=berth test token CA",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.csr",
            "-subj",
            "/CN=berth test token signer",
        ],
        dir,
    );
    std::fs::write(
        dir.join("token-ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
    )
    .expect("write ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "token.csr",
            "-CA",
            "token-ca.crt",
            "-CAkey",
            "token-ca.key",
            "-CAcreateserial",
            "-out",
            "token.crt",
            "-days",
            "2",
            "-extfile",
            "token-ext.cnf",
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ],
        dir,
    );
}

/// RS256 over `input` with `dir/token.key`.
fn sign(dir: &Path, input: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("token.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let out = crate::output_with_input(&mut cmd, input).expect("run openssl dgst");
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}

/// `(type, name, actions)` of `repository:team/app:pull,push`.
fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((
        kind.to_string(),
        name.to_string(),
        actions.split(',').map(String::from).collect(),
    ))
}

/// The user of a request's Basic credentials, if they are one of `users`'.
fn basic_user(req: &Request, users: &[(String, String)]) -> Result<Option<String>, ()> {
    let Some(h) = req.header("authorization") else {
        return Ok(None);
    };
    let raw = h
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(())?;
    let (u, p) = raw.split_once(':').ok_or(())?;
    if users.iter().any(|(uu, pp)| uu == u && pp == p) {
        Ok(Some(u.to_string()))
    } else {
        Err(())
    }
}

impl TokenServer {
    /// Makes keys in `dir` and starts serving tokens for `users` (name, password).
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> TokenServer {
        std::fs::create_dir_all(dir).expect("token dir");
        make_keys(dir);
        let x5c = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("token.der")).expect("token.der"));
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let service = "berth-test-registry".to_string();
        let issuer = "berth-test-issuer".to_string();
        let requests: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let (rq, keys, svc, iss) = (
            requests.clone(),
            dir.to_path_buf(),
            service.clone(),
            issuer.clone(),
        );
        let serial = AtomicU64::new(0);
        let http = FakeRegistry::start_with(move |req| {
            let Some(query) = req
                .path
                .strip_prefix("/token?")
                .or((req.path == "/token").then_some(""))
            else {
                return Reply::Status(404, vec![]);
            };
            let Ok(user) = basic_user(req, &users) else {
                return Reply::Status(401, vec![]);
            };
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            rq.lock().expect("requests").push(TokenRequest {
                user: user.clone(),
                scopes: scopes.clone(),
            });
            let access: Vec<serde_json::Value> = scopes
                .iter()
                .filter_map(|s| parse_scope(s))
                .map(|(kind, name, actions)| {
                    let granted: Vec<String> = match &user {
                        Some(_) => actions,
                        None if name.starts_with("public/") => {
                            actions.into_iter().filter(|a| a == "pull").collect()
                        }
                        None => Vec::new(),
                    };
                    json!({"type": kind, "name": name, "actions": granted})
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
            let claims = json!({
                "iss": iss, "sub": user.clone().unwrap_or_default(), "aud": svc,
                "exp": now + 300, "nbf": now - 10, "iat": now,
                "jti": format!("t{}", serial.fetch_add(1, Ordering::SeqCst)),
                "access": access,
            });
            let input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let jwt = format!("{input}.{}", b64url(&sign(&keys, input.as_bytes())));
            let body = json!({"token": jwt, "expires_in": 300});
            Reply::Ok("application/json".into(), body.to_string().into_bytes())
        });
        TokenServer {
            realm: format!("http://{}/token", http.addr),
            service,
            issuer,
            ca: dir.join("token-ca.crt"),
            requests,
            _http: http,
        }
    }

    /// The registry's side of this server (its `auth: token:` settings).
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm.clone(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            root_cert_bundle: self.ca.clone(),
        }
    }

    /// The token requests so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("requests").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_scopes_parse() {
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("x%2"), "x%2");
        assert_eq!(
            parse_scope("repository:a/b:pull,push"),
            Some((
                "repository".into(),
                "a/b".into(),
                vec!["pull".into(), "push".into()]
            ))
        );
        assert_eq!(parse_scope("junk"), None);
    }
}
