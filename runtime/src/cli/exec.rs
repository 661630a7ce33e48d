//! `berth exec <id> [command...]`, runc's flags, or `--process process.json`.

use std::path::PathBuf;

use super::GlobalOpts;
use crate::container::exec::{exec, ExecOpts};
use crate::container::ContainerDir;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Unix socket to send the pty master to (with --tty).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE), repeatable.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// uid[:gid] to run as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Additional gids, repeatable.
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    /// A process.json (runtime-spec process object) instead of the command line.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Detach from the process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// SELinux label (refused: not supported on this host).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// AppArmor profile (refused: not supported on this host).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability to every set, repeatable.
    #[arg(long = "cap", short = 'c')]
    pub cap: Vec<String>,
    /// Pass N extra descriptors (3..3+N).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allow exec into a paused container.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// The container id.
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(g: &GlobalOpts, a: ExecArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    if a.process_label.as_deref().is_some_and(|s| !s.is_empty()) {
        anyhow::bail!("--process-label: SELinux labels are not supported by berth on this host");
    }
    if a.apparmor.as_deref().is_some_and(|s| !s.is_empty()) {
        anyhow::bail!("--apparmor: AppArmor profiles are not supported by berth on this host");
    }
    let bundle = {
        let dir = ContainerDir::open(&g.root, &a.id)?;
        dir.load()?.bundle
    };
    let spec = crate::spec::load(&bundle)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let mut process = match &a.process {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let de = &mut serde_json::Deserializer::from_slice(&bytes);
            let p: oci_spec::runtime::Process = serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
            crate::spec::plan_process(&p)?
        }
        None => {
            if a.command.is_empty() {
                anyhow::bail!("exec: no command given (pass one after the id, or --process FILE)");
            }
            let base = spec.process().as_ref().ok_or_else(|| {
                anyhow::anyhow!("{}: config.json has no process", bundle.display())
            })?;
            let mut p = crate::spec::plan_process(base)?;
            p.args = a.command.clone();
            p.terminal = a.tty;
            p
        }
    };
    for e in &a.env {
        let Some((k, _)) = e.split_once('=') else {
            anyhow::bail!("--env {e:?}: expected KEY=VALUE");
        };
        process
            .env
            .retain(|x| x.split_once('=').map(|(xk, _)| xk) != Some(k));
        process.env.push(e.clone());
    }
    if let Some(cwd) = &a.cwd {
        if !cwd.is_absolute() {
            anyhow::bail!("--cwd {}: must be an absolute path", cwd.display());
        }
        process.cwd = cwd.clone();
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        process.uid = uid
            .parse()
            .map_err(|_| anyhow::anyhow!("--user {u:?}: expected uid[:gid] as numbers"))?;
        if let Some(g) = gid {
            process.gid = g
                .parse()
                .map_err(|_| anyhow::anyhow!("--user {u:?}: expected uid[:gid] as numbers"))?;
        }
    }
    if !a.additional_gids.is_empty() {
        process.additional_gids = a.additional_gids.clone();
    }
    crate::spec::check_id("--user (uid)", process.uid)?;
    crate::spec::check_id("--user (gid)", process.gid)?;
    for g in &process.additional_gids {
        crate::spec::check_id("--additional-gids", *g)?;
    }
    if a.no_new_privs {
        process.no_new_privileges = true;
    }
    if !a.cap.is_empty() {
        let mut caps = process.capabilities.unwrap_or_default();
        caps.add_exec_caps(&a.cap)
            .map_err(|e| anyhow::anyhow!("--cap: {e}"))?;
        process.capabilities = Some(caps);
    }
    if a.tty {
        process.terminal = true;
    }
    let opts = ExecOpts {
        id: a.id.clone(),
        process,
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
        seccomp,
    };
    Ok(exec(&g.root, &opts)?)
}
