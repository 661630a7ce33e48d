//! Creating, joining and removing a container's cgroup directories.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupHandle};

/// Creates every directory of the cgroup (and their parents). On v1, a new cpuset
/// cgroup inherits its parent's cpus and mems, without which no task could join it.
/// Returns the directories this call created, deepest last, so a failed create can
/// undo exactly what it did.
pub fn create(handle: &CgroupHandle) -> Result<Vec<PathBuf>, CgroupError> {
    create_part(handle, Part::All)
}

/// Which directories of a cgroup [`create_part`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    /// The v2 directory only (a v2 host's cgroup, or a hybrid host's unified one).
    V2,
    /// The v1 directories only.
    V1,
}

/// Like [`create`], for part of the directories: a v1 cgroup is made while init
/// builds its rootfs, but a v2 one must exist before the clone that starts init in it.
pub fn create_part(handle: &CgroupHandle, part: Part) -> Result<Vec<PathBuf>, CgroupError> {
    let mut created = Vec::new();
    let result = create_inner(handle, part, &mut created);
    if result.is_err() {
        remove_dirs(&created);
    }
    result.map(|_| created)
}

fn create_inner(
    handle: &CgroupHandle,
    part: Part,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let v2 = handle.v2_dir();
    for dir in handle.all_dirs() {
        let is_v2 = v2 == Some(dir.as_path());
        let wanted = match part {
            Part::All => true,
            Part::V2 => is_v2,
            Part::V1 => !is_v2,
        };
        if wanted {
            mkdir_all(&dir, created)?;
        }
    }
    if part != Part::V2 {
        if let Some(cpuset) = handle.v1_dir("cpuset") {
            inherit_cpuset(cpuset)?;
        }
    }
    Ok(())
}

/// Makes `dir` and any missing parents, recording what it made. The leaf is tried
/// first: its parents almost always exist, and each probe walks the kernfs path.
fn mkdir_all(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            created.push(dir.to_path_buf());
            return Ok(());
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: d, source }),
        }
    }
    Ok(())
}

/// Fills empty cpuset.cpus / cpuset.mems from the nearest ancestor, top down.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut chain = Vec::new();
        let mut cur = dir.to_path_buf();
        loop {
            let f = cur.join(file);
            let value = match fs::read_to_string(&f) {
                Ok(v) => v,
                // Not a cpuset hierarchy root any more: stop.
                Err(_) => break,
            };
            if !value.trim().is_empty() {
                for child in chain.iter().rev() {
                    write_file(&PathBuf::from(child).join(file), value.trim())?;
                }
                break;
            }
            chain.push(cur.clone());
            match cur.parent() {
                Some(p) => cur = p.to_path_buf(),
                None => break,
            }
        }
    }
    Ok(())
}

/// Moves `pid` into the cgroup's v2 directory (a v2 host's cgroup, or a hybrid host's
/// unified one), if it has one.
pub fn join_v2(handle: &CgroupHandle, pid: i32) -> Result<(), CgroupError> {
    match handle.v2_dir() {
        Some(dir) => write_file(&dir.join("cgroup.procs"), &pid.to_string()),
        None => Ok(()),
    }
}

/// The v1 `tasks` files of a cgroup, opened by the runtime so that a single-threaded
/// process (the container's init, or `exec`) can move itself in by writing "0".
///
/// Why: moving another process (a pid into cgroup.procs) write-locks the kernel's global
/// threadgroup rwsem, which waits for an RCU grace period: 5-15 ms on an idle host, paid
/// by every container start. A thread moving itself through `tasks` skips that lock on
/// current kernels (0.1 ms against 12 ms measured on 6.18; a kernel that still takes it
/// is merely as slow as the usual way). The kernel
/// checks permission against the credentials the file was opened with, so this also
/// works from inside a new user namespace.
#[derive(Default)]
pub struct SelfJoin {
    files: Vec<(PathBuf, fs::File)>,
}

