//! The confinement steps shared by a container's init and by `exec`'d processes:
//! terminal, rlimits, user and capabilities, host descriptors and cwd, and the final
//! no_new_privs + seccomp. Each runs in the forked child, between setup and execve.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::process::exec_path::TrampolineMode;
use crate::process::protocol::InitError;
use crate::seccomp::CompiledFilter;
use crate::spec::ProcessPlan;
use crate::sys;

/// Makes a pty from /dev/ptmx (the container's own devpts, once inside it), sends its
/// master over the console socket and takes the slave as stdio; with `take`, also as
/// the controlling terminal of a new session (an `exec`'d process takes it itself,
/// once cloned: see [`crate::process::exec_path::TrampolineMode::Spawn`]).
pub fn attach_console(
    console: &OwnedFd,
    size: Option<(u16, u16)>,
    take: bool,
) -> Result<(), InitError> {
    let (master, slave) = sys::pty::open_pty()
        .map_err(|e| InitError::io("opening a pty", Some(Path::new("/dev/ptmx")), &e))?;
    if let Some((rows, cols)) = size {
        let _ = sys::pty::set_winsize(&master, rows, cols);
    }
    sys::pty::send_fd(console, "/dev/ptmx", &master)
        .map_err(|e| InitError::io("sending the pty master to the console socket", None, &e))?;
    drop(master);
    if take {
        sys::take_terminal(std::os::fd::AsRawFd::as_raw_fd(&slave))
            .map_err(|e| InitError::io("making the pty the controlling terminal", None, &e))?;
    }
    sys::pty::dup_to_stdio(&slave)
        .map_err(|e| InitError::io("making the pty stdin, stdout and stderr", None, &e))
}

/// setrlimit for each (resource, soft, hard).
pub fn set_rlimits(rlimits: &[(u32, u64, u64)]) -> Result<(), InitError> {
    for (res, soft, hard) in rlimits {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        if sys::setrlimit(*res, &lim) != 0 {
            let e = std::io::Error::last_os_error();
            return Err(InitError::io(
                format!("setrlimit({})", rlimit_name(*res)),
                None,
                &e,
            ));
        }
    }
    Ok(())
}

fn rlimit_name(res: u32) -> &'static str {
    crate::spec::rlimits::RLIMITS
        .iter()
        .find(|(_, r)| *r == res)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

/// Switches to the process's user, groups and capabilities, in the order the kernel
/// accepts: seccomp first when no_new_privs is off (it still needs CAP_SYS_ADMIN), the
/// bounding set dropped and caps kept across the uid change, then groups, gid, uid, and
/// the remaining capability sets.
pub fn become_user(
    p: &ProcessPlan,
    seccomp: Option<&CompiledFilter>,
    in_userns: bool,
) -> Result<(), InitError> {
    if !p.no_new_privileges {
        if let Some(f) = seccomp {
            crate::seccomp::install(f)
                .map_err(|e| InitError::msg("installing seccomp filter", None, e.to_string()))?;
        }
    }
    if let Some(c) = &p.capabilities {
        crate::capabilities::drop_bounding(c)
            .map_err(|e| InitError::msg("dropping bounding capabilities", None, e.to_string()))?;
        crate::capabilities::keep_caps().map_err(|e| {
            InitError::msg("keeping capabilities across setuid", None, e.to_string())
        })?;
    }
    let gids: Vec<nix::unistd::Gid> = p
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        // In a user namespace with setgroups denied, only an empty list is possible.
        if !(in_userns && gids.is_empty()) {
            return Err(InitError::io("setgroups", None, &std::io::Error::from(e)));
        }
    }
    let g = nix::unistd::Gid::from_raw(p.gid);
    nix::unistd::setresgid(g, g, g)
        .map_err(|e| InitError::io(format!("setresgid({})", p.gid), None, &e.into()))?;
    let u = nix::unistd::Uid::from_raw(p.uid);
    nix::unistd::setresuid(u, u, u)
        .map_err(|e| InitError::io(format!("setresuid({})", p.uid), None, &e.into()))?;
    if let Some(c) = &p.capabilities {
        crate::capabilities::apply_after_setuid(c)
            .map_err(|e| InitError::msg("setting capabilities", None, e.to_string()))?;
    }
    Ok(())
}

/// Nothing of the host may reach the program: every descriptor above stdio and the
/// preserved ones is closed (not only marked close-on-exec: the program's path is
/// resolved before exec would close them; CVE-2024-21626), except `keep` (berth's own
/// channel, start fifo and trampoline, none of them a directory); the preserved ones
/// lose close-on-exec.
pub fn close_host_fds(preserve_fds: u32, keep: &[std::os::fd::RawFd]) -> Result<(), InitError> {
    sys::close_fds_from(3 + preserve_fds, keep)
        .map_err(|e| InitError::io("closing the runtime's descriptors", None, &e))?;
    for fd in 3..3 + preserve_fds as i32 {
        let _ = sys::set_cloexec(fd, false);
    }
    Ok(())
}

/// Enters the process's cwd and checks that it is inside the container's root
/// (CVE-2024-21626). Done before the seccomp filter exists, whose profile may refuse
/// getcwd.
pub fn enter_cwd(cwd: &Path) -> Result<(), InitError> {
    std::env::set_current_dir(cwd).map_err(|e| InitError::io("chdir to cwd", Some(cwd), &e))?;
    let now = std::env::current_dir().map_err(|e| InitError::io("getcwd", None, &e))?;
    if !now.is_absolute() || now.to_string_lossy().starts_with("(unreachable)") {
        return Err(InitError::msg(
            "checking cwd",
            Some(cwd),
            "the working directory is outside the container's root",
        ));
    }
    Ok(())
}

/// The last step before execve when no_new_privs is on: set it, then install seccomp.
pub fn lock_down(p: &ProcessPlan, seccomp: Option<&CompiledFilter>) -> Result<(), InitError> {
    if p.no_new_privileges {
        sys::set_no_new_privs()
            .map_err(|e| InitError::io("prctl(PR_SET_NO_NEW_PRIVS)", None, &e))?;
        if let Some(f) = seccomp {
            crate::seccomp::install(f)
                .map_err(|e| InitError::msg("installing seccomp filter", None, e.to_string()))?;
        }
    }
    Ok(())
}

/// The final exec of the program (`path` found by PATH lookup, `args`, `env`): through
/// the sealed trampoline in `mode` when there is one (see
/// [`crate::process::exec_path`]), else directly. Returns only on failure.
pub fn exec_program(
    trampoline: Option<(&OwnedFd, TrampolineMode)>,
    path: &std::ffi::CStr,
    args: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> InitError {
    let shown = Path::new(&*path.to_string_lossy()).to_path_buf();
    match trampoline {
        Some((t, mode)) => {
            let e = sys::trampoline::exec(t, mode, path, args, env);
            InitError::io("exec through the sealed trampoline", Some(&shown), &e)
        }
        None => match nix::unistd::execve(path, args, env) {
            Ok(never) => match never {},
            Err(e) => InitError::io("exec", Some(&shown), &std::io::Error::from(e)),
        },
    }
}

/// The program's argv and env as C strings (a NUL inside one ends it there; config.json
/// strings cannot carry NUL).
pub fn c_strings(v: &[String]) -> Vec<std::ffi::CString> {
    v.iter()
        .map(|s| {
            let bytes = s.as_bytes();
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            std::ffi::CString::new(&bytes[..end]).unwrap_or_default()
        })
        .collect()
}
