//! The helper `berth exec` forks to start a process in a container, in runc's nsexec
//! order: the helper is not in the container's pid namespace, so no container process
//! can see it while it is still berth, holds host descriptors, or has the host's root.
//! It joins every namespace of the container (user first; the pid and time ones apply
//! to its children), which also gives it the container's root and cwd; closes every
//! descriptor berth does not need; applies the process's confinement (terminal,
//! rlimits, cwd, user and capabilities, seccomp); and only then makes the process,
//! which is born in the pid namespace fully confined and as the sealed exec trampoline
//! (or as berth's own unwritable image, when it runs from one), and reports its pid:
//!
//! ```text
//!  berth exec (parent)               helper (host pid ns)         process (container)
//!  fork_into_cgroup ───────────────▶ waits
//!  [no CLONE_INTO_CGROUP] joins v2
//!  ──────────── Go ───────────────▶ setns(user, mnt, ...,
//!                                     pid, time); closes fds;
//!                                     confines itself; execs
//!                                     the trampoline (or forks)
//!                                     clone(CLONE_PARENT) ──────▶ [tty] setsid, TIOCSCTTY
//!  ◀──── pid (4 bytes) | Error ──── exits 0                       execve(program)
//!  reaps the helper, supervises the process (its parent)
//! ```

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::process::confine;
use crate::process::exec_path::TrampolineMode;
use crate::process::protocol::{Channel, InitError, Message};
use crate::seccomp::CompiledFilter;
use crate::spec::ProcessPlan;
use crate::sys;

/// What the helper needs, in its copy of the parent's memory.
pub struct HelperArgs<'a> {
    pub process: &'a ProcessPlan,
    /// The container's namespaces that differ from ours: (descriptor, CLONE_NEW*,
    /// name), user first.
    pub joins: &'a [(OwnedFd, i32, &'static str)],
    pub seccomp: Option<&'a CompiledFilter>,
    /// process.terminal: the console socket to send the pty master to.
    pub console: Option<&'a OwnedFd>,
    pub preserve_fds: u32,
    pub old_sigmask: libc::sigset_t,
    /// The sealed trampoline; `None` when berth runs from an unwritable image.
    pub trampoline: Option<&'a OwnedFd>,
    pub chan: Channel,
}

/// Runs the helper; never returns. A failure before the process exists travels back
/// as `Error`; the process's pid travels back as 4 bytes (see [`decode_pid`]).
pub fn run(a: HelperArgs<'_>) -> ! {
    let err = match setup(&a) {
        Ok(argv) => spawn(&a, argv),
        Err(e) => e,
    };
    let _ = a.chan.send(&Message::Error(err));
    sys::exit_now(127)
}

/// The program's path, argv and env.
type Argv = (
    std::ffi::CString,
    Vec<std::ffi::CString>,
    Vec<std::ffi::CString>,
);

fn setup(a: &HelperArgs<'_>) -> Result<Argv, InitError> {
    let p = a.process;
    crate::process::init::wait_for(&a.chan, Message::Go, "Go")?;
    for (fd, flag, name) in a.joins {
        sys::setns(fd.as_raw_fd(), *flag)
            .map_err(|e| InitError::io(format!("joining the {name} namespace"), None, &e))?;
    }
    let in_userns = a
        .joins
        .iter()
        .any(|(_, flag, _)| *flag == libc::CLONE_NEWUSER);
    // From here on only the channel, the trampoline and the console socket are berth's.
    let mut keep = vec![a.chan.fd().as_raw_fd()];
    keep.extend(a.trampoline.map(AsRawFd::as_raw_fd));
    keep.extend(a.console.map(AsRawFd::as_raw_fd));
    confine::close_host_fds(a.preserve_fds, &keep)?;
    if let Some(console) = a.console {
        confine::attach_console(console, p.console_size, false)?;
        sys::close_raw(console.as_raw_fd());
    }
    confine::set_rlimits(&p.rlimits)?;
    confine::enter_cwd(&p.cwd)?;
    confine::become_user(p, a.seccomp, in_userns)?;
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    let path = lookup(&p.args[0], &p.env)?;
    confine::lock_down(p, a.seccomp)?;
    Ok((
        path,
        confine::c_strings(&p.args),
        confine::c_strings(&p.env),
    ))
}

