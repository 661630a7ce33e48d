//! Raft: the driver around raft-rs' `RawNode` ([`node`]), the log store ([`store`]) and its
//! durable redb backend ([`disk`]).

pub mod disk;
pub mod node;
#[cfg(test)]
mod sim;
pub mod snapfile;
pub mod store;

pub use node::{Applied, ConfContext, Node, NodeConfig, Output, Proposal};

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft: {0}")]
    Raft(raft::Error),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("this node is not the leader")]
    NotLeader,
    #[error("a configuration change is already in progress")]
    ConfPending,
    #[error("cannot encode a raft payload: {0}")]
    Encode(serde_json::Error),
    #[error("cannot decode a registry snapshot: {0}")]
    Decode(serde_json::Error),
    #[error(transparent)]
    SnapFile(#[from] snapfile::SnapFileError),
}
