//! `berth image run`: snapshot + bundle under STORE/containers/<name>, then
//! `berth --root R run --bundle B NAME` as a child process (stdio
//! inherited), its exit code returned. With --rm the container, the mount
//! and the snapshot are removed afterwards, also on failure; without it the
//! overlay is unmounted and the snapshot (its upper dir: what the container
//! wrote) kept until `berth image prune`.
//!
//! BERTH_IMAGE_RUNTIME overrides the re-executed binary (e.g. runc).

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::Context;
use berth_images::snapshot::{self, Prepared, SnapshotError};
use berth_images::store::Store;
use berth_images::{bundle, import};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

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
    /// Network: none (a new empty namespace) or host.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    pub net: String,
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
    let name = a.name.clone().unwrap_or_else(random_name);
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
        net: if a.net == "host" {
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
        let image = store.find(&a.reference)?;
        let (snap, prepared) =
            snapshot::prepare(store, &lock, &name, &image, snapshot::overlay_available())?;
        (image, snap, prepared)
    };
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
        let users = bundle::read_user_db(&snap.rootfs)?;
        let value = bundle::generate(&config, &users, &overrides)?;
        bundle::write_config(&snap.dir, &value)?;
        let mut cmd = Command::new(&runtime);
        cmd.arg("--root").arg(&global.root);
        if global.debug {
            cmd.arg("--debug");
        }
        cmd.arg("run").arg("--bundle").arg(&snap.dir).arg(&name);
        let status = run_forwarding_signals(cmd)
            .with_context(|| format!("running {}", runtime.display()))?;
        Ok(exit_code(status))
    })();
    // Cleanup, also when the run failed.
    let mut cleanup_err = None;
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

/// The shell convention: the exit code, or 128 + the killing signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Spawns `cmd` and waits for it, forwarding SIGTERM and SIGHUP to it.
/// SIGINT and SIGQUIT come from the terminal to the whole process group,
/// so the child already has them; here they are only kept from killing us
/// before cleanup. The signals are blocked before the spawn (std resets the
/// child's mask), so none can be missed; they stay blocked afterwards so a
/// late Ctrl-C cannot interrupt the cleanup (the process exits right after).
fn run_forwarding_signals(mut cmd: Command) -> anyhow::Result<ExitStatus> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("blocking signals")?;
    let result = (|| {
        let mut child = cmd.spawn()?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            let sig = set.wait().map_err(std::io::Error::from)?;
            match sig {
                Signal::SIGTERM | Signal::SIGHUP => {
                    let pid =
                        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                    let _ = nix::sys::signal::kill(pid, sig);
                }
                _ => {}
            }
        }
    })();
    result.map_err(|e: std::io::Error| anyhow::anyhow!(e))
}
