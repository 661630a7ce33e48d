//! The agent's few system calls: pidfds, the boot-time clock, fifos, children's signal
//! masks.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

use super::instance::ExitStatus;

/// Milliseconds on CLOCK_BOOTTIME: monotonic, and it keeps counting while the host is
/// suspended (a host that wakes from a long sleep must see its run lease as expired).
pub fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Makes `cmd`'s child start with no signal blocked. berthd blocks SIGTERM and SIGINT (they
/// arrive through its signalfd), and a child inherits the mask through fork and exec:
/// `berth create` handed it on to the container's program, which then never received a
/// stop's SIGTERM (every stop waited for TimeoutStopSec and SIGKILL), and `berth exec`
/// to what it runs.
pub fn unblock_signals_in_child(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // sigemptyset and sigprocmask, which are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        })
    }
}

/// A pidfd for `pid` (readable once the process has exited).
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| Errno::EINVAL)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps the process behind `pidfd` if it has exited and is our child. `Ok(None)`: still
/// running. A process that is not our child (adopted after a restart) exits with an
/// unknown status.
pub fn reap_pidfd(pidfd: &OwnedFd) -> Result<Option<ExitStatus>, Errno> {
    match waitid(
        Id::PIDFd(pidfd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    ) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::Code(code))),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(ExitStatus::Signal(sig as i32))),
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(_) => Ok(None),
        Err(Errno::ECHILD) => Ok(Some(ExitStatus::Unknown)),
        Err(e) => Err(e),
    }
}

/// Makes berthd the reaper of every process its children leave behind (a container's init,
/// once `berth create` has exited), so it gets their exit statuses.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Creates a fifo at `path` (mode 0600) if nothing is there.
pub fn ensure_fifo(path: &Path) -> Result<(), Errno> {
    match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Raises a pipe's buffer (best effort: the kernel caps it at fs.pipe-max-size).
pub fn grow_pipe(fd: &impl AsFd, bytes: i32) {
    let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes));
}

/// Reaps exited children of this process that nobody waits for: processes of a container
/// (a child pid namespace) reparented to berthd, the subreaper, when their own parent died.
/// Only zombies in a nested pid namespace are reaped, so the children berthd's own threads
/// spawn and wait for by pid (berth invocations, CNI plugins) keep their exit statuses.
/// `tracked` are the pids the agent reaps itself (through their pidfds).
pub fn reap_orphans(tracked: &dyn Fn(u32) -> bool) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if tracked(pid) || !is_container_zombie(pid) {
                continue;
            }
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(raw),
                Some(WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// A zombie whose pid namespace is nested below ours (`NSpid:` lists more than one pid).
fn is_container_zombie(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    let nested = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .is_some_and(|l| l.split_whitespace().count() > 2);
    zombie && nested
}

/// Makes the mount at `path` and every mount below it read-only (mount_setattr(2) with
/// AT_RECURSIVE and MOUNT_ATTR_RDONLY; Linux 5.12).
pub fn make_tree_readonly(path: &Path) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    /// `struct mount_attr` (linux/mount.h): attributes to set and clear, propagation,
    /// user namespace fd.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated string and `attr` a properly sized, initialised
    // struct mount_attr that both outlive the call; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
