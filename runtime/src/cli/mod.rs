//! The `berth` command line: runc's verbs, flags, output and exit codes.
//!
//! One file per command. Each command takes the global options and its own
//! arguments and returns the process exit code; errors become one line on stderr
//! (and in `--log`, as JSON with `--log-format json`) and exit code 1.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
mod fast;
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

/// `--version` of berth and berth-image, in runc's two-line shape.
const VERSION: &str = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

/// `berth`: a runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = VERSION,
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
    Image(ImageForward),
}

/// `berth image ...` is served by the `berth-image` binary (installed next to `berth`):
/// the image code (archives, decompression, hashing) stays out of the binary every
/// container start maps. Its arguments are passed on untouched.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ImageForward {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// The command line of `berth-image`: berth's global options and the `image` verb.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = VERSION,
    about = "Berth: a runc-compatible OCI runtime (image commands)"
)]
pub struct ImageCli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: ImageVerb,
}

#[derive(Debug, Subcommand)]
pub enum ImageVerb {
    /// OCI images: import, list, inspect, remove, unpack to a bundle, run.
    Image(image::ImageArgs),
}

/// Runs `berth-image`'s parsed command line and returns the exit code.
pub fn dispatch_image(cli: ImageCli) -> i32 {
    let ImageVerb::Image(a) = cli.command;
    run_logged(&cli.global, |g| image::run(g, a))
}

/// Replaces this process with `berth-image` and the same arguments: the binary next
/// to this one, else the first in PATH. Returns only on failure.
fn exec_image_helper(g: &GlobalOpts) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let beside = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("berth-image"))
        .filter(|p| p.is_file());
    let helper = beside.unwrap_or_else(|| PathBuf::from("berth-image"));
    let mut argv = vec![std::ffi::CString::new("berth").unwrap_or_default()];
    argv.extend(
        std::env::args_os()
            .skip(1)
            .map(|a| std::ffi::CString::new(a.as_bytes()).unwrap_or_default()),
    );
    let Ok(path) = std::ffi::CString::new(helper.as_os_str().as_bytes()) else {
        logging::fatal(
            g,
            "berth image: the berth-image path is not a valid C string",
        );
        return 1;
    };
    let err = if helper.is_absolute() {
        nix::unistd::execv(&path, &argv)
    } else {
        nix::unistd::execvp(&path, &argv)
    };
    let err = match err {
        Ok(never) => match never {},
        Err(e) => e,
    };
    logging::fatal(
        g,
        &format!(
            "berth image: cannot run the image helper {} ({err}): install berth-image next to berth or in PATH (cargo build --release -p berth --bin berth-image)",
            helper.display()
        ),
    );
    1
}

/// The verb in raw arguments (without the program name): the first word that is
/// neither a global flag nor a global flag's value.
fn argv_verb(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<String> {
    const GLOBAL_WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu"];
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let a = a.into_string().ok()?;
        if a.starts_with('-') {
            if GLOBAL_WITH_VALUE.contains(&a.as_str()) {
                args.next();
            }
            continue;
        }
        return Some(a);
    }
    None
}

