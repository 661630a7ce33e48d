//! One repository on one registry over the distribution API v2, with ureq
//! on rustls: endpoints (for pulls mirrors first, then the registry; pushes
//! go to the registry only), TLS roots from the system bundle plus certs.d,
//! plain HTTP only for registries listed as insecure, and the auth flow for
//! every request: a 401 with `Basic` sends the credentials, a 401 with
//! `Bearer` fetches a token for the challenge's scopes merged with the
//! request's (with the credentials, if any, else anonymously; one fetch at
//! a time per client, so parallel requests share it), caches it until it
//! expires and retries once (a request body is sent again: bodies here are slices or
//! file ranges, never one-shot streams). Authorization headers go only to
//! the endpoint's own scheme and host: never on to another host after a
//! redirect or an upload `Location`, never to a plain-HTTP token realm of a
//! TLS registry, and never into an error.
//!
//! The pull side (manifests, blobs, ranges) is in [`super::fetch`], the
//! push side (existence checks, uploads, mounts, manifests) in
//! [`super::upload`].

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{Method, Response};
use ureq::Body;

use super::auth::{self, Challenge, Credentials, Secret, TokenCache};
use super::config::{self, RegistriesConfig};
use super::name::RemoteRef;
use crate::escape;
use crate::progress::Progress;

/// The system CA bundle (Debian's ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The largest manifest or index accepted.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest token response accepted.
const MAX_TOKEN: u64 = 1 << 20;
/// How long Basic credentials, once a registry asked for them, are sent
/// with every request of this process without waiting for a 401.
const BASIC_REUSE_SECS: u64 = 3600;

/// What a registry client needs to know beyond the reference.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub registries: RegistriesConfig,
    /// `--insecure`: plain HTTP for this pull's registry.
    pub insecure: bool,
    pub auth_files: Vec<PathBuf>,
    pub certs_dir: PathBuf,
    pub system_roots: PathBuf,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            registries: RegistriesConfig::default(),
            insecure: false,
            auth_files: auth::default_auth_files(),
            certs_dir: PathBuf::from(config::CERTS_DIR),
            system_roots: PathBuf::from(SYSTEM_ROOTS),
        }
    }
}

/// Errors talking to a registry: the registry, repository and object, and
/// the HTTP status when there was one; server text escaped.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}/{repository}: {what}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        registry: String,
        repository: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}/{repository}: {what}: {reason}")]
    Failed {
        registry: String,
        repository: String,
        what: String,
        reason: String,
    },
    #[error("{0}")]
    Setup(String),
}

pub(crate) struct Endpoint {
    pub(crate) host: String,
    plain_http: bool,
    agent: ureq::Agent,
}

