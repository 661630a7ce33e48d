//! The container's init: runs in the cloned child, sets everything up, reports back,
//! waits to be started, then execs the container program (through the sealed exec
//! trampoline unless berth already runs from an unwritable image; see
//! [`crate::process::exec_path`]). Never returns.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cgroups::CgroupHandle;
use crate::process::confine;
use crate::process::exec_path::TrampolineMode;
use crate::process::protocol::{Channel, InitError, Message};
use crate::spec::{NsKind, Plan};
use crate::sys;

/// How init learns it may exec the program.
pub enum StartSignal {
    /// `berth create`: `berth start` writes a byte into exec.fifo (opened read-write
    /// here, so opening it never blocks).
    Fifo(OwnedFd),
    /// `berth run`: the parent sends `Start` over the channel.
    Channel,
}

/// Everything init needs; it lives in the child's copy of the parent's memory.
pub struct InitArgs<'a> {
    pub id: &'a str,
    pub plan: &'a Plan,
    pub cgroup: &'a CgroupHandle,
    pub cgroup_rel: &'a Path,
    /// The v1 cgroup files init moves itself in with.
    pub self_join: crate::cgroups::membership::SelfJoin,
    /// The v1 cgroup is made while init mounts its rootfs: its files arrive with
    /// `CgroupReady`, awaited before the first cgroup mount.
    pub cgroup_deferred: bool,
    pub chan: Channel,
    pub start: StartSignal,
    /// Namespaces are joined by path and created with unshare, not by clone.
    pub slow_path: bool,
    /// Namespaces the clone left out for init to unshare first thing (see
    /// [`crate::container::create`]): made while the parent builds the cgroup.
    pub late_unshare: libc::c_int,
    /// A pid namespace joined by path: init builds the container outside it and forks
    /// the container's init into it at the end ([`spawn_into_pid_ns`]).
    pub spawn: bool,
    pub old_sigmask: libc::sigset_t,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// The compiled seccomp filter, installed last (or before the uid change when
    /// noNewPrivileges is off, while init still has CAP_SYS_ADMIN).
    pub seccomp: Option<crate::seccomp::CompiledFilter>,
    /// process.terminal: the console socket to send the pty master to.
    pub console: Option<OwnedFd>,
    /// The idmapped binds `create` prepared, by mount (see [`crate::rootfs::idmap`]).
    pub idmapped: Vec<Option<OwnedFd>>,
    /// The sealed exec trampoline (close-on-exec memfd) the program is exec'd
    /// through; `None` when berth itself runs from an unwritable image
    /// ([`crate::process::exec_path`]).
    pub trampoline: Option<OwnedFd>,
}

/// Runs init; reports a failure to the parent and exits.
pub fn run(args: InitArgs<'_>) -> ! {
    // No parent-death signal: after `create` returns, init must outlive it. If the
    // parent dies during setup, the channel closes and init exits on its own.
    match setup(&args) {
        Ok(path) => {
            let err = finish(&args, &path);
            // The parent may be gone (create mode): tell the container's stderr too.
            let _ = args.chan.send(&Message::Error(err.clone()));
            eprintln!("berth init: {err}");
            sys::exit_now(127)
        }
        Err(e) => {
            let _ = args.chan.send(&Message::Error(e));
            sys::exit_now(1)
        }
    }
}

