//! berthd: the Berth cluster daemon (see orchestrator/README.md).

use std::process::ExitCode;

use anyhow::Context;
use berth_orchestrator::config::{resolve, Flags};
use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTHD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let text = match &flags.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
        ),
        None => None,
    };
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    let cfg = resolve(flags, text.as_deref(), &hostname)?;
    berth_orchestrator::daemon::run(cfg)?;
    Ok(())
}
