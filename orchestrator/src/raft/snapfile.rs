//! Registry snapshots as files beside the Raft log, written off the event loop.
//!
//! A Raft snapshot's `data` is a small reference ([`SnapRef`]) to `snap-<index>.json` in the
//! state directory instead of the registry itself, so neither the log store nor a Raft
//! message ever holds the whole registry in memory. The file is written by a thread from an
//! O(1) clone of the registry (its maps are persistent, see `registry::state`), streamed
//! through a buffered writer, fsynced and renamed into place; the loop then compacts the log
//! up to it. Peers receive the file in chunks (daemon/peers.rs) and their transport rewrites
//! the reference to the local copy before raft-rs sees the message. Data written by older
//! versions (the registry inline in `data`) is still read.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use raft::eraftpb::ConfState;
use serde::{Deserialize, Serialize};

use crate::registry::Registry;

/// Prefix of a snapshot `data` that is a reference to a file.
const MAGIC: &[u8] = b"berth-snapref:";
/// File name prefix and suffix of snapshot files in the state directory.
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".json";
/// Suffix of a snapshot being received from a peer.
pub const PART_SUFFIX: &str = ".part";
/// Largest snapshot file accepted from a peer.
pub const MAX_SNAPSHOT_FILE: u64 = 4 << 30;

/// Where a snapshot's registry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRef {
    /// File name in the state directory (no path).
    pub file: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapFileError {
    #[error("snapshot file {path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("snapshot file {path}: cannot decode the registry: {err}")]
    Decode {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error("snapshot file name {0:?} is not one of ours")]
    BadName(String),
    #[error("a snapshot references a file but this store keeps no files")]
    NoDir,
}

/// The `data` of a snapshot that references `r`.
pub fn encode_ref(r: &SnapRef) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(r).unwrap_or_default());
    out
}

/// The reference in a snapshot's `data`, if it is one.
pub fn decode_ref(data: &[u8]) -> Option<SnapRef> {
    let json = data.strip_prefix(MAGIC)?;
    let r: SnapRef = serde_json::from_slice(json).ok()?;
    valid_name(&r.file).then_some(r)
}

/// The file name for the snapshot at `index`.
pub fn file_name(index: u64) -> String {
    format!("{PREFIX}{index:020}{SUFFIX}")
}

fn valid_name(name: &str) -> bool {
    name.starts_with(PREFIX)
        && name.ends_with(SUFFIX)
        && !name.contains('/')
        && name.len() < 64
        && name[PREFIX.len()..name.len() - SUFFIX.len()]
            .bytes()
            .all(|b| b.is_ascii_digit())
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SnapFileError + 'a {
    move |err| SnapFileError::Io {
        path: path.to_path_buf(),
        what,
        err,
    }
}

/// Writes `registry` to `dir/snap-<index>.json` (temp file, fsync, rename, fsync dir).
pub fn write(dir: &Path, index: u64, registry: &Registry) -> Result<SnapRef, SnapFileError> {
    let name = file_name(index);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    crate::private_files::prepare_file(&tmp).map_err(|e| SnapFileError::Io {
        path: tmp.clone(),
        what: "create",
        err: std::io::Error::other(e.to_string()),
    })?;
    let file = File::options()
        .write(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp, "open"))?;
    let mut w = BufWriter::with_capacity(256 << 10, file);
    serde_json::to_writer(&mut w, registry).map_err(|err| SnapFileError::Decode {
        path: tmp.clone(),
        err,
    })?;
    w.flush().map_err(io(&tmp, "write"))?;
    let file = w.into_inner().map_err(|e| SnapFileError::Io {
        path: tmp.clone(),
        what: "write",
        err: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp, "fsync"))?;
    let size = file.metadata().map_err(io(&tmp, "stat"))?.len();
    std::fs::rename(&tmp, &path).map_err(io(&path, "rename into place"))?;
    sync_dir(dir)?;
    Ok(SnapRef { file: name, size })
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), SnapFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

/// Reads the registry a snapshot's `data` holds: inline JSON, or the referenced file
/// (streamed, never read whole into memory).
pub fn read(dir: Option<&Path>, data: &[u8]) -> Result<Registry, SnapFileError> {
    let Some(r) = decode_ref(data) else {
        return serde_json::from_slice(data).map_err(|err| SnapFileError::Decode {
            path: PathBuf::from("(inline)"),
            err,
        });
    };
    let dir = dir.ok_or(SnapFileError::NoDir)?;
    let path = dir.join(&r.file);
    let file = File::open(&path).map_err(io(&path, "open"))?;
    serde_json::from_reader(BufReader::with_capacity(256 << 10, file))
        .map_err(|err| SnapFileError::Decode { path, err })
}