fn setup(a: &InitArgs<'_>) -> Result<CString, InitError> {
    let plan = a.plan;
    let pid_ns = if a.slow_path {
        join_and_unshare(a)?
    } else {
        None
    };
    if a.late_unshare != 0 {
        sys::unshare(a.late_unshare)
            .map_err(|e| InitError::io("unshare(network, ipc namespaces)", None, &e))?;
    }
    wait_for(&a.chan, Message::Go, "Go")?;
    if !a.cgroup_deferred {
        enter_cgroup(a, &a.self_join)?;
    }
    if plan.namespaces.has(NsKind::User) {
        // Become root of the user namespace where root is mapped.
        let root_mapped = |m: &[crate::spec::IdMap]| m.iter().any(|x| x.container_id == 0);
        if plan.namespaces.joins(NsKind::User)
            || (root_mapped(&plan.uid_mappings) && root_mapped(&plan.gid_mappings))
        {
            setresgid(0).map_err(|e| InitError::io("setresgid(0) in user namespace", None, &e))?;
            setresuid(0).map_err(|e| InitError::io("setresuid(0) in user namespace", None, &e))?;
        }
    }
    // setsid only fails if we already lead a group.
    let _ = nix::unistd::setsid();
    if !a.no_new_keyring {
        let name = format!("_ses.{}", a.id);
        match sys::join_session_keyring(&name) {
            Ok(()) => {}
            // Kernels without keyrings, or a seccomp'd host: not fatal, as in runc.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {}
            Err(e) => return Err(InitError::io("joining session keyring", None, &e)),
        }
    }

    let mut entered = !a.cgroup_deferred;
    let mut enter_deferred = || -> Result<Option<OwnedFd>, InitError> {
        if entered {
            return Ok(None);
        }
        entered = true;
        let (m, mut fds) = a
            .chan
            .recv_with_fds(64)
            .map_err(|e| InitError::msg("waiting for the cgroup", None, e.to_string()))?;
        let Message::CgroupReady { tasks, tree } = m else {
            return Err(InitError::msg(
                "waiting for the cgroup",
                None,
                format!("unexpected message {m:?}"),
            ));
        };
        if tasks.len() + usize::from(tree) != fds.len() {
            return Err(InitError::msg(
                "waiting for the cgroup",
                None,
                format!("{} paths but {} descriptors", tasks.len(), fds.len()),
            ));
        }
        let tree = if tree { fds.pop() } else { None };
        enter_cgroup(
            a,
            &crate::cgroups::membership::SelfJoin::from_received(tasks, fds),
        )?;
        Ok(tree)
    };
    let root = crate::rootfs::prepare(
        plan,
        &a.idmapped,
        a.cgroup,
        a.cgroup_rel,
        &mut enter_deferred,
        pid_ns.as_ref().map(std::os::fd::AsFd::as_fd),
    )?;
    if let Some(h) = &plan.hooks {
        use crate::hooks::HookKind;
        if !HookKind::Prestart.of(h).is_empty() || !HookKind::CreateRuntime.of(h).is_empty() {
            a.chan.send(&Message::RuntimeHooks).map_err(|e| {
                InitError::msg("asking for createRuntime hooks", None, e.to_string())
            })?;
            wait_for(&a.chan, Message::HooksDone, "HooksDone")?;
        }
        let hooks = HookKind::CreateContainer.of(h);
        if !hooks.is_empty() {
            crate::hooks::run_hooks(
                hooks,
                &a.plan
                    .hook_state(a.id, "creating", std::process::id() as i32),
            )
            .map_err(|e| InitError::msg("createContainer hook", None, e.to_string()))?;
        }
    }
    let crate::rootfs::Rootfs { root, proc } = root;
    crate::rootfs::enter(&root, &plan.rootfs, a.no_pivot)?;
    drop(root);
    let proc = crate::rootfs::finish(plan, proc)?;

    if let Some(console) = &a.console {
        // The pty comes from the container's own devpts (we are inside it now).
        confine::attach_console(console, plan.process.console_size, true)?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h)
            .map_err(|e| InitError::io("sethostname", None, &std::io::Error::from(e)))?;
    }
    if let Some(d) = &plan.domainname {
        setdomainname(d).map_err(|e| InitError::io("setdomainname", None, &e))?;
    }
    // Outside the procfs's pid namespace (spawn), the parent wrote it.
    if let (Some(adj), Some(proc), false) = (plan.process.oom_score_adj, &proc, a.spawn) {
        crate::rootfs::procfs::write_oom_score_adj(proc, adj)?;
    }
    drop(proc);
    // Only the channel, the start fifo and the trampoline stay open: no host directory
    // (the cgroup's, the state dir's) may be reachable by a process that sees init, or
    // by the program's path.
    let mut keep = vec![a.chan.fd().as_raw_fd()];
    keep.extend(start_fd(a));
    keep.extend(a.trampoline.as_ref().map(AsRawFd::as_raw_fd));
    keep.extend(pid_ns.as_ref().map(AsRawFd::as_raw_fd));
    confine::close_host_fds(a.preserve_fds, &keep)?;
    confine::set_rlimits(&plan.process.rlimits)?;
    let p = &plan.process;
    confine::enter_cwd(&p.cwd)?;
    if a.spawn {
        spawn_into_pid_ns(a, pid_ns)?;
    }
    confine::become_user(p, a.seccomp.as_ref(), plan.namespaces.has(NsKind::User))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        p.umask.unwrap_or(0o022),
    ));
    lookup(&p.args[0], &p.env)
}

/// The descriptor `berth start` signals through (exec.fifo), if any.
fn start_fd(a: &InitArgs<'_>) -> Option<i32> {
    match &a.start {
        StartSignal::Fifo(fd) => Some(fd.as_raw_fd()),
        StartSignal::Channel => None,
    }
}

