//! The state directory of a container: state.json written atomically, a lock (flock
//! on the directory), and the status derived from the real process.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ContainerError;
use crate::cgroups::CgroupHandle;

/// Container status as the runtime spec names it (plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What berth keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// The init's start time (clock ticks since boot): guards against pid reuse.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub annotations: BTreeMap<String, String>,
    pub cgroup: CgroupHandle,
    /// The resources the container runs with (`update` merges into them).
    #[serde(default)]
    pub resources: Option<oci_spec::runtime::LinuxResources>,
    /// The hooks as config.json gave them at create time (poststart and poststop run
    /// from here, without parsing the bundle again).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// The runtime-spec state JSON printed by `berth state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// A container's state directory, locked while this value lives.
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
    _lock: OwnedFd,
}

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

impl ContainerDir {
    /// Creates `<root>/<id>` (refusing an existing one) and locks it.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir, ContainerError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(|source| ContainerError::Io {
                step: "creating state root",
                path: root.to_path_buf(),
                source,
            })?;
        let path = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::Exists(id.to_string()))
            }
            Err(source) => {
                return Err(ContainerError::Io {
                    step: "creating state dir",
                    path,
                    source,
                })
            }
        }
        let lock = lock_dir(&path)?;
        Ok(ContainerDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    /// Opens and locks an existing `<root>/<id>`.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir, ContainerError> {
        let path = root.join(id);
        if !path.is_dir() {
            return Err(ContainerError::NotExist(id.to_string()));
        }
        let lock = match lock_dir(&path) {
            Ok(l) => l,
            Err(ContainerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(ContainerError::NotExist(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        // Deleted while we waited for the lock.
        if !path.join(STATE_FILE).exists() {
            return Err(ContainerError::NotExist(id.to_string()));
        }
        Ok(ContainerDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    pub fn load(&self) -> Result<State, ContainerError> {
        let p = self.path.join(STATE_FILE);
        let bytes = fs::read(&p).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ContainerError::NotExist(self.id.clone())
            } else {
                ContainerError::Io {
                    step: "reading",
                    path: p.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
            id: self.id.clone(),
            path: p,
            message: e.to_string(),
        })
    }

    /// Where [`save`](Self::save) writes.
    pub fn state_path(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    /// Writes state.json atomically (see [`write_atomic`]).
    pub fn save(&self, state: &State) -> Result<(), ContainerError> {
        let bytes = serde_json::to_vec(state).map_err(|e| ContainerError::Other(e.to_string()))?;
        write_atomic(&self.path.join(STATE_FILE), &bytes)
    }

    /// In a cloned child: closes the inherited lock descriptor, which would otherwise
    /// keep the container locked for as long as init lives (flock locks belong to the
    /// open file, and the child shares it).
    pub fn close_lock_in_child(&self) {
        crate::sys::close_raw(std::os::fd::AsRawFd::as_raw_fd(&self._lock));
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Removes the directory (and everything in it).
    pub fn remove(&self) -> Result<(), ContainerError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ContainerError::Io {
                step: "removing state dir",
                path: self.path.clone(),
                source,
            }),
        }
    }
}

fn lock_dir(path: &Path) -> Result<OwnedFd, ContainerError> {
    let fd = crate::sys::fs::open(path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|source| {
        ContainerError::Io {
            step: "opening state dir",
            path: path.to_path_buf(),
            source,
        }
    })?;
    crate::sys::fs::flock_exclusive(&fd).map_err(|source| ContainerError::Io {
        step: "locking state dir",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(fd)
}

/// Temp file + rename: readers see the old or the new file, never half.
///
/// No fsync, as in runc and crun: this is runtime state (runc's root is meant to be
/// a tmpfs), describing processes that do not survive the power loss an fsync would
/// guard against. On a disk-backed root the two fsyncs cost 0.2-0.4 ms of every
/// `create`; a file torn by a crash is reported as corrupt, and `delete --force`
/// removes it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ContainerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let io = |step: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ContainerError::Io {
            step,
            path: p,
            source,
        }
    };
    let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    drop(f);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io("renaming into place", path)(e));
    }
    Ok(())
}

impl State {
    /// The status, from the real process: alive with the recorded start time, and
    /// whether it still waits on exec.fifo or is frozen.
    pub fn status(&self, dir: &Path) -> Status {
        match crate::sys::process_state(self.pid) {
            Some((st, start)) if start == self.pid_start_time && st != 'Z' && st != 'X' => {
                if crate::cgroups::is_frozen(&self.cgroup) {
                    Status::Paused
                } else if dir.join(EXEC_FIFO).exists() {
                    Status::Created
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }

    pub fn spec_state(&self, status: Status) -> SpecState {
        SpecState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// RFC 3339 UTC time with nanoseconds, as runc prints `created`.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn create_twice_refused_and_lock_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let d = ContainerDir::create(tmp.path(), "c1").unwrap();
        drop(d);
        assert!(matches!(
            ContainerDir::create(tmp.path(), "c1"),
            Err(ContainerError::Exists(_))
        ));
        // No state.json yet: treated as not existing.
        assert!(matches!(
            ContainerDir::open(tmp.path(), "c1"),
            Err(ContainerError::NotExist(_))
        ));
        assert!(matches!(
            ContainerDir::open(tmp.path(), "nope"),
            Err(ContainerError::NotExist(_))
        ));
    }
}