impl Endpoint {
    /// `scheme://host`, without a trailing slash.
    pub(crate) fn base(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

/// A request body that can be sent again (after a 401).
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`, reported to `progress` as `id`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
        progress: Option<(&'a dyn Progress, &'a str)>,
    },
}

/// One request through the auth flow.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// Absolute URL.
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Payload<'a>,
    /// The token scope(s) to use (space-separated, as in a challenge).
    pub(crate) scope: String,
    /// What the request is about, for errors.
    pub(crate) what: &'a str,
}

/// A client for one repository.
pub struct Client {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) endpoints: Vec<Endpoint>,
    creds: Option<Credentials>,
    tokens: Arc<TokenCache>,
    push: bool,
    /// The endpoint that served the last manifest (see [`super::fetch`]).
    pub(crate) preferred: AtomicUsize,
    /// Held while a token is fetched: parallel requests share one token.
    token_lock: Mutex<()>,
}

fn tls_for(opts: &RegistryOptions, host: &str) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let certs = config::host_certs(&opts.certs_dir, host);
    let mut pems = vec![opts.system_roots.clone()];
    pems.extend(certs.cas.iter().cloned());
    for p in &pems {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        for item in ureq::tls::parse_pem(&bytes) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                roots.push(c);
            }
        }
    }
    let mut b = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(roots)));
    if let Some((cert, key)) = &certs.client {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read(cert)?)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", cert.display()));
        }
        let key =
            PrivateKey::from_pem(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))?;
        b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(b.build())
}

fn agent(opts: &RegistryOptions, host: &str, plain_http: bool) -> Result<ureq::Agent, String> {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(5)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent("berth-image");
    if !plain_http {
        cfg = cfg.tls_config(tls_for(opts, host)?);
    }
    Ok(ureq::Agent::new_with_config(cfg.build()))
}

/// Reads `len` bytes of a file from `offset` (positional reads: the same
/// file may feed several requests at once).
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    progress: Option<(&'a dyn Progress, &'a str)>,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than its size",
            ));
        }
        self.pos += n as u64;
        if let Some((p, id)) = self.progress {
            p.advance(id, n as u64);
        }
        Ok(n)
    }
}

impl Client {
    /// A client for pulling: mirrors from registries.conf first, then the
    /// registry; tokens for `repository:<repo>:pull`.
    pub fn new(
        rr: &RemoteRef,
        opts: &RegistryOptions,
        tokens: Arc<TokenCache>,
    ) -> Result<Client, RegistryError> {
        let endpoints = opts
            .registries
            .endpoints(&rr.registry, opts.insecure)
            .into_iter()
            .map(|(host, plain_http)| {
                Ok(Endpoint {
                    agent: agent(opts, &host, plain_http).map_err(RegistryError::Setup)?,
                    host,
                    plain_http,
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let creds = auth::lookup(&opts.auth_files, &rr.registry)
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        Ok(Client {
            registry: rr.registry.clone(),
            repository: rr.repository.clone(),
            endpoints,
            creds,
            tokens,
            push: false,
            preferred: AtomicUsize::new(0),
            token_lock: Mutex::new(()),
        })
    }

    /// A client for pushing: the registry itself only (mirrors are for
    /// pulls), tokens for `repository:<repo>:pull,push`.
    pub fn for_push(
        rr: &RemoteRef,
        opts: &RegistryOptions,
        tokens: Arc<TokenCache>,
    ) -> Result<Client, RegistryError> {
        let mut c = Client::new(rr, opts, tokens)?;
        let origin = c.endpoints.pop();
        c.endpoints = origin.into_iter().collect();
        c.push = true;
        Ok(c)
    }

    pub(crate) fn failed(&self, what: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::Failed {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn status_error(
        &self,
        what: &str,
        resp: Response<Body>,
        host: Option<&str>,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let mut detail = Vec::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(512)
            .read_to_end(&mut detail);
        RegistryError::Status {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: match host {
                Some(h) => format!("{what} from {h}"),
                None => what.to_string(),
            },
            status,
            detail: escape::bytes(&detail),
        }
    }

    /// The token scope this client's requests need.
    pub(crate) fn scope(&self) -> String {
        let actions = if self.push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }

    /// `scheme://host/v2/<repository>/<path>` on `ep`.
    pub(crate) fn repo_url(&self, ep: &Endpoint, path: &str) -> String {
        format!("{}/v2/{}/{path}", ep.base(), self.repository)
    }

    /// Whether `url` is on `ep`'s own scheme and host (credentials go only
    /// there).
    fn same_origin(ep: &Endpoint, url: &str) -> bool {
        url.strip_prefix(&ep.base())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    }

    /// Fetches a bearer token for a challenge (`scope` may name several
    /// scopes, space-separated: each is its own `scope` parameter).
    fn token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(Secret, Option<u64>), RegistryError> {
        if !realm_allowed(ep.plain_http, realm) {
            return Err(self.failed(
                "token",
                format!(
                    "the registry sends credentials to a token realm that is not HTTPS ({})",
                    escape::text(realm)
                ),
            ));
        }
        let url = token_url(realm, service, scope);
        let mut req = ep.agent.get(&url);
        if let Some(c) = &self.creds {
            req = req.header("Authorization", &c.basic().0);
        }
        let resp = req.call().map_err(|e| {
            self.failed(
                "token",
                format!("{}: {}", escape::text(realm), escape::text(&e.to_string())),
            )
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                what: format!("token from {}", escape::text(realm)),
                status,
                detail: String::new(),
            });
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_TOKEN)
            .read_to_end(&mut body)
            .map_err(|e| self.failed("token", e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|_| self.failed("token", "the token server's answer is not a token JSON"))?;
        let tok = t
            .token
            .or(t.access_token)
            .ok_or_else(|| self.failed("token", "the token server's answer has no token"))?;
        let secret = Secret(format!("Bearer {tok}"));
        self.tokens
            .put(&self.registry, scope, secret.clone(), t.expires_in);
        Ok((secret, t.expires_in))
    }

    /// Uses these credentials instead of the auth files' (login).
    pub fn with_credentials(mut self, creds: Credentials) -> Client {
        self.creds = Some(creds);
        self
    }

    /// Checks that the registry (not a mirror) accepts this client's
    /// credentials: `GET /v2/` through the auth flow answers 200.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let Some(ep) = self.endpoints.last() else {
            return Err(self.failed("login", "no endpoint"));
        };
        let resp = self.send(
            ep,
            &Call {
                method: Method::GET,
                url: format!("{}/v2/", ep.base()),
                headers: Vec::new(),
                body: Payload::None,
                scope: self.scope(),
                what: "login",
            },
        )?;
        match resp.status().as_u16() {
            200 => Ok(()),
            status => Err(RegistryError::Status {
                registry: self.registry.clone(),
                repository: String::new(),
                what: "login".into(),
                status,
                detail: String::new(),
            }),
        }
    }

    /// Sends `call` on `ep` through the auth flow; any HTTP status is Ok.
    pub(crate) fn send(
        &self,
        ep: &Endpoint,
        call: &Call<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let ours = Self::same_origin(ep, &call.url);
        let mut auth: Option<Secret> = if ours {
            self.tokens.get(&self.registry, &call.scope)
        } else {
            None
        };
        for attempt in 0..2 {
            let resp = self.send_once(ep, call, auth.as_ref())?;
            if resp.status().as_u16() != 401 || attempt == 1 || !ours {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            auth = Some(match challenge {
                Some(Challenge::Basic) => {
                    let basic = self.creds.as_ref().map(Credentials::basic).ok_or_else(|| {
                        self.failed(call.what, "the registry wants a login (berth image login)")
                    })?;
                    self.tokens.put(
                        &self.registry,
                        &call.scope,
                        basic.clone(),
                        Some(BASIC_REUSE_SECS),
                    );
                    basic
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => self.bearer(ep, call, auth.as_ref(), &realm, service.as_deref(), scope)?,
                None => return Ok(resp),
            });
        }
        Err(self.failed(call.what, "unauthorized"))
    }

    /// A token for a Bearer challenge: one that another thread fetched
    /// meanwhile (tokens are fetched one at a time per client), else a new
    /// one for the scopes the request needs and the registry asked for
    /// together, cached under the request's scope too.
    fn bearer(
        &self,
        ep: &Endpoint,
        call: &Call<'_>,
        refused: Option<&Secret>,
        realm: &str,
        service: Option<&str>,
        challenged: Option<String>,
    ) -> Result<Secret, RegistryError> {
        let _one = self.token_lock.lock().ok();
        if let Some(t) = self.tokens.get(&self.registry, &call.scope) {
            if Some(&t) != refused {
                return Ok(t);
            }
        }
        let scope = auth::merge_scopes(&call.scope, challenged.as_deref().unwrap_or(""));
        let (token, expires_in) = self.token(ep, realm, service, &scope)?;
        if scope != call.scope {
            self.tokens
                .put(&self.registry, &call.scope, token.clone(), expires_in);
        }
        Ok(token)
    }

    fn send_once(
        &self,
        ep: &Endpoint,
        call: &Call<'_>,
        auth: Option<&Secret>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut b = ureq::http::Request::builder()
            .method(call.method.clone())
            .uri(&call.url);
        for (k, v) in &call.headers {
            b = b.header(*k, v);
        }
        if let Some(a) = auth {
            b = b.header("Authorization", &a.0);
        }
        let built = |e: ureq::http::Error| {
            self.failed(
                call.what,
                format!("building the request: {}", escape::text(&e.to_string())),
            )
        };
        let wants_body = matches!(call.method, Method::POST | Method::PUT | Method::PATCH);
        let result = match &call.body {
            Payload::None if wants_body => ep.agent.run(b.body(&[][..]).map_err(built)?),
            Payload::None => ep.agent.run(b.body(()).map_err(built)?),
            Payload::Bytes(bytes) => ep.agent.run(b.body(*bytes).map_err(built)?),
            Payload::File {
                file,
                offset,
                len,
                progress,
            } => {
                let mut r = FileRange {
                    file,
                    pos: *offset,
                    end: offset.saturating_add(*len),
                    progress: *progress,
                };
                let req = b
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut r))
                    .map_err(built)?;
                ep.agent.run(req)
            }
        };
        result.map_err(|e| {
            self.failed(
                call.what,
                format!("{}: {}", ep.host, escape::text(&e.to_string())),
            )
        })
    }
}

