//! linux.resources -> cgroupfs writes, for v1 and v2.
//!
//! [`plan`] validates a `LinuxResources` and turns it into an ordered list of
//! [`Write`]s for one cgroup version (pure; unit-tested). [`apply`] carries a plan out
//! on a [`CgroupHandle`]; the v1/v2 decision is only ever a match on the handle.
//! [`update`] applies a partial `LinuxResources` over the saved one (as `runc update`).
//! `freezer` pauses and resumes, `stats` reads what `events` prints.
//! Device rules are files on v1 (devices.allow/deny) and an eBPF program on v2
//! ([`plan_devices_v2`], attached by [`set`] and [`update`]).
//!
//! The writes go straight to cgroupfs (no cgroups-rs): each is one file of the
//! container's directory, which keeps plans comparable and tests able to run against
//! a fake tree in a temp dir. Files are opened without O_CREAT, so a file the kernel
//! does not provide is an error naming it (or, for writes marked optional, skipped).

pub mod devices_attach;
pub mod devices_bpf;
pub mod freezer;
pub mod stats;
mod util;
mod v1;
mod v2;

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxResources};

use super::{CgroupError, CgroupHandle, Version};

pub use freezer::{freeze, is_frozen, thaw};
pub use stats::{oom_kill_count, stats, Stats, StatsEvent};

/// Errors of the resources layer; each names the spec field, file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid linux.resources.{field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("linux.resources.{field} is not supported on cgroup {version}: {reason}")]
    Unsupported {
        field: String,
        version: &'static str,
        reason: &'static str,
    },
    #[error(
        "cgroup controller {controller:?} is not mounted (needed for linux.resources.{field})"
    )]
    NoController { controller: String, field: String },
    #[error(
        "{path} does not exist: the kernel does not offer it (needed for linux.resources.{field})"
    )]
    MissingFile { path: PathBuf, field: String },
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} did not reach {want:?} (last read {got:?})")]
    Timeout {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// One cgroupfs write: `value` into `file` of the directory of `controller` (on v2 the
/// one directory; `controller` then only says which controller the file belongs to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    /// The spec field this write carries out (for error messages).
    pub field: &'static str,
    /// Used instead when `file` does not exist (e.g. blkio.bfq.weight -> blkio.weight).
    pub fallback: Option<(String, String)>,
    /// Skip silently when neither file exists (implied values, e.g. memsw -1).
    pub optional: bool,
}

impl Write {
    pub(crate) fn new(
        controller: &'static str,
        file: impl Into<String>,
        value: impl ToString,
        field: &'static str,
    ) -> Write {
        Write {
            controller,
            file: file.into(),
            value: value.to_string(),
            field,
            fallback: None,
            optional: false,
        }
    }
    pub(crate) fn or(mut self, file: impl Into<String>, value: impl ToString) -> Write {
        self.fallback = Some((file.into(), value.to_string()));
        self
    }
    pub(crate) fn optional(mut self) -> Write {
        self.optional = true;
        self
    }
}

/// Validates `r` and plans its writes for cgroup `version`.
pub fn plan(r: &LinuxResources, version: Version) -> Result<Vec<Write>, ResourceError> {
    match version {
        Version::V1 => v1::plan(r),
        Version::V2 => v2::plan(r),
    }
}

/// Carries out `writes` on the cgroup. On v1, a memory limit and a memory+swap limit
/// given together are written in the order the kernel accepts (memsw >= limit must
/// hold after each write), which depends on the current memsw value.
pub fn apply(handle: &CgroupHandle, writes: &[Write]) -> Result<(), ResourceError> {
    let mut files = OpenFile::default();
    match handle {
        CgroupHandle::V1 { .. } => {
            let ordered = v1::order_memory(handle, writes);
            for w in &ordered {
                let dir =
                    handle
                        .v1_dir(w.controller)
                        .ok_or_else(|| ResourceError::NoController {
                            controller: w.controller.to_string(),
                            field: w.field.to_string(),
                        })?;
                write_one(dir, w, &mut files)?;
            }
        }
        CgroupHandle::V2 { dir } => {
            for w in writes {
                write_one(dir, w, &mut files)?;
            }
        }
    }
    Ok(())
}

/// The v2 device program for `r`: the spec's rules in order, then runc's default
/// allow list (as on v1). `None` when `r` gives no device rules.
pub fn plan_devices_v2(
    r: &LinuxResources,
) -> Result<Option<Vec<devices_bpf::BpfInsn>>, ResourceError> {
    let Some(devs) = r.devices() else {
        return Ok(None);
    };
    let mut all = devs.clone();
    all.extend(default_device_rules());
    Ok(Some(devices_bpf::program(&devices_bpf::rules(&all)?)?))
}

/// `r` validated and translated for one cgroup version: the file writes and, on v2,
/// the device program. Pure: made before the container exists, applied later.
#[derive(Debug, Clone)]
pub struct Prepared {
    writes: Vec<Write>,
    devices_v2: Option<Vec<devices_bpf::BpfInsn>>,
}

/// Validates and translates `r` for `version` without touching any cgroup.
pub fn prepare(r: &LinuxResources, version: Version) -> Result<Prepared, ResourceError> {
    let writes = plan(r, version)?;
    let devices_v2 = match version {
        Version::V1 => None,
        Version::V2 => plan_devices_v2(r)?,
    };
    Ok(Prepared { writes, devices_v2 })
}

/// Writes what [`prepare`] made for this handle's version.
pub fn apply_prepared(handle: &CgroupHandle, p: &Prepared) -> Result<(), ResourceError> {
    apply(handle, &p.writes)?;
    match (handle, &p.devices_v2) {
        (CgroupHandle::V2 { dir }, Some(prog)) => devices_attach::attach(dir, prog),
        _ => Ok(()),
    }
}

