//! Credentials: a cluster CA, node and client certificates signed by it, and the gossip key
//! ring, generated with rcgen (ECDSA P-256) into a directory a user copies to each host.
//!
//! ```text
//! OUT/ca/ca.pem ca.key gossip.keys     the authority: keep ca.key off the hosts
//! OUT/nodes/<name>/ca.pem node.pem node.key gossip.keys   copy to <name>'s --credentials
//! OUT/clients/<name>/ca.pem client.pem client.key          for berthctl --endpoint https://
//! ```
//!
//! A certificate's subject says who it is for: CN and the one DNS name are the node or client
//! name, O is the cluster ID, OU is the role ([`ROLE_NODE`], [`ROLE_CLIENT`] or
//! [`ROLE_READ_ONLY`]). Peers accept only node certificates; the remote API accepts client
//! certificates and gives the read-only role only reads.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::keyring::KeyRing;
use crate::private_files::{self, PrivateFileError};

/// OU of a node (peer) certificate.
pub const ROLE_NODE: &str = "berth-node";
/// OU of a client certificate with full access to the API.
pub const ROLE_CLIENT: &str = "berth-client";
/// OU of a client certificate that may only read.
pub const ROLE_READ_ONLY: &str = "berth-client-read-only";

/// File names inside a node's credentials directory.
pub const CA_FILE: &str = "ca.pem";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key";
pub const GOSSIP_KEYS: &str = "gossip.keys";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client.key";
const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error("cannot {what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite credentials")]
    Exists { path: PathBuf },
    #[error("{what} {name:?} cannot be a certificate name (letters, digits, '-' and '.'; not starting or ending with '-' or '.')")]
    BadName { what: &'static str, name: String },
    #[error("the CA in {path} is not for cluster {cluster_id:?} (its O is {found:?})")]
    WrongCluster {
        path: PathBuf,
        cluster_id: String,
        found: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How long issued certificates live, and how far back they start (`backdate_days` lets a
/// test make a certificate that has already expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub days: i64,
    pub backdate_days: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            days: 825,
            backdate_days: 0,
        }
    }
}

impl Validity {
    fn apply(&self, params: &mut CertificateParams) {
        let now = time::OffsetDateTime::now_utc();
        // A little slack for hosts whose clocks run slightly behind.
        params.not_before =
            now - time::Duration::days(self.backdate_days) - time::Duration::hours(1);
        params.not_after =
            now - time::Duration::days(self.backdate_days) + time::Duration::days(self.days);
    }
}

/// Checks that `name` works as a DNS name in a certificate (and so as a TLS server name).
pub fn check_cert_name(what: &'static str, name: &str) -> Result<(), CredsError> {
    let bad = || CredsError::BadName {
        what,
        name: name.to_string(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad());
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let ends = [name.as_bytes()[0], name.as_bytes()[name.len() - 1]];
    if !ok_chars || ends.iter().any(|b| *b == b'-' || *b == b'.') || name.contains("..") {
        return Err(bad());
    }
    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| bad())?;
    Ok(())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CredsError + 'a {
    move |err| CredsError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

fn dn(cn: &str, cluster_id: &str, role: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, cluster_id);
    dn.push(DnType::OrganizationalUnitName, role);
    dn
}

/// A loaded or new certificate authority.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    cluster_id: String,
}

