//! The parent side of `create` (and of `run`): plan, state dir, cgroup, clone, the
//! protocol with init, state.json. Any failure undoes everything made so far.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::guard::Guard;
use super::state::{rfc3339_now, write_atomic, ContainerDir, State};
use super::ContainerError;
use crate::cgroups::{self, CgroupHandle};
use crate::process::exec_path::{self, ExecPath};
use crate::process::init::{self, InitArgs, StartSignal};
use crate::process::protocol::{Channel, ChannelError, ExpectError, Message};
use crate::seccomp::CompiledFilter;
use crate::spec::{self, NsKind, Plan};
use crate::sys::{self, clone::Forked};

/// Options of `create` / `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
}

/// A created container whose init waits to be started.
pub struct Created {
    pub dir: ContainerDir,
    pub state: State,
    pub plan: Plan,
    pub chan: Channel,
    pub pidfd: Option<OwnedFd>,
    /// The signal mask before create blocked everything (run restores it at the end).
    pub old_sigmask: libc::sigset_t,
    /// `run` in the foreground with process.terminal: the pty master to proxy.
    pub pty_master: Option<OwnedFd>,
}

/// What the parent holds once init is ready: state, channel, pidfd, the signal mask
/// to restore, and (foreground run with a terminal) the pty master.
type Made = (
    State,
    Channel,
    Option<OwnedFd>,
    libc::sigset_t,
    Option<OwnedFd>,
);

/// `create`: returns once init is ready and waits for start; with `run_mode`, `Start` is
/// already queued, so the program may be running.
pub fn create(root: &Path, opts: &CreateOpts, run_mode: bool) -> Result<Created, ContainerError> {
    super::validate_id(&opts.id)?;
    let bundle = absolute(&opts.bundle)?;
    let (spec, mount_idmaps) = spec::load_with_idmaps(&bundle)?;
    let plan = spec::plan_with(&spec, &mount_idmaps, &bundle)?;
    if plan.process.terminal && opts.console_socket.is_none() && !run_mode {
        return Err(ContainerError::Other(
            "process.terminal is true but no --console-socket was given: cannot allocate a terminal for a detached container".into(),
        ));
    }
    if let Some(cs) = &opts.console_socket {
        if !cs.exists() {
            return Err(ContainerError::Other(format!(
                "--console-socket {}: no such socket",
                cs.display()
            )));
        }
    }
    let seccomp = match &plan.seccomp {
        Some(profile) => Some(
            crate::seccomp::compile_cached(profile, &root.join(".seccomp-cache"))
                .map_err(|e| ContainerError::Other(format!("linux.seccomp: {e}")))?,
        ),
        None => None,
    };
    let trampoline = trampoline_or_reexec(seccomp.as_ref(), |protected, have, fd, allows| {
        exec_path::choose(&plan, protected, have, fd, allows)
    })?;
    let layout = cgroups::detect()?;
    let cgroup = layout.resolve(plan.cgroups_path.as_deref(), &opts.id)?;
    let cgroup_rel = cgroups::relative_cgroup_path(plan.cgroups_path.as_deref(), &opts.id)?;

    let dir = ContainerDir::create(root, &opts.id)?;
    let mut guard = Guard::new();
    guard.dir(dir.path.clone());
    let (state, chan, pidfd, old_sigmask, pty_master) = create_inner(
        &dir,
        &plan,
        &spec,
        opts,
        run_mode,
        cgroup,
        &cgroup_rel,
        seccomp,
        trampoline,
        &mut guard,
    )?;
    guard.disarm();
    Ok(Created {
        dir,
        state,
        plan,
        chan,
        pidfd,
        old_sigmask,
        pty_master,
    })
}

