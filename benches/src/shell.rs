//! Running shell commands and finding the tools and binaries a bench compares.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `script` with `sh -c`, its output on the bench's; fails on a non-zero exit.
pub fn sh(script: &str) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .with_context(|| format!("run `{script}`"))?;
    if !status.success() {
        bail!("`{script}` failed: {status}");
    }
    Ok(())
}

/// The standard output of `script` (`sh -c`); fails on a non-zero exit.
pub fn sh_output(script: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run `{script}`"))?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line of what `cmd` prints (a tool's `--version`, say), trimmed; `?` when
/// it cannot be run.
pub fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "?".into())
}

/// Where `tool` is on PATH.
pub fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not on PATH"))
}

/// Fails naming the Debian package of each `(tool, package)` missing from PATH.
pub fn require_tools(tools: &[(&str, &str)]) -> Result<()> {
    for (tool, package) in tools {
        which(tool)
            .with_context(|| format!("`{tool}` is missing: apt-get install -y {package}"))?;
    }
    Ok(())
}

/// The release `berth` next to this binary, or `BERTH_BIN`.
pub fn berth_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("berth");
    if !path.exists() {
        bail!(
            "{} not found: build it first with `scripts/build-release` and pass BERTH_BIN, \
             or `cargo build --release -p berth --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// The CPU, cores, kernel and memory, then each of `versions`' output (a shell command
/// printing a tool's version) and berth's.
pub fn print_machine(berth: &Path, versions: &[&str]) -> Result<()> {
    println!("== machine and tools ==");
    let cpu = fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    println!("cpu: {cpu}, {} cores", sh_output("nproc")?.trim());
    println!("kernel: {}", sh_output("uname -r")?.trim());
    println!("load: {}", sh_output("cat /proc/loadavg")?.trim());
    let mem = fs::read_to_string("/proc/meminfo")?;
    println!("memory: {}", mem.lines().next().unwrap_or("").trim());
    println!("work dir: tmpfs (/dev/shm)");
    for cmd in versions {
        println!("{}", sh_output(cmd)?.trim());
    }
    println!(
        "berth: {} ({})",
        sh_output(&format!("{} --version", berth.display()))?.trim(),
        berth.display()
    );
    Ok(())
}

/// Lazily unmounts whatever a failed run left mounted under `dir` (overlay snapshots).
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