impl Cli {
    /// Parses the process's arguments. The plain lines of the per-container verbs are
    /// parsed without clap ([`fast`]); the other lines of the container start path's
    /// verbs by a clap command holding only their own subcommand: building clap's whole
    /// command tree costs about 0.3 ms per invocation. Anything that narrow parser does
    /// not accept is parsed by the full one, whose output (help, errors) is the
    /// reference; all yield the same `Cli` (tested here and in [`fast`]).
    pub fn parse_args() -> Result<Cli, clap::Error> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(cli) = fast::parse(&args) {
            return Ok(cli);
        }
        if let Some(cli) = Self::parse_narrow(&args) {
            return Ok(cli);
        }
        <Cli as Parser>::try_parse_from(args)
    }

    fn parse_narrow(args: &[std::ffi::OsString]) -> Option<Cli> {
        use clap::{Args, FromArgMatches};
        fn narrow<A: Args + FromArgMatches>(
            args: &[std::ffi::OsString],
            name: &'static str,
            wrap: fn(A) -> Command,
        ) -> Option<Cli> {
            let cmd = GlobalOpts::augment_args(clap::Command::new("berth"))
                .subcommand(A::augment_args(clap::Command::new(name)));
            let m = cmd.try_get_matches_from(args).ok()?;
            let global = GlobalOpts::from_arg_matches(&m).ok()?;
            let (_, sub) = m.subcommand()?;
            let a = A::from_arg_matches(sub).ok()?;
            Some(Cli {
                global,
                command: wrap(a),
            })
        }
        match argv_verb(args.iter().skip(1).cloned())?.as_str() {
            "create" => narrow(args, "create", Command::Create),
            "start" => narrow(args, "start", Command::Start),
            "run" => narrow(args, "run", Command::Run),
            "state" => narrow(args, "state", Command::State),
            "kill" => narrow(args, "kill", Command::Kill),
            "delete" => narrow(args, "delete", Command::Delete),
            "exec" => narrow(args, "exec", Command::Exec),
            _ => None,
        }
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn dispatch(cli: Cli) -> i32 {
    run_logged(&cli.global, |g| match cli.command {
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
        Command::Image(_) => Ok(exec_image_helper(g)),
    })
}

/// Sets up logging, refuses what no command supports, runs `command` and turns its
/// error into one logged line and exit code 1. Shared by berth and berth-image.
fn run_logged(g: &GlobalOpts, command: impl FnOnce(&GlobalOpts) -> anyhow::Result<i32>) -> i32 {
    if let Err(e) = logging::init(g) {
        eprintln!("berth: {e}");
        return 1;
    }
    if g.systemd_cgroup {
        logging::fatal(g, "--systemd-cgroup: systemd cgroup management is not supported by berth yet; use the cgroupfs driver");
        return 1;
    }
    match command(g) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn argv_verb_found_past_global_flags() {
        let verb = |a: &[&str]| argv_verb(os(a));
        assert_eq!(verb(&["run", "c1"]).as_deref(), Some("run"));
        assert_eq!(
            verb(&[
                "--root",
                "/r",
                "--log-format",
                "json",
                "create",
                "-b",
                "/b",
                "c1"
            ])
            .as_deref(),
            Some("create")
        );
        // The value of a global flag is not the verb.
        assert_eq!(
            verb(&["--root", "run", "delete", "c1"]).as_deref(),
            Some("delete")
        );
        assert_eq!(verb(&["--version"]), None);
        assert_eq!(verb(&[]), None);
        assert_eq!(
            verb(&["--debug", "--log=/l", "exec", "c1", "sh"]).as_deref(),
            Some("exec")
        );
    }

    #[test]
    fn narrow_parse_equals_full_parse() {
        for line in [
            "run c1",
            "--root /r run -d --bundle /b --pid-file /p --no-pivot c1",
            "--log /l --log-format json create --bundle /b --console-socket /s --preserve-fds 2 c1",
            "create -b /b c1 --root /r2",
            "start c1",
            "--debug state c1",
            "kill c1 KILL",
            "kill --all c1 9",
            "delete --force c1",
            "exec -t --cwd /w -e A=1 -u 1:2 --cap CAP_KILL c1 sh -c true",
            "exec -d --pid-file /p c1 -- ls -l",
        ] {
            let mut full = vec!["berth"];
            full.extend(line.split(' '));
            let args: Vec<std::ffi::OsString> = full.iter().map(Into::into).collect();
            let wide = Cli::try_parse_from(&full).unwrap_or_else(|e| panic!("{line}: {e}"));
            let narrow =
                Cli::parse_narrow(&args).unwrap_or_else(|| panic!("{line}: narrow failed"));
            assert_eq!(format!("{narrow:?}"), format!("{wide:?}"), "{line}");
        }
        // Not for the narrow parser: other verbs, help, version, bad flags.
        for line in [
            "list",
            "spec",
            "run --help",
            "--version",
            "run --bogus c1",
            "create",
        ] {
            let mut full = vec!["berth"];
            full.extend(line.split(' '));
            let args: Vec<std::ffi::OsString> = full.iter().map(Into::into).collect();
            assert!(Cli::parse_narrow(&args).is_none(), "{line}");
        }
    }
}
