//! `berth image run`: snapshot + bundle under STORE/containers/<name>, then
//! `berth --root R run --bundle B NAME` as a child process (stdio
//! inherited), its exit code returned. With --rm the container, the mount
//! and the snapshot are removed afterwards, also on failure; without it the
//! overlay is unmounted and the snapshot (its upper dir: what the container
//! wrote) kept until `berth image prune`.
//!
//! Terminating signals are held back from the start (see `Signals`), so one
//! that arrives while the snapshot is prepared ends the run before the
//! container starts, and cleanup always happens. A run killed with SIGKILL
//! leaves its snapshot recorded with its owner (pid and start time); the
//! next `image run` or `image prune` unmounts it, and removes it if it was
//! `--rm`, once its container is gone too (`snapshot::reap`).
//!
//! BERTH_IMAGE_RUNTIME overrides the re-executed binary (e.g. runc).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use berth_images::snapshot::{self, Prepared, SnapshotError};
use berth_images::store::Store;
use berth_images::{bundle, import};
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::net;
use crate::cli::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container and its snapshot when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default: berth-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User: name, uid, name:group or uid:gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Network: none (a new empty namespace), host, or a CNI network's name (configs in
    /// --cni-conf-dir).
    #[arg(long, default_value = "none")]
    pub net: String,
    /// Publish a port on a CNI network: [IP:]HOST:CONTAINER[/tcp|udp]; repeatable.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Where CNI network configs are.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are searched (repeatable; default /usr/lib/cni, /opt/cni/bin).
    #[arg(long = "cni-plugin-dir")]
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// Image reference.
    pub reference: String,
    /// Command (replaces the image's Cmd) and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

fn runtime_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_IMAGE_RUNTIME") {
        return Ok(PathBuf::from(p));
    }
    // This runs in berth-image; the runtime is the `berth` next to it.
    std::env::current_exe()
        .map(|p| p.with_file_name("berth"))
        .context("finding the berth binary to run the container with")
}

fn random_name() -> String {
    let mut b = [0u8; 6];
    if getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!(
            "berth-{:012x}",
            (t as u64 ^ u64::from(std::process::id())) & 0xffff_ffff_ffff
        );
    }
    format!("berth-{}", hex::encode(b))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

