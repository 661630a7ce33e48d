//! cgroups: the one place that decides v1, v2 or hybrid, and hands out a handle to a
//! container's cgroup. Nothing else in Berth knows which hierarchy is in use.
//!
//! - `detect` reads a mountinfo file (injectable for tests) into a [`Layout`].
//! - [`Layout::resolve`] turns a spec's cgroupsPath into a [`CgroupHandle`]: the
//!   directories that make up the container's cgroup (one per v1 controller, or one v2 dir).
//! - `membership` creates, joins and removes those directories.
//! - `resources` translates linux.resources into cgroupfs writes for v1 and v2.

pub mod detect;
pub mod membership;
pub mod resources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use detect::{detect, detect_from_mountinfo};

/// The cgroup hierarchies mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Pure v1: each controller (or named hierarchy such as `name=systemd`) has its own mount.
    V1 {
        controllers: BTreeMap<String, PathBuf>,
    },
    /// Pure v2: one unified hierarchy with the controllers.
    V2 { mount: PathBuf },
    /// v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified) that holds no
    /// controllers. Limits go through v1; the process is also placed in the v2 tree.
    Hybrid {
        controllers: BTreeMap<String, PathBuf>,
        unified: PathBuf,
    },
}

/// Which cgroup version limits are applied through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A container's cgroup: the directories that make it up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupHandle {
    /// controller name -> directory (e.g. "memory" -> /sys/fs/cgroup/memory/berth/c1).
    /// `unified` is the matching directory in a hybrid host's controller-less cgroup2.
    V1 {
        dirs: BTreeMap<String, PathBuf>,
        unified: Option<PathBuf>,
    },
    /// The one directory in the unified hierarchy.
    V2 { dir: PathBuf },
}

impl CgroupHandle {
    /// The version limits are applied through.
    pub fn version(&self) -> Version {
        match self {
            CgroupHandle::V1 { .. } => Version::V1,
            CgroupHandle::V2 { .. } => Version::V2,
        }
    }

    /// The directory of a v1 controller, if that controller is mounted.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        match self {
            CgroupHandle::V1 { dirs, .. } => dirs.get(controller).map(PathBuf::as_path),
            CgroupHandle::V2 { .. } => None,
        }
    }

    /// The directory in the v2 hierarchy: a v2 host's cgroup, or a hybrid host's
    /// controller-less unified one.
    pub fn v2_dir(&self) -> Option<&Path> {
        match self {
            CgroupHandle::V1 { unified, .. } => unified.as_deref(),
            CgroupHandle::V2 { dir } => Some(dir),
        }
    }

    /// Every directory of this cgroup, leaf paths in a stable order.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        match self {
            CgroupHandle::V1 { dirs, unified } => {
                let mut v: Vec<PathBuf> = dirs.values().cloned().collect();
                v.sort();
                v.dedup();
                if let Some(u) = unified {
                    v.push(u.clone());
                }
                v
            }
            CgroupHandle::V2 { dir } => vec![dir.clone()],
        }
    }
}

/// Errors of the cgroup layer; each names the path and the step.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup filesystem is mounted (looked in {mountinfo})")]
    NoCgroupFs { mountinfo: PathBuf },
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{0}")]
    Unsupported(String),
}

impl Layout {
    /// Resolves a container's cgroupsPath (absolute, relative, or absent) into its
    /// directories. Relative paths are placed under `/berth`, as runc places them
    /// under its own parent; `None` gives `/berth/<id>`.
    pub fn resolve(
        &self,
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> Result<CgroupHandle, CgroupError> {
        let rel = relative_cgroup_path(cgroups_path, id)?;
        Ok(match self {
            Layout::V1 { controllers } => CgroupHandle::V1 {
                dirs: controllers
                    .iter()
                    .map(|(c, m)| (c.clone(), m.join(&rel)))
                    .collect(),
                unified: None,
            },
            Layout::Hybrid {
                controllers,
                unified,
            } => CgroupHandle::V1 {
                dirs: controllers
                    .iter()
                    .map(|(c, m)| (c.clone(), m.join(&rel)))
                    .collect(),
                unified: Some(unified.join(&rel)),
            },
            Layout::V2 { mount } => CgroupHandle::V2 {
                dir: mount.join(&rel),
            },
        })
    }
}

/// The cgroup path relative to each hierarchy's root, refusing `..` and empty components.
pub fn relative_cgroup_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf, CgroupError> {
    let raw = match cgroups_path {
        None => PathBuf::from("berth").join(id),
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("berth").join(id),
        Some(p) if p.is_absolute() => p
            .strip_prefix("/")
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        Some(p) => PathBuf::from("berth").join(p),
    };
    let s = raw.to_string_lossy().to_string();
    if raw.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath {
            path: s,
            reason: "it names the root cgroup",
        });
    }
    for comp in raw.components() {
        match comp {
            std::path::Component::Normal(_) => {}
            _ => {
                return Err(CgroupError::InvalidPath {
                    path: s,
                    reason: "it must not contain `..` or `.` components",
                })
            }
        }
    }
    Ok(raw)
}

/// Whether the cgroup is frozen (v1 freezer.state FROZEN, v2 cgroup.events frozen 1).
pub fn is_frozen(handle: &CgroupHandle) -> bool {
    resources::is_frozen(handle).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Layout {
        let mut c = BTreeMap::new();
        c.insert("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory"));
        c.insert("pids".to_string(), PathBuf::from("/sys/fs/cgroup/pids"));
        Layout::V1 { controllers: c }
    }

    #[test]
    fn default_path_is_berth_id() {
        let h = v1().resolve(None, "c1").unwrap();
        assert_eq!(
            h.v1_dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/berth/c1")
        );
    }

    #[test]
    fn absolute_and_relative_paths() {
        let h = Layout::V2 {
            mount: "/sys/fs/cgroup".into(),
        }
        .resolve(Some(Path::new("/a/b")), "c1")
        .unwrap();
        assert_eq!(
            h,
            CgroupHandle::V2 {
                dir: "/sys/fs/cgroup/a/b".into()
            }
        );
        let h = Layout::V2 {
            mount: "/sys/fs/cgroup".into(),
        }
        .resolve(Some(Path::new("x")), "c1")
        .unwrap();
        assert_eq!(
            h,
            CgroupHandle::V2 {
                dir: "/sys/fs/cgroup/berth/x".into()
            }
        );
    }

    #[test]
    fn dotdot_refused() {
        assert!(v1().resolve(Some(Path::new("/a/../../etc")), "c1").is_err());
        assert!(v1().resolve(Some(Path::new("/")), "c1").is_err());
    }
}