/// Removes snapshot files other than `keep` (partial downloads too when `parts`: only at
/// start, when no transfer can be running).
pub fn cleanup(dir: &Path, keep: &str) {
    cleanup_files(dir, keep, false)
}

/// [`cleanup`] at start: partial downloads go too.
pub fn cleanup_at_start(dir: &Path, keep: &str) {
    cleanup_files(dir, keep, true)
}

fn cleanup_files(dir: &Path, keep: &str, parts: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(PREFIX)
            && (name.ends_with(SUFFIX)
                || name.ends_with(".tmp")
                || (parts && name.ends_with(PART_SUFFIX)));
        if ours && name != keep {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), "cannot remove an old snapshot: {err}");
            }
        }
    }
}

/// A snapshot finished by the writer thread.
pub struct Written {
    pub index: u64,
    pub conf: ConfState,
    pub result: Result<SnapRef, SnapFileError>,
}

/// Runs one snapshot write at a time on its own thread.
#[derive(Default)]
pub struct Writer {
    inflight: Option<mpsc::Receiver<Written>>,
}

/// Makes the calling thread yield the CPU to the event loop: a snapshot of a large registry
/// is seconds of serialising, which on a busy machine would otherwise delay every write and
/// heartbeat while it runs (best effort: a failure leaves the thread at normal priority).
fn lower_priority() {
    // SAFETY: gettid(2) has no preconditions; setpriority(2) on our own thread id only
    // changes this thread's nice value.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if rc != 0 {
        tracing::debug!(
            "cannot lower the snapshot thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Writer {
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Starts writing `registry` (an O(1) clone) as the snapshot at `index`.
    pub fn start(&mut self, dir: PathBuf, index: u64, conf: ConfState, registry: Registry) {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("berthd-snapshot".into())
            .spawn(move || {
                lower_priority();
                let result = write(&dir, index, &registry);
                drop(registry);
                let _ = tx.send(Written {
                    index,
                    conf,
                    result,
                });
            });
        match spawned {
            Ok(_) => self.inflight = Some(rx),
            Err(e) => tracing::warn!("cannot start the snapshot thread: {e}"),
        }
    }

    /// The finished snapshot, if the thread is done.
    pub fn poll(&mut self) -> Option<Written> {
        let rx = self.inflight.as_ref()?;
        match rx.try_recv() {
            Ok(w) => {
                self.inflight = None;
                Some(w)
            }
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.inflight = None;
                tracing::warn!("the snapshot thread died without an answer");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;

    #[test]
    fn a_registry_roundtrips_through_a_file_and_references_are_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        for i in 0..100 {
            reg.apply(&Command::Put {
                key: format!("/k/{i}"),
                value: "v".repeat(i),
                lease: 0,
                prev_revision: None,
            });
        }
        let r = write(tmp.path(), 42, &reg).expect("write");
        assert_eq!(r.file, file_name(42));
        let data = encode_ref(&r);
        assert_eq!(decode_ref(&data), Some(r.clone()));
        assert_eq!(read(Some(tmp.path()), &data).expect("read"), reg);
        // inline (older data) still reads
        let inline = serde_json::to_vec(&reg).expect("json");
        assert_eq!(read(None, &inline).expect("inline"), reg);
        // a reference to a path outside the directory is not a reference
        let evil = [MAGIC, br#"{"file":"../../etc/shadow","size":1}"#].concat();
        assert_eq!(decode_ref(&evil), None);
        // cleanup keeps only the named file
        std::fs::write(tmp.path().join(file_name(7)), b"{}").expect("old");
        std::fs::write(tmp.path().join("snap-x.part"), b"").expect("part");
        std::fs::write(tmp.path().join("raft.redb"), b"").expect("db");
        cleanup_at_start(tmp.path(), &r.file);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["raft.redb".to_string(), r.file.clone()]);
    }

    #[test]
    fn the_writer_thread_reports_its_snapshot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::default();
        w.start(
            tmp.path().to_path_buf(),
            5,
            ConfState::default(),
            Registry::default(),
        );
        assert!(w.busy());
        let done = loop {
            if let Some(d) = w.poll() {
                break d;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(!w.busy());
        assert_eq!(done.index, 5);
        let r = done.result.expect("written");
        assert!(tmp.path().join(&r.file).exists());
    }
}
