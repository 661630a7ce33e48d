//! What a bulk put costs each member, apart from wall-clock time (which drifts with the
//! machine's load): CPU time of all its threads (from /proc/PID/task/*/schedstat, in
//! nanoseconds), context switches, minor page faults, and optionally syscall counts from `strace -c -f`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Counters of one process at one moment (summed over its threads).
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    cpu_ns: u64,
    switches: u64,
    faults: u64,
}

/// CPU time and context switches of `pid` (all threads); zeros if it is gone.
pub fn usage(pid: u32) -> Usage {
    let mut u = Usage::default();
    // Minor page faults of the whole process: field 10 of /proc/PID/stat, counted after
    // the command name (which may hold spaces) ends with ')'.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some((_, rest)) = stat.rsplit_once(')') {
            u.faults = rest
                .split_whitespace()
                .nth(7)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return u;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
            u.cpu_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    u.switches += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    u
}

/// One member's cost per put.
#[derive(Debug, Default, Clone)]
pub struct PerPut {
    pub cpu_us: f64,
    pub switches: f64,
    /// Minor page faults (memory the allocator gave back and took again, mostly).
    pub faults: f64,
    /// Syscall name -> (calls per put, system time per call in us) (with --strace).
    pub syscalls: BTreeMap<String, (f64, f64)>,
}

pub fn per_put(
    before: &Usage,
    after: &Usage,
    n: usize,
    syscalls: Option<&BTreeMap<String, (u64, f64)>>,
) -> PerPut {
    let n = n.max(1) as f64;
    PerPut {
        cpu_us: after.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1000.0 / n,
        switches: after.switches.saturating_sub(before.switches) as f64 / n,
        faults: after.faults.saturating_sub(before.faults) as f64 / n,
        syscalls: syscalls
            .map(|m| {
                m.iter()
                    .map(|(k, (calls, us))| (k.clone(), (*calls as f64 / n, *us)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `strace -c -f` attached to each member for the bulk run.
#[derive(Default)]
pub struct Tracers {
    running: Vec<(Child, PathBuf)>,
    _dir: Option<tempfile::TempDir>,
}

impl Tracers {
    pub fn attach(pids: &[u32]) -> Result<Tracers> {
        let dir = tempfile::tempdir()?;
        let mut running = Vec::new();
        for &pid in pids {
            let out = dir.path().join(format!("{pid}.strace"));
            let child = Command::new("strace")
                .args(["-c", "-f", "-qq", "-o"])
                .arg(&out)
                .args(["-p", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("run strace (apt-get install -y strace)")?;
            running.push((child, out));
        }
        // strace needs a moment to attach to every thread.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(Tracers {
            running,
            _dir: Some(dir),
        })
    }

    /// Detaches (SIGINT makes strace write its summary) and reads each member's counts.
    pub fn finish(self) -> Vec<BTreeMap<String, (u64, f64)>> {
        let mut all = Vec::new();
        for (mut child, out) in self.running {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = child.wait();
            all.push(parse_summary(
                &std::fs::read_to_string(&out).unwrap_or_default(),
            ));
        }
        all
    }
}

/// strace -c's table: `% time  seconds  usecs/call  calls  [errors]  syscall` (the time is
/// system CPU time spent in the call).
fn parse_summary(text: &str) -> BTreeMap<String, (u64, f64)> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let (Ok(calls), Ok(us)) = (f[3].parse::<u64>(), f[2].parse::<f64>()) {
            m.insert(name.to_string(), (calls, us));
        }
    }
    m
}

/// "leader / followers (max)" of a per-put figure.
pub fn cell(cost: &[PerPut], pick: impl Fn(&PerPut) -> f64) -> String {
    let Some(first) = cost.first() else {
        return "-".into();
    };
    let rest = cost[1..].iter().map(&pick).fold(0.0, f64::max);
    format!("{:.1} / {:.1}", pick(first), rest)
}

/// The syscalls that matter for a durable put, per put, leader then the busiest follower.
pub fn syscall_lines(name: &str, cost: &[PerPut]) -> Vec<String> {
    let mut names: Vec<&String> = cost.iter().flat_map(|c| c.syscalls.keys()).collect();
    names.sort();
    names.dedup();
    let mut lines = Vec::new();
    for s in names {
        let v: Vec<String> = cost
            .iter()
            .map(|c| {
                let (calls, us) = c.syscalls.get(s).copied().unwrap_or((0.0, 0.0));
                format!("{calls:.2} ({us:.0} us)")
            })
            .collect();
        if cost
            .iter()
            .any(|c| c.syscalls.get(s).map_or(0.0, |v| v.0) >= 0.05)
        {
            lines.push(format!("{name:<20}{s:<20}{}", v.join(" / ")));
        }
    }
    lines
}
