//! Container snapshots: a rootfs made of an image's layer directories as
//! overlayfs lowerdirs plus a private upper and work dir. [`prepare`] makes
//! the directories and returns the mount to perform; it mounts nothing.
//! Where overlayfs is missing the caller falls back to [`fill_copy`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::digest::Digest;
use crate::import::{self, ImportError};
use crate::store::{ImageRecord, Lock, SnapshotRecord, Store, StoreError};

mod overlay;
pub use overlay::{overlay_mount, Mount};

/// Errors of snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "invalid container name `{0}`: use [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 characters"
    )]
    Name(String),
    #[error("container `{name}` already exists ({path})")]
    Exists { name: String, path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "overlay path {path} contains `,`, `:` or a newline, which overlayfs options cannot carry"
    )]
    BadPath { path: PathBuf },
    #[error("overlay mount options are {len} bytes even with each of the {layers} layers named by a descriptor, over mount(2)'s {max}-byte limit, and this kernel has no `lowerdir+` (Linux 6.8+) to give them one by one")]
    TooManyLayers {
        len: usize,
        max: usize,
        layers: usize,
    },
    #[error("mounting overlay at {target}: {errno}")]
    Mount { target: PathBuf, errno: Errno },
    #[error("unmounting {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// The directories of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    /// STORE/containers/<name>: also the bundle directory.
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Snapshot {
    pub fn at(store: &Store, name: &str) -> Result<Snapshot, SnapshotError> {
        validate_name(name)?;
        let dir = store.containers_dir().join(name);
        Ok(Snapshot {
            name: name.to_string(),
            rootfs: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            dir,
        })
    }
}

/// What `prepare` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Perform this overlay mount on `snapshot.rootfs`.
    Overlay(Mount),
    /// No overlayfs here: call [`fill_copy`] to populate `snapshot.rootfs`.
    Copy,
}

pub fn validate_name(name: &str) -> Result<(), SnapshotError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::Name(name.to_string()))
    }
}

