//! clone3 with a fallback to clone: fork-like (no new stack), with CLONE_NEW* flags.
//!
//! Only ever called from a single-threaded process: the child continues on a copy of
//! the parent's memory, which is safe exactly when no other thread could hold a lock.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// What a fork-like clone returns on each side.
pub enum Forked {
    Child,
    Parent {
        pid: i32,
        pidfd: Option<OwnedFd>,
        /// The child was created directly in the requested cgroup (CLONE_INTO_CGROUP).
        in_cgroup: bool,
    },
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

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
/// a pidfd where clone3 is available, and creating the child directly in the cgroup v2
/// directory `cgroup` when given (CLONE_INTO_CGROUP: no migration afterwards, which on cgroup
/// hosts costs an RCU grace period). If the kernel refuses that, the child is created
/// where we are and `in_cgroup` is false: the caller joins it the usual way.
pub fn fork_into_cgroup(flags: i32, cgroup: Option<RawFd>) -> io::Result<Forked> {
    if let Some(fd) = cgroup {
        match clone3(flags, Some(fd)) {
            Ok(f) => return Ok(f),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::E2BIG)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    clone3(flags, None)
}

fn clone3(flags: i32, cgroup: Option<RawFd>) -> io::Result<Forked> {
    let mut pidfd: i32 = -1;
    let mut args = CloneArgs {
        flags: flags as u32 as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut i32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
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
            in_cgroup: cgroup.is_some(),
        });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) || cgroup.is_some() {
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
            in_cgroup: false,
        }),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child cloned into a cgroup2 directory is in it from its first instruction.
    #[test]
    fn clone_into_cgroup_v2() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it creates a cgroup)"
        );
        let mount = match crate::cgroups::detect().expect("cgroup layout") {
            crate::cgroups::Layout::V2 { mount } => mount,
            crate::cgroups::Layout::Hybrid { unified, .. } => unified,
            crate::cgroups::Layout::V1 { .. } => {
                panic!("this test needs a cgroup2 mount (v2 or hybrid host)")
            }
        };
        let name = format!("berth-clone-into-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).expect("create test cgroup");
        let fd =
            crate::sys::fs::open(&dir, libc::O_RDONLY | libc::O_DIRECTORY).expect("open cgroup");
        let forked = fork_into_cgroup(0, Some(std::os::fd::AsRawFd::as_raw_fd(&fd)));
        let (pid, in_cgroup) = match forked {
            // Only async-signal-safe calls in the child of a multithreaded test process.
            // SAFETY: pause and _exit are async-signal-safe.
            Ok(Forked::Child) => unsafe {
                libc::pause();
                libc::_exit(0)
            },
            Ok(Forked::Parent { pid, in_cgroup, .. }) => (pid, in_cgroup),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("clone3: {e}");
            }
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let _ = crate::sys::kill(pid, libc::SIGKILL);
        let _ = crate::sys::wait(pid);
        let _ = std::fs::remove_dir(&dir);
        assert!(in_cgroup);
        assert!(cg.lines().any(|l| l == format!("0::/{name}")), "{cg}");
    }
}
