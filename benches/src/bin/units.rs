//! Units benchmark (issue 10): real `berthd` nodes with agents, each in its own network
//! namespace on a test bridge (the harness from berth-tests), running containers through
//! `berth`. Prints medians and p99.
//!
//! Measures:
//! - submit -> running and registered on every node, with `Network=host` and on the cluster
//!   network (CNI), trials taking turns: `POST /v1/units` + start on one node,
//!   until the unit's published port is a service entry on all three (watch streams);
//! - kill -9 of a whole node (berthd, its watchdog, its containers) -> the unit runs on
//!   another node and its registration is on every survivor;
//! - scheduling throughput through the replicated registry of a 3-node cluster: 10,000
//!   submitted units started in bulk onto 1,000 machines (registry entries only: no agents,
//!   no containers; their liveness comes from a long `--agent-lease-ms`), until every node
//!   has applied all 10,000 placements;
//! - memory: berthd's RSS (and its watchdog's) with 100 running units, beside the helper
//!   processes containerd (containerd-shim-runc-v2) and podman (conmon) keep for the same
//!   100 containers, measured here.
//!
//! Build and run as root (not in CI):
//!   cargo build --release --workspace --bins && cargo build --release -p berth-benches --bin units
//!   sudo BERTH_BIN_DIR=target/release target/release/units [--phases start,failover,throughput,memory] [--trials N] [--failovers N] [--machines N] [--units N] [--containers N] [--no-podman] [--no-containerd]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_tests::cluster::http::{unix_request, LineStream};
use berth_tests::cluster::units::web_image;
use berth_tests::cluster::Cluster;
use serde_json::{json, Value};

#[path = "units/memory.rs"]
mod memory;

struct Opts {
    trials: usize,
    failovers: usize,
    machines: usize,
    units: usize,
    containers: usize,
    podman: bool,
    containerd: bool,
    phases: Vec<String>,
}

/// The bench's parts, run in this order (`--phases` picks some).
const PHASES: [&str; 4] = ["start", "failover", "throughput", "memory"];

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        trials: 30,
        failovers: 10,
        machines: 1_000,
        units: 10_000,
        containers: 100,
        podman: true,
        containerd: true,
        phases: PHASES.iter().map(|p| p.to_string()).collect(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name}: not a number: {v:?}"))
        };
        match a.as_str() {
            "--trials" => o.trials = num("--trials")?,
            "--failovers" => o.failovers = num("--failovers")?,
            "--machines" => o.machines = num("--machines")?,
            "--units" => o.units = num("--units")?,
            "--containers" => o.containers = num("--containers")?,
            "--no-podman" => o.podman = false,
            "--no-containerd" => o.containerd = false,
            "--phases" => {
                let v = args.next().context("--phases needs a value")?;
                o.phases = v.split(',').map(str::to_string).collect();
                if let Some(bad) = o.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    bail!(
                        "--phases: unknown phase {bad:?} (known: {})",
                        PHASES.join(",")
                    );
                }
            }
            other => bail!("unknown argument {other:?} (see the file's header for usage)"),
        }
    }
    Ok(o)
}

const T: Duration = Duration::from_secs(10);

/// `method target` on node `k`; the JSON answer, or an error with the status and body.
/// A 503 (no leader, or the leader changed while the write was in flight) is retried: every
/// request the bench makes is idempotent (a submit of the same text answers "unchanged").
fn call(c: &Cluster, k: usize, method: &str, target: &str, body: Option<&Value>) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = unix_request(&c.node(k).socket, method, target, body, T)
            .map_err(|e| anyhow!("{method} {target}: {e}"))?;
        if r.status == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if !r.ok() {
            bail!(
                "{method} {target} on {}: {} {}",
                c.node(k).name,
                r.status,
                r.text()
            );
        }
        return Ok(r.json());
    }
}

fn submit_and_start(c: &Cluster, k: usize, name: &str, text: &str) -> Result<()> {
    call(
        c,
        k,
        "POST",
        "/v1/units",
        Some(&json!({"name": name, "text": text})),
    )?;
    call(
        c,
        k,
        "PUT",
        &format!("/v1/units/{name}/desired"),
        Some(&json!({"desired": "launched"})),
    )?;
    Ok(())
}