/// Plans and applies `r` on the cgroup: the file writes, and on v2 the device program.
/// Everything is validated before the first write.
pub fn set(handle: &CgroupHandle, r: &LinuxResources) -> Result<(), ResourceError> {
    apply_prepared(handle, &prepare(r, handle.version())?)
}

/// `update`: applies the parts of `patch` that are given, merged over `saved` (the
/// resources the container runs with), and returns the merged resources to save.
/// Only the subsystems named in `patch` are written; within them, fields not in
/// `patch` keep their saved values (so e.g. a new cpu period keeps the saved quota).
pub fn update(
    handle: &CgroupHandle,
    saved: &LinuxResources,
    patch: &LinuxResources,
) -> Result<LinuxResources, ResourceError> {
    let merged = util::merge(saved, patch);
    set(handle, &util::restrict(&merged, patch))?;
    Ok(merged)
}

/// The file the last write went to, kept open for the next: the v1 device rules are a
/// dozen writes to devices.allow, and each open walks the kernfs path again. A cgroup
/// file takes every write(2) as a value of its own, whatever the offset.
#[derive(Default)]
struct OpenFile(Option<(PathBuf, std::fs::File)>);

/// Why a write did not happen: the file is not there, or the open or write failed.
enum WriteFailure {
    Missing,
    Failed(std::io::Error),
}

impl OpenFile {
    fn write(&mut self, path: &Path, value: &str) -> Result<(), WriteFailure> {
        let file = match &mut self.0 {
            Some((open, file)) if open == path => file,
            slot => {
                *slot = None;
                // No O_CREAT: a file the kernel does not provide stays missing.
                let file = match OpenOptions::new().write(true).truncate(true).open(path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(WriteFailure::Missing),
                    Err(e) => return Err(WriteFailure::Failed(e)),
                };
                &mut slot.insert((path.to_path_buf(), file)).1
            }
        };
        file.write_all(value.as_bytes())
            .map_err(WriteFailure::Failed)
    }
}

/// `w` into `dir`: its file, else its fallback file, else nothing if it is optional.
fn write_one(dir: &Path, w: &Write, files: &mut OpenFile) -> Result<(), ResourceError> {
    let failed = |path: PathBuf, value: &str, source| {
        ResourceError::from(CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        })
    };
    let path = dir.join(&w.file);
    match files.write(&path, &w.value) {
        Ok(()) => return Ok(()),
        Err(WriteFailure::Failed(e)) => return Err(failed(path, &w.value, e)),
        Err(WriteFailure::Missing) => {}
    }
    if let Some((f, v)) = &w.fallback {
        let fallback = dir.join(f);
        match files.write(&fallback, v) {
            Ok(()) => return Ok(()),
            Err(WriteFailure::Failed(e)) => return Err(failed(fallback, v, e)),
            Err(WriteFailure::Missing) => {}
        }
    }
    if w.optional {
        return Ok(());
    }
    Err(ResourceError::MissingFile {
        path,
        field: w.field.to_string(),
    })
}

/// runc's default device allow list, applied after the spec's rules on v1 (as runc's
/// specconv appends it): mknod of any device, /dev/null, zero, full, random, urandom,
/// tty, ptmx, the pts devices, and /dev/net/tun. Not /dev/console (c 5:1): runc dropped
/// it, as a container root could mknod the host's console and read or write it.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceType::{B, C};
    let rule = |t, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(t));
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(access.to_string()));
        d
    };
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),
        rule(C, Some(1), Some(8), "rwm"),
        rule(C, Some(1), Some(7), "rwm"),
        rule(C, Some(5), Some(0), "rwm"),
        rule(C, Some(1), Some(5), "rwm"),
        rule(C, Some(1), Some(9), "rwm"),
        rule(C, Some(136), None, "rwm"),
        rule(C, Some(5), Some(2), "rwm"),
        rule(C, Some(10), Some(200), "rwm"),
    ]
}

/// Allow rules ("rwm") for the device nodes of linux.devices, which the caller appends
/// to linux.resources.devices so the container can use the nodes it is given. Only
/// character and block devices: the device cgroup knows no fifos (a fifo is just made).
pub fn device_rules_for(devices: &[LinuxDevice]) -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceType::{B, C, U};
    devices
        .iter()
        .filter(|d| matches!(d.typ(), C | U | B))
        .map(|d| {
            let mut r = LinuxDeviceCgroup::default();
            r.set_allow(true);
            r.set_typ(Some(d.typ()));
            r.set_major(Some(d.major()));
            r.set_minor(Some(d.minor()));
            r.set_access(Some("rwm".to_string()));
            r
        })
        .collect()
}

/// What Berth's cgroup code supports, for features.json.
pub const SUPPORTS_V1: bool = true;
pub const SUPPORTS_V2: bool = true;
pub const SUPPORTS_SYSTEMD: bool = false;
pub const SUPPORTS_RDMA: bool = false;

/// The `linux.cgroup` section of features.json, from the constants above.
pub fn features() -> oci_spec::runtime::Cgroup {
    let mut c = oci_spec::runtime::Cgroup::default();
    c.set_v1(Some(SUPPORTS_V1));
    c.set_v2(Some(SUPPORTS_V2));
    c.set_systemd(Some(SUPPORTS_SYSTEMD));
    c.set_systemd_user(Some(SUPPORTS_SYSTEMD));
    c.set_rdma(Some(SUPPORTS_RDMA));
    c
}

#[cfg(test)]
mod tests;