/// The end of init: with the trampoline, init becomes it now and it reports ready,
/// waits for start and execs the program, so a process that enters the container
/// finds neither berth nor a host descriptor in init. Without (berth runs from an
/// unwritable image), init reports ready, waits, runs startContainer hooks and execs.
/// Returns only on failure.
fn finish(a: &InitArgs<'_>, path: &CString) -> InitError {
    let args = confine::c_strings(&a.plan.process.args);
    let env = confine::c_strings(&a.plan.process.env);
    let chan = a.chan.fd().as_raw_fd();
    if let Some(t) = &a.trampoline {
        if let Err(e) = confine::lock_down(&a.plan.process, a.seccomp.as_ref()) {
            return e;
        }
        let wait_fd = start_fd(a).unwrap_or(chan);
        for fd in [chan, wait_fd] {
            if let Err(e) = sys::set_cloexec(fd, false) {
                return InitError::io("passing descriptors to the trampoline", None, &e);
            }
        }
        sys::reset_signal_dispositions();
        let _ = sys::set_sigmask(&a.old_sigmask);
        let mode = TrampolineMode::Wait {
            ready_fd: chan,
            wait_fd,
        };
        return confine::exec_program(Some((t, mode)), path, &args, &env);
    }
    // Other processes may enter the container once it is ready (`berth exec` into a
    // created one): none without CAP_SYS_PTRACE may reach this process's memory.
    if let Err(e) = sys::set_dumpable(false) {
        return InitError::io("prctl(PR_SET_DUMPABLE, 0)", None, &e);
    }
    if let Err(e) = a.chan.send(&Message::Ready) {
        return InitError::msg("reporting ready", None, e.to_string());
    }
    if let Err(e) = wait_for_start(a) {
        return e;
    }
    if let Some(h) = &a.plan.hooks {
        let hooks = crate::hooks::HookKind::StartContainer.of(h);
        if !hooks.is_empty() {
            if let Err(e) = crate::hooks::run_hooks(
                hooks,
                &a.plan
                    .hook_state(a.id, "created", std::process::id() as i32),
            ) {
                return InitError::msg("startContainer hook", None, e.to_string());
            }
        }
    }
    if let Err(e) = confine::lock_down(&a.plan.process, a.seccomp.as_ref()) {
        return e;
    }
    sys::reset_signal_dispositions();
    let _ = sys::set_sigmask(&a.old_sigmask);
    // The channel and exec.fifo (neither a directory) are close-on-exec: they close
    // at the exec, which tells `start` (or `run`) that the program runs.
    confine::exec_program(None, path, &args, &env)
}

/// Waits for `berth start` (a byte in exec.fifo) or, under `run`, for `Start`.
fn wait_for_start(a: &InitArgs<'_>) -> Result<(), InitError> {
    match &a.start {
        StartSignal::Fifo(fd) => {
            let mut b = [0u8; 1];
            loop {
                match nix::unistd::read(fd, &mut b) {
                    Ok(1) => return Ok(()),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(InitError::io(
                            "waiting for start on exec.fifo",
                            None,
                            &e.into(),
                        ))
                    }
                }
            }
        }
        StartSignal::Channel => wait_for(&a.chan, Message::Start, "Start"),
    }
}

/// Moves init into its cgroup and, when the container has a new cgroup namespace, makes
/// it now: the namespace's root is then the container's cgroup, as with runc.
fn enter_cgroup(
    a: &InitArgs<'_>,
    join: &crate::cgroups::membership::SelfJoin,
) -> Result<(), InitError> {
    join.join_self().map_err(|e| match e {
        crate::cgroups::CgroupError::Write { path, source, .. } => {
            InitError::io("joining the cgroup: writing 0 to", Some(&path), &source)
        }
        other => InitError::msg("joining the cgroup", None, other.to_string()),
    })?;
    if a.plan.namespaces.creates(NsKind::Cgroup) {
        sys::unshare(libc::CLONE_NEWCGROUP)
            .map_err(|e| InitError::io("unshare(cgroup)", None, &e))?;
    }
    Ok(())
}

pub(crate) fn wait_for(chan: &Channel, want: Message, name: &'static str) -> Result<(), InitError> {
    chan.expect(want, name)
        .map_err(|e| InitError::msg(format!("waiting for {name}"), None, e.to_string()))
}

