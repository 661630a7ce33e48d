//! `exec`: a new process in a running container. berth joins the container's cgroup
//! and namespaces (user first), then forks the process, which applies the container's
//! confinement (rlimits, capabilities, user, seccomp) and execs, through the sealed
//! exec trampoline unless berth runs from an unwritable image (CVE-2019-5736, see
//! [`crate::process::exec_path`]); the process is non-dumpable from birth, as it is
//! visible to the container's processes at once. Failures before exec travel back over
//! a socketpair, as for init; a failure of the final execve inside the trampoline is
//! printed on the process's stderr and ends it with status 127, as init's does.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::state::{ContainerDir, Status};
use super::ContainerError;
use crate::process::confine;
use crate::process::protocol::{Channel, ChannelError, InitError, Message};
use crate::spec::{ProcessPlan, NAMESPACES};
use crate::sys::{self, clone::Forked};

/// What `exec` runs and how.
pub struct ExecOpts {
    pub id: String,
    pub process: ProcessPlan,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    pub ignore_paused: bool,
    /// The container's seccomp profile (exec'd processes get it too).
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// Runs the process; returns its exit code (0 when detached).
pub fn exec(root: &Path, opts: &ExecOpts) -> Result<i32, ContainerError> {
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| ContainerError::Io { step, path, source }
    };
    let state = {
        let dir = ContainerDir::open(root, &opts.id)?;
        let state = dir.load()?;
        let status = state.status(&dir.path);
        match status {
            Status::Running | Status::Created => {}
            Status::Paused if opts.ignore_paused => {}
            _ => {
                return Err(ContainerError::BadStatus {
                    action: "exec in",
                    id: opts.id.clone(),
                    status,
                })
            }
        }
        state
    };
    let p = &opts.process;
    if p.terminal && opts.console_socket.is_none() && opts.detach {
        return Err(ContainerError::Other(
            "--tty needs --console-socket when detached".into(),
        ));
    }
    let seccomp = match &opts.seccomp {
        Some(profile) => Some(
            crate::seccomp::compile_cached(profile, &root.join(".seccomp-cache"))
                .map_err(|e| ContainerError::Other(format!("linux.seccomp: {e}")))?,
        ),
        None => None,
    };
    let trampoline =
        super::create::trampoline_or_reexec(seccomp.as_ref(), |protected, have, fd, allows| {
            crate::process::exec_path::choose_for_exec(
                seccomp.is_some(),
                protected,
                have,
                fd,
                allows,
            )
        })?;
    // Open every namespace of init before joining any (after joining the mount
    // namespace, /proc/<pid> may no longer be reachable).
    let mut joins: Vec<(OwnedFd, i32, &str)> = Vec::new();
    for (_, _, flag, name) in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{}/ns/{name}", state.pid));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if t.ino() == o.ino() && t.dev() == o.dev() {
            continue;
        }
        let fd =
            sys::fs::open(&theirs, libc::O_RDONLY).map_err(io("opening namespace", &theirs))?;
        joins.push((fd, *flag, name));
    }
    // The container's v1 cgroups, for us and so for the child: moving ourselves skips
    // the RCU wait that moving another process costs (see SelfJoin). The v2 cgroup (a
    // hybrid host's unified one included) is joined by the child at birth.
    crate::cgroups::membership::SelfJoin::open(&state.cgroup)?.join_self()?;
    let cgroup_fd = state
        .cgroup
        .v2_dir()
        .and_then(|dir| sys::fs::open(dir, libc::O_RDONLY | libc::O_DIRECTORY).ok());
    let console = match (&opts.console_socket, p.terminal) {
        (Some(path), true) => Some(
            sys::pty::connect_console_socket(path)
                .map_err(io("connecting to console socket", path))?,
        ),
        _ => None,
    };
    let mut own_console = None;
    let console = match console {
        Some(c) => Some(c),
        None if p.terminal => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(io("creating console socketpair", Path::new("-")))?;
            own_console = Some(OwnedFd::from(ours));
            Some(OwnedFd::from(theirs))
        }
        None => None,
    };
    // pid and time namespaces apply to children: join them here. The others are
    // joined by the child, so that this process keeps the host's mounts (for the
    // pid file and the console socket).
    for (fd, flag, name) in &joins {
        if *flag == libc::CLONE_NEWPID || *flag == libc::CLONE_NEWTIME {
            sys::setns(fd.as_raw_fd(), *flag).map_err(io("joining namespace", Path::new(name)))?;
        }
    }
    let (parent_sock, child_sock) =
        sys::seqpacket_pair().map_err(io("creating socketpair", Path::new("-")))?;
    // The child inherits this: from birth, no process of the container (which sees it
    // at once in its pid namespace) can reach its memory or /proc/<pid>/exe, still the
    // host's berth binary until it execs.
    sys::set_dumpable(false).map_err(io("prctl(PR_SET_DUMPABLE, 0)", Path::new("-")))?;
    let old_sigmask = sys::block_all_signals().map_err(io("blocking signals", Path::new("-")))?;
    let forked = sys::clone::fork_into_cgroup(0, cgroup_fd.as_ref().map(AsRawFd::as_raw_fd))
        .map_err(io("forking the process", Path::new("-")))?;
    match forked {
        Forked::Child => {
            drop(parent_sock);
            let chan = Channel::new(child_sock);
            let in_userns = joins
                .iter()
                .any(|(_, flag, _)| *flag == libc::CLONE_NEWUSER);
            let joined = crate::process::init::wait_for(&chan, Message::Go, "Go")
                .and_then(|()| join_in_child(&joins));
            let err = match joined {
                Ok(()) => child(
                    p,
                    seccomp.as_ref(),
                    console.as_ref(),
                    opts.preserve_fds,
                    in_userns,
                    &old_sigmask,
                    trampoline.as_ref(),
                ),
                Err(e) => e,
            };
            let _ = chan.send(&Message::Error(err));
            sys::exit_now(127)
        }
        Forked::Parent { pid, in_cgroup, .. } => {
            drop(joins);
            drop(trampoline);
            drop(child_sock);
            drop(console);
            drop(cgroup_fd);
            let chan = Channel::new(parent_sock);
            // Without CLONE_INTO_CGROUP, the v2 cgroup is joined the usual way.
            let joined = if in_cgroup {
                Ok(())
            } else {
                crate::cgroups::membership::join_v2(&state.cgroup, pid)
            };
            if let Err(e) = joined.map_err(ContainerError::from).and_then(|()| {
                chan.send(&Message::Go)
                    .map_err(|e| ContainerError::Other(format!("exec: {e}")))
            }) {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::wait(pid);
                let _ = sys::set_sigmask(&old_sigmask);
                return Err(e);
            }
            // EOF means the exec succeeded (the socket is close-on-exec).
            match chan.recv() {
                Err(ChannelError::Closed) => {}
                Ok(Message::Error(e)) => {
                    let _ = sys::wait(pid);
                    let _ = sys::set_sigmask(&old_sigmask);
                    return Err(ContainerError::Other(format!("exec failed: {e}")));
                }
                Ok(m) => {
                    return Err(ContainerError::Other(format!(
                        "exec: unexpected message {m:?}"
                    )))
                }
                Err(e) => return Err(ContainerError::Other(format!("exec: {e}"))),
            }
            if let Some(pf) = &opts.pid_file {
                super::state::write_atomic(
                    &super::create::absolute(pf)?,
                    pid.to_string().as_bytes(),
                )?;
            }
            let pty = match &own_console {
                Some(s) => Some(
                    sys::pty::recv_fd(s).map_err(io("receiving the pty master", Path::new("-")))?,
                ),
                None => None,
            };
            if opts.detach {
                let _ = sys::set_sigmask(&old_sigmask);
                return Ok(0);
            }
            let code = super::ops::supervise(pid, pty.as_ref())
                .map_err(io("waiting for the process", Path::new("-")));
            let _ = sys::set_sigmask(&old_sigmask);
            code
        }
    }
}

