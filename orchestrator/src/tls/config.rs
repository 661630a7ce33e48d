//! Loading a node's credentials into rustls configurations (TLS 1.3 only, ring provider),
//! and reading who a verified peer certificate names.
//!
//! Both directions verify the chain against the cluster CA (rustls' webpki verifiers: chain,
//! validity period, key usage). An outbound link also checks that the server certificate
//! names the node it dialled; an inbound link learns the peer's name from its client
//! certificate, and [`identity`] insists on the node role and this cluster's ID.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::creds::{ROLE_CLIENT, ROLE_NODE, ROLE_READ_ONLY};
use crate::private_files::{self, PrivateFileError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
    #[error("{path}: the certificate names {found:?}, but this node is {expected:?}")]
    WrongName {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Who a verified certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node or client name (the certificate's DNS name).
    pub name: String,
    /// The certificate's OU: node, client or read-only client.
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node,
    Client,
    ReadOnly,
}

/// Why a verified certificate is still not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no certificate was presented")]
    NoCertificate,
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate is for cluster {found:?}, not {expected:?}")]
    WrongCluster { found: String, expected: String },
    #[error("the certificate has role {0:?}, which is not accepted here")]
    WrongRole(String),
    #[error("the certificate names no node or client (no DNS name)")]
    NoName,
}

/// Reads the identity out of the end-entity certificate of a verified chain (pure over
/// the DER bytes).
pub fn identity(certs: &[CertificateDer<'_>], cluster_id: &str) -> Result<Identity, IdentityError> {
    let (id, org) = parse_identity(certs)?;
    if org != cluster_id {
        return Err(IdentityError::WrongCluster {
            found: org,
            expected: cluster_id.to_string(),
        });
    }
    Ok(id)
}

/// The identity and the cluster ID (O) a certificate names.
fn parse_identity(certs: &[CertificateDer<'_>]) -> Result<(Identity, String), IdentityError> {
    let der = certs.first().ok_or(IdentityError::NoCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let org = first(&mut subject.iter_organization());
    let ou = first(&mut subject.iter_organizational_unit());
    let role = match ou.as_str() {
        ROLE_NODE => Role::Node,
        ROLE_CLIENT => Role::Client,
        ROLE_READ_ONLY => Role::ReadOnly,
        other => return Err(IdentityError::WrongRole(other.to_string())),
    };
    let name = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
        })
        .ok_or(IdentityError::NoName)?;
    Ok((Identity { name, role }, org))
}

/// berthctl's view of a berthd: any node certificate the CA signed, whatever name the user
/// typed in `--endpoint` (node certificates name nodes, not hosts or addresses). The chain,
/// validity and signatures are checked by webpki against the certificate's own name.
#[derive(Debug)]
struct AnyNodeOfTheCa {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for AnyNodeOfTheCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let (who, _) = parse_identity(std::slice::from_ref(end_entity))
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        if who.role != Role::Node {
            return Err(rustls::Error::General(format!(
                "server certificate of {} is not a node certificate",
                who.name
            )));
        }
        let name = rustls::pki_types::ServerName::try_from(who.name.clone())
            .map_err(|_| rustls::Error::General(format!("bad node name {:?}", who.name)))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// berthctl's client configuration: its client certificate, trusting any node certificate
/// of the CA.
pub fn api_client_config(m: &Material) -> Result<Arc<ClientConfig>, TlsError> {
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&m.ca)?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyNodeOfTheCa { inner }))
        .with_client_auth_cert(certs(&m.cert)?, key(&m.key)?)?;
    Ok(Arc::new(cfg))
}

/// rustls with *ring*: X25519/P-256 key exchange, AES-GCM and ChaCha20-Poly1305, ECDSA.
/// rustls 0.23.48 marks this provider deprecated because *ring* has no post-quantum key
/// exchange; aws-lc-rs has one but needs cmake and a long C build on every machine that
/// builds berthd. Recorded as a limit in orchestrator/README.md.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        path: path.to_path_buf(),
        err,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = private_files::read_key_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca)? {
        store.add(c).map_err(|e| TlsError::Pem {
            path: ca.to_path_buf(),
            what: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// One side's certificate, key and the CA that vouches for its peers.
pub struct Material {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Server configuration that requires a client certificate from the CA.
pub fn server_config(m: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&m.ca)?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&m.cert)?, key(&m.key)?)?;
    Ok(Arc::new(cfg))
}

/// Client configuration presenting our certificate and trusting only the CA.
pub fn client_config(m: &Material) -> Result<Arc<ClientConfig>, TlsError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&m.ca)?)
        .with_client_auth_cert(certs(&m.cert)?, key(&m.key)?)?;
    Ok(Arc::new(cfg))
}

/// A node's peer TLS: both configurations, checked to belong to `name`.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl PeerTls {
    /// Loads `dir/{ca,node}.pem` and `dir/node.key`; the certificate must be a node
    /// certificate of this cluster naming `name`.
    pub fn load(dir: &Path, name: &str, cluster_id: &str) -> Result<Self, TlsError> {
        let m = Material {
            ca: dir.join(super::creds::CA_FILE),
            cert: dir.join(super::creds::NODE_CERT),
            key: dir.join(super::creds::NODE_KEY),
        };
        let own = certs(&m.cert)?;
        let id = identity(&own, cluster_id).map_err(|e| TlsError::Pem {
            path: m.cert.clone(),
            what: e.to_string(),
        })?;
        if id.name != name || id.role != Role::Node {
            return Err(TlsError::WrongName {
                path: m.cert.clone(),
                found: format!("{} ({:?})", id.name, id.role),
                expected: name.to_string(),
            });
        }
        Ok(Self {
            server: server_config(&m)?,
            client: client_config(&m)?,
        })
    }
}
