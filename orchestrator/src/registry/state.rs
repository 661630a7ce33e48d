//! The registry's data and the deterministic `apply`.

use std::collections::BTreeSet;

// Persistent (structurally shared) collections: cloning the registry for a snapshot costs
// O(1) and the clone is written out on a thread while the loop keeps applying entries.
// Their serde form is the same as BTreeMap/BTreeSet/VecDeque's.
type BTreeMap<K, V> = imbl::OrdMap<K, V>;
type LeaseKeys = imbl::OrdSet<String>;
type VecDeque<T> = imbl::Vector<T>;

use serde::{Deserialize, Serialize};

use super::{
    validate_key, ApplyError, Command, Compare, Event, EventKind, KeyValue, Outcome, Shared, TxnOp,
    WatchError, MAX_TXN_OPS, MAX_VALUE_LEN,
};

/// How many events the registry keeps for watchers resuming from an older revision.
pub const DEFAULT_HISTORY: usize = 10_000;
/// At most this many key and value bytes are kept in the event history.
pub const HISTORY_MAX_BYTES: usize = 16 << 20;
const MAX_TTL_MS: u64 = 86_400_000;

/// A stored key's record; the key itself is the map's key (not repeated), the value is
/// shared with the watch history's events. Snapshots of older versions carried the key in
/// the record too; it is ignored when they are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    value: Shared,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    #[serde(default)]
    lease: u64,
}

impl Record {
    fn view(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.to_string(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ttl_ms: u64,
    keys: LeaseKeys,
}

/// The replicated key/value state. Serialised whole into Raft snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    revision: u64,
    kvs: BTreeMap<String, Record>,
    leases: BTreeMap<u64, Lease>,
    next_lease: u64,
    history: VecDeque<Event>,
    history_cap: usize,
    /// Every event with a revision at or below this one has left `history`.
    dropped_upto: u64,
    /// Key and value bytes held in `history`.
    #[serde(default)]
    history_bytes: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }
}

impl Registry {
    /// An empty registry that keeps at most `history_cap` events for watchers.
    pub fn with_history(history_cap: usize) -> Self {
        Self {
            revision: 0,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            dropped_upto: 0,
            history_bytes: 0,
        }
    }

