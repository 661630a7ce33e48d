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

/// The addresses of this host's interfaces that are up (for the default `--advertise`).
fn host_addrs() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(std::net::IpAddr::V4(v4.ip()));
            }
            addr.as_sockaddr_in6()
                .map(|v6| std::net::IpAddr::V6(v6.ip()))
        })
        .collect()
}

fn run() -> anyhow::Result<()> {
    // Everything berthd creates (data, keys, sockets) is private to root unless it says
    // otherwise; explicit modes below do not depend on this.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
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
    let cfg = resolve(flags, text.as_deref(), &hostname, &host_addrs())?;
    berth_orchestrator::daemon::run(cfg)?;
    Ok(())
}
