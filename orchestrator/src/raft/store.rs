//! The Raft log storage that raft-rs reads through [`raft::Storage`], written through to a
//! durable [`Disk`] (redb) first when one is attached. A [`Batch`] (one Ready's snapshot,
//! entries and hard state) is one disk transaction: one fsync before anything that depends
//! on it is sent or applied.
//!
//! Memory is bounded: every entry's term is kept (8 bytes each), but only the newest entries
//! themselves, up to [`CACHE_BYTES`] (those raft-rs sends to followers and applies next);
//! older ones are read back from disk when a lagging follower or a restart's replay needs
//! them. A store without a disk (the scenario tests) keeps every entry.

use std::cell::Cell;
use std::collections::VecDeque;

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
    /// The term of every entry after the snapshot (`terms[i]` is entry `snapshot + 1 + i`'s).
    terms: Vec<u64>,
    /// The newest entries, contiguous and ending at the last one (all of them without a disk).
    cache: VecDeque<Entry>,
    /// Approximate bytes held in `cache`.
    cache_bytes: usize,
    /// Most bytes `cache` holds (at least one entry stays).
    cache_limit: usize,
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
/// Most bytes of entries kept in memory by a store with a disk.
pub const CACHE_BYTES: usize = 1 << 20;

/// What an entry costs in the cache (its payloads and the struct around them).
fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + std::mem::size_of::<Entry>()
}

impl LogStore {
    /// A store kept in memory only (scenario tests).
    pub fn in_memory() -> Self {
        Self {
            hard: HardState::default(),
            snapshot: Snapshot::default(),
            terms: Vec::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit: usize::MAX,
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
        let mut store = Self {
            hard: loaded.inner.hard_state,
            snapshot: loaded.inner.snapshot,
            terms: Vec::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit: CACHE_BYTES,
            disk: Some(disk),
            snapshot_wanted: Cell::new(false),
            // Whatever lies below the snapshot gets trimmed (a crash may have left some).
            trim_to: loaded.snapshot_index,
            trimmed_to: 0,
        };
        store.append(loaded.inner.entries);
        Ok(store)
    }

    /// Sets how many bytes of entries stay in memory (tests).
    pub fn set_cache_limit(&mut self, bytes: usize) {
        self.cache_limit = bytes;
        self.evict();
    }

    /// Index of the first entry held in memory.
    fn cache_from(&self) -> u64 {
        self.last() + 1 - self.cache.len() as u64
    }

    fn last(&self) -> u64 {
        self.snap_index() + self.terms.len() as u64
    }

    /// Appends `entries` (contiguous), replacing any held at or after the first one's index.
    fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        let keep = first.saturating_sub(self.snap_index() + 1) as usize;
        self.terms.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index >= first) {
            if let Some(e) = self.cache.pop_back() {
                self.cache_bytes -= entry_bytes(&e);
            }
        }
        if self.cache.back().is_some_and(|e| e.index + 1 != first) {
            // The new entries do not continue the cached ones (cannot happen: raft-rs
            // appends contiguously); restart the cache at them.
            self.cache.clear();
            self.cache_bytes = 0;
        }
        for e in entries {
            self.terms.push(e.term);
            self.cache_bytes += entry_bytes(&e);
            self.cache.push_back(e);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.cache_bytes > self.cache_limit && self.cache.len() > 1 {
            if let Some(e) = self.cache.pop_front() {
                self.cache_bytes -= entry_bytes(&e);
            }
        }
    }