#[allow(clippy::too_many_arguments)]
fn create_inner(
    dir: &ContainerDir,
    plan: &Plan,
    spec: &oci_spec::runtime::Spec,
    opts: &CreateOpts,
    run_mode: bool,
    cgroup: CgroupHandle,
    cgroup_rel: &Path,
    seccomp: Option<CompiledFilter>,
    trampoline: Option<OwnedFd>,
    guard: &mut Guard,
) -> Result<Made, ContainerError> {
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| ContainerError::Io { step, path, source }
    };
    // A v1 cgroup (a directory in every hierarchy: about half a millisecond of mkdirs)
    // is made after the clone, while init mounts its rootfs; a v2 one (a hybrid host's
    // unified directory included) must exist before, for CLONE_INTO_CGROUP.
    let defer_v1 = matches!(cgroup, CgroupHandle::V1 { .. });
    use cgroups::membership::Part;
    let made =
        cgroups::membership::create_part(&cgroup, if defer_v1 { Part::V2 } else { Part::All })?;
    guard.cgroup(cgroup.clone(), made);
    // The device cgroup always applies (runc's default allow list); the spec's device
    // nodes are allowed on top, so the container can use what it is given.
    let mut resources = plan.resources.clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.extend(cgroups::resources::device_rules_for(&spec_devices(spec)));
    resources.set_devices(Some(rules));
    // Validated and translated now (a bad value fails before anything runs); written
    // once init exists, while it builds its rootfs (loading a v2 device program alone
    // takes a few hundred microseconds), and always before init may exec the program.
    let prepared = cgroups::resources::prepare(&resources, cgroup.version())
        .map_err(|e| ContainerError::Other(format!("linux.resources: {e}")))?;
    let apply_resources = |cgroup: &CgroupHandle| {
        cgroups::resources::apply_prepared(cgroup, &prepared)
            .map_err(|e| ContainerError::Other(format!("linux.resources: {e}")))
    };

    let start = if run_mode {
        StartSignal::Channel
    } else {
        let fifo = dir.fifo_path();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .map_err(|e| io("creating", &fifo)(e.into()))?;
        // Read-write, so that neither side ever blocks in open(2).
        StartSignal::Fifo(sys::fs::open(&fifo, libc::O_RDWR).map_err(io("opening", &fifo))?)
    };
    let (parent_sock, child_sock) =
        sys::seqpacket_pair().map_err(io("creating socketpair", Path::new("-")))?;
    // The console socket: the caller's, or (run in the foreground) our own pair whose
    // other end receives the pty master.
    let mut own_console: Option<OwnedFd> = None;
    let console = if !plan.process.terminal {
        None
    } else if let Some(path) = &opts.console_socket {
        Some(
            sys::pty::connect_console_socket(path)
                .map_err(io("connecting to console socket", path))?,
        )
    } else {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(io("creating console socketpair", Path::new("-")))?;
        own_console = Some(OwnedFd::from(ours));
        Some(OwnedFd::from(theirs))
    };

    // A pid namespace joined by path is joined by init once the container is built:
    // it then forks the container's init into it, so processes already there never
    // see it holding the host's root or descriptors. That needs a procfs made for
    // that namespace from outside (procfs's `pidns` of recent kernels, probed); on older
    // kernels init is cloned into it, as runc's is, and builds the container there.
    let ns = &plan.namespaces;
    let mut spawn = false;
    if let Some((_, p)) = ns.join.iter().find(|(k, _)| *k == NsKind::Pid) {
        let fd = sys::fs::open(p, libc::O_RDONLY).map_err(io("opening pid namespace", p))?;
        spawn = sys::mountfd::procfs_takes_pidns(fd.as_fd());
        if !spawn {
            sys::setns(fd.as_raw_fd(), libc::CLONE_NEWPID)
                .map_err(io("joining pid namespace", p))?;
        }
    }
    let slow_path = spawn || ns.join.iter().any(|(k, _)| *k != NsKind::Pid);
    // A new cgroup namespace is made by init once it is in its cgroup, so that the
    // namespace's root is the container's cgroup (as runc does).
    let clone_flags = if slow_path {
        ns.new_flags & libc::CLONE_NEWPID
    } else {
        ns.new_flags & !libc::CLONE_NEWCGROUP
    };
    // A new network namespace costs about 0.3 ms of kernel work (every protocol's
    // per-namespace set-up), an ipc one a mqueue mount. Made by clone, that is paid
    // before init exists; unshared by init first thing, it runs beside this process's
    // own work after the clone (on v1, the cgroup init then waits for). Not with a new
    // user namespace, which must own them and gets its id maps only after the clone.
    let late_unshare = if slow_path || clone_flags & libc::CLONE_NEWUSER != 0 {
        0
    } else {
        clone_flags & (libc::CLONE_NEWNET | libc::CLONE_NEWIPC)
    };
    let clone_flags = clone_flags & !late_unshare;
    // Idmapped binds need privilege over their filesystem that init may not have.
    let idmapped = crate::rootfs::idmap::prepare(plan).map_err(ContainerError::Other)?;
    // init moves itself into the v1 hierarchies (no RCU wait, see SelfJoin) ...
    let self_join = if defer_v1 {
        cgroups::membership::SelfJoin::default()
    } else {
        cgroups::membership::SelfJoin::open(&cgroup)?
    };

    // Block signals before the child exists, so no SIGCHLD of a short-lived container
    // can be missed by `run`; the child restores the mask before exec.
    let old_sigmask = sys::block_all_signals().map_err(io("blocking signals", Path::new("-")))?;
    guard.sigmask(old_sigmask);
    // ... and is created inside its v2 cgroup (a hybrid host's unified one included).
    let cgroup_fd = cgroup
        .v2_dir()
        .and_then(|dir| sys::fs::open(dir, libc::O_RDONLY | libc::O_DIRECTORY).ok());
    let forked = sys::clone::fork_into_cgroup(
        clone_flags,
        cgroup_fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    )
    .map_err(io("cloning the container init", Path::new("-")))?;
    match forked {
        Forked::Child => {
            dir.close_lock_in_child();
            drop(parent_sock);
            init::run(InitArgs {
                id: &opts.id,
                plan,
                cgroup: &cgroup,
                cgroup_rel,
                self_join,
                cgroup_deferred: defer_v1,
                chan: Channel::new(child_sock),
                start,
                slow_path,
                late_unshare,
                spawn,
                old_sigmask,
                no_pivot: opts.no_pivot,
                no_new_keyring: opts.no_new_keyring,
                preserve_fds: opts.preserve_fds,
                seccomp,
                console,
                trampoline,
                idmapped,
            })
        }
        Forked::Parent {
            pid,
            pidfd,
            in_cgroup,
        } => {
            drop(child_sock);
            drop(start);
            drop(console);
            drop(self_join);
            drop(cgroup_fd);
            drop(trampoline);
            drop(idmapped);
            guard.child(pid);
            let chan = Channel::new(parent_sock);
            let fail = |e: ExpectError| ContainerError::Other(format!("container init: {e}"));
            // A send fails when init has already given up and closed its end; the report
            // it left in the socket says why, and is what the user needs to see.
            let sent = |r: Result<(), ChannelError>| -> Result<(), ContainerError> {
                r.map_err(|e| match chan.try_recv() {
                    Some(Message::Error(ie)) => fail(ExpectError::Init(ie)),
                    _ => fail(e.into()),
                })
            };
            if ns.creates(NsKind::User) {
                if slow_path {
                    chan.expect(Message::NeedIdMaps, "NeedIdMaps")
                        .map_err(fail)?;
                }
                write_id_maps(pid, plan)?;
                if slow_path {
                    sent(chan.send(&Message::IdMapsWritten))?;
                }
            }
            // Without CLONE_INTO_CGROUP (no clone3, or the kernel refused it) the v2
            // part is joined the usual way, before init may go on.
            if !in_cgroup {
                cgroups::membership::join_v2(&cgroup, pid)?;
            }
            if let (Some(adj), true) = (plan.process.oom_score_adj, spawn) {
                // init, outside the container's pid namespace, cannot name itself in
                // the container's procfs; the container's init inherits the value.
                let p = PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
                std::fs::write(&p, adj.to_string()).map_err(io("writing", &p))?;
            }
            sent(chan.send(&Message::Go))?;
            let pid_start_time = sys::process_start_time(pid).map_err(io(
                "reading start time of",
                Path::new(&format!("/proc/{pid}")),
            ))?;
            let annotations: BTreeMap<String, String> = plan.annotations.iter().cloned().collect();
            let mut state = State {
                oci_version: plan.oci_version.clone(),
                id: opts.id.clone(),
                pid,
                pid_start_time,
                bundle: plan.bundle.clone(),
                rootfs: plan.rootfs.clone(),
                created: rfc3339_now(),
                owner: String::new(),
                annotations,
                cgroup: cgroup.clone(),
                resources: plan.resources.clone(),
                hooks: plan.hooks.clone(),
            };
            let pid_file = match &opts.pid_file {
                Some(pf) => Some(absolute(pf)?),
                None => None,
            };
            if let Some(pf) = &pid_file {
                guard.file(pf.clone());
            }
            let rest = (|| -> Result<Option<i32>, ContainerError> {
                if defer_v1 {
                    guard.cgroup_dirs(cgroups::membership::create_part(&cgroup, Part::V1)?);
                    apply_resources(&cgroup)?;
                    let join = cgroups::membership::SelfJoin::open(&cgroup)?;
                    let (tasks, mut fds) = join.paths_and_fds();
                    // The first cgroup mount's tree, built here while init makes its
                    // network namespace and earlier mounts (not for a user namespace's
                    // init, which builds its own); if that fails, init builds it.
                    let tree = plan
                        .mounts
                        .iter()
                        .find(|m| m.kind == crate::spec::MountKind::Cgroup)
                        .filter(|_| !ns.has(NsKind::User))
                        .and_then(|m| {
                            crate::rootfs::mounts::cgroup_v1_tree(m, &cgroup, cgroup_rel).ok()
                        });
                    fds.extend(tree.as_ref().map(AsRawFd::as_raw_fd));
                    let ready = Message::CgroupReady {
                        tasks,
                        tree: tree.is_some(),
                    };
                    sent(chan.send_with_fds(&ready, &fds))?;
                } else {
                    apply_resources(&cgroup)?;
                }
                // Written while init builds the rest of its rootfs (the cgroup work
                // above is what it waits for), and before anything may read the state
                // (a hook may run `berth state`); the state dir stays locked until
                // create returns, and a failure later removes both with the rest.
                write_state(&state, &dir.state_path(), pid_file.as_deref())?;
                if let Some(h) = &plan.hooks {
                    use crate::hooks::HookKind;
                    if !HookKind::Prestart.of(h).is_empty()
                        || !HookKind::CreateRuntime.of(h).is_empty()
                    {
                        chan.expect(Message::RuntimeHooks, "RuntimeHooks")
                            .map_err(fail)?;
                        // The runtime-spec's statuses: prestart (a legacy hook run
                        // in its place) sees the container created, createRuntime
                        // sees it being created.
                        for (kind, status) in [
                            (HookKind::Prestart, "created"),
                            (HookKind::CreateRuntime, "creating"),
                        ] {
                            let st = plan.hook_state(&opts.id, status, pid);
                            crate::hooks::run_hooks(kind.of(h), &st).map_err(|e| {
                                ContainerError::Other(format!("{} hook: {e}", kind.name()))
                            })?;
                        }
                        chan.send(&Message::HooksDone).map_err(|e| fail(e.into()))?;
                    }
                }
                // `run` queues Start now, behind the last message init reads before
                // it: the program is exec'd as soon as init is ready, instead of after
                // a round trip (this process woken by Ready, init by Start).
                if run_mode {
                    sent(chan.send(&Message::Start))?;
                }
                let spawned = if spawn {
                    let p = expect_init_pid(&chan).map_err(fail)?;
                    guard.child(p);
                    sys::wait(pid)
                        .map_err(io("waiting for", Path::new(&format!("/proc/{pid}"))))?;
                    guard.reaped(pid);
                    Some(p)
                } else {
                    None
                };
                chan.expect(Message::Ready, "Ready").map_err(fail)?;
                Ok(spawned)
            })();
            let spawned = rest?;
            let pidfd = match spawned {
                Some(p) => {
                    respawned(&mut state, p, &dir.state_path(), pid_file.as_deref())?;
                    None
                }
                None => pidfd,
            };

            // Run in the foreground with a terminal: take the pty master now.
            let pty_master = match &own_console {
                Some(sock) => Some(
                    sys::pty::recv_fd(sock)
                        .map_err(io("receiving the pty master", Path::new("-")))?,
                ),
                None => None,
            };
            Ok((state, chan, pidfd, old_sigmask, pty_master))
        }
    }
}

