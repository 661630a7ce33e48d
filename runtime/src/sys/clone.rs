//! clone3 with a fallback to clone: fork-like (no new stack), with CLONE_NEW* flags.
//!
//! Only ever called from a single-threaded process: the child continues on a copy of
//! the parent's memory, which is safe exactly when no other thread could hold a lock.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// What a fork-like clone returns on each side.
pub enum Forked {
    Child,
    Parent { pid: i32, pidfd: Option<OwnedFd> },
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Clones the calling (single-threaded) process with `flags` (CLONE_NEW*), asking for
/// a pidfd where clone3 is available.
pub fn fork_with_flags(flags: i32) -> io::Result<Forked> {
    let mut pidfd: i32 = -1;
    let mut args = CloneArgs {
        flags: flags as u32 as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without a stack behaves like fork: the child resumes here on a
    // copy of our memory. The args struct outlives the call; the kernel writes the
    // pidfd into our local.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        return Ok(Forked::Child);
    }
    if r > 0 {
        // SAFETY: the kernel just created this descriptor for us.
        let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        return Ok(Forked::Parent {
            pid: r as i32,
            pidfd,
        });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Kernels before 5.3 have no clone3: plain clone, without a pidfd.
    // SAFETY: as for clone3: a null stack makes clone fork-like.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match r {
        0 => Ok(Forked::Child),
        r if r > 0 => Ok(Forked::Parent {
            pid: r as i32,
            pidfd: None,
        }),
        _ => Err(io::Error::last_os_error()),
    }
}
