//! `exec`: a new process in a running container. berth joins the container's v1
//! cgroups, forks a helper into its v2 cgroup, and the helper, unseen by the container,
//! joins its namespaces, confines itself and makes the process in runc's nsexec order
//! (see [`crate::process::exec_helper`]): through the sealed exec trampoline unless
//! berth runs from an unwritable image (CVE-2019-5736, see
//! [`crate::process::exec_path`]). The process is a child of `berth exec`, which reaps
//! the helper and supervises the process. Failures before the process exists travel
//! back over a socketpair, as for init; a failure of the final execve is printed on the
//! process's stderr and ends it with status 127, as init's does. Everything made is
//! undone through one [`Guard`] on any failure.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::guard::Guard;
use super::state::{ContainerDir, State, Status};
use super::ContainerError;
use crate::process::exec_helper::{self, HelperArgs};
use crate::process::protocol::{Channel, ChannelError, Message};
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

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { step, path, source }
}

/// Runs the process; returns its exit code (0 when detached).
pub fn exec(root: &Path, opts: &ExecOpts) -> Result<i32, ContainerError> {
    let state = running_state(root, opts)?;
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
                p.terminal,
                protected,
                have,
                fd,
                allows,
            )
        })?;
    let joins = namespaces_of(&state)?;
    // The container's v1 cgroups, for us and so for the helper and the process: moving
    // ourselves skips the RCU wait that moving another process costs (see SelfJoin).
    // The v2 cgroup (a hybrid host's unified one included) is entered by the helper
    // at birth.
    crate::cgroups::membership::SelfJoin::open(&state.cgroup)?.join_self()?;
    let cgroup_fd = state
        .cgroup
        .v2_dir()
        .and_then(|dir| sys::fs::open(dir, libc::O_RDONLY | libc::O_DIRECTORY).ok());
    let (console, own_console) = console_for(opts)?;
    let (parent_sock, child_sock) =
        sys::seqpacket_pair().map_err(io("creating socketpair", Path::new("-")))?;
    // Inherited by a process forked by berth itself (not through the trampoline).
    sys::set_dumpable(false).map_err(io("prctl(PR_SET_DUMPABLE, 0)", Path::new("-")))?;
    let mut guard = Guard::new();
    // Blocked before any child exists, so that no SIGCHLD is missed; restored by the
    // guard whatever happens, and by the helper before the process starts.
    let old_sigmask = sys::block_all_signals().map_err(io("blocking signals", Path::new("-")))?;
    guard.sigmask(old_sigmask);
    let forked = sys::clone::fork_into_cgroup(0, cgroup_fd.as_ref().map(AsRawFd::as_raw_fd))
        .map_err(io("forking the exec helper", Path::new("-")))?;
    let (helper, in_cgroup) = match forked {
        Forked::Child => {
            drop(parent_sock);
            exec_helper::run(HelperArgs {
                process: p,
                joins: &joins,
                seccomp: seccomp.as_ref(),
                console: console.as_ref(),
                preserve_fds: opts.preserve_fds,
                old_sigmask,
                trampoline: trampoline.as_ref(),
                chan: Channel::new(child_sock),
            })
        }
        Forked::Parent { pid, in_cgroup, .. } => (pid, in_cgroup),
    };
    guard.child(helper);
    drop((joins, trampoline, child_sock, console, cgroup_fd));
    let chan = Channel::new(parent_sock);
    let pid = start_process(&state, &chan, helper, in_cgroup, &mut guard)?;
    if let Some(pf) = &opts.pid_file {
        let pf = super::create::absolute(pf)?;
        super::state::write_atomic(&pf, pid.to_string().as_bytes())?;
    }
    let pty = match &own_console {
        Some(s) => {
            Some(sys::pty::recv_fd(s).map_err(io("receiving the pty master", Path::new("-")))?)
        }
        None => None,
    };
    if opts.detach {
        guard.keep_children();
        return Ok(0);
    }
    let code = super::ops::supervise(pid, pty.as_ref())
        .map_err(io("waiting for the process", Path::new("-")))?;
    guard.keep_children();
    Ok(code)
}

/// The container's state, if it may get a new process.
fn running_state(root: &Path, opts: &ExecOpts) -> Result<State, ContainerError> {
    let dir = ContainerDir::open(root, &opts.id)?;
    let state = dir.load()?;
    let status = state.status(&dir.path);
    match status {
        Status::Running | Status::Created => Ok(state),
        Status::Paused if opts.ignore_paused => Ok(state),
        _ => Err(ContainerError::BadStatus {
            action: "exec in",
            id: opts.id.clone(),
            status,
        }),
    }
}

/// Every namespace of the container's init that is not ours, opened before any is
/// joined, user first.
fn namespaces_of(state: &State) -> Result<Vec<(OwnedFd, i32, &'static str)>, ContainerError> {
    let mut joins = Vec::new();
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
        joins.push((fd, *flag, *name));
    }
    Ok(joins)
}

/// The console socket the helper sends the pty master to (the caller's, or one end of
/// our own pair whose other end, returned second, receives it).
fn console_for(opts: &ExecOpts) -> Result<(Option<OwnedFd>, Option<OwnedFd>), ContainerError> {
    if !opts.process.terminal {
        return Ok((None, None));
    }
    if let Some(path) = &opts.console_socket {
        let c = sys::pty::connect_console_socket(path)
            .map_err(io("connecting to console socket", path))?;
        return Ok((Some(c), None));
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(io("creating console socketpair", Path::new("-")))?;
    Ok((Some(OwnedFd::from(theirs)), Some(OwnedFd::from(ours))))
}

/// Lets the helper go and waits for the pid of the process it made; reaps the helper.
/// The process is then ours to undo in `guard`.
fn start_process(
    state: &State,
    chan: &Channel,
    helper: i32,
    in_cgroup: bool,
    guard: &mut Guard,
) -> Result<i32, ContainerError> {
    let fail = |what: String| ContainerError::Other(format!("exec: {what}"));
    // Without CLONE_INTO_CGROUP, the v2 cgroup is joined the usual way.
    if !in_cgroup {
        crate::cgroups::membership::join_v2(&state.cgroup, helper)?;
    }
    chan.send(&Message::Go).map_err(|e| fail(e.to_string()))?;
    let report = chan.recv_raw();
    let status = sys::wait(helper).map_err(io("waiting for the exec helper", Path::new("-")))?;
    guard.reaped(helper);
    let packet = match report {
        Ok(p) => p,
        Err(ChannelError::Closed) => {
            return Err(fail(format!(
                "the helper ended without starting the process (exit status {})",
                sys::exit_code(status)
            )))
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    if let Some(pid) = exec_helper::decode_pid(&packet) {
        // Only our own child is supervised (and killed on failure).
        if !sys::is_child(pid) {
            return Err(fail(format!(
                "the reported pid {pid} is not a child of berth"
            )));
        }
        guard.child(pid);
        // The process holds its end until its exec succeeds or it exits (a failed
        // exec says why on stderr): once it is closed, the program runs, as after
        // `runc exec` returns.
        return match chan.recv_raw() {
            Err(ChannelError::Closed) => Ok(pid),
            Ok(_) => Err(fail("unexpected packet after the pid report".into())),
            Err(e) => Err(fail(format!("waiting for the process's exec: {e}"))),
        };
    }
    match serde_json::from_slice::<Message>(&packet) {
        Ok(Message::Error(e)) => Err(ContainerError::Other(format!("exec failed: {e}"))),
        Ok(m) => Err(fail(format!("unexpected message {m:?}"))),
        Err(e) => Err(fail(format!("malformed report from the helper: {e}"))),
    }
}