/// A watch stream on node `k` forwarding (node, event type, key, value, arrival) to `tx`.
fn watch(c: &Cluster, k: usize, prefix: &str, tx: mpsc::Sender<Event>) -> Result<()> {
    let stream = UnixStream::connect(&c.node(k).socket)?;
    let mut ls = LineStream::open(stream, "GET", &format!("/v1/watch?prefix={prefix}"), None)?;
    if ls.status != 200 {
        bail!("watch on {} answered {}", c.node(k).name, ls.status);
    }
    std::thread::spawn(move || {
        while let Ok(Some(line)) = ls.next_line() {
            let at = Instant::now();
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let e = Event {
                node: k,
                put: v["type"] == "put",
                key: v["key"].as_str().unwrap_or_default().to_string(),
                value: v["value"].as_str().unwrap_or_default().to_string(),
                at,
            };
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    Ok(())
}

struct Event {
    node: usize,
    put: bool,
    key: String,
    value: String,
    at: Instant,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[idx.min(s.len() - 1)]
}

/// The web unit on `network` (`host`, or `berth`: the cluster network through CNI).
fn web_unit(port: u16, network: &str) -> String {
    format!(
        "[Container]\nImage=web:1\nExec=httpd -f -p {port} -h /www\nPublishPort={port}:{port}\nNetwork={network}\n\n[Service]\nTimeoutStopSec=1s\n"
    )
}

/// A 3-voter cluster with agents and the web image on every node.
fn agent_cluster(tmp: &Path) -> Cluster {
    let layout = web_image(tmp);
    let mut c = Cluster::with_agents();
    c.start_voters("units-bench", 3);
    c.wait_for_agreed_leader(&c.all());
    for k in c.all() {
        c.import_image(k, &layout, "web:1");
    }
    c
}

/// submit -> running and registered on every node, `trials` times for each of `networks`,
/// taking turns (the machine's speed drifts: each network's trials see the same drift).
fn start_latency(c: &Cluster, trials: usize, networks: &[&str]) -> Result<Vec<Vec<f64>>> {
    let (tx, rx) = mpsc::channel();
    for k in c.all() {
        watch(c, k, "/services/", tx.clone())?;
    }
    let mut out = vec![Vec::new(); networks.len()];
    for i in 0..trials {
        for (n, network) in networks.iter().enumerate() {
            let port = 8100 + (i % 50) as u16;
            out[n].push(start_once(
                c,
                &rx,
                i % 3,
                &format!("lat{n}x{i}"),
                port,
                network,
            )?);
        }
    }
    Ok(out)
}

/// One submit of unit `base`.service through node `k`: milliseconds until its service is
/// registered on every node; then it is destroyed (not timed) until the entry left them.
fn start_once(
    c: &Cluster,
    rx: &mpsc::Receiver<Event>,
    k: usize,
    base: &str,
    port: u16,
    network: &str,
) -> Result<f64> {
    let name = format!("{base}.service");
    let svc = format!("/services/{base}/");
    let t0 = Instant::now();
    submit_and_start(c, k, &name, &web_unit(port, network))?;
    let within = Duration::from_secs(30);
    let last = last_of_nodes(rx, 3, within, &format!("{name} registered"), |e| {
        e.put && e.key.starts_with(&svc)
    })?;
    call(c, 0, "DELETE", &format!("/v1/units/{name}"), None)?;
    last_of_nodes(rx, 3, within, &format!("{name} deregistered"), |e| {
        !e.put && e.key.starts_with(&svc)
    })?;
    Ok(last.duration_since(t0).as_secs_f64() * 1000.0)
}

/// Receives events until `nodes` distinct nodes each delivered one that `matches`, within
/// `within`; the arrival of the last node's first such event.
fn last_of_nodes(
    rx: &mpsc::Receiver<Event>,
    nodes: usize,
    within: Duration,
    what: &str,
    matches: impl Fn(&Event) -> bool,
) -> Result<Instant> {
    let mut seen = BTreeMap::new();
    while seen.len() < nodes {
        let e = rx
            .recv_timeout(within)
            .map_err(|_| anyhow!("{what}: not on {nodes} nodes within {within:?}"))?;
        if matches(&e) {
            seen.entry(e.node).or_insert(e.at);
        }
    }
    seen.into_values()
        .max()
        .ok_or_else(|| anyhow!("{what}: no node to wait for"))
}

/// kill -9 of the node running a unit -> running elsewhere and registered on every
/// survivor; the node is restarted between trials.
fn failover(c: &mut Cluster, trials: usize) -> Result<Vec<f64>> {
    let (tx, rx) = mpsc::channel();
    for k in c.all() {
        watch(c, k, "/services/fo/", tx.clone())?;
    }
    submit_and_start(c, 0, "fo.service", &web_unit(8300, "berth"))?;
    let mut out = Vec::new();
    for _ in 0..trials {
        let host = wait_host(c, "fo.service")?;
        let k = c.index_of(&host);
        // Drain what came before the kill.
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        c.kill_node(k);
        let survivors: BTreeSet<usize> = c.all().into_iter().filter(|&j| j != k).collect();
        let old = format!("/services/fo/{host}/");
        let what = format!("fo.service moved off {host}");
        let last = last_of_nodes(&rx, survivors.len(), Duration::from_secs(60), &what, |e| {
            e.put && !e.key.starts_with(&old) && survivors.contains(&e.node)
        })?;
        let ms = last.duration_since(t0).as_secs_f64() * 1000.0;
        eprintln!("  failover off {host}: {ms:.0} ms");
        out.push(ms);
        c.restart(k);
        c.wait_for_member(k);
        // The restarted node's watch stream died with it.
        watch(c, k, "/services/fo/", tx.clone())?;
    }
    Ok(out)
}

/// The machine running `unit` (active on exactly one) as every node reports it, waiting up
/// to 30 s: a node just restarted answers from its own copy of the registry, which may not
/// have caught up yet (asking it alone once named the machine the unit had left).
fn wait_host(c: &Cluster, unit: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = BTreeSet::new();
        for k in c.all() {
            let states = call(c, k, "GET", "/v1/unit-states", None)?;
            let active: Vec<String> = states
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["unit"] == unit && s["active"] == "active")
                .filter_map(|s| s["machine"].as_str().map(str::to_string))
                .collect();
            views.insert(active);
        }
        if let [one] = views.iter().collect::<Vec<_>>()[..] {
            if let [host] = &one[..] {
                return Ok(host.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("the nodes do not agree that {unit} runs on one machine: {views:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 10,000 units onto 1,000 machines through a 3-node cluster; placements per second.
fn throughput(machines: usize, units: usize) -> Result<(f64, f64)> {
    let mut c = Cluster::empty();
    // The machines are registry entries without agents: a long run lease keeps them live
    // in the leader's eyes for the whole run (see orchestrator/src/fence.rs).
    c.extra_args = vec![
        "--agent-lease-ms".into(),
        "600000".into(),
        "--agent-margin-ms".into(),
        "1000".into(),
    ];
    c.start_voters("units-tput", 3);
    c.wait_for_agreed_leader(&c.all());
    for j in 0..machines {
        let rec = json!({
            "name": format!("bm{j}"), "addr": format!("10.1.{}.{}:7380", j / 250, j % 250 + 1),
            "metadata": {"rack": (j % 10).to_string()}, "id": j + 1, "agent": true,
        });
        call(
            &c,
            0,
            "PUT",
            &format!("/v1/keys/machines/bm{j}"),
            Some(&json!({"value": rec.to_string()})),
        )?;
    }
    let text = |i: usize| {
        format!(
            "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=rack={}\n",
            i % 10
        )
    };
    let names: Vec<String> = (0..units).map(|i| format!("t{i}.service")).collect();
    for (i, n) in names.iter().enumerate() {
        call(
            &c,
            0,
            "POST",
            "/v1/units",
            Some(&json!({"name": n, "text": text(i)})),
        )?;
    }
    let (tx, rx) = mpsc::channel();
    for k in c.all() {
        watch(&c, k, "/schedule/", tx.clone())?;
    }
    let t0 = Instant::now();
    for batch in names.chunks(2_000) {
        call(
            &c,
            0,
            "PUT",
            "/v1/units",
            Some(&json!({"names": batch, "desired": "launched"})),
        )?;
    }
    let requests_done = t0.elapsed();
    let mut placed: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut last = t0;
    while placed.values().map(BTreeSet::len).sum::<usize>() < units * 3 {
        let e = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("not every placement applied on every node within 60 s"))?;
        let m = serde_json::from_str::<Value>(&e.value).unwrap_or(Value::Null);
        if e.put && m["machine"].as_str().is_some_and(|s| !s.is_empty()) {
            placed.entry(e.node).or_default().insert(e.key);
            last = e.at;
        }
    }
    let secs = last.duration_since(t0).as_secs_f64();
    eprintln!(
        "  {units} placements on {machines} machines applied on 3 nodes in {secs:.3} s (start requests took {:.3} s)",
        requests_done.as_secs_f64()
    );
    Ok((units as f64 / secs, secs))
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    berth_tests::require_root();
    let tmp = tempfile::tempdir()?;
    println!("# Units benchmark (berth-benches units)");
    println!("machine: {}", machine());
    println!("berthd: {}", berth_tests::workspace_bin("berthd").display());

    let on = |p: &str| o.phases.iter().any(|q| q == p);
    let networks = ["host", "berth"];
    let mut rows = Vec::new();
    if on("start") || on("failover") {
        let mut c = agent_cluster(tmp.path());
        if on("start") {
            for (n, lat) in networks.iter().zip(start_latency(&c, o.trials, &networks)?) {
                let what = format!("submit -> running and registered on every node, Network={n}");
                rows.push(row(&what, &lat, 1));
            }
        }
        if on("failover") {
            let fo = failover(&mut c, o.failovers)?;
            let what =
                "kill -9 of the unit's node -> running elsewhere, registered on every survivor";
            rows.push(row(what, &fo, 0));
        }
    }
    if on("throughput") {
        let (rate, secs) = throughput(o.machines, o.units)?;
        rows.push(format!(
            "| scheduling: {} units onto {} machines, applied on 3 nodes | {rate:.0} placements/s ({secs:.3} s) | | 1 |",
            o.units, o.machines
        ));
    }
    let mem = if on("memory") {
        Some(memory::measure(
            tmp.path(),
            o.containers,
            o.podman,
            o.containerd,
        )?)
    } else {
        None
    };
    println!();
    println!("| metric | p50 | p99 | n |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    if let Some(mem) = mem {
        println!();
        mem.print();
    }
    Ok(())
}

/// A table row of `v`'s p50 and p99 in ms with `decimals` places.
fn row(what: &str, v: &[f64], decimals: usize) -> String {
    let (p50, p99) = (percentile(v, 50.0), percentile(v, 99.0));
    format!(
        "| {what} | {p50:.decimals$} ms | {p99:.decimals$} ms | {} |",
        v.len()
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .stdout(Stdio::piped())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {} cpus, kernel {kernel}, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