/// The program's path as init finds it, except a path into /proc/self or
/// /proc/thread-self (a preserved descriptor, say): it names the process, which does
/// not exist yet (the helper is not in the container's pid namespace), so it is left
/// to the process's own execve to resolve (a failure exits 127, as any exec failure).
fn lookup(arg0: &str, env: &[String]) -> Result<std::ffi::CString, InitError> {
    if arg0.starts_with("/proc/self/") || arg0.starts_with("/proc/thread-self/") {
        return std::ffi::CString::new(arg0)
            .map_err(|_| InitError::msg("looking up the program", None, "path contains NUL"));
    }
    crate::process::init::lookup(arg0, env)
}

/// Makes the process: through the trampoline, or forking here. Returns only on failure.
fn spawn(a: &HelperArgs<'_>, (path, args, env): Argv) -> InitError {
    let report = a.chan.fd().as_raw_fd();
    let tty = a.console.is_some();
    sys::reset_signal_dispositions();
    let _ = sys::set_sigmask(&a.old_sigmask);
    if let Some(t) = a.trampoline {
        if let Err(e) = sys::set_cloexec(report, false) {
            return InitError::io("passing the channel to the trampoline", None, &e);
        }
        let mode = TrampolineMode::Spawn {
            report_fd: report,
            tty,
        };
        return confine::exec_program(Some((t, mode)), &path, &args, &env);
    }
    match sys::fork_sibling() {
        Ok(0) => process(report, tty, &path, &args, &env),
        Ok(pid) => match sys::send(a.chan.fd(), &encode_pid(pid)) {
            Ok(()) => sys::exit_now(0),
            Err(e) => InitError::io("reporting the process's pid", None, &e),
        },
        Err(e) => InitError::io("clone(CLONE_PARENT) of the process", None, &e),
    }
}

/// The process, forked by the helper itself (berth runs from an unwritable image): what
/// the trampoline does in [`TrampolineMode::Spawn`]. Never returns.
fn process(
    report: RawFd,
    tty: bool,
    path: &std::ffi::CStr,
    args: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> ! {
    // Open until the exec, whose closing of it tells `berth exec` the program runs.
    let err = if let Err(e) = sys::set_cloexec(report, true) {
        InitError::io("marking the report channel close-on-exec", None, &e)
    } else {
        match tty.then(|| sys::take_terminal(0)) {
            Some(Err(e)) => InitError::io("making the pty the controlling terminal", None, &e),
            _ => confine::exec_program(None, path, args, env),
        }
    };
    eprintln!("berth init: {err}");
    sys::exit_now(127)
}

/// The pid report: 4 bytes in native order, as the trampoline writes it.
pub fn encode_pid(pid: i32) -> [u8; 4] {
    pid.to_ne_bytes()
}

/// A pid report, or `None` for any other packet. A pid is at most 2^22 (the kernel's
/// PID_MAX_LIMIT), so its report always holds a zero byte and no JSON message of 4
/// bytes (such as `"Go"`) passes for one.
pub fn decode_pid(packet: &[u8]) -> Option<i32> {
    let b: [u8; 4] = packet.try_into().ok()?;
    let pid = i32::from_ne_bytes(b);
    (1..=1 << 22).contains(&pid).then_some(pid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pid_reports_round_trip_and_are_never_json() {
        for pid in [1, 2, 4_194_304, 12_345] {
            let b = super::encode_pid(pid);
            assert_eq!(super::decode_pid(&b), Some(pid));
            assert!(serde_json::from_slice::<serde_json::Value>(&b).is_err());
        }
        assert_eq!(super::decode_pid(b"\"Go\""), None);
        assert_eq!(super::decode_pid(&0i32.to_ne_bytes()), None);
    }
}
