//! The `berth` command line: runc's verbs, flags, output and exit codes.
//!
//! One file per command. Each command takes the global options and its own
//! arguments and returns the process exit code.

pub mod image;

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
}

/// `berth`: a runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Berth: a runc-compatible OCI runtime")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OCI images: import, list, inspect, remove, unpack to a bundle, run.
    Image(image::ImageArgs),
}