/// The child joins user (first), mount, network, ipc, uts and cgroup namespaces.
fn join_in_child(joins: &[(OwnedFd, i32, &str)]) -> Result<(), InitError> {
    for (fd, flag, name) in joins {
        if *flag == libc::CLONE_NEWPID || *flag == libc::CLONE_NEWTIME {
            continue;
        }
        sys::setns(fd.as_raw_fd(), *flag)
            .map_err(|e| InitError::io(format!("joining {name} namespace"), None, &e))?;
    }
    Ok(())
}

/// The forked child: confinement, then exec. Returns only on failure.
fn child(
    p: &ProcessPlan,
    seccomp: Option<&crate::seccomp::CompiledFilter>,
    console: Option<&OwnedFd>,
    preserve_fds: u32,
    in_userns: bool,
    old_sigmask: &libc::sigset_t,
    trampoline: Option<&OwnedFd>,
) -> InitError {
    match child_setup(p, seccomp, console, preserve_fds, in_userns) {
        Ok((path, args, env)) => {
            sys::reset_signal_dispositions();
            let _ = sys::set_sigmask(old_sigmask);
            confine::exec_program(trampoline, &path, &args, &env)
        }
        Err(e) => e,
    }
}

type Argv = (CString, Vec<CString>, Vec<CString>);

fn child_setup(
    p: &ProcessPlan,
    seccomp: Option<&crate::seccomp::CompiledFilter>,
    console: Option<&OwnedFd>,
    preserve_fds: u32,
    in_userns: bool,
) -> Result<Argv, InitError> {
    if let Some(console) = console {
        confine::attach_console(console, p.console_size)?;
    }
    confine::set_rlimits(&p.rlimits)?;
    confine::become_user(p, seccomp, in_userns)?;
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    confine::enter_cwd(&p.cwd, preserve_fds)?;
    let path = crate::process::init::lookup(&p.args[0], &p.env)?;
    confine::lock_down(p, seccomp)?;
    let cs = |v: &[String]| -> Vec<CString> {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).unwrap_or_default())
            .collect()
    };
    Ok((path, cs(&p.args), cs(&p.env)))
}
