//! berthd: the Berth cluster daemon (see orchestrator/README.md).

use std::process::ExitCode;

use anyhow::Context;
use berth_orchestrator::config::{resolve, CredentialsCmd, Flags, Tool, ValidityArgs};
use clap::Parser;

fn main() -> ExitCode {
    // `berthd watchdog ...`: the node's unit watchdog, started by berthd itself.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("watchdog") {
        let code = berth_orchestrator::agent::watchdog::main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Some(code) =
        berth_packaging::generate_if_requested(<Flags as clap::CommandFactory>::command)
    {
        return code;
    }
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

/// `berthd credentials ...`: prints what it made.
fn credentials(cmd: CredentialsCmd) -> anyhow::Result<()> {
    use berth_orchestrator::tls::creds::{self, Validity};
    let v = |a: ValidityArgs| Validity {
        days: a.days,
        backdate_days: a.backdate_days,
    };
    match cmd {
        CredentialsCmd::Init {
            out,
            cluster_id,
            nodes,
            validity,
        } => {
            for dir in creds::init(&out, &cluster_id, &nodes, v(validity))? {
                println!("{}", dir.display());
            }
            println!(
                "CA in {}: keep ca.key off the hosts; copy nodes/NAME/ to each host's --credentials",
                out.join("ca").display()
            );
        }
        CredentialsCmd::AddNode {
            out,
            cluster_id,
            name,
            validity,
        } => println!(
            "{}",
            creds::add_node(&out, &cluster_id, &name, v(validity))?.display()
        ),
        CredentialsCmd::AddClient {
            out,
            cluster_id,
            name,
            read_only,
            validity,
        } => println!(
            "{}",
            creds::add_client(&out, &cluster_id, &name, read_only, v(validity))?.display()
        ),
        CredentialsCmd::Keygen => println!(
            "{}",
            hex::encode(berth_orchestrator::tls::keyring::generate_key())
        ),
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one (at most 65536): peers and API clients
/// are capped well below it, and a low soft limit would starve them first.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                tracing::warn!("cannot raise the descriptor limit from {soft} to {want}: {e}");
            }
        }
    }
}

fn run() -> anyhow::Result<()> {
    raise_fd_limit();
    // Everything berthd creates (data, keys, sockets) is private to root unless it says
    // otherwise; explicit modes below do not depend on this.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut flags = Flags::parse();
    if let Some(Tool::Credentials(cmd)) = flags.command.take() {
        return credentials(cmd);
    }
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