/// A token realm may be plain HTTP only when the registry itself is (an
/// insecure registry): else Basic credentials would cross the network in
/// clear text on the way to a token.
pub(crate) fn realm_allowed(registry_plain_http: bool, realm: &str) -> bool {
    realm.starts_with("https://") || (registry_plain_http && realm.starts_with("http://"))
}

/// The token request URL: `realm?service=..&scope=..&scope=..`.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut params: Vec<String> = Vec::new();
    if let Some(s) = service {
        params.push(format!("service={}", urlencode(s)));
    }
    for s in scope.split_whitespace() {
        params.push(format!("scope={}", urlencode(s)));
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    if params.is_empty() {
        realm.to_string()
    } else {
        format!("{realm}{sep}{}", params.join("&"))
    }
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_name_each_scope_and_realms_stay_on_tls() {
        assert_eq!(
            token_url(
                "https://auth.example/token",
                Some("reg.example"),
                "repository:a/b:pull,push repository:c:pull"
            ),
            "https://auth.example/token?service=reg.example&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull"
        );
        assert_eq!(
            token_url("https://a/t?x=1", None, "s"),
            "https://a/t?x=1&scope=s"
        );
        assert_eq!(token_url("https://a/t", None, ""), "https://a/t");
        assert!(realm_allowed(false, "https://auth"));
        assert!(!realm_allowed(false, "http://auth"));
        assert!(realm_allowed(true, "http://auth"));
        assert!(!realm_allowed(true, "file:///etc/passwd"));
    }
}