/// `InitPid`: the pid of the container's init, forked into a joined pid namespace by
/// the first init (see `init::spawn_into_pid_ns`); it must be our child.
fn expect_init_pid(chan: &Channel) -> Result<i32, ExpectError> {
    match chan.recv()? {
        Message::InitPid(p) if p > 0 && sys::is_child(p) => Ok(p),
        Message::Error(e) => Err(ExpectError::Init(e)),
        got => Err(ExpectError::Channel(ChannelError::Unexpected {
            got: Box::new(got),
            want: "InitPid (a child's pid)",
        })),
    }
}

/// The container's init is `pid` (forked into a joined pid namespace): state.json and
/// the pid file, written with the first init's pid, are written again.
fn respawned(
    state: &mut State,
    pid: i32,
    state_path: &Path,
    pid_file: Option<&Path>,
) -> Result<(), ContainerError> {
    state.pid = pid;
    state.pid_start_time = sys::process_start_time(pid).map_err(|source| ContainerError::Io {
        step: "reading start time of",
        path: PathBuf::from(format!("/proc/{pid}")),
        source,
    })?;
    write_state(state, state_path, pid_file)
}

/// state.json, and the pid file when asked for, each written atomically.
fn write_state(
    state: &State,
    state_path: &Path,
    pid_file: Option<&Path>,
) -> Result<(), ContainerError> {
    let bytes = serde_json::to_vec(state).map_err(|e| ContainerError::Other(e.to_string()))?;
    write_atomic(state_path, &bytes)?;
    if let Some(pf) = pid_file {
        write_atomic(pf, state.pid.to_string().as_bytes())?;
    }
    Ok(())
}

