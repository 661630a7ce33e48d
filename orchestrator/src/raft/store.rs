//! The Raft log storage: an in-memory copy that raft-rs reads through [`raft::Storage`], written
//! through to a durable [`Disk`] (redb) first when one is attached. A [`Batch`] (one Ready's
//! snapshot, entries and hard state) is one disk transaction: one fsync before anything that
//! depends on it is sent or applied.

use std::cell::Cell;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::disk::{Disk, DiskError, DiskWrite};

struct LoadedLog {
    snapshot_index: u64,
    inner: super::disk::Loaded,
}

/// What one Ready asks to persist.
#[derive(Debug, Default)]
pub struct Batch {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// Raft log, hard state and latest snapshot.
pub struct LogStore {
    hard: HardState,
    /// The latest snapshot; its metadata index is the compaction point.
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    disk: Option<Disk>,
    /// raft-rs asked for a snapshot the latest one cannot serve (too old, or its configuration
    /// predates the peer it is for): the node should take a fresh one.
    snapshot_wanted: Cell<bool>,
    /// Entries at or below the snapshot index still on disk (up to this index): they are
    /// removed [`TRIM_PER_WRITE`] at a time with later writes, never all in one transaction
    /// (10,000 removals in one redb commit stalled the loop for a second). Loading ignores
    /// them (it reads from the snapshot index on).
    trim_to: u64,
    /// Every entry at or below this index is gone from disk.
    trimmed_to: u64,
}

/// Old entries removed from disk per write.
const TRIM_PER_WRITE: u64 = 256;

impl LogStore {
    /// A store kept in memory only (scenario tests).
    pub fn in_memory() -> Self {
        Self {
            hard: HardState::default(),
            snapshot: Snapshot::default(),
            entries: Vec::new(),
            disk: None,
            snapshot_wanted: Cell::new(false),
            trim_to: 0,
            trimmed_to: 0,
        }
    }

    /// A store backed by `disk`, loaded with what it holds.
    pub fn open(disk: Disk) -> Result<Self, DiskError> {
        let loaded = disk.load()?;
        let loaded = LoadedLog {
            snapshot_index: loaded.snapshot.get_metadata().index,
            inner: loaded,
        };
        Ok(Self {
            hard: loaded.inner.hard_state,
            snapshot: loaded.inner.snapshot,
            entries: loaded.inner.entries,
            disk: Some(disk),
            snapshot_wanted: Cell::new(false),
            // Whatever lies below the snapshot gets trimmed (a crash may have left some).
            trim_to: loaded.snapshot_index,
            trimmed_to: 0,
        })
    }

    /// True when nothing was ever stored (a new node).
    pub fn is_blank(&self) -> bool {
        self.snapshot.get_metadata().index == 0 && self.entries.is_empty() && self.hard.term == 0
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Persists one Ready's worth of state (disk first, then the in-memory copy).
    pub fn persist(&mut self, batch: Batch) -> Result<(), DiskError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut hard = batch
            .hard_state
            .clone()
            .unwrap_or_else(|| self.hard.clone());
        if let Some(snap) = &batch.snapshot {
            let m = snap.get_metadata();
            hard.commit = hard.commit.max(m.index);
            hard.term = hard.term.max(m.term);
        }
        let first_new = batch.entries.first().map(|e| e.index);
        if batch.snapshot.is_none()
            && batch.entries.is_empty()
            && hard.term == self.hard.term
            && hard.vote == self.hard.vote
        {
            // Only the commit index moved: it need not be durable (a lower one after a crash
            // is learned again), so it rides along with the next real write.
            self.hard = hard;
            return Ok(());
        }
        let snap_index = batch.snapshot.as_ref().map(|s| s.get_metadata().index);
        if let Some(index) = snap_index {
            self.trim_to = self.trim_to.max(index);
        }
        let trim = self.next_trim();
        if let Some(disk) = &self.disk {
            disk.write(&DiskWrite {
                snapshot: batch.snapshot.as_ref(),
                remove_upto: trim,
                // A received snapshot replaces the log after it at once (as raft-rs'
                // MemStorage does); what lies below goes a little at a time.
                remove_from: snap_index.map(|i| i + 1),
                entries: &batch.entries,
                hard_state: Some(&hard),
            })?;
        }
        if let Some(t) = trim {
            self.trimmed_to = t;
        }
        if let Some(snap) = batch.snapshot {
            self.entries.clear();
            self.snapshot = snap;
        }
        if let Some(first) = first_new {
            self.entries.retain(|e| e.index < first);
            self.entries.extend(batch.entries);
        }
        self.hard = hard;
        Ok(())
    }

    /// Records (in memory) the commit index raft-rs reports after advancing; it reaches the disk
    /// with the next hard state.
    pub fn note_commit(&mut self, commit: u64) {
        self.hard.commit = self.hard.commit.max(commit);
    }

    /// Replaces the log up to `index` (applied, persisted) with a snapshot holding `data`.
    pub fn compact(&mut self, index: u64, conf: ConfState, data: Vec<u8>) -> Result<(), DiskError> {
        let term = raft::Storage::term(self, index).map_err(|e| DiskError::Corrupt {
            what: format!("term of entry {index} for a snapshot: {e}"),
        })?;
        let mut snap = Snapshot {
            data,
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf);
        if let Some(disk) = &self.disk {
            // Only the snapshot reference now; the entries below it go with later writes.
            disk.write(&DiskWrite {
                snapshot: Some(&snap),
                remove_upto: None,
                remove_from: None,
                entries: &[],
                hard_state: None,
            })?;
        }
        self.trim_to = self.trim_to.max(index);
        self.entries.retain(|e| e.index > index);
        self.snapshot = snap;
        Ok(())
    }

    /// The bound of the next slice of old entries to remove from disk, if any is left.
    fn next_trim(&self) -> Option<u64> {
        (self.trimmed_to < self.trim_to).then(|| {
            self.trim_to
                .min(self.trimmed_to.saturating_add(TRIM_PER_WRITE))
        })
    }

    /// Returns (and clears) whether raft-rs wanted a fresher snapshot.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard.clone(),
            conf_state: self.snapshot.get_metadata().get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.snap_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let last = raft::Storage::last_index(self)?;
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - first) as usize;
        let hi = (high - first) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < snap.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let pos = (idx - snap.index - 1) as usize;
        self.entries
            .get(pos)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.entries.last().map_or(self.snap_index(), |e| e.index))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let conf = self.snapshot.get_metadata().get_conf_state();
        let knows_peer = conf.voters.contains(&to) || conf.learners.contains(&to);
        if self.snap_index() >= request_index && self.snap_index() > 0 && knows_peer {
            Ok(self.snapshot.clone())
        } else {
            self.snapshot_wanted.set(true);
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}
