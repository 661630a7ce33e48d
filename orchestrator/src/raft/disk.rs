//! Durable Raft state in redb: entries by index, hard state and latest snapshot. Every write is
//! one redb transaction committed with `Durability::Immediate` (fsync) before it returns.

use std::path::{Path, PathBuf};

use prost::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};
use redb::{Database, TableDefinition};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const HARD_STATE: &str = "hard_state";
/// redb's page cache (its default grows to 1 GiB): nine tenths read cache, one tenth write
/// buffer. A write touches a handful of pages (the log's last leaf and its path, the hard
/// state, the header), all of which stay cached; older entries are read back only by a lagging
/// follower or a restart. 8 MiB of it was a fifth of berthd's memory after 50,000 writes.
const DB_CACHE: usize = 2 << 20;
const SNAPSHOT: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("raft store {path}: {op}: {err}")]
    Redb {
        path: PathBuf,
        op: &'static str,
        err: Box<redb::Error>,
    },
    #[error("raft store: cannot decode {what}: {err}")]
    Decode {
        what: String,
        err: prost::DecodeError,
    },
    #[error("raft store is inconsistent: {what}")]
    Corrupt { what: String },
    #[error(transparent)]
    Private(#[from] crate::private_files::PrivateFileError),
}

/// One atomic write.
pub struct DiskWrite<'a> {
    pub snapshot: Option<&'a Snapshot>,
    /// Remove every entry with an index at or below this one (keep it small: the log is
    /// trimmed a few hundred entries per write behind a snapshot, see `LogStore`).
    pub remove_upto: Option<u64>,
    /// Remove every entry with an index at or above this one (a received snapshot
    /// replaces a log that may run past it).
    pub remove_from: Option<u64>,
    /// Entries to append; any stored entry at or after the first one's index is replaced.
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
}

/// What the disk holds at startup.
pub struct Loaded {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
}

pub struct Disk {
    db: Database,
    path: PathBuf,
}

impl Disk {
    /// Opens (or creates) the store file at `path`; it is created 0600 before any byte is
    /// written (a wider existing file is narrowed).
    pub fn open(path: &Path) -> Result<Self, DiskError> {
        crate::private_files::prepare_file(path)?;
        // The log is kept in memory too (LogStore), so redb's cache only needs the pages a
        // write touches: a small cache keeps berthd's memory bounded by live data.
        let db = redb::Builder::new()
            .set_cache_size(DB_CACHE)
            .create(path)
            .map_err(|e| DiskError::Redb {
                path: path.to_path_buf(),
                op: "open",
                err: Box::new(e.into()),
            })?;
        let disk = Self {
            db,
            path: path.to_path_buf(),
        };
        // Make sure both tables exist so reads never fail on a new file.
        disk.write(&DiskWrite {
            snapshot: None,
            remove_upto: None,
            remove_from: None,
            entries: &[],
            hard_state: None,
        })?;
        Ok(disk)
    }

