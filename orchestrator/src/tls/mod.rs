//! Peer authentication and encryption: the cluster CA and certificates ([`creds`]), rustls
//! configurations and certificate identities ([`config`]), the non-blocking TLS byte stream
//! the event loop drives ([`link`]), and the gossip key ring that seals SWIM datagrams
//! ([`keyring`]).
//!
//! With credentials (the default), Raft links are TLS 1.3 with mutual certificate
//! authentication against the cluster CA, and a Raft message is handed to raft-rs only when
//! it arrived on a link whose certificate names the node the message claims to come from.
//! `--insecure` turns all of this off (plain frames and datagrams carrying the cluster ID),
//! and berthd says so loudly.

pub mod config;
pub mod creds;
pub mod keyring;
pub mod link;

use std::path::{Path, PathBuf};

pub use config::{identity, Identity, IdentityError, PeerTls, Role, TlsError};
pub use keyring::KeyRing;

/// Everything a node needs to talk to its peers securely.
#[derive(Clone)]
pub struct Security {
    pub peer: PeerTls,
    /// The gossip key ring and where rotations are persisted.
    pub ring: KeyRing,
    pub ring_path: PathBuf,
}

/// Loads a node's credentials directory (`ca.pem`, `node.pem`, `node.key`,
/// `gossip.keys`). The key ring in `state_dir` (kept there by rotations) wins over the one
/// in the credentials directory.
pub fn load(
    creds_dir: &Path,
    state_dir: &Path,
    name: &str,
    cluster_id: &str,
) -> Result<Security, LoadError> {
    let peer = PeerTls::load(creds_dir, name, cluster_id)?;
    let rotated = state_dir.join(creds::GOSSIP_KEYS);
    let source = if rotated.exists() {
        rotated.clone()
    } else {
        creds_dir.join(creds::GOSSIP_KEYS)
    };
    let text = crate::private_files::read_key_file(&source)?;
    let ring =
        KeyRing::from_text(&String::from_utf8_lossy(&text)).map_err(|e| LoadError::Ring {
            path: source.clone(),
            err: e,
        })?;
    Ok(Security {
        peer,
        ring,
        ring_path: rotated,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "credentials: {0} (create them with `berthd credentials init`, or run with --insecure)"
    )]
    Tls(#[from] TlsError),
    #[error("credentials: {0}")]
    File(#[from] crate::private_files::PrivateFileError),
    #[error("gossip key ring {path}: {err}")]
    Ring {
        path: PathBuf,
        err: keyring::KeyRingError,
    },
}

#[cfg(test)]
mod tests;