    /// True when nothing was ever stored (a new node).
    pub fn is_blank(&self) -> bool {
        self.snapshot.get_metadata().index == 0 && self.terms.is_empty() && self.hard.term == 0
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
            self.terms.clear();
            self.cache.clear();
            self.cache_bytes = 0;
            self.snapshot = snap;
        }
        if first_new.is_some() {
            self.append(batch.entries);
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
        let gone = index.saturating_sub(self.snap_index()) as usize;
        self.terms.drain(..gone.min(self.terms.len()));
        while self.cache.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.cache.pop_front() {
                self.cache_bytes -= entry_bytes(&e);
            }
        }
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
        let max_size = max_size.into();
        let cached = self.cache_from();
        let mut out = Vec::new();
        if low < cached {
            // Older than the cache: from disk (a lagging follower, a restart's replay).
            let disk = self
                .disk
                .as_ref()
                .ok_or(raft::Error::Store(StorageError::Unavailable))?;
            out = disk
                .read_entries(low, high.min(cached), max_size.unwrap_or(u64::MAX))
                .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
            if low + (out.len() as u64) < high.min(cached) {
                return Ok(out); // the size limit cut it short
            }
        }
        let from = low.max(cached);
        if from < high {
            let lo = (from - cached) as usize;
            let hi = (high - cached) as usize;
            out.extend(self.cache.range(lo..hi).cloned());
        }
        raft::util::limit_size(&mut out, max_size);
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
        self.terms
            .get(pos)
            .copied()
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
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

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("entry {index} of term {term}").into_bytes(),
            ..Entry::default()
        }
    }

    fn append(s: &mut LogStore, from: u64, to: u64, term: u64) {
        let entries = (from..=to).map(|i| entry(i, term)).collect();
        s.persist(Batch {
            entries,
            hard_state: Some(HardState {
                term,
                ..HardState::default()
            }),
            ..Batch::default()
        })
        .expect("persist");
    }

    fn read(s: &LogStore, low: u64, high: u64) -> Vec<(u64, u64, Vec<u8>)> {
        s.entries(low, high, None, GetEntriesContext::empty(false))
            .expect("entries")
            .into_iter()
            .map(|e| (e.index, e.term, e.data))
            .collect()
    }

    fn expected(low: u64, high: u64, term_of: impl Fn(u64) -> u64) -> Vec<(u64, u64, Vec<u8>)> {
        (low..high)
            .map(|i| (i, term_of(i), entry(i, term_of(i)).data))
            .collect()
    }

    /// A disk-backed store keeps only its newest entries in memory and reads older ones
    /// back from disk, across overwrites, compaction and a reopen.
    #[test]
    fn small_cache_reads_older_entries_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let mut s = LogStore::open(Disk::open(&path).expect("disk")).expect("store");
        s.set_cache_limit(10 * entry_bytes(&entry(1, 1)));
        append(&mut s, 1, 100, 1);
        assert!(
            (2..=10).contains(&s.cache.len()),
            "cache holds {}",
            s.cache.len()
        );
        assert_eq!(s.cache_from(), 101 - s.cache.len() as u64);
        assert_eq!(read(&s, 1, 101), expected(1, 101, |_| 1));
        assert_eq!(read(&s, 85, 95), expected(85, 95, |_| 1));
        assert_eq!(s.term(50), Ok(1));
        // A new leader overwrites the tail from 60 on: disk and memory agree.
        append(&mut s, 60, 120, 2);
        let term_of = |i| if i < 60 { 1 } else { 2 };
        assert_eq!(read(&s, 1, 121), expected(1, 121, term_of));
        assert_eq!(s.term(59), Ok(1));
        assert_eq!(s.term(60), Ok(2));
        assert_eq!(s.last_index(), Ok(120));
        // A size limit stops a disk read early, never below one entry.
        let one = s
            .entries(5, 50, Some(1), GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(one.len(), 1);
        // Compaction drops terms and cached entries at or below the snapshot.
        s.compact(70, ConfState::default(), b"snap".to_vec())
            .expect("compact");
        assert_eq!(s.first_index(), Ok(71));
        assert_eq!(
            s.entries(70, 80, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(read(&s, 71, 121), expected(71, 121, term_of));
        drop(s);
        let mut s = LogStore::open(Disk::open(&path).expect("disk")).expect("reopen");
        s.set_cache_limit(10 * entry_bytes(&entry(1, 1)));
        assert_eq!(s.first_index(), Ok(71));
        assert_eq!(s.last_index(), Ok(120));
        assert_eq!(read(&s, 71, 121), expected(71, 121, term_of));
    }

    /// Without a disk every entry stays in memory.
    #[test]
    fn in_memory_store_keeps_everything() {
        let mut s = LogStore::in_memory();
        append(&mut s, 1, 1000, 1);
        assert_eq!(s.cache.len(), 1000);
        assert_eq!(read(&s, 1, 1001), expected(1, 1001, |_| 1));
    }
}