/// The lowerdirs for an image's layers (`diff_ids` bottom first): top first,
/// each layer once, at its topmost position. overlayfs refuses a directory
/// listed twice (ELOOP); applying a layer again on top of itself and the
/// layers between shows the same tree as its top occurrence alone, since every
/// path the lower occurrence adds, removes or makes opaque the top one does
/// again over everything below it.
pub fn effective_lowers(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids.iter().rev() {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

/// A process identified so that a reused pid is not mistaken for it: its pid
/// and its start time (field 22 of /proc/PID/stat, in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = i32::try_from(std::process::id()).ok()?;
        Some(Owner {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether the process still runs (and is the same one).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 (starttime) of /proc/PID/stat.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in a /proc/PID/stat line (the command name, field 2, may
/// hold spaces and parentheses: fields are counted after its last `)`).
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How a snapshot is made and when it goes away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// overlayfs is available (else the rootfs is a full copy).
    pub overlay: bool,
    /// The process using the snapshot; when it is gone, [`reap`] unmounts
    /// the snapshot, or removes it with `remove_with_owner`.
    pub owner: Option<Owner>,
    pub remove_with_owner: bool,
    /// A container of the snapshot's name in this runtime root keeps the
    /// snapshot in use after its owner is gone.
    pub runtime_root: Option<PathBuf>,
}

/// Creates the snapshot directories and its record (so garbage collection
/// keeps its layers) and returns what to do to get a rootfs. Called under
/// the store's lock, which [`reap`] relies on: a snapshot directory without
/// a record, seen under the lock, is what a killed `prepare` left.
pub fn prepare(
    store: &Store,
    _lock: &Lock,
    name: &str,
    image: &ImageRecord,
    opts: &SnapshotOptions,
) -> Result<(Snapshot, Prepared), SnapshotError> {
    let overlay_available = opts.overlay;
    let snap = Snapshot::at(store, name)?;
    let io_err = |path: &Path, source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::create_dir(&snap.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SnapshotError::Exists {
                name: name.to_string(),
                path: snap.dir.clone(),
            })
        }
        Err(e) => return Err(io_err(&snap.dir, e)),
    }
    let result = (|| {
        let kind = if overlay_available { "overlay" } else { "copy" };
        let record = SnapshotRecord {
            name: name.to_string(),
            image: image.reference.clone(),
            layers: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            kind: kind.to_string(),
            owner: opts.owner,
            remove_with_owner: opts.remove_with_owner,
            runtime_root: opts.runtime_root.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| io_err(&snap.dir, io::Error::other(e)))?;
        // A snapshot does not outlive a reboot (its mount is gone): no fsync.
        crate::store::write_replace(&snap.dir.join("snapshot.json"), &bytes, false)
            .map_err(|e| io_err(&snap.dir, e))?;
        for d in [&snap.rootfs, &snap.upper, &snap.work] {
            fs::create_dir(d).map_err(|e| io_err(d, e))?;
        }
        fs::set_permissions(
            &snap.upper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| io_err(&snap.upper, e))?;
        if !overlay_available {
            return Ok(Prepared::Copy);
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let mut lowers: Vec<PathBuf> = effective_lowers(&diff_ids)
            .iter()
            .map(|d| store.layer_dir(d))
            .collect();
        // overlayfs ignores the opaque xattr on a layer's root: the layers
        // below a root-opaque layer are left out instead.
        if let Some(i) = lowers
            .iter()
            .position(|l| crate::flatten::root_is_opaque(l))
        {
            lowers.truncate(i + 1);
        }
        Ok(Prepared::Overlay(overlay_mount(
            &lowers,
            &snap.upper,
            &snap.work,
            &snap.rootfs,
        )?))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&snap.dir);
    }
    result.map(|p| (snap, p))
}

/// Whether this kernel has overlayfs.
pub fn overlay_available() -> bool {
    crate::sys::overlay_in_proc_filesystems()
}

/// The fallback where overlayfs is missing: a full copy of the image into
/// the snapshot's rootfs (O(image size), hence the warning callers print).
pub fn fill_copy(store: &Store, snap: &Snapshot, image: &ImageRecord) -> Result<(), SnapshotError> {
    import::flatten(store, image, &snap.rootfs)?;
    Ok(())
}

/// Unmounts (if mounted) and deletes a snapshot.
pub fn remove(store: &Store, _lock: &Lock, name: &str) -> Result<(), SnapshotError> {
    let snap = Snapshot::at(store, name)?;
    unmount(&snap)?;
    if crate::sys::is_mount_point(&snap.rootfs) {
        // Still mounted (stacked mounts): never delete through a mount.
        return Err(SnapshotError::Unmount {
            target: snap.rootfs.clone(),
            errno: Errno::EBUSY,
        });
    }
    match fs::remove_dir_all(&snap.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotError::Io {
            path: snap.dir,
            source: e,
        }),
    }
}

/// What [`reap`] did to one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// Its owner was gone and it was to go with it (or a killed `prepare`
    /// left it without a record): unmounted and deleted.
    Removed(String),
    /// Its owner was gone: unmounted, kept (what the container wrote stays
    /// until `image prune`).
    Unmounted(String),
}

/// Cleans up after `image run` processes that ended without doing it
/// themselves (SIGKILL, a crash, a reboot): every snapshot whose owner is
/// gone and whose container no longer exists in its runtime root is
/// unmounted, and removed if it was to go with its owner. Directories a
/// killed [`prepare`] left without a record are removed. Needs the lock.
pub fn reap(store: &Store, lock: &Lock) -> Result<Vec<Reaped>, SnapshotError> {
    let dir = store.containers_dir();
    let io_err = |path: &Path, source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    let mut recorded = std::collections::HashSet::new();
    for rec in store.snapshots()? {
        recorded.insert(rec.name.clone());
        let Some(owner) = rec.owner else { continue };
        if owner.alive() {
            continue;
        }
        if let Some(root) = &rec.runtime_root {
            if root.join(&rec.name).exists() {
                continue;
            }
        }
        if rec.remove_with_owner {
            remove(store, lock, &rec.name)?;
            out.push(Reaped::Removed(rec.name));
        } else {
            let snap = Snapshot::at(store, &rec.name)?;
            unmount(&snap)?;
            let mut kept = rec.clone();
            kept.owner = None;
            let bytes = serde_json::to_vec_pretty(&kept)
                .map_err(|e| io_err(&snap.dir, io::Error::other(e)))?;
            crate::store::write_replace(&snap.dir.join("snapshot.json"), &bytes, false)
                .map_err(|e| io_err(&snap.dir, e))?;
            out.push(Reaped::Unmounted(rec.name));
        }
    }
    for e in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
        let e = e.map_err(|e| io_err(&dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if recorded.contains(&name) || validate_name(&name).is_err() {
            continue;
        }
        remove(store, lock, &name)?;
        out.push(Reaped::Removed(name));
    }
    Ok(out)
}

/// Unmounts the snapshot's rootfs if it is mounted.
pub fn unmount(snap: &Snapshot) -> Result<(), SnapshotError> {
    if crate::sys::is_mount_point(&snap.rootfs) {
        crate::sys::unmount(&snap.rootfs).map_err(|errno| SnapshotError::Unmount {
            target: snap.rootfs.clone(),
            errno,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_listed_twice_is_one_lowerdir_at_its_top_position() {
        // overlayfs refuses a lowerdir listed twice (ELOOP); the top occurrence
        // alone shows the same tree.
        let l = |n: &str| crate::digest::Digest::sha256_of(n.as_bytes());
        let stack = effective_lowers(&[l("a"), l("b"), l("a"), l("c")]);
        assert_eq!(stack, vec![l("c"), l("a"), l("b")]);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "..", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepare_records_snapshot_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lock = store.lock().unwrap();
        let image = ImageRecord {
            reference: "x:1".into(),
            manifest: crate::digest::Digest::sha256_of(b"m"),
            config: crate::digest::Digest::sha256_of(b"c"),
            layers: vec![crate::store::LayerRecord {
                digest: crate::digest::Digest::sha256_of(b"l"),
                diff_id: crate::digest::Digest::sha256_of(b"d"),
                size: 1,
                media_type: String::new(),
            }],
            platform: "linux/amd64".into(),
            created: None,
            imported: 0,
        };
        let opts = SnapshotOptions {
            overlay: true,
            ..Default::default()
        };
        let (snap, prepared) = prepare(&store, &lock, "c1", &image, &opts).unwrap();
        match prepared {
            Prepared::Overlay(m) => {
                assert!(m.options[0].contains(&image.layers[0].diff_id.hex().to_string()))
            }
            Prepared::Copy => panic!("expected overlay"),
        }
        assert!(snap.upper.is_dir() && snap.work.is_dir() && snap.rootfs.is_dir());
        let recs = store.snapshots().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].layers, vec![image.layers[0].diff_id.clone()]);
        assert!(matches!(
            prepare(&store, &lock, "c1", &image, &opts),
            Err(SnapshotError::Exists { .. })
        ));
        remove(&store, &lock, "c1").unwrap();
        assert!(!snap.dir.exists());
        assert!(store.snapshots().unwrap().is_empty());
    }

    #[test]
    fn reap_removes_what_dead_owners_left_and_keeps_the_living() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lock = store.lock().unwrap();
        let image = ImageRecord {
            reference: "x:1".into(),
            manifest: crate::digest::Digest::sha256_of(b"m"),
            config: crate::digest::Digest::sha256_of(b"c"),
            layers: Vec::new(),
            platform: "linux/amd64".into(),
            created: None,
            imported: 0,
        };
        let me = Owner::current().unwrap();
        assert!(me.alive());
        let dead = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!dead.alive());
        let runtime_root = dir.path().join("runtime");
        fs::create_dir_all(runtime_root.join("still-running")).unwrap();
        for (name, owner, rm) in [
            ("mine", Some(me), true),
            ("dead-rm", Some(dead), true),
            ("dead-keep", Some(dead), false),
            ("still-running", Some(dead), true),
            ("no-owner", None, true),
        ] {
            let opts = SnapshotOptions {
                overlay: false,
                owner,
                remove_with_owner: rm,
                runtime_root: Some(runtime_root.clone()),
            };
            prepare(&store, &lock, name, &image, &opts).unwrap();
        }
        // What a prepare killed before it wrote the record leaves.
        fs::create_dir_all(store.containers_dir().join("half/rootfs")).unwrap();
        let mut reaped = reap(&store, &lock).unwrap();
        reaped.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            reaped,
            vec![
                Reaped::Removed("dead-rm".into()),
                Reaped::Removed("half".into()),
                Reaped::Unmounted("dead-keep".into()),
            ]
        );
        let mut left: Vec<String> = store
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        left.sort();
        assert_eq!(left, ["dead-keep", "mine", "no-owner", "still-running"]);
        // Once reaped, a kept snapshot has no owner left to wait for.
        assert_eq!(reap(&store, &lock).unwrap(), Vec::new());
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 20";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