pub fn run(global: &GlobalOpts, store: &Store, a: RunArgs) -> anyhow::Result<i32> {
    // From here on a terminating signal cannot end this process before its
    // cleanup: it stays pending until the container runs (then it is
    // forwarded) or, if it came earlier, ends the run before it starts.
    let signals = Signals::block()?;
    let name = a.name.clone().unwrap_or_else(random_name);
    let net = net::NetChoice::parse(&a.net);
    let ports = a
        .publish
        .iter()
        .map(|p| net::parse_publish(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !ports.is_empty() && !matches!(net, net::NetChoice::Cni(_)) {
        anyhow::bail!("-p needs --net NAME (a CNI network), not --net {}", a.net);
    }
    let cni = net::CniDirs::new(store, a.cni_conf_dir.clone(), a.cni_plugin_dirs.clone());
    if matches!(net, net::NetChoice::Cni(_)) {
        net::sweep(store, &global.root, &cni).context("removing attachments of killed runs")?;
    }
    let memory = a
        .memory
        .as_deref()
        .map(bundle::parse_memory)
        .transpose()
        .context("--memory")?;
    let overrides = bundle::Overrides {
        cmd: (!a.cmd.is_empty()).then(|| a.cmd.clone()),
        env: a.env.clone(),
        cwd: a.workdir.clone(),
        user: a.user.clone(),
        memory,
        net: if net == net::NetChoice::Host {
            bundle::Net::Host
        } else {
            bundle::Net::None
        },
        hostname: name.clone(),
        terminal: false,
        fallback_args: Vec::new(),
    };
    let runtime = runtime_binary()?;
    let (image, snap, prepared) = {
        let lock = store.lock()?;
        // What earlier runs killed with SIGKILL left behind.
        for r in snapshot::reap(store, &lock)? {
            tracing::info!(?r, "cleaned up after an earlier image run");
        }
        let image = store.find(&a.reference)?;
        let opts = snapshot::SnapshotOptions {
            overlay: snapshot::overlay_available(),
            owner: snapshot::Owner::current(),
            remove_with_owner: a.rm,
            runtime_root: Some(global.root.clone()),
        };
        let (snap, prepared) = snapshot::prepare(store, &lock, &name, &image, &opts)?;
        (image, snap, prepared)
    };
    let mut attached: Option<net::Attached> = None;
    let result = (|| -> anyhow::Result<i32> {
        match prepared {
            Prepared::Overlay(m) => match m.perform() {
                Ok(()) => {}
                Err(SnapshotError::Mount {
                    errno: nix::errno::Errno::ENODEV,
                    ..
                }) => {
                    eprintln!("berth: warning: overlayfs is not available; copying the image into the container's rootfs");
                    snapshot::fill_copy(store, &snap, &image)?;
                }
                Err(e) => return Err(e.into()),
            },
            Prepared::Copy => {
                eprintln!("berth: warning: overlayfs is not available; copying the image into the container's rootfs");
                snapshot::fill_copy(store, &snap, &image)?;
            }
        }
        let (_, config) = import::load_manifest(store, &image.manifest)?;
        let users = bundle::read_user_db(&snap.rootfs, &bundle::user_spec(&config, &overrides))?;
        let mut value = bundle::generate(&config, &users, &overrides)?;
        if let net::NetChoice::Cni(network) = &net {
            let ns = cni.netns(&name);
            join_netns(&mut value, &ns);
            bundle::write_config(&snap.dir, &value)?;
            let (a, _ip) = net::attach(&cni, network, &name, ports.clone())?;
            attached = Some(a);
        } else {
            bundle::write_config(&snap.dir, &value)?;
        }
        if let Some(sig) = signals.pending()? {
            eprintln!("berth: {sig} before the container started; not running it");
            return Ok(128 + sig as i32);
        }
        let mut args: Vec<std::ffi::OsString> = vec!["--root".into(), global.root.clone().into()];
        if global.debug {
            args.push("--debug".into());
        }
        args.extend([
            "run".into(),
            "--bundle".into(),
            snap.dir.clone().into(),
            name.clone().into(),
        ]);
        let status = run_forwarding_signals(&runtime, &args, &signals)
            .with_context(|| format!("running {}", runtime.display()))?;
        Ok(exit_code(status))
    })();
    // Cleanup, also when the run failed.
    let mut cleanup_err = None;
    let detached = attached.map(net::Attached::detach).transpose();
    // `run` deletes its container when it exits; a state dir left behind
    // (a failure midway) is removed with `delete --force`.
    if a.rm && global.root.join(&name).exists() {
        let _ = Command::new(&runtime)
            .arg("--root")
            .arg(&global.root)
            .args(["delete", "--force", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if a.rm {
        let r = store
            .lock()
            .map_err(SnapshotError::from)
            .and_then(|lock| snapshot::remove(store, &lock, &name));
        if let Err(e) = r {
            cleanup_err = Some(e);
        }
    } else if let Err(e) = snapshot::unmount(&snap) {
        cleanup_err = Some(e);
    }
    if let Err(e) = detached {
        eprintln!("berth: {e:#}");
    }
    match (result, cleanup_err) {
        (Ok(code), None) => Ok(code),
        (Ok(_), Some(e)) => {
            Err(anyhow::Error::from(e).context(format!("cleaning up container {name}")))
        }
        (Err(e), Some(c)) => {
            eprintln!("berth: cleaning up container {name}: {c}");
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// Points config.json's network namespace (the `none` entry) at `netns`.
fn join_netns(config: &mut serde_json::Value, netns: &Path) {
    if let Some(list) = config["linux"]["namespaces"].as_array_mut() {
        for ns in list.iter_mut().filter(|n| n["type"] == "network") {
            ns["path"] = serde_json::json!(netns.display().to_string());
        }
    }
}

/// The shell convention: the exit code, or 128 + the killing signal.
fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 1,
    }
}

/// The signals `image run` holds back until its cleanup is done: blocked on
/// this thread (and every thread it starts later) from the start of the run.
/// SIGINT and SIGQUIT come from the terminal to the whole process group, so
/// a running container already has them; SIGTERM and SIGHUP are forwarded.
/// They stay blocked to the end, so a late Ctrl-C cannot interrupt the
/// cleanup (the process exits right after it).
struct Signals {
    set: SigSet,
    /// Reads pending terminating signals without blocking.
    fd: SignalFd,
}

impl Signals {
    const TERMINATING: [Signal; 4] = [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ];

    fn block() -> anyhow::Result<Signals> {
        let mut set = SigSet::empty();
        for s in Self::TERMINATING {
            set.add(s);
        }
        let mut with_chld = set;
        with_chld.add(Signal::SIGCHLD);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&with_chld), None)
            .context("blocking signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("signalfd")?;
        Ok(Signals { set: with_chld, fd })
    }

    /// A terminating signal that arrived (and is consumed here), if any.
    fn pending(&self) -> anyhow::Result<Option<Signal>> {
        match self.fd.read_signal().context("reading signalfd")? {
            Some(info) => Ok(Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)).ok()),
            None => Ok(None),
        }
    }
}

/// Starts `program` with `args` and this process's environment and stdio,
/// with an empty signal mask (posix_spawn's SETSIGMASK: std's Command would
/// hand this process's blocked signals down to the runtime, and through it
/// to the container's program, which then could not be stopped with
/// SIGTERM), and waits for it, forwarding SIGTERM and SIGHUP (see
/// [`Signals`]). Returns its wait status.
fn run_forwarding_signals(
    program: &Path,
    args: &[std::ffi::OsString],
    signals: &Signals,
) -> anyhow::Result<WaitStatus> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).context("an argument holds a NUL byte");
    let mut argv = vec![cstr(program.as_os_str().as_bytes())?];
    for a in args {
        argv.push(cstr(a.as_bytes())?);
    }
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut attr = PosixSpawnAttr::init().context("posix_spawnattr_init")?;
    attr.set_sigmask(&SigSet::empty())
        .context("posix_spawnattr_setsigmask")?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK)
        .context("posix_spawnattr_setflags")?;
    let actions = PosixSpawnFileActions::init().context("posix_spawn_file_actions_init")?;
    let pid = posix_spawn(program, &actions, &attr, &argv, &envp)
        .with_context(|| format!("starting {}", program.display()))?;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Ok(status),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the runtime"),
        }
        let sig = signals.set.wait().context("sigwait")?;
        if matches!(sig, Signal::SIGTERM | Signal::SIGHUP) {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}
