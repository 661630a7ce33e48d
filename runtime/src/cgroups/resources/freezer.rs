//! pause / resume: the v1 freezer controller or v2's cgroup.freeze.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ResourceError;
use crate::cgroups::membership::write_file;
use crate::cgroups::CgroupHandle;

/// How long freezing may take before giving up (tasks in uninterruptible sleep delay
/// it; generous on purpose).
const FREEZE_WAIT: Duration = Duration::from_secs(10);

fn read(path: &Path) -> Result<String, ResourceError> {
    std::fs::read_to_string(path).map_err(|e| ResourceError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn freezer_dir(handle: &CgroupHandle) -> Result<PathBuf, ResourceError> {
    handle
        .v1_dir("freezer")
        .map(Path::to_path_buf)
        .ok_or_else(|| ResourceError::NoController {
            controller: "freezer".into(),
            field: "(pause/resume)".into(),
        })
}

/// The value of `frozen` in a v2 cgroup.events file.
fn events_frozen(text: &str) -> Option<bool> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "frozen")
        .map(|(_, v)| v.trim() == "1")
}

/// Polls `check` until it holds, rewriting `state` into `file` on the way (a v1 freeze
/// can stall in FREEZING while tasks are in the middle of a fork: writing again
/// retries it).
fn wait_for(
    file: &Path,
    state: &str,
    observe: &Path,
    want: &str,
    check: impl Fn(&str) -> bool,
) -> Result<(), ResourceError> {
    write_file(file, state)?;
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let got = read(observe)?;
        if check(&got) {
            return Ok(());
        }
        if start.elapsed() > FREEZE_WAIT {
            return Err(ResourceError::Timeout {
                path: observe.to_path_buf(),
                want: want.to_string(),
                got: got.trim().to_string(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
        write_file(file, state)?;
    }
}

/// Freezes every task of the cgroup and waits until the kernel reports it frozen.
pub fn freeze(handle: &CgroupHandle) -> Result<(), ResourceError> {
    match handle {
        CgroupHandle::V1 { .. } => {
            let f = freezer_dir(handle)?.join("freezer.state");
            let r = wait_for(&f, "FROZEN", &f, "FROZEN", |s| s.trim() == "FROZEN");
            if r.is_err() {
                // Do not leave it half frozen.
                let _ = write_file(&f, "THAWED");
            }
            r
        }
        CgroupHandle::V2 { dir } => {
            let f = dir.join("cgroup.freeze");
            let ev = dir.join("cgroup.events");
            let r = wait_for(&f, "1", &ev, "frozen 1", |s| events_frozen(s) == Some(true));
            if r.is_err() {
                let _ = write_file(&f, "0");
            }
            r
        }
    }
}

/// Thaws the cgroup and waits until the kernel reports it thawed.
pub fn thaw(handle: &CgroupHandle) -> Result<(), ResourceError> {
    match handle {
        CgroupHandle::V1 { .. } => {
            let f = freezer_dir(handle)?.join("freezer.state");
            wait_for(&f, "THAWED", &f, "THAWED", |s| s.trim() == "THAWED")
        }
        CgroupHandle::V2 { dir } => {
            let ev = dir.join("cgroup.events");
            wait_for(&dir.join("cgroup.freeze"), "0", &ev, "frozen 0", |s| {
                events_frozen(s) == Some(false)
            })
        }
    }
}

/// Whether the cgroup is frozen (for `state` to report `paused`). A cgroup without a
/// freezer (v1 host lacking the controller) is never frozen.
pub fn is_frozen(handle: &CgroupHandle) -> Result<bool, ResourceError> {
    match handle {
        CgroupHandle::V1 { .. } => match handle.v1_dir("freezer") {
            None => Ok(false),
            Some(d) => Ok(read(&d.join("freezer.state"))?.trim() == "FROZEN"),
        },
        CgroupHandle::V2 { dir } => {
            Ok(events_frozen(&read(&dir.join("cgroup.events"))?) == Some(true))
        }
    }
}