impl Authority {
    /// A new CA for `cluster_id`, valid ten years.
    pub fn generate(cluster_id: &str) -> Result<Self, CredsError> {
        check_cert_name("cluster ID", cluster_id)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("berth {cluster_id} CA"), cluster_id, "berth-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Validity {
            days: 3650,
            backdate_days: 0,
        }
        .apply(&mut params);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            cluster_id: cluster_id.to_string(),
        })
    }

    /// Loads `DIR/ca.pem` and `DIR/ca.key` (the key file must be private).
    pub fn load(dir: &Path, cluster_id: &str) -> Result<Self, CredsError> {
        let cert_path = dir.join(CA_FILE);
        let pem = std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let key_bytes = private_files::read_key_file(&dir.join(CA_KEY))?;
        let key_text = String::from_utf8(key_bytes).map_err(|_| {
            CredsError::Invalid(format!("{} is not PEM text", dir.join(CA_KEY).display()))
        })?;
        let key = KeyPair::from_pem(&key_text)?;
        let params = CertificateParams::from_ca_cert_pem(&pem)?;
        let found = params
            .distinguished_name
            .get(&DnType::OrganizationName)
            .map(dn_text)
            .unwrap_or_default();
        if found != cluster_id {
            return Err(CredsError::WrongCluster {
                path: cert_path,
                cluster_id: cluster_id.to_string(),
                found,
            });
        }
        // Re-signing the loaded parameters with the same key gives an issuer with the same
        // name and key identifier, which is all that issuing needs.
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            cluster_id: cluster_id.to_string(),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate for `name` with `role`; returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        name: &str,
        role: &str,
        validity: Validity,
    ) -> Result<(String, String), CredsError> {
        check_cert_name("name", name)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = dn(name, &self.cluster_id, role);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if role == ROLE_NODE {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        rcgen::DnValue::BmpString(_) | rcgen::DnValue::UniversalString(_) => String::new(),
        _ => String::new(),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CredsError> {
    private_files::create_dir(dir)?;
    Ok(())
}

fn write_public(path: &Path, text: &str) -> Result<(), CredsError> {
    if path.exists() {
        return Err(CredsError::Exists {
            path: path.to_path_buf(),
        });
    }
    // Certificates are public, but the directory is private anyway; 0600 keeps it simple.
    private_files::write_new_secret(path, text.as_bytes())?;
    Ok(())
}

fn write_secret(path: &Path, text: &[u8]) -> Result<(), CredsError> {
    if path.exists() {
        return Err(CredsError::Exists {
            path: path.to_path_buf(),
        });
    }
    private_files::write_new_secret(path, text)?;
    Ok(())
}

/// `berthd credentials init`: a CA and a gossip key under `out/ca/`, and one directory per
/// node under `out/nodes/`. Returns the node directories made.
pub fn init(
    out: &Path,
    cluster_id: &str,
    nodes: &[String],
    validity: Validity,
) -> Result<Vec<PathBuf>, CredsError> {
    let ca_dir = out.join("ca");
    if ca_dir.join(CA_FILE).exists() {
        return Err(CredsError::Exists {
            path: ca_dir.join(CA_FILE),
        });
    }
    for n in nodes {
        check_cert_name("node name", n)?;
    }
    create_private_dir(&ca_dir)?;
    let ca = Authority::generate(cluster_id)?;
    write_public(&ca_dir.join(CA_FILE), &ca.cert_pem())?;
    write_secret(&ca_dir.join(CA_KEY), ca.key.serialize_pem().as_bytes())?;
    let ring = KeyRing::generate();
    write_secret(&ca_dir.join(GOSSIP_KEYS), ring.to_text().as_bytes())?;
    nodes
        .iter()
        .map(|n| add_node(out, cluster_id, n, validity))
        .collect()
}

/// `berthd credentials add-node`: `out/nodes/NAME/` with the CA certificate, a node
/// certificate and key, and the cluster's gossip key ring.
pub fn add_node(
    out: &Path,
    cluster_id: &str,
    name: &str,
    validity: Validity,
) -> Result<PathBuf, CredsError> {
    let ca_dir = out.join("ca");
    let ca = Authority::load(&ca_dir, cluster_id)?;
    let dir = out.join("nodes").join(name);
    create_private_dir(&dir)?;
    let (cert, key) = ca.issue(name, ROLE_NODE, validity)?;
    write_public(&dir.join(CA_FILE), &ca.cert_pem())?;
    write_public(&dir.join(NODE_CERT), &cert)?;
    write_secret(&dir.join(NODE_KEY), key.as_bytes())?;
    let ring = private_files::read_key_file(&ca_dir.join(GOSSIP_KEYS))?;
    write_secret(&dir.join(GOSSIP_KEYS), &ring)?;
    Ok(dir)
}

/// `berthd credentials add-client`: `out/clients/NAME/` for berthctl's remote endpoint.
pub fn add_client(
    out: &Path,
    cluster_id: &str,
    name: &str,
    read_only: bool,
    validity: Validity,
) -> Result<PathBuf, CredsError> {
    let ca = Authority::load(&out.join("ca"), cluster_id)?;
    let dir = out.join("clients").join(name);
    create_private_dir(&dir)?;
    let role = if read_only {
        ROLE_READ_ONLY
    } else {
        ROLE_CLIENT
    };
    let (cert, key) = ca.issue(name, role, validity)?;
    write_public(&dir.join(CA_FILE), &ca.cert_pem())?;
    write_public(&dir.join(CLIENT_CERT), &cert)?;
    write_secret(&dir.join(CLIENT_KEY), key.as_bytes())?;
    Ok(dir)
}
