//! Units across a real cluster: `berthd` nodes with agents in their own network namespaces,
//! running containers through `berth`. Every assertion is on what the cluster reports
//! through its API, what a container shows from inside (an HTTP answer from another node,
//! its hostname, its cgroup) or what the kernel shows (the containers' cgroups).
//! Run as root after `cargo build --workspace --bins`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cluster::units::{cgroup_dirs, web_image};
use berth_tests::cluster::{wait_until, Cluster};
use serde_json::Value;

#[path = "units/exec.rs"]
mod exec;
#[path = "units/failover.rs"]
mod failover;
#[path = "units/lifecycle.rs"]
mod lifecycle;
#[path = "units/network.rs"]
mod network;
#[path = "units/network_modes.rs"]
mod network_modes;
#[path = "units/network_routes.rs"]
mod network_routes;
#[path = "units/pull.rs"]
mod pull;
#[path = "units/signals.rs"]
mod signals;

/// Waits longer than the harness's default: a unit start includes image snapshots.
const UNIT_PATIENCE: Duration = Duration::from_secs(30);

/// A 3-voter cluster with agents, the web image imported on every node.
fn cluster_with_web(tmp: &Path) -> Cluster {
    let layout = web_image(tmp);
    let mut c = Cluster::with_agents();
    c.start_voters("units", 3);
    c.wait_for_agreed_leader(&c.all());
    for k in c.all() {
        c.import_image(k, &layout, "web:1");
    }
    c
}

/// Writes a unit file into `dir` and returns its path.
fn unit_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write unit file");
    p
}

/// Runs berthctl on node `k`; panics with its output unless it succeeds. Returns stdout.
fn ctl(c: &Cluster, k: usize, args: &[&str]) -> String {
    let out = c.berthctl(k, args);
    assert!(
        out.status.success(),
        "berthctl {args:?} on {} failed: {}{}",
        c.node(k).name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The machine `unit` runs on according to node `k` (active on exactly one machine).
fn running_on(c: &Cluster, k: usize, unit: &str) -> Result<String, String> {
    let states = c.node(k).unit_states()?;
    let active: Vec<&Value> = states
        .iter()
        .filter(|s| s["unit"] == unit && s["active"] == "active")
        .collect();
    match active.as_slice() {
        [one] => Ok(one["machine"].as_str().unwrap_or_default().to_string()),
        other => Err(format!(
            "{unit} active on {} machines: {states:?}",
            other.len()
        )),
    }
}

/// `busybox wget -qO- URL` from inside node `from`'s network namespace.
fn http_get(c: &Cluster, from: usize, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.net.slot(from).netns])
        .args(["timeout", "5", "busybox", "wget", "-q", "-O", "-", url])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wget: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "wget {url} from {}: {}",
            c.node(from).name,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pids in the cgroups of node `k`'s containers whose id starts with `unit`'s
/// sanitized name: what actually runs there, as the kernel sees it.
fn unit_pids_on(c: &Cluster, k: usize, unit: &str) -> Vec<i32> {
    let prefix = unit.replace('@', "_");
    let mut pids = Vec::new();
    for dir in cgroup_dirs(&c.cgroup_parent(&c.node(k).name)) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{prefix}-")) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The nodes on which `unit` has processes right now (from the cgroups).
fn nodes_running(c: &Cluster, unit: &str) -> Vec<usize> {
    c.all()
        .into_iter()
        .filter(|&k| !unit_pids_on(c, k, unit).is_empty())
        .collect()
}

/// Waits until every node in `among` lists `unit`'s service at `machine`'s address, or
/// (machine None) lists no instance of it.
fn wait_service(c: &Cluster, among: &[usize], service: &str, machine: Option<&str>, port: u16) {
    let what = match machine {
        Some(m) => format!("service {service} at {m}:{port} on nodes {among:?}"),
        None => format!("no service {service} on nodes {among:?}"),
    };
    wait_until(&what, UNIT_PATIENCE, || {
        for &k in among {
            let list = c.node(k).service(service)?;
            match machine {
                Some(m) => {
                    let ip = c.net.slot(c.index_of(m)).ip.to_string();
                    let ok = list.len() == 1
                        && list[0]["machine"] == m
                        && list[0]["ip"] == ip.as_str()
                        && list[0]["port"] == port;
                    if !ok {
                        return Err(format!("{}: {list:?}", c.node(k).name));
                    }
                }
                None if !list.is_empty() => {
                    return Err(format!("{}: {list:?}", c.node(k).name));
                }
                None => {}
            }
        }
        Ok(())
    });
}

/// Samples every 50 ms for `d` and fails if `unit` ever has processes on two nodes.
fn never_twice(c: &Cluster, unit: &str, d: Duration) -> BTreeMap<usize, usize> {
    let start = Instant::now();
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    while start.elapsed() < d {
        let on = nodes_running(c, unit);
        assert!(
            on.len() <= 1,
            "{unit} runs on nodes {on:?} at once, {:?} after the start of the check",
            start.elapsed()
        );
        for k in on {
            *seen.entry(k).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}