    fn err(&self, op: &'static str) -> impl FnOnce(redb::Error) -> DiskError + '_ {
        move |source| DiskError::Redb {
            path: self.path.clone(),
            op,
            err: Box::new(source),
        }
    }

    pub fn write(&self, w: &DiskWrite<'_>) -> Result<(), DiskError> {
        let started = std::time::Instant::now();
        self.write_txn(w)?;
        let took = started.elapsed();
        if took > std::time::Duration::from_millis(100) {
            tracing::warn!(ms = took.as_millis() as u64, path = %self.path.display(), "slow raft log write (fsync)");
        }
        Ok(())
    }

    fn write_txn(&self, w: &DiskWrite<'_>) -> Result<(), DiskError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| (self.err("begin write"))(e.into()))?;
        {
            let mut entries = txn
                .open_table(ENTRIES)
                .map_err(|e| (self.err("open entries"))(e.into()))?;
            if let Some(upto) = w.remove_upto {
                entries
                    .retain_in(..=upto, |_, _| false)
                    .map_err(|e| (self.err("remove entries"))(e.into()))?;
            }
            if let Some(from) = w.remove_from {
                entries
                    .retain_in(from.., |_, _| false)
                    .map_err(|e| (self.err("remove entries"))(e.into()))?;
            }
            if let Some(first) = w.entries.first() {
                entries
                    .retain_in(first.index.., |_, _| false)
                    .map_err(|e| (self.err("truncate entries"))(e.into()))?;
                for e in w.entries {
                    let bytes = e.encode_to_vec();
                    entries
                        .insert(e.index, bytes.as_slice())
                        .map_err(|e| (self.err("insert entry"))(e.into()))?;
                }
            }
            let mut meta = txn
                .open_table(META)
                .map_err(|e| (self.err("open meta"))(e.into()))?;
            if let Some(hs) = w.hard_state {
                meta.insert(HARD_STATE, hs.encode_to_vec().as_slice())
                    .map_err(|e| (self.err("write hard state"))(e.into()))?;
            }
            if let Some(snap) = w.snapshot {
                meta.insert(SNAPSHOT, snap.encode_to_vec().as_slice())
                    .map_err(|e| (self.err("write snapshot"))(e.into()))?;
            }
        }
        txn.commit().map_err(|e| (self.err("commit"))(e.into()))
    }

    /// Entries `low..high` (all present: the caller knows the log's bounds), stopping
    /// once they pass `max_bytes` (at least one entry is returned).
    pub fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, DiskError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| (self.err("begin read"))(e.into()))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|e| (self.err("open entries"))(e.into()))?;
        let range = table
            .range(low..high)
            .map_err(|e| (self.err("read entries"))(e.into()))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for item in range {
            let (k, v) = item.map_err(|e| (self.err("read entry"))(e.into()))?;
            let expected = low + out.len() as u64;
            if k.value() != expected {
                return Err(DiskError::Corrupt {
                    what: format!(
                        "log has a gap: expected entry {expected}, found {}",
                        k.value()
                    ),
                });
            }
            bytes += v.value().len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(Entry::decode(v.value()).map_err(|err| DiskError::Decode {
                what: format!("entry {expected}"),
                err,
            })?);
        }
        if out.is_empty() && low < high {
            return Err(DiskError::Corrupt {
                what: format!("entry {low} is missing"),
            });
        }
        Ok(out)
    }

    pub fn load(&self) -> Result<Loaded, DiskError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| (self.err("begin read"))(e.into()))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| (self.err("open meta"))(e.into()))?;
        let hard_state = match meta
            .get(HARD_STATE)
            .map_err(|e| (self.err("read hard state"))(e.into()))?
        {
            Some(v) => HardState::decode(v.value()).map_err(|err| DiskError::Decode {
                what: "hard state".into(),
                err,
            })?,
            None => HardState::default(),
        };
        let snapshot = match meta
            .get(SNAPSHOT)
            .map_err(|e| (self.err("read snapshot"))(e.into()))?
        {
            Some(v) => Snapshot::decode(v.value()).map_err(|err| DiskError::Decode {
                what: "snapshot".into(),
                err,
            })?,
            None => Snapshot::default(),
        };
        let table = txn
            .open_table(ENTRIES)
            .map_err(|e| (self.err("open entries"))(e.into()))?;
        let snap_index = snapshot.get_metadata().index;
        let mut entries = Vec::new();
        let range = table
            .range(snap_index + 1..)
            .map_err(|e| (self.err("read entries"))(e.into()))?;
        for item in range {
            let (k, v) = item.map_err(|e| (self.err("read entry"))(e.into()))?;
            let entry = Entry::decode(v.value()).map_err(|err| DiskError::Decode {
                what: format!("entry {}", k.value()),
                err,
            })?;
            let expected = snap_index + 1 + entries.len() as u64;
            if entry.index != expected || k.value() != expected {
                return Err(DiskError::Corrupt {
                    what: format!(
                        "log has a gap: expected entry {expected}, found {}",
                        k.value()
                    ),
                });
            }
            entries.push(entry);
        }
        Ok(Loaded {
            hard_state,
            snapshot,
            entries,
        })
    }
}