impl SelfJoin {
    /// Opens `tasks` in every v1 directory of the cgroup (none on a v2 host).
    pub fn open(handle: &CgroupHandle) -> Result<Self, CgroupError> {
        let mut files = Vec::new();
        if let CgroupHandle::V1 { dirs, .. } = handle {
            let mut seen: Vec<&PathBuf> = Vec::new();
            for dir in dirs.values() {
                if seen.contains(&dir) {
                    continue; // co-mounted controllers share one directory
                }
                seen.push(dir);
                let path = dir.join("tasks");
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Write {
                        path: path.clone(),
                        value: "0".to_string(),
                        source,
                    })?;
                files.push((path, f));
            }
        }
        Ok(Self { files })
    }

    /// The opened files' paths and descriptors, to send to init.
    pub fn paths_and_fds(&self) -> (Vec<String>, Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        self.files
            .iter()
            .map(|(p, f)| (p.display().to_string(), f.as_raw_fd()))
            .unzip()
    }

    /// The files as init receives them (paths and descriptors in the same order).
    pub fn from_received(paths: Vec<String>, fds: Vec<std::os::fd::OwnedFd>) -> Self {
        Self {
            files: paths
                .into_iter()
                .map(PathBuf::from)
                .zip(fds.into_iter().map(fs::File::from))
                .collect(),
        }
    }

    /// Moves the calling thread (the whole process, when it has one thread) into every
    /// directory opened. The files are close-on-exec.
    pub fn join_self(&self) -> Result<(), CgroupError> {
        use std::io::Write as _;
        for (path, f) in &self.files {
            (&*f).write_all(b"0").map_err(|source| CgroupError::Write {
                path: path.clone(),
                value: "0".to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The pids in the cgroup (from the first directory that lists them, which on v1 is
/// any controller: every controller holds every task of the container).
pub fn pids(handle: &CgroupHandle) -> Result<Vec<i32>, CgroupError> {
    let dirs = handle.all_dirs();
    let preferred = handle
        .v1_dir("pids")
        .or_else(|| handle.v1_dir("memory"))
        .map(Path::to_path_buf)
        .or_else(|| dirs.first().cloned());
    let Some(dir) = preferred else {
        return Ok(Vec::new());
    };
    let path = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CgroupError::Read { path, source }),
    };
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Removes every directory of the cgroup. A directory that is already gone is fine;
/// a busy one is retried briefly (the kernel frees a cgroup shortly after its last
/// task exits). Parents created for it (e.g. /berth) are left for other containers.
pub fn remove(handle: &CgroupHandle) -> Result<(), CgroupError> {
    let mut first_err = None;
    for dir in handle.all_dirs() {
        if let Err(e) = remove_one(&dir) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn remove_one(dir: &Path) -> Result<(), CgroupError> {
    // Usually the directory has no children and goes at once; listing it first would
    // cost a readdir of every control file in each hierarchy.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    // Child cgroups made inside the container (cgroupns) go first, deepest first.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_one(&entry.path())?;
            }
        }
    }
    let mut delay = std::time::Duration::from_millis(1);
    for attempt in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 11 => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Best-effort removal of directories created by a failed `create`, deepest first.
pub fn remove_dirs(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn create_and_remove_in_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("berth/c1");
        let h = CgroupHandle::V2 { dir: dir.clone() };
        let created = create(&h).unwrap();
        assert_eq!(created, vec![tmp.path().join("berth"), dir.clone()]);
        assert!(dir.is_dir());
        remove(&h).unwrap();
        assert!(!dir.exists());
        assert!(tmp.path().join("berth").exists());
        remove(&h).unwrap();
    }

    #[test]
    fn parts_of_a_hybrid_cgroup_are_created_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = BTreeMap::new();
        dirs.insert("memory".to_string(), tmp.path().join("memory/berth/c1"));
        dirs.insert("pids".to_string(), tmp.path().join("pids/berth/c1"));
        let unified = tmp.path().join("unified/berth/c1");
        let h = CgroupHandle::V1 {
            dirs,
            unified: Some(unified.clone()),
        };
        let v2 = create_part(&h, Part::V2).unwrap();
        assert_eq!(v2.last(), Some(&unified));
        assert!(unified.is_dir());
        assert!(!tmp.path().join("memory/berth/c1").exists());
        let v1 = create_part(&h, Part::V1).unwrap();
        assert!(tmp.path().join("memory/berth/c1").is_dir());
        assert!(tmp.path().join("pids/berth/c1").is_dir());
        assert!(!v1.contains(&unified));
        // The v1 files init writes "0" to: one per distinct directory.
        for d in h.all_dirs().iter().filter(|d| **d != unified) {
            fs::write(d.join("tasks"), "").unwrap();
        }
        let join = SelfJoin::open(&h).unwrap();
        let (paths, fds) = join.paths_and_fds();
        assert_eq!(paths.len(), 2);
        assert_eq!(fds.len(), 2);
        join.join_self().unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("pids/berth/c1/tasks")).unwrap(),
            "0"
        );
        // A v2 handle has no v1 files to open.
        let v2h = CgroupHandle::V2 { dir: unified };
        assert_eq!(SelfJoin::open(&v2h).unwrap().paths_and_fds().0.len(), 0);
    }

    #[test]
    fn cpuset_inherits_parent_values() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cpuset");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        let leaf = root.join("berth/c1");
        // A real cpuset hierarchy creates these files empty in new cgroups.
        let mut dirs = BTreeMap::new();
        dirs.insert("cpuset".to_string(), leaf.clone());
        let h = CgroupHandle::V1 {
            dirs,
            unified: None,
        };
        fs::create_dir_all(&leaf).unwrap();
        for d in [root.join("berth"), leaf.clone()] {
            fs::write(d.join("cpuset.cpus"), "").unwrap();
            fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        create(&h).unwrap();
        assert_eq!(fs::read_to_string(leaf.join("cpuset.cpus")).unwrap(), "0-1");
        assert_eq!(
            fs::read_to_string(root.join("berth/cpuset.mems")).unwrap(),
            "0"
        );
    }
}
