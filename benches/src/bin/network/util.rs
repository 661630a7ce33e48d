//! Helpers shared by the networking benches (`network`, `unit_network`): running and
//! timing commands, percentiles and table rows, the bench's private network namespace.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_benches::shell::first_line;

pub const PLUGINS: &str = "/usr/lib/cni";

pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    run(cmd)?;
    Ok(t.elapsed())
}

/// A private network namespace for this process (before any thread exists), so bridges
/// and nat rules made during the bench vanish with it.
pub fn private_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    run(Command::new("ip").args(["link", "set", "lo", "up"]))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// `| what | p50 | p90 | p99 |`
pub fn row(out: &mut String, what: &str, v: &[f64]) {
    let _ = writeln!(
        out,
        "| {what} | {:.2} | {:.2} | {:.2} |",
        pct(v, 50.0),
        pct(v, 90.0),
        pct(v, 99.0)
    );
}

/// The versions a networking bench's report names.
pub fn versions(out: &mut String, podman: bool) {
    let _ = writeln!(
        out,
        "commit: {}",
        first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
    );
    let _ = writeln!(
        out,
        "kernel: {}",
        first_line(Command::new("uname").arg("-r"))
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        out,
        "load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "plugins: containernetworking-plugins {}",
        first_line(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Version}",
            "containernetworking-plugins"
        ]))
    );
    if podman {
        let _ = writeln!(
            out,
            "podman: {}",
            first_line(Command::new("podman").arg("--version"))
        );
        let _ = writeln!(
            out,
            "runc: {}",
            first_line(Command::new("runc").arg("--version"))
        );
    }
}
