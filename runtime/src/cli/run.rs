//! `berth run <id>`: create + start, then wait in the foreground (or `--detach`).

use std::path::PathBuf;

use super::GlobalOpts;
use crate::container::create::{create, CreateOpts};
use crate::container::ops;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Path to the bundle directory (default: the current directory).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pty master to (process.terminal).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
    /// File to write the init's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Accepted for runc compatibility: berth never becomes a subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Pass N extra descriptors (3..3+N) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

pub fn run(g: &GlobalOpts, a: RunArgs) -> anyhow::Result<i32> {
    if a.detach && a.keep {
        anyhow::bail!("--detach and --keep cannot both be used");
    }
    let opts = CreateOpts {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
    };
    let created = create(&g.root, &opts, true)?;
    if a.detach {
        ops::after_start(&created.state, created.chan);
        return Ok(0);
    }
    Ok(ops::run_foreground(created, a.keep)?)
}