    /// The revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).map(|r| r.view(key))
    }

    /// Every key starting with `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.range_records(prefix).map(|(k, r)| r.view(k)).collect()
    }

    /// How many keys start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.range_records(prefix).count()
    }

    fn range_records<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        self.kvs
            .range::<_, str>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The TTL of a lease, if it exists.
    pub fn lease_ttl(&self, id: u64) -> Option<u64> {
        self.leases.get(&id).map(|l| l.ttl_ms)
    }

    /// Every lease with its TTL.
    pub fn leases(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl_ms))
    }

    /// Events with `mod_revision >= from` whose key starts with `prefix`. `from == 0` means
    /// "only future events" and returns nothing.
    pub fn events_since(&self, prefix: &str, from: u64) -> Result<Vec<Event>, WatchError> {
        if from == 0 || from > self.revision {
            return Ok(Vec::new());
        }
        if from <= self.dropped_upto {
            return Err(WatchError::Compacted {
                requested: from,
                oldest: self.dropped_upto + 1,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.mod_revision >= from && e.key.starts_with(prefix))
            .cloned()
            .collect())
    }

    /// Applies one command; returns its outcome and the events it produced.
    pub fn apply(&mut self, cmd: &Command) -> (Outcome, Vec<Event>) {
        let result = match cmd {
            Command::Put {
                key,
                value,
                lease,
                prev_revision,
            } => self.put(key, value, *lease, *prev_revision),
            Command::Delete { key, prefix } => self.delete(key, *prefix),
            Command::LeaseGrant { ttl_ms } => self.grant(*ttl_ms),
            Command::LeaseKeepAlive { id } => match self.leases.get(id) {
                Some(l) => Ok((
                    Outcome::Lease {
                        id: *id,
                        ttl_ms: l.ttl_ms,
                    },
                    Vec::new(),
                )),
                None => Err(ApplyError::LeaseNotFound { id: *id }),
            },
            Command::LeaseRevoke { id } => self.revoke(*id),
            Command::Txn { compare, ops } => self.txn(compare, ops),
            Command::Heartbeat { .. } => Ok((Outcome::Heartbeat, Vec::new())),
        };
        match result {
            Ok((outcome, events)) => {
                for e in &events {
                    self.history_bytes += e.key.len() + e.value.len();
                    self.history.push_back(e.clone());
                }
                self.trim_history();
                (outcome, events)
            }
            Err(error) => (Outcome::Failed { error }, Vec::new()),
        }
    }

    fn put(
        &mut self,
        key: &str,
        value: &str,
        lease: u64,
        prev_revision: Option<u64>,
    ) -> Result<(Outcome, Vec<Event>), ApplyError> {
        self.check_put(key, value, lease)?;
        if let Some(expected) = prev_revision {
            self.check(&Compare {
                key: key.to_string(),
                mod_revision: expected,
            })?;
        }
        let revision = self.revision + 1;
        self.revision = revision;
        let event = self.put_at(key, value, lease, revision);
        Ok((Outcome::Put { revision }, vec![event]))
    }

    /// Checks a put's key, value size and lease without changing anything.
    fn check_put(&self, key: &str, value: &str, lease: u64) -> Result<(), ApplyError> {
        validate_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(ApplyError::ValueTooLarge {
                key: key.to_string(),
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(ApplyError::LeaseNotFound { id: lease });
        }
        Ok(())
    }

    /// Checks one compare-and-swap condition.
    fn check(&self, c: &Compare) -> Result<(), ApplyError> {
        let actual = self.kvs.get(&c.key).map_or(0, |kv| kv.mod_revision);
        if actual != c.mod_revision {
            return Err(ApplyError::CasMismatch {
                key: c.key.clone(),
                expected: c.mod_revision,
                actual,
            });
        }
        Ok(())
    }

    /// Applies a transaction: everything checked first, then every write at one revision.
    fn txn(
        &mut self,
        compare: &[Compare],
        ops: &[TxnOp],
    ) -> Result<(Outcome, Vec<Event>), ApplyError> {
        if compare.len() + ops.len() > MAX_TXN_OPS {
            return Err(ApplyError::InvalidTxn {
                reason: format!(
                    "{} compares and operations, more than the {MAX_TXN_OPS} allowed",
                    compare.len() + ops.len()
                ),
            });
        }
        let mut seen = BTreeSet::new();
        for op in ops {
            let key = match op {
                TxnOp::Put { key, value, lease } => {
                    self.check_put(key, value, *lease)?;
                    key
                }
                TxnOp::Delete { key } => {
                    validate_key(key)?;
                    key
                }
            };
            if !seen.insert(key.as_str()) {
                return Err(ApplyError::InvalidTxn {
                    reason: format!("key {key} is written twice"),
                });
            }
        }
        for c in compare {
            self.check(c)?;
        }
        let changes = ops.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { key } => self.kvs.contains_key(key),
        });
        if !changes {
            return Ok((
                Outcome::Txn {
                    revision: self.revision,
                    puts: 0,
                    deleted: 0,
                },
                Vec::new(),
            ));
        }
        let revision = self.revision + 1;
        self.revision = revision;
        let (mut puts, mut deleted) = (0, 0);
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    puts += 1;
                    events.push(self.put_at(key, value, *lease, revision));
                }
                TxnOp::Delete { key } => {
                    if let Some(e) = self.remove_at(key, revision) {
                        deleted += 1;
                        events.push(e);
                    }
                }
            }
        }
        Ok((
            Outcome::Txn {
                revision,
                puts,
                deleted,
            },
            events,
        ))
    }

    /// Stores a checked put at `revision` (already the registry's revision).
    fn put_at(&mut self, key: &str, value: &str, lease: u64, revision: u64) -> Event {
        let current = self.kvs.get(key);
        let (create_revision, version, old_lease) = match current {
            Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
            None => (revision, 1, 0),
        };
        if old_lease != 0 && old_lease != lease {
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(key);
            }
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
        let value = Shared::from(value);
        self.kvs.insert(
            key.to_string(),
            Record {
                value: value.clone(),
                create_revision,
                mod_revision: revision,
                version,
                lease,
            },
        );
        Event {
            kind: EventKind::Put,
            key: key.to_string(),
            value,
            mod_revision: revision,
        }
    }

    fn delete(&mut self, key: &str, prefix: bool) -> Result<(Outcome, Vec<Event>), ApplyError> {
        validate_key(key)?;
        let keys: Vec<String> = if prefix {
            self.range_records(key).map(|(k, _)| k.clone()).collect()
        } else if self.kvs.contains_key(key) {
            vec![key.to_string()]
        } else {
            Vec::new()
        };
        let events = self.remove_keys(&keys);
        Ok((
            Outcome::Deleted {
                revision: self.revision,
                deleted: keys.len() as u64,
            },
            events,
        ))
    }

    /// Removes `keys` (all present) under one new revision.
    fn remove_keys(&mut self, keys: &[String]) -> Vec<Event> {
        if keys.is_empty() {
            return Vec::new();
        }
        self.revision += 1;
        let revision = self.revision;
        keys.iter()
            .filter_map(|key| self.remove_at(key, revision))
            .collect()
    }

    /// Removes `key` if present, as part of the change at `revision`.
    fn remove_at(&mut self, key: &str, revision: u64) -> Option<Event> {
        let kv = self.kvs.remove(key)?;
        if let Some(l) = self.leases.get_mut(&kv.lease) {
            l.keys.remove(key);
        }
        Some(Event {
            kind: EventKind::Delete,
            key: key.to_string(),
            value: Shared::default(),
            mod_revision: revision,
        })
    }

    fn grant(&mut self, ttl_ms: u64) -> Result<(Outcome, Vec<Event>), ApplyError> {
        if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
            return Err(ApplyError::InvalidTtl { ttl_ms });
        }
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(
            id,
            Lease {
                ttl_ms,
                keys: LeaseKeys::new(),
            },
        );
        Ok((Outcome::Lease { id, ttl_ms }, Vec::new()))
    }

    fn revoke(&mut self, id: u64) -> Result<(Outcome, Vec<Event>), ApplyError> {
        let lease = self
            .leases
            .remove(&id)
            .ok_or(ApplyError::LeaseNotFound { id })?;
        let keys: Vec<String> = lease.keys.into_iter().collect();
        let events = self.remove_keys(&keys);
        Ok((
            Outcome::Revoked {
                revision: self.revision,
                deleted: keys.len() as u64,
            },
            events,
        ))
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_cap || self.history_bytes > HISTORY_MAX_BYTES {
            let Some(rev) = self.history.front().map(|e| e.mod_revision) else {
                break;
            };
            // Never keep half of a revision: drop all of its events.
            while let Some(e) = self.history.front() {
                if e.mod_revision != rev {
                    break;
                }
                self.history_bytes -= e.key.len() + e.value.len();
                self.history.pop_front();
            }
            self.dropped_upto = rev;
        }
    }
}
