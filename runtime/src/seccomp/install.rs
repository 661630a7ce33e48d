//! Installing a compiled filter in the calling thread: the syscall seam.

use super::compile::CompiledFilter;
use super::SeccompError;

/// Installs `filter`'s program in the calling thread with seccomp(2), with the
/// profile's flags (TSYNC only if the profile asked for it).
///
/// Does not set no_new_privs: the kernel accepts a filter only from a thread that has
/// no_new_privs set or holds CAP_SYS_ADMIN in its user namespace. The caller therefore
/// either sets no_new_privs first (process.noNewPrivileges) and installs as the last
/// step before execve, or, without noNewPrivileges, installs while it still holds
/// CAP_SYS_ADMIN, before dropping capabilities (as runc does); the profile must then
/// allow the syscalls init makes afterwards (capset, setuid, execve ...).
///
/// Allocates nothing, so it may run in a forked child.
pub fn install(filter: &CompiledFilter) -> Result<(), SeccompError> {
    let len = u16::try_from(filter.program.len()).map_err(|_| SeccompError::Install {
        index: 0,
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    let fprog = libc::sock_fprog {
        len,
        // Insn is #[repr(C)] with the same fields as the kernel's struct sock_filter,
        // so the pointer cast is layout-compatible.
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) only reads `fprog` and the `len`
    // instructions it points to (copied into the kernel); both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(filter.flags),
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        let source = if rc > 0 {
            // TSYNC: the id of a thread that could not be synchronised.
            std::io::Error::other(format!("thread {rc} could not be synchronised"))
        } else {
            std::io::Error::last_os_error()
        };
        return Err(SeccompError::Install { index: 0, source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::compile_cached;

    fn fork_and_check(profile_json: &str, probe: fn() -> i32) -> i32 {
        let dir = tempfile::tempdir().unwrap();
        let p: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(profile_json).unwrap();
        let f = compile_cached(&p, dir.path()).unwrap();
        // SAFETY: the child only makes raw syscalls (prctl, seccomp, mkdir, _exit) on
        // memory prepared before the fork; no locks or allocation.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = match install(&f) {
                Ok(()) => probe(),
                Err(_) => 200,
            };
            // SAFETY: ends the forked child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    /// mkdir under the filter: returns the errno it failed with (0 = it succeeded).
    fn mkdir_errno() -> i32 {
        let path = c"/nonexistent-berth-probe/dir";
        // SAFETY: a constant NUL-terminated path.
        let r = unsafe { libc::mkdir(path.as_ptr(), 0o700) };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    }

    /// clone3(NULL, 0): EINVAL from the kernel, or what the filter returns instead.
    fn clone3_errno() -> i32 {
        // SAFETY: clone3 with a null argument and size 0 fails before touching memory.
        let r = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    }

    /// unshare(0) succeeds without a filter.
    fn unshare_errno() -> i32 {
        // SAFETY: unshare with no flags changes nothing.
        let r = unsafe { libc::unshare(0) };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    }

    #[test]
    fn docker_profile_errnos_in_a_real_process() {
        let allow = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        assert_eq!(fork_and_check(allow, clone3_errno), libc::EINVAL);
        assert_eq!(fork_and_check(allow, unshare_errno), 0);
        let docker = include_str!("testdata/docker-default.json");
        // clone3 has its own entry (ENOSYS, so libcs fall back to clone).
        assert_eq!(fork_and_check(docker, clone3_errno), libc::ENOSYS);
        // unshare is not in the allow list: the default errno (EPERM).
        assert_eq!(fork_and_check(docker, unshare_errno), libc::EPERM);
    }

    #[test]
    fn blocked_syscall_returns_configured_errno() {
        // mkdir under a missing parent fails with ENOENT normally; under the filter it must
        // fail with the configured errno instead, before the kernel looks at the path.
        let allow = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        assert_eq!(fork_and_check(allow, mkdir_errno), libc::ENOENT);
        let deny = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":77}]}"#;
        assert_eq!(fork_and_check(deny, mkdir_errno), 77);
        // The Docker-style profile lets mkdir through.
        let docker = include_str!("testdata/docker-default.json");
        assert_eq!(fork_and_check(docker, mkdir_errno), libc::ENOENT);
    }
}
