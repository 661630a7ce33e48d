//! start, kill, delete, and run's supervision loop.

use std::path::Path;

use super::create::Created;
use super::state::{ContainerDir, State, Status};
use super::ContainerError;
use crate::cgroups;
use crate::process::protocol::Message;
use crate::sys;

/// `start`: releases a created container's init by writing into exec.fifo.
pub fn start(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    let status = state.status(&dir.path);
    if status != Status::Created {
        return Err(ContainerError::BadStatus {
            action: "start",
            id: id.into(),
            status,
        });
    }
    let fifo = dir.fifo_path();
    // Non-blocking: if init is gone there is no reader and open fails with ENXIO.
    let fd = sys::fs::open(&fifo, libc::O_WRONLY | libc::O_NONBLOCK).map_err(|source| {
        ContainerError::Io {
            step: "opening",
            path: fifo.clone(),
            source,
        }
    })?;
    nix::unistd::write(&fd, b"0").map_err(|e| ContainerError::Io {
        step: "writing",
        path: fifo.clone(),
        source: e.into(),
    })?;
    drop(fd);
    std::fs::remove_file(&fifo).map_err(|source| ContainerError::Io {
        step: "removing",
        path: fifo,
        source,
    })?;
    run_warn_hooks(&state, crate::hooks::HookKind::Poststart, Status::Running);
    Ok(())
}

/// poststart and poststop: failures are warnings, as the runtime spec says.
pub fn run_warn_hooks(state: &State, kind: crate::hooks::HookKind, status: Status) {
    let Some(hooks) = crate::spec::load(&state.bundle)
        .ok()
        .and_then(|s| s.hooks().clone())
    else {
        return;
    };
    let list = kind.of(&hooks);
    if list.is_empty() {
        return;
    }
    let st = serde_json::to_vec(&state.spec_state(status)).unwrap_or_default();
    for e in crate::hooks::run_hooks_all(list, &st) {
        eprintln!("berth: warning: {} hook: {e}", kind.name());
    }
}

/// `kill`: sends `sig` to init, or with `all` to every process in the cgroup.
pub fn kill(root: &Path, id: &str, sig: i32, all: bool) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let state = dir.load()?;
    let status = state.status(&dir.path);
    if status == Status::Stopped && !all {
        return Err(ContainerError::BadStatus {
            action: "kill",
            id: id.into(),
            status,
        });
    }
    if all {
        signal_all(&state, sig)?;
        return Ok(());
    }
    sys::kill(state.pid, sig).map_err(|source| ContainerError::Io {
        step: "sending signal to",
        path: format!("pid {}", state.pid).into(),
        source,
    })
}

fn signal_all(state: &State, sig: i32) -> Result<(), ContainerError> {
    let frozen = cgroups::is_frozen(&state.cgroup);
    for pid in cgroups::membership::pids(&state.cgroup)? {
        let _ = sys::kill(pid, sig);
    }
    if frozen && sig == libc::SIGKILL {
        // A frozen task only dies once thawed.
        thaw(&state.cgroup);
    }
    Ok(())
}

fn thaw(cg: &cgroups::CgroupHandle) {
    match cg {
        cgroups::CgroupHandle::V1 { dirs, .. } => {
            if let Some(d) = dirs.get("freezer") {
                let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            }
        }
        cgroups::CgroupHandle::V2 { dir } => {
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        }
    }
}

/// `delete`: removes a stopped (or created) container; `force` kills a running one.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), ContainerError> {
    let dir = match ContainerDir::open(root, id) {
        Ok(d) => d,
        Err(ContainerError::NotExist(_)) if force => {
            // Leftovers of a half-made container: remove the directory if any.
            let _ = std::fs::remove_dir_all(root.join(id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let state = match dir.load() {
        Ok(s) => s,
        Err(e) => {
            if force {
                dir.remove()?;
                return Ok(());
            }
            return Err(e);
        }
    };
    let status = state.status(&dir.path);
    match status {
        Status::Stopped | Status::Created => {}
        _ if force => {}
        _ => {
            return Err(ContainerError::Other(format!(
                "cannot delete container {id} that is not stopped: {status}"
            )))
        }
    }
    destroy(&dir, &state, status)
}

/// Kills what is left, removes the cgroup and the state dir.
pub fn destroy(dir: &ContainerDir, state: &State, status: Status) -> Result<(), ContainerError> {
    if status != Status::Stopped {
        let _ = sys::kill(state.pid, libc::SIGKILL);
    }
    kill_all_and_wait(state);
    cgroups::membership::remove(&state.cgroup)?;
    run_warn_hooks(state, crate::hooks::HookKind::Poststop, Status::Stopped);
    dir.remove()
}

/// SIGKILLs every process in the cgroup until it is empty (bounded wait).
fn kill_all_and_wait(state: &State) {
    for round in 0..200 {
        let pids = cgroups::membership::pids(&state.cgroup).unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        if round == 0 && cgroups::is_frozen(&state.cgroup) {
            for p in &pids {
                let _ = sys::kill(*p, libc::SIGKILL);
            }
            thaw(&state.cgroup);
        }
        for p in pids {
            let _ = sys::kill(p, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(if round < 10 {
            1
        } else {
            10
        }));
    }
}

/// `run` in the foreground: starts init, forwards signals to it, reaps children and
/// returns the shell-style exit code. Signals were blocked before the clone, so a
/// SIGCHLD from a container that exits at once cannot be missed.
pub fn run_foreground(created: Created, keep: bool) -> Result<i32, ContainerError> {
    let Created {
        dir,
        state,
        chan,
        old_sigmask,
        ..
    } = created;
    let pid = state.pid;
    chan.send(&Message::Start)
        .map_err(|e| ContainerError::Other(format!("starting container: {e}")))?;
    drop(chan);
    run_warn_hooks(&state, crate::hooks::HookKind::Poststart, Status::Running);
    // Unlock: `state`, `kill` and `delete` from other processes must work while we wait.
    let dir_path = dir.path.clone();
    drop(dir);
    let set = sys::full_sigset();
    let code = loop {
        // Reap first: the exit may already have happened.
        let mut exited = None;
        while let Ok(Some((p, status))) = sys::try_wait_any() {
            if p == pid {
                exited = Some(sys::exit_code(status));
            }
        }
        if let Some(c) = exited {
            break c;
        }
        match sys::sigtimedwait(&set, 1000) {
            Ok(Some(info)) => {
                let sig = info.si_signo;
                if sig != libc::SIGCHLD {
                    let _ = sys::kill(pid, sig);
                }
            }
            Ok(None) => {
                // Periodic check: someone may have reaped or deleted it.
                if sys::process_state(pid).is_none() {
                    break 0;
                }
            }
            Err(e) => {
                return Err(ContainerError::Io {
                    step: "waiting for signals",
                    path: "-".into(),
                    source: e,
                })
            }
        }
    };
    let _ = sys::set_sigmask(&old_sigmask);
    if !keep {
        let root = dir_path.parent().unwrap_or(Path::new("/"));
        if let Ok(dir) = ContainerDir::open(root, &state.id) {
            destroy(&dir, &state, Status::Stopped)?;
        }
    }
    Ok(code)
}
