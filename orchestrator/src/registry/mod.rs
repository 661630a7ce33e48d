//! The registry: an etcd-like, revisioned key/value state machine.
//!
//! Every node applies the same [`Command`]s in the same order (they come from the Raft log), so
//! every replica holds the same keys, revisions, leases and watch events. Nothing here reads a
//! clock: lease expiry is decided by the leader with [`lease_clock::LeaseClock`] (time is passed
//! in) and carried out by a replicated [`Command::LeaseRevoke`].

pub mod lease_clock;
mod state;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use state::Registry;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 4096;
/// Largest value accepted.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// One replicated registry operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Set `key` to `value`; attach it to `lease` (0: none). With `prev_revision`, only if the
    /// key's current mod_revision equals it (0: only if the key does not exist).
    Put {
        key: String,
        value: String,
        #[serde(default)]
        lease: u64,
        #[serde(default)]
        prev_revision: Option<u64>,
    },
    /// Delete `key`, or every key starting with it when `prefix`.
    Delete { key: String, prefix: bool },
    /// Create a lease living `ttl_ms` after its last keep-alive.
    LeaseGrant { ttl_ms: u64 },
    /// Refresh a lease (the leader's clock restarts its TTL).
    LeaseKeepAlive { id: u64 },
    /// Drop a lease and delete every key attached to it.
    LeaseRevoke { id: u64 },
    /// All of `ops` under one new revision if every compare holds, else nothing (etcd's txn
    /// without an else branch). The scheduler writes many placements per proposal with it.
    Txn {
        #[serde(default)]
        compare: Vec<Compare>,
        ops: Vec<TxnOp>,
    },
    /// A machine's agent proves it reaches the quorum: a committed heartbeat changes no key;
    /// the daemon times it on apply (see `daemon::fence`).
    Heartbeat { machine: String },
}

/// A condition of a [`Command::Txn`]: `key`'s mod_revision equals `mod_revision` (0: the key
/// does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub mod_revision: u64,
}

/// One write of a [`Command::Txn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOp {
    Put {
        key: String,
        value: String,
        #[serde(default)]
        lease: u64,
    },
    /// Deleting a key that does not exist is not an error.
    Delete { key: String },
}

/// Most operations one transaction may hold.
pub const MAX_TXN_OPS: usize = 10_000;

/// What applying a command produced (identical on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Put {
        revision: u64,
    },
    Deleted {
        revision: u64,
        deleted: u64,
    },
    Lease {
        id: u64,
        ttl_ms: u64,
    },
    Revoked {
        revision: u64,
        deleted: u64,
    },
    /// A transaction applied: the revision of its writes (unchanged when it wrote nothing).
    Txn {
        revision: u64,
        puts: u64,
        deleted: u64,
    },
    Heartbeat,
    Failed {
        error: ApplyError,
    },
}

/// A command that was rejected deterministically by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApplyError {
    #[error("compare failed on key {key}: expected mod_revision {expected}, found {actual}")]
    CasMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("lease {id} not found")]
    LeaseNotFound { id: u64 },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("value of key {key} is {len} bytes, more than the {max} allowed")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("invalid lease TTL {ttl_ms} ms (must be 1..=86400000)")]
    InvalidTtl { ttl_ms: u64 },
    #[error("invalid transaction: {reason}")]
    InvalidTxn { reason: String },
}

/// A stored key, as reads return it (a copy: the registry keeps each key and value once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to; 0 when none.
    pub lease: u64,
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// A change to one key, produced by applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub key: String,
    /// The new value for a put; empty for a delete. Shared with the stored key's record,
    /// so the watch history holds no second copy of it.
    pub value: Shared,
    pub mod_revision: u64,
}

/// An immutable string shared by reference count (a stored value and the events that
/// carry it). Serialised as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Shared(std::sync::Arc<str>);

impl Shared {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Self {
        Shared(s.into())
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Self {
        Shared(s.into())
    }
}

impl PartialEq<&str> for Shared {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Shared::from)
    }
}

/// Why a watch could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("revision {requested} is compacted; the oldest revision still available is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
}

/// Checks a key as the API and the state machine both require it.
pub fn validate_key(key: &str) -> Result<(), ApplyError> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if !key.starts_with('/') {
        Some("must start with '/'")
    } else if key.len() > MAX_KEY_LEN {
        Some("longer than 4096 bytes")
    } else if key.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ApplyError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}
