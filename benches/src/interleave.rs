//! Timing shell commands of several tools in interleaved rounds, so that load changes on
//! the machine hit every tool alike, and printing their medians, p99 and ratios. Each
//! sample also records the CPU time (user + system) of the command and everything it
//! waited for (`getrusage(RUSAGE_CHILDREN)` before and after), which a loaded machine
//! changes far less than the wall time.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

use crate::shell::sh;

/// One benchmarked command: its samples and what it ran.
pub struct Row {
    pub name: String,
    pub command: String,
    /// Run untimed before each sample (clearing the previous output).
    pub setup: String,
    pub samples: Vec<Duration>,
    /// CPU time of each sample, in the same order.
    pub cpu: Vec<Duration>,
    pub error: Option<String>,
}

impl Row {
    pub fn new(name: &str, command: &str, setup: &str) -> Row {
        Row {
            name: name.to_string(),
            command: command.to_string(),
            setup: setup.to_string(),
            samples: Vec::new(),
            cpu: Vec::new(),
            error: None,
        }
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }

    pub fn median(&self) -> Option<Duration> {
        let s = self.sorted();
        s.get(s.len() / 2).copied()
    }

    pub fn cpu_median(&self) -> Option<Duration> {
        let mut s = self.cpu.clone();
        s.sort();
        s.get(s.len() / 2).copied()
    }

    /// The nearest-rank 99th percentile (the slowest sample below 100 samples).
    pub fn p99(&self) -> Option<Duration> {
        let s = self.sorted();
        let rank = (s.len() * 99).div_ceil(100);
        s.get(rank.checked_sub(1)?).copied()
    }
}

/// Runs every row's `setup` (untimed) then `command` (timed), one row after the other in
/// rounds. Round 0 is a warm-up. A failing command is recorded in its row, not fatal, so
/// the other figures still print.
pub fn measure_interleaved(rows: &[Row], runs: usize) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|r| Row::new(&r.name, &r.command, &r.setup))
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    println!("each round runs, in order: {}", names.join(" | "));
    for round in 0..=runs {
        print!("round {round}/{runs}:");
        for row in rows.iter_mut().filter(|r| r.error.is_none()) {
            sh(&row.setup)?;
            let cpu_before = children_cpu()?;
            let start = Instant::now();
            let out = Command::new("sh")
                .arg("-c")
                .arg(&row.command)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("run sh")?;
            let took = start.elapsed();
            let cpu = children_cpu()?.saturating_sub(cpu_before);
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                row.error = Some(format!("{}: {err}", out.status));
                print!(" [{} FAILED]", row.name);
                continue;
            }
            if round > 0 {
                row.samples.push(took);
                row.cpu.push(cpu);
            }
            print!(" {:.3}s", took.as_secs_f64());
            std::io::stdout().flush()?;
        }
        println!();
    }
    Ok(rows)
}

/// User plus system time of this process's waited-for descendants so far.
fn children_cpu() -> Result<Duration> {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(tv(u.user_time()) + tv(u.system_time()))
}

/// Prints each row's median, p99, min and max, and its median's ratio to the median of
/// each row named in `baselines`; then the commands.
pub fn print_table(title: &str, rows: &[Row], baselines: &[&str]) {
    let bases: Vec<Option<Duration>> = baselines
        .iter()
        .map(|b| rows.iter().find(|r| r.name == *b).and_then(Row::median))
        .collect();
    println!("\n{title}");
    print!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "median", "p99", "min", "max", "cpu med"
    );
    for i in 0..baselines.len() {
        print!(" {:>9}", format!("ratio{}", i + 1));
    }
    println!();
    for row in rows {
        let (Some(median), None) = (row.median(), &row.error) else {
            println!(
                "{:<44} failed: {}",
                row.name,
                row.error.as_deref().unwrap_or("no samples")
            );
            continue;
        };
        let s = row.sorted();
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        print!(
            "{:<44} {:>8.3}s {:>8.3}s {:>8.3}s {:>8.3}s {:>8.3}s",
            row.name,
            median.as_secs_f64(),
            secs(row.p99()),
            secs(s.first().copied()),
            secs(s.last().copied()),
            secs(row.cpu_median()),
        );
        for base in &bases {
            let ratio = base
                .map(|b| format!("{:.2}x", median.as_secs_f64() / b.as_secs_f64()))
                .unwrap_or_else(|| "-".to_string());
            print!(" {ratio:>9}");
        }
        println!();
    }
    for (i, b) in baselines.iter().enumerate() {
        println!(
            "(ratio{}: median / median of `{b}`, lower is faster)",
            i + 1
        );
    }
    println!("(cpu med: median user + system time of the command and all it waited for)");
    println!("commands:");
    for row in rows {
        println!("  {}: {}", row.name, row.command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_by_rank() {
        let mut r = Row::new("x", "true", "true");
        assert_eq!((r.median(), r.p99()), (None, None));
        r.samples = (1..=200).rev().map(Duration::from_millis).collect();
        assert_eq!(r.median(), Some(Duration::from_millis(101)));
        assert_eq!(r.p99(), Some(Duration::from_millis(198)));
        r.samples = vec![Duration::from_millis(3), Duration::from_millis(9)];
        assert_eq!(r.p99(), Some(Duration::from_millis(9)));
    }
}
