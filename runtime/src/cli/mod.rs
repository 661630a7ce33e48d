//! The `berth` command line: runc's verbs, flags, output and exit codes.
//!
//! One file per command. Each command takes the global options and its own
//! arguments and returns the process exit code; errors become one line on stderr
//! (and in `--log`, as JSON with `--log-format json`) and exit code 1.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod image;
pub mod kill;
pub mod list;
pub mod logging;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Global options, accepted before the verb exactly as runc accepts them.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOpts {
    /// Root directory for container state (runc: --root).
    #[arg(long, global = true, default_value = "/run/berth")]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Enable debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not supported yet: a clear error).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
}

/// `berth`: a runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0"),
    about = "Berth: a runc-compatible OCI runtime"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new specification file (config.json).
    Spec(spec::SpecArgs),
    /// Create a container: everything is set up, the program waits for `start`.
    Create(create::CreateArgs),
    /// Start a created container's program.
    Start(start::StartArgs),
    /// Create and start a container, then wait for it.
    Run(run::RunArgs),
    /// Print a container's state as runtime-spec JSON.
    State(state::StateArgs),
    /// Send a signal to a container's init (or all its processes).
    Kill(kill::KillArgs),
    /// Delete a container and everything it holds.
    Delete(delete::DeleteArgs),
    /// List containers.
    List(list::ListArgs),
    /// List a container's processes.
    Ps(ps::PsArgs),
    /// Run a new process inside a running container.
    Exec(exec::ExecArgs),
    /// Suspend every process in the container (cgroup freezer).
    Pause(pause::PauseArgs),
    /// Resume a paused container.
    Resume(pause::PauseArgs),
    /// Change a running container's resource limits.
    Update(update::UpdateArgs),
    /// Print a container's resource statistics and OOM events as JSON.
    Events(events::EventsArgs),
    /// Print the runtime's features as runtime-spec JSON.
    Features,
    /// OCI images: import, list, inspect, remove, unpack to a bundle, run.
    Image(image::ImageArgs),
}

/// Whether the command enters a container (and so must run from a sealed copy of
/// the binary).
pub fn enters_container(cmd: &Command) -> bool {
    matches!(cmd, Command::Create(_) | Command::Run(_) | Command::Exec(_))
}

/// Runs a parsed command line and returns the exit code.
pub fn dispatch(cli: Cli) -> i32 {
    let g = &cli.global;
    if let Err(e) = logging::init(g) {
        eprintln!("berth: {e}");
        return 1;
    }
    if g.systemd_cgroup {
        logging::fatal(g, "--systemd-cgroup: systemd cgroup management is not supported by berth yet; use the cgroupfs driver");
        return 1;
    }
    let r = match cli.command {
        Command::Spec(a) => spec::run(g, a),
        Command::Create(a) => create::run(g, a),
        Command::Start(a) => start::run(g, a),
        Command::Run(a) => run::run(g, a),
        Command::State(a) => state::run(g, a),
        Command::Kill(a) => kill::run(g, a),
        Command::Delete(a) => delete::run(g, a),
        Command::List(a) => list::run(g, a),
        Command::Ps(a) => ps::run(g, a),
        Command::Exec(a) => exec::run(g, a),
        Command::Pause(a) => pause::pause(g, a),
        Command::Resume(a) => pause::resume(g, a),
        Command::Update(a) => update::run(g, a),
        Command::Events(a) => events::run(g, a),
        Command::Features => features::run(g),
        Command::Image(a) => image::run(g, a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            logging::fatal(g, &error_line(&e));
            1
        }
    }
}

/// One line for an error chain, skipping causes whose text is already included.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
