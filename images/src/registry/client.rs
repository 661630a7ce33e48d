//! One repository on one registry over the distribution API v2, with ureq
//! on rustls: endpoints (mirrors first, then the registry), TLS roots from
//! the system bundle plus certs.d, plain HTTP only for registries listed as
//! insecure, and the auth flow: a 401 with `Basic` sends the credentials, a
//! 401 with `Bearer` fetches a token for the challenge's scope (with the
//! credentials, if any, else anonymously), caches it until it expires and
//! retries once. Authorization headers are never sent on to another host
//! after a redirect and never appear in an error.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::auth::{self, Challenge, Credentials, Secret, TokenCache};
use super::config::{self, RegistriesConfig};
use super::name::RemoteRef;
use crate::escape;

/// The system CA bundle (Debian's ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The largest manifest or index accepted.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest token response accepted.
const MAX_TOKEN: u64 = 1 << 20;

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

struct Endpoint {
    host: String,
    plain_http: bool,
    agent: ureq::Agent,
}

/// A client for one repository.
pub struct Client {
    registry: String,
    repository: String,
    endpoints: Vec<Endpoint>,
    creds: Option<Credentials>,
    tokens: Arc<TokenCache>,
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

impl Client {
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
        })
    }

    fn failed(&self, what: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::Failed {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// Fetches a bearer token for a challenge.
    fn token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Secret, RegistryError> {
        let mut url = format!("{realm}?scope={}", urlencode(scope));
        if let Some(s) = service {
            url.push_str(&format!("&service={}", urlencode(s)));
        }
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
        Ok(secret)
    }

    /// GET `path` (below /v2/<repository>/) on `ep`, through the auth flow.
    fn get(
        &self,
        ep: &Endpoint,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        self.get_url(ep, &format!("/v2/{}/{path}", self.repository), accept, what)
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
        let resp = self.get_url(ep, "/v2/", None, "login")?;
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

    /// GET `url_path` (from the host's root) on `ep`, through the auth flow.
    fn get_url(
        &self,
        ep: &Endpoint,
        url_path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let scheme = if ep.plain_http { "http" } else { "https" };
        let url = format!("{scheme}://{}{url_path}", ep.host);
        let mut auth: Option<Secret> = self.tokens.get(&self.registry, &self.scope());
        for attempt in 0..2 {
            let mut req = ep.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(a) = &auth {
                req = req.header("Authorization", &a.0);
            }
            let resp = req.call().map_err(|e| {
                self.failed(
                    what,
                    format!("{}: {}", ep.host, escape::text(&e.to_string())),
                )
            })?;
            let status = resp.status().as_u16();
            if status != 401 || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            auth = Some(match challenge {
                Some(Challenge::Basic) => {
                    self.creds.as_ref().map(Credentials::basic).ok_or_else(|| {
                        self.failed(what, "the registry wants a login (berth image login)")
                    })?
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope.unwrap_or_else(|| self.scope());
                    self.token(ep, &realm, service.as_deref(), &scope)?
                }
                None => return Ok(resp),
            });
        }
        Err(self.failed(what, "unauthorized"))
    }

    /// Tries each endpoint in order until one answers 200.
    fn get_any(
        &self,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut last = None;
        for ep in &self.endpoints {
            match self.get(ep, path, accept, what) {
                Ok(resp) if resp.status().as_u16() == 200 => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let mut detail = Vec::new();
                    let _ = resp
                        .into_body()
                        .into_reader()
                        .take(512)
                        .read_to_end(&mut detail);
                    last = Some(RegistryError::Status {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: format!("{what} from {}", ep.host),
                        status,
                        detail: escape::bytes(&detail),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| self.failed(what, "no endpoint")))
    }

    /// The manifest or index for a tag or digest: its bytes and media type.
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), RegistryError> {
        use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
        let what = format!("manifest {}", escape::text(reference));
        let accept = format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}");
        let resp = self.get_any(&format!("manifests/{reference}"), Some(&accept), &what)?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(self.failed(
                &what,
                format!(
                    "schema 1 manifests ({}) are not supported",
                    escape::text(&media_type)
                ),
            ));
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.failed(&what, escape::text(&e.to_string())))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(self.failed(&what, format!("larger than {MAX_MANIFEST} bytes")));
        }
        Ok((body, media_type))
    }

    /// A blob's body, as a reader (the caller verifies size and digest).
    pub fn blob(
        &self,
        digest: &crate::digest::Digest,
    ) -> Result<Box<dyn Read + Send>, RegistryError> {
        let what = format!("blob {digest}");
        let resp = self.get_any(&format!("blobs/{digest}"), None, &what)?;
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