/// Slow path: join namespaces by path (user first), then create the new ones.
///
/// A pid namespace to join (with [`InitArgs::spawn`]; else the parent joined it) is
/// opened and returned: the procfs is made for it, and it is joined once the container
/// is built ([`spawn_into_pid_ns`]); only when the container makes a user namespace of
/// its own, which would leave init without the privilege over the pid namespace's
/// owner, is it joined now (setns(pid) applies to children only, so init itself still
/// stays outside; createContainer hooks then start inside it).
fn join_and_unshare(a: &InitArgs<'_>) -> Result<Option<OwnedFd>, InitError> {
    let ns = &a.plan.namespaces;
    let mut pid_ns = None;
    for (kind, path) in &ns.join {
        if *kind == NsKind::Pid && !a.spawn {
            continue; // joined by the parent before clone
        }
        let fd = sys::fs::open(path, libc::O_RDONLY | libc::O_CLOEXEC)
            .map_err(|e| InitError::io("opening namespace", Some(path), &e))?;
        if *kind == NsKind::Pid {
            if ns.creates(NsKind::User) {
                sys::setns(fd.as_raw_fd(), libc::CLONE_NEWPID)
                    .map_err(|e| InitError::io("joining pid namespace", Some(path), &e))?;
            }
            pid_ns = Some(fd);
            continue;
        }
        sys::setns(fd.as_raw_fd(), kind.clone_flag()).map_err(|e| {
            InitError::io(
                format!("joining {} namespace", kind.spec_name()),
                Some(path),
                &e,
            )
        })?;
    }
    let new = ns.new_flags & !libc::CLONE_NEWPID;
    if new & libc::CLONE_NEWUSER != 0 {
        sys::unshare(libc::CLONE_NEWUSER).map_err(|e| InitError::io("unshare(user)", None, &e))?;
        a.chan
            .send(&Message::NeedIdMaps)
            .map_err(|e| InitError::msg("asking for id maps", None, e.to_string()))?;
        wait_for(&a.chan, Message::IdMapsWritten, "IdMapsWritten")?;
    }
    let rest = new & !(libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP);
    if rest != 0 {
        sys::unshare(rest).map_err(|e| InitError::io("unshare(namespaces)", None, &e))?;
    }
    Ok(pid_ns)
}

/// A pid namespace joined by path (a pod's, another container's): the processes
/// already in it must never see init while it holds the host's root, cwd or
/// descriptors, which /proc/<pid> shows to one with CAP_SYS_PTRACE. So init builds
/// the container outside that namespace; now, pivoted, in the container's cwd and with
/// no host descriptor, it joins it (`pid_ns`, unless joined before) and forks the
/// container's init into it (CLONE_PARENT: a child of `create`), born non-dumpable,
/// reports its pid (`InitPid`) and exits. Returns in the new init, once that report
/// is sent, so it precedes everything the new init says.
fn spawn_into_pid_ns(a: &InitArgs<'_>, pid_ns: Option<OwnedFd>) -> Result<(), InitError> {
    match pid_ns {
        Some(fd) if !a.plan.namespaces.creates(NsKind::User) => {
            sys::setns(fd.as_raw_fd(), libc::CLONE_NEWPID)
                .map_err(|e| InitError::io("joining pid namespace", None, &e))?;
        }
        _ => {}
    }
    sys::set_dumpable(false).map_err(|e| InitError::io("prctl(PR_SET_DUMPABLE, 0)", None, &e))?;
    let (reported, report_done) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| InitError::io("pipe2", None, &e.into()))?;
    let pid = sys::fork_sibling()
        .map_err(|e| InitError::io("forking init into the pid namespace", None, &e))?;
    if pid == 0 {
        drop(report_done);
        let mut b = [0u8; 1];
        loop {
            match nix::unistd::read(&reported, &mut b) {
                Ok(0) => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(InitError::io("waiting for the pid report", None, &e.into())),
            }
        }
    }
    drop(reported);
    if let Err(e) = a.chan.send(&Message::InitPid(pid)) {
        let _ = sys::kill(pid, libc::SIGKILL);
        return Err(InitError::msg("reporting init's pid", None, e.to_string()));
    }
    sys::exit_now(0)
}

/// Finds the program like execvp would, in the container's PATH (or the default PATH
/// when the process gives none), and checks it is executable.
pub fn lookup(arg0: &str, env: &[String]) -> Result<CString, InitError> {
    let found = if arg0.contains('/') {
        Some(PathBuf::from(arg0))
    } else {
        let path_var = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(arg0))
            .find(|p| is_executable(p))
    };
    let Some(path) = found else {
        return Err(InitError::msg(
            "looking up the program",
            Some(Path::new(arg0)),
            "executable file not found in $PATH",
        ));
    };
    if !is_executable(&path) {
        let e = std::fs::metadata(&path)
            .err()
            .unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EACCES));
        return Err(InitError::io("checking the program", Some(&path), &e));
    }
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| InitError::msg("looking up the program", Some(&path), "path contains NUL"))
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

fn setresuid(uid: u32) -> std::io::Result<()> {
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(std::io::Error::from)
}

fn setresgid(gid: u32) -> std::io::Result<()> {
    let g = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(std::io::Error::from)
}

fn setdomainname(name: &str) -> std::io::Result<()> {
    sys::setdomainname(name)
}