fn write_id_maps(pid: i32, plan: &Plan) -> Result<(), ContainerError> {
    let fmt = |m: &[spec::IdMap]| -> String {
        m.iter()
            .map(|x| format!("{} {} {}\n", x.container_id, x.host_id, x.size))
            .collect()
    };
    for (file, maps) in [
        ("uid_map", &plan.uid_mappings),
        ("gid_map", &plan.gid_mappings),
    ] {
        let p = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&p, fmt(maps)).map_err(|source| ContainerError::Io {
            step: "writing id map",
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// An absolute path (relative ones are taken from the cwd), without resolving links.
pub fn absolute(p: &Path) -> Result<PathBuf, ContainerError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|source| ContainerError::Io {
        step: "getcwd",
        path: PathBuf::from("."),
        source,
    })?;
    Ok(if p.as_os_str().is_empty() || p == Path::new(".") {
        cwd
    } else {
        cwd.join(p)
    })
}

/// CVE-2019-5736 (see [`exec_path`]): the sealed trampoline the program will be exec'd
/// through, or `None` when berth already runs from an unwritable image. `choose` gets
/// (protected, trampoline available, its descriptor, the seccomp check). When the
/// trampoline cannot be used, berth re-executes itself from an unwritable image here,
/// before it has made anything, and starts over; this returns only if that fails.
pub(super) fn trampoline_or_reexec(
    seccomp: Option<&CompiledFilter>,
    choose: impl FnOnce(bool, bool, i32, &dyn Fn(&str, [u64; 6]) -> bool) -> ExecPath,
) -> Result<Option<OwnedFd>, ContainerError> {
    let protected = sys::memfd::running_protected();
    let mem = if protected {
        None
    } else {
        exec_path::host_image().and_then(|img| match sys::trampoline::sealed_memfd(&img) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(error = %e, "cannot make the exec trampoline's memfd");
                None
            }
        })
    };
    let fd = mem.as_ref().map_or(-1, |m| m.as_raw_fd());
    let allows = |name: &str, args: [u64; 6]| match seccomp {
        Some(f) => crate::seccomp::SyscallArch::host()
            .is_some_and(|arch| crate::seccomp::eval::lets_through(f, arch, name, args)),
        None => true,
    };
    match choose(protected, mem.is_some(), fd, &allows) {
        ExecPath::Direct => Ok(None),
        ExecPath::Trampoline => Ok(mem),
        ExecPath::ProtectBinary(why) => {
            tracing::debug!("re-executing from a protected copy of berth: {why}");
            let e = sys::memfd::reexec_protected();
            Err(ContainerError::Other(format!(
                "re-executing berth from a protected copy ({why}): {e}"
            )))
        }
    }
}

fn spec_devices(spec: &oci_spec::runtime::Spec) -> Vec<oci_spec::runtime::LinuxDevice> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
}
