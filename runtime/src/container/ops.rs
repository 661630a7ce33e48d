//! start, kill, delete, and run's supervision loop.

use std::path::Path;

use super::create::Created;
use super::state::{ContainerDir, State, Status};
use super::ContainerError;
use crate::cgroups;
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
    let io = |step: &'static str| {
        let path = fifo.clone();
        move |source: std::io::Error| ContainerError::Io { step, path, source }
    };
    // Non-blocking: if init is gone there is no reader and open fails with ENXIO.
    let fd = sys::fs::open(&fifo, libc::O_WRONLY | libc::O_NONBLOCK).map_err(io("opening"))?;
    // With poststart hooks, also a reader, opened while init's end is still open: it
    // sees the fifo hang up once init's end closes, at the program's exec.
    let has_poststart = state
        .hooks
        .as_ref()
        .is_some_and(|h| !crate::hooks::HookKind::Poststart.of(h).is_empty());
    let exec_seen = if has_poststart {
        Some(sys::fs::open(&fifo, libc::O_RDONLY | libc::O_NONBLOCK).map_err(io("opening"))?)
    } else {
        None
    };
    nix::unistd::write(&fd, b"0").map_err(|e| io("writing")(e.into()))?;
    drop(fd);
    std::fs::remove_file(&fifo).map_err(io("removing"))?;
    if let Some(r) = exec_seen {
        sys::wait_hangup(&r).map_err(io("waiting for the program's exec on"))?;
        run_warn_hooks(&state, crate::hooks::HookKind::Poststart, Status::Running);
    }
    Ok(())
}

/// poststart and poststop: failures are warnings, as the runtime spec says.
pub fn run_warn_hooks(state: &State, kind: crate::hooks::HookKind, status: Status) {
    let Some(hooks) = &state.hooks else {
        return;
    };
    let list = kind.of(hooks);
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
        let _ = cgroups::resources::thaw(&state.cgroup);
    }
    Ok(())
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
            let _ = cgroups::resources::thaw(&state.cgroup);
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

/// `run`'s start, after `create` queued `Start` on the channel: with poststart hooks,
/// they run once init's end of the channel has closed, at the program's exec (or its
/// death), as the runtime-spec says.
pub fn after_start(state: &State, chan: crate::process::protocol::Channel) {
    let has_poststart = state
        .hooks
        .as_ref()
        .is_some_and(|h| !crate::hooks::HookKind::Poststart.of(h).is_empty());
    if has_poststart {
        while chan.recv().is_ok() {}
        run_warn_hooks(state, crate::hooks::HookKind::Poststart, Status::Running);
    }
}

/// `run` in the foreground: starts init, forwards signals to it, reaps children and
/// returns the shell-style exit code. Signals were blocked before the clone, so a
/// SIGCHLD from a container that exits at once cannot be missed. With a terminal,
/// the pty is wired to the caller's stdin/stdout (raw mode while it runs).
pub fn run_foreground(created: Created, keep: bool) -> Result<i32, ContainerError> {
    let Created {
        dir,
        state,
        chan,
        old_sigmask,
        pty_master,
        ..
    } = created;
    let pid = state.pid;
    after_start(&state, chan);
    // Unlock: `state`, `kill` and `delete` from other processes must work while we wait.
    let dir_path = dir.path.clone();
    drop(dir);
    let code = supervise(pid, pty_master.as_ref()).map_err(|source| ContainerError::Io {
        step: "supervising the container",
        path: dir_path.clone(),
        source,
    });
    let _ = sys::set_sigmask(&old_sigmask);
    let code = code?;
    if !keep {
        let root = dir_path.parent().unwrap_or(Path::new("/"));
        if let Ok(dir) = ContainerDir::open(root, &state.id) {
            destroy(&dir, &state, Status::Stopped)?;
        }
    }
    Ok(code)
}

/// Waits for `pid` (our child) while forwarding signals to it and, with a pty,
/// copying stdin to the pty and the pty to stdout. Every signal must be blocked.
pub fn supervise(pid: i32, pty: Option<&std::os::fd::OwnedFd>) -> std::io::Result<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SigSet, SignalFd};
    use std::os::fd::{AsFd, AsRawFd};

    let sfd = SignalFd::with_flags(
        &SigSet::all(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(std::io::Error::from)?;
    let stdin = std::io::stdin();
    let raw = match pty {
        Some(m) => crate::sys::pty::RawMode::enter(stdin.as_fd(), m).ok(),
        None => None,
    };
    let mut stdin_open = pty.is_some();
    let mut pty_open = pty.is_some();
    // Only a pty is copied through here.
    let mut buf = if pty.is_some() {
        vec![0u8; 16 * 1024]
    } else {
        Vec::new()
    };
    let mut exited: Option<i32> = None;
    loop {
        while let Ok(Some((p, status))) = sys::try_wait_any() {
            if p == pid {
                exited = Some(sys::exit_code(status));
            }
        }
        if let Some(code) = exited {
            // Drain what the program wrote before it exited.
            if let Some(m) = pty.filter(|_| pty_open) {
                while let Ok(n) = nix::unistd::read(m, &mut buf) {
                    if n == 0 || write_all(1, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
            drop(raw);
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = pty.filter(|_| pty_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                match sig {
                    libc::SIGCHLD => {}
                    libc::SIGWINCH => {
                        if let (Some(m), Some(_)) = (pty, raw.as_ref()) {
                            crate::sys::pty::copy_winsize(stdin.as_fd().as_raw_fd(), m);
                        }
                    }
                    _ => {
                        let _ = sys::kill(pid, sig);
                    }
                }
            }
        }
        let mut idx = 1;
        if let Some(m) = pty.filter(|_| pty_open) {
            if ready[idx] {
                match nix::unistd::read(m, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => pty_open = false,
                    Ok(n) => {
                        let _ = write_all(1, &buf[..n]);
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => pty_open = false,
                }
            }
            idx += 1;
            if stdin_open && ready[idx] {
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let _ = write_all(m.as_raw_fd(), &buf[..n]);
                    }
                }
            }
        }
        if exited.is_none() && sys::process_state(pid).is_none() {
            // Reaped elsewhere: nothing more to learn.
            return Ok(0);
        }
    }
}

fn write_all(fd: i32, mut b: &[u8]) -> std::io::Result<()> {
    // SAFETY: the descriptor stays open for the duration of the call; we only borrow it.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !b.is_empty() {
        match nix::unistd::write(f, b) {
            Ok(n) => b = &b[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
