//! Cluster benchmark: 3 `berthd` nodes and, where installed, 3 etcd 3.4 members (tuned
//! heartbeat 50 / election 250, and defaults), each member in its own network namespace on
//! a test bridge (the harness from berth-tests). Prints medians and p99 side by side.
//!
//! berthd runs as it ships: peer TLS 1.3 with certificates from a cluster CA and sealed
//! gossip (the harness makes the credentials). etcd runs tuned (heartbeat 50 / election 250),
//! with defaults, and tuned with peer TLS (client-certificate auth, certificates made with
//! openssl).
//!
//! Measures: kill -9 of the leader -> next successful put through a survivor; kill -9 ->
//! every survivor marks the node dead (berthd only: etcd has no failure detector); put on
//! the leader -> watch event on each follower; service registration on the leader ->
//! visible on every other node; a bulk run of sequential durable puts (default 50,000 of
//! 256-byte values: puts/s, p99 and worst put latency, which include every snapshot and log
//! compaction; RSS high-water mark of every member; disk use of every member's data
//! directory afterwards against the live data); RSS per member; term changes while both
//! cores spin (spurious elections).
//!
//! Build and run as root (not in CI):
//!   cargo build --release -p berth-orchestrator --bins -p berth-benches --bin cluster
//!   sudo target/release/cluster [--trials N] [--samples N] [--writes N] [--load-secs S] [--no-etcd]
//!   (--writes: the bulk run's puts, default 50000; --insecure: berthd without TLS and
//!   gossip sealing, to see what they cost; --strace: count every member's syscalls per
//!   bulk put with strace -c -f, which slows the run)
//!
//! Besides wall-clock figures (which drift with the machine's load) it reports what a bulk
//! put costs each member: CPU time of all its threads and context switches per put
//! (cluster/cost.rs), the leader (the member written to) apart from the followers.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Add;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_benches::shell::first_line;
use berth_tests::cluster::http::{read_response, unix_request, write_request, LineStream};
use berth_tests::cluster::Cluster;
use serde_json::{json, Value};

#[path = "cluster/cost.rs"]
mod cost;
#[path = "cluster/etcd.rs"]
mod etcd;
#[path = "cluster/snapwatch.rs"]
mod snapwatch;

struct Opts {
    trials: usize,
    samples: usize,
    writes: usize,
    load_secs: u64,
    etcd: bool,
    /// berthd without TLS and gossip sealing (to measure what they cost).
    insecure: bool,
    /// Count every member's syscalls during the bulk run with `strace -c -f` (slows it).
    strace: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        trials: 20,
        samples: 300,
        writes: 50_000,
        load_secs: 10,
        etcd: true,
        insecure: false,
        strace: false,
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
            "--samples" => o.samples = num("--samples")?,
            "--writes" => o.writes = num("--writes")?,
            "--load-secs" => o.load_secs = u64::try_from(num("--load-secs")?)?,
            "--no-etcd" => o.etcd = false,
            "--insecure" => o.insecure = true,
            "--strace" => o.strace = true,
            other => bail!("unknown argument {other:?} (see the file's header for usage)"),
        }
    }
    Ok(o)
}

/// Results of one system, each a list of samples in milliseconds (or a single figure).
#[derive(Default)]
struct Figures {
    failover: Vec<f64>,
    dead: Vec<f64>,
    watch: Vec<f64>,
    visible: Vec<f64>,
    writes_per_s: Option<f64>,
    /// Every bulk put's latency.
    bulk: Vec<f64>,
    /// VmHWM of each member after the bulk run.
    hwm_mib: Vec<f64>,
    /// Snapshots the members wrote during the bulk run, and the worst put near one
    /// (berthd only: see cluster/snapwatch.rs).
    snapshots: Option<usize>,
    near_snapshot: Vec<f64>,
    /// What each member spent per bulk put (the leader, or the member written to, first).
    cost: Vec<cost::PerPut>,
    /// Disk use of each member's data directory after the bulk run, and the live data.
    disk_mib: Vec<f64>,
    live_mib: f64,
    rss_mib: Vec<f64>,
    spurious: Option<u64>,
}

fn pct(v: &[f64], p: usize) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[((s.len() - 1) * p).div_ceil(100)])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Busy-spins every core for `secs` (to show elections do not flap under load).
fn burn_cpus(secs: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
}

/// Per-attempt timeout of the put loop after a kill: a put forwarded to the dead leader
/// never returns, so attempts are short (and retried) until a new leader can answer;
/// after 5 s (a loaded machine) attempts get longer so a slow but live put can finish.
fn attempt_timeout(killed_at: Instant) -> Duration {
    if killed_at.elapsed() < Duration::from_secs(5) {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(1)
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// A size line of /proc/PID/status (VmRSS:, VmHWM:) in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Bytes of each bulk value (50,000 of them are about 13 MB of live data, as in issue 11).
pub(crate) const BULK_VALUE: usize = 256;

/// The value of bulk put `i`: BULK_VALUE bytes that differ from put to put.
pub(crate) fn bulk_value(i: usize) -> String {
    let head = format!("{i:08}-");
    let mut v = head.repeat(BULK_VALUE / head.len() + 1);
    v.truncate(BULK_VALUE);
    v
}

/// Disk blocks used under `dir` (what du(1) reports), in MiB.
fn disk_mib(dir: &std::path::Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total as f64 / (1024.0 * 1024.0)
}

/// The bulk run: `n` sequential puts through `put`; every latency, and each member's RSS
/// high-water mark afterwards.
pub(crate) fn bulk_run(
    f: &mut Figures,
    o: &Opts,
    pids: &[u32],
    snap_dirs: Vec<PathBuf>,
    mut put: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    let n = o.writes;
    let tracers = if o.strace {
        cost::Tracers::attach(pids)?
    } else {
        cost::Tracers::default()
    };
    let before: Vec<cost::Usage> = pids.iter().map(|&p| cost::usage(p)).collect();
    let watch = snapwatch::SnapWatch::start(snap_dirs);
    let mut starts = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let started = Instant::now();
        put(i)?;
        f.bulk.push(ms(started.elapsed()));
        starts.push(started);
        if i % 10_000 == 9_999 {
            eprintln!(
                "  {} puts, {:.0}/s",
                i + 1,
                (i + 1) as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    f.writes_per_s = Some(n as f64 / t0.elapsed().as_secs_f64());
    let snaps = watch.finish();
    if let Some(snaps) = &snaps {
        let puts: Vec<(Instant, f64)> =
            starts.iter().copied().zip(f.bulk.iter().copied()).collect();
        f.snapshots = Some(snaps.len());
        f.near_snapshot = snapwatch::near(&puts, snaps);
    }
    // Where the slowest puts fell (snapshots are taken every 10,000 entries by default),
    // and when, from the moment the nearest new snapshot file appeared.
    let mut slow: Vec<(usize, f64)> = f.bulk.iter().copied().enumerate().collect();
    slow.sort_by(|a, b| b.1.total_cmp(&a.1));
    let slow: Vec<String> = slow
        .iter()
        .take(8)
        .map(|(i, ms)| {
            match snaps
                .as_deref()
                .and_then(|s| snapwatch::offset_ms(starts[*i], s))
            {
                Some(off) => format!("#{i}: {ms:.1} ms ({off:+.0} ms from a snapshot)"),
                None => format!("#{i}: {ms:.1} ms"),
            }
        })
        .collect();
    eprintln!("  slowest puts: {}", slow.join(", "));
    let syscalls = tracers.finish();
    f.cost = pids
        .iter()
        .zip(&before)
        .enumerate()
        .map(|(k, (&p, b))| cost::per_put(b, &cost::usage(p), n, syscalls.get(k)))
        .collect();
    f.hwm_mib = pids
        .iter()
        .filter_map(|&p| status_mib(p, "VmHWM:"))
        .collect();
    // key "/bench/seq/NNNNNNNN" (19 bytes) + the value
    f.live_mib = (n * (19 + BULK_VALUE)) as f64 / (1024.0 * 1024.0);
    Ok(())
}

// ---------------------------------------------------------------- berthd

fn berth_put(c: &Cluster, k: usize, key: &str, value: &str, timeout: Duration) -> Result<u64> {
    c.node(k)
        .put_with_timeout(key, value, timeout)
        .map_err(|e| anyhow!(e))
}

/// A keep-alive HTTP/1.1 connection to one node's API socket (as the etcd side keeps its
/// gateway connection), reopened after an error.
struct BerthConn {
    socket: PathBuf,
    conn: Option<std::io::BufReader<UnixStream>>,
}

impl BerthConn {
    fn new(c: &Cluster, k: usize) -> BerthConn {
        BerthConn {
            socket: c.node(k).socket.clone(),
            conn: None,
        }
    }

    fn put(&mut self, key: &str, value: &str, timeout: Duration) -> Result<()> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.socket)
                .with_context(|| format!("connect {}", self.socket.display()))?;
            self.conn = Some(std::io::BufReader::new(s));
        }
        let conn = self.conn.as_mut().context("connected above")?;
        conn.get_ref().set_read_timeout(Some(timeout))?;
        let target = format!("/v1/keys/{}", key.trim_start_matches('/'));
        let body = json!({ "value": value }).to_string().into_bytes();
        let res = write_request(conn.get_mut(), "PUT", &target, Some(&body), true)
            .map_err(anyhow::Error::from)
            .and_then(|()| read_response(conn, "PUT", &target).map_err(anyhow::Error::from));
        match res {
            Ok(r) if r.ok() => Ok(()),
            Ok(r) => {
                self.conn = None;
                bail!("PUT {key}: {} {}", r.status, r.text())
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Opens a watch on node `k` and forwards (value-or-key, arrival time) of every event.
fn berth_watch(
    c: &Cluster,
    k: usize,
    prefix: &str,
    tx: mpsc::Sender<(usize, String, Instant)>,
) -> Result<()> {
    let stream = UnixStream::connect(&c.node(k).socket)?;
    let target = format!("/v1/watch?prefix={prefix}");
    let mut ls = LineStream::open(stream, "GET", &target, None)?;
    if ls.status != 200 {
        bail!("watch on {} answered {}", c.node(k).name, ls.status);
    }
    std::thread::spawn(move || {
        while let Ok(Some(line)) = ls.next_line() {
            let now = Instant::now();
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let key = v["key"].as_str().unwrap_or_default().to_string();
            if tx.send((k, key, now)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Waits until each node in `nodes` delivered an event whose key ends with `suffix`;
/// returns the arrival times per node.
fn collect(
    rx: &mpsc::Receiver<(usize, String, Instant)>,
    nodes: &[usize],
    suffix: &str,
) -> Result<BTreeMap<usize, Instant>> {
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < nodes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (k, key, at) = rx.recv_timeout(left).context("watch event never arrived")?;
        if key.ends_with(suffix) && nodes.contains(&k) {
            got.entry(k).or_insert(at);
        }
    }
    Ok(got)
}

fn bench_berth(o: &Opts, berthd: PathBuf) -> Result<Figures> {
    let mut f = Figures::default();
    let mut c = Cluster::with_berthd(berthd);
    c.insecure = o.insecure;
    c.start_voters("bench", 3);
    let all = c.all();

    // Watch latency: put on the leader -> event on each follower; registration -> every node.
    let leader = c.wait_for_agreed_leader(&all);
    let followers: Vec<usize> = all.iter().copied().filter(|&k| k != leader).collect();
    let (tx, rx) = mpsc::channel();
    for &k in &followers {
        berth_watch(&c, k, "/bench/w/", tx.clone())?;
        berth_watch(&c, k, "/services/bench-svc/", tx.clone())?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = BerthConn::new(&c, leader);
    for i in 0..o.samples {
        let key = format!("/bench/w/{i:06}");
        let t0 = Instant::now();
        conn.put(&key, "x", Duration::from_secs(5))?;
        for at in collect(&rx, &followers, &format!("/{i:06}"))?.values() {
            f.watch.push(ms(at.duration_since(t0)));
        }
    }
    for i in 0..o.samples {
        let body = json!({"name": "bench-svc", "ip": "10.0.0.1", "port": 80, "instance": format!("i{i:06}")});
        let t0 = Instant::now();
        let r = c.node(leader).call("POST", "/v1/services", Some(&body))?;
        if !r.ok() {
            bail!("register: {} {}", r.status, r.text());
        }
        let got = collect(&rx, &followers, &format!("i{i:06}"))?;
        let last = got.values().max().copied().unwrap_or(t0);
        f.visible.push(ms(last.duration_since(t0)));
    }

    // The bulk run of sequential durable writes on the leader.
    // The leader first: cost rows name it apart from the followers.
    let mut pids: Vec<u32> = Vec::new();
    pids.extend(c.node(leader).pid());
    pids.extend(followers.iter().filter_map(|&k| c.node(k).pid()));
    let snap_dirs = all
        .iter()
        .map(|&k| c.node(k).data_dir.join("orchestrator"))
        .collect();
    let bulk = bulk_run(&mut f, o, &pids, snap_dirs, |i| {
        conn.put(
            &format!("/bench/seq/{i:08}"),
            &bulk_value(i),
            Duration::from_secs(5),
        )
    });
    if let Err(e) = bulk {
        for &k in &all {
            eprintln!(
                "----- {} -----\n{}",
                c.node(k).name,
                berth_tests::cluster::tail(&c.node(k).log, 40)
            );
        }
        return Err(e);
    }
    // Let a snapshot in flight finish before measuring the disk.
    std::thread::sleep(Duration::from_secs(2));
    f.disk_mib = all.iter().map(|&k| disk_mib(&c.node(k).data_dir)).collect();
    f.rss_mib = all
        .iter()
        .filter_map(|&k| c.node(k).pid().and_then(rss_mib))
        .collect();

    // Spurious elections while every core spins.
    let term = |c: &Cluster| -> Vec<u64> {
        c.all()
            .iter()
            .map(|&k| {
                c.node(k)
                    .get_json("/v1/leader")
                    .map_or(0, |v| v["term"].as_u64().unwrap_or(0))
            })
            .collect()
    };
    let before = term(&c);
    burn_cpus(o.load_secs);
    let after = term(&c);
    f.spurious = Some(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .max()
            .unwrap_or(0),
    );

    // Failover and failure detection.
    for t in 0..o.trials {
        let leader = c.wait_for_agreed_leader(&c.all());
        let writer = (0..3).find(|&k| k != leader).context("three nodes")?;
        berth_put(&c, writer, "/bench/fo/warm", "x", Duration::from_secs(5))?;
        let dead_name = c.node(leader).name.clone();
        // One poller per survivor reports when it first sees the killed node dead (or gone).
        let (dead_tx, dead_rx) = mpsc::channel::<Instant>();
        for k in (0..3).filter(|&k| k != leader) {
            let (sock, dead_tx, name) =
                (c.node(k).socket.clone(), dead_tx.clone(), dead_name.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                while Instant::now() < deadline {
                    let r =
                        unix_request(&sock, "GET", "/v1/machines", None, Duration::from_secs(2));
                    if let Ok(r) = r {
                        let v = r.json();
                        let dead = v.as_array().is_some_and(|l| {
                            !l.iter()
                                .any(|m| m["name"] == json!(name) && m["state"] != json!("dead"))
                        });
                        if dead {
                            let _ = dead_tx.send(Instant::now());
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let t0 = Instant::now();
        c.kill(leader);
        loop {
            if berth_put(
                &c,
                writer,
                "/bench/fo/after",
                &t.to_string(),
                attempt_timeout(t0),
            )
            .is_ok()
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("no successful put within 60 s of killing the leader");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        f.failover.push(ms(t0.elapsed()));
        let mut worst: Option<f64> = None;
        for _ in 0..2 {
            match dead_rx.recv_timeout(Duration::from_secs(45)) {
                Ok(at) => {
                    let d = ms(at.saturating_duration_since(t0));
                    worst = Some(worst.map_or(d, |w: f64| w.max(d)));
                }
                Err(_) => {
                    worst = None;
                    break;
                }
            }
        }
        match worst {
            Some(w) => f.dead.push(w),
            None => eprintln!("trial {t}: a survivor never marked {dead_name} dead within 30 s"),
        }
        c.restart(leader);
        c.wait_for_member(leader);
        eprintln!(
            "berthd trial {}/{}: failover {:.1} ms",
            t + 1,
            o.trials,
            f.failover[t]
        );
    }
    Ok(f)
}

// ---------------------------------------------------------------- report

/// One table row: a label, the issue's target, how to show a column's figure, and the
/// number the ratio column compares (berthd / etcd tuned).
struct Row {
    label: &'static str,
    target: &'static str,
    show: Box<dyn Fn(&Figures) -> String>,
    median: Box<Pick>,
}

/// Reads one number out of a column's results.
type Pick = dyn Fn(&Figures) -> Option<f64>;

fn row(
    label: &'static str,
    target: &'static str,
    show: impl Fn(&Figures) -> String + 'static,
    median: impl Fn(&Figures) -> Option<f64> + 'static,
) -> Row {
    Row {
        label,
        target,
        show: Box::new(show),
        median: Box::new(median),
    }
}

fn cell(v: &[f64]) -> String {
    match (pct(v, 50), pct(v, 99)) {
        (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
        _ => "-".into(),
    }
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    let bin_dir = std::env::var_os("BERTH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or(
            std::env::current_exe()?
                .parent()
                .context("exe dir")?
                .to_path_buf(),
        );
    let berthd = bin_dir.join("berthd");
    if !berthd.exists() {
        bail!(
            "{} not found: cargo build --release -p berth-orchestrator --bins",
            berthd.display()
        );
    }
    let berthd_path = berthd.display().to_string();
    let mut cols: Vec<(String, Figures)> = vec![("berthd".into(), bench_berth(&o, berthd)?)];
    let have_etcd = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if o.etcd && have_etcd {
        cols.push(("etcd hb50/el250".into(), etcd::bench_etcd(&o, true, false)?));
        cols.push(("etcd defaults".into(), etcd::bench_etcd(&o, false, false)?));
        cols.push((
            "etcd hb50 peer TLS".into(),
            etcd::bench_etcd(&o, true, true)?,
        ));
    } else if o.etcd {
        eprintln!("etcd not installed (apt-get install -y etcd-server): berthd column only");
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    )?;
    writeln!(
        out,
        "machine: {cpu}, {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        first_line(Command::new("uname").arg("-r"))
    )?;
    writeln!(
        out,
        "berthd {} ({berthd_path}, workspace git {}); {}",
        env!("CARGO_PKG_VERSION"),
        first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"])),
        if have_etcd {
            first_line(Command::new("etcd").arg("--version"))
        } else {
            "etcd: not installed".into()
        }
    )?;
    writeln!(out, "3 members, each in its own netns on one bridge; trials={} samples={} bulk writes={}; berthd with peer TLS 1.3 and sealed gossip; etcd through its v3 JSON gateway (HTTP/1.1 keep-alive), berthd through its unix-socket API (HTTP/1.1 keep-alive; failover puts open one connection per request); failover puts go to a survivor with 50 ms attempts, retried\n", o.trials, o.samples, o.writes)?;
    write!(out, "{:<46}{:>16}", "metric (ms: p50 / p99)", "target")?;
    for (name, _) in &cols {
        write!(out, "{name:>24}")?;
    }
    writeln!(out, "{:>14}", "berthd/etcd")?;
    let rows = vec![
        row(
            "kill -9 leader -> next successful put",
            "<150 / <300",
            |f| cell(&f.failover),
            |f| pct(&f.failover, 50),
        ),
        row(
            "kill -9 -> every survivor marks it dead",
            "<1500",
            |f| cell(&f.dead),
            |f| pct(&f.dead, 50),
        ),
        row(
            "put on leader -> watch event on a follower",
            "",
            |f| cell(&f.watch),
            |f| pct(&f.watch, 50),
        ),
        row(
            "register on leader -> visible on every node",
            "<2 / <5",
            |f| cell(&f.visible),
            |f| pct(&f.visible, 50),
        ),
        row(
            "sequential durable puts/s",
            ">=1000",
            |f| f.writes_per_s.map_or("-".into(), |w| format!("{w:.0}")),
            |f| f.writes_per_s,
        ),
        row(
            "bulk put ms (p50 / p90 / p99 / worst)",
            "worst <50",
            |f| match (
                pct(&f.bulk, 50),
                pct(&f.bulk, 90),
                pct(&f.bulk, 99),
                pct(&f.bulk, 100),
            ) {
                (Some(a), Some(b), Some(c), Some(d)) => {
                    format!("{a:.1} / {b:.1} / {c:.1} / {d:.0}")
                }
                _ => "-".into(),
            },
            |f| pct(&f.bulk, 100),
        ),
        row(
            "puts +-0.5 s of a snapshot: p99 / worst (n)",
            "worst <50",
            |f| match (
                pct(&f.near_snapshot, 99),
                pct(&f.near_snapshot, 100),
                f.snapshots,
            ) {
                (Some(p), Some(w), Some(n)) => {
                    format!(
                        "{p:.1} / {w:.0} ({} puts, {n} snaps)",
                        f.near_snapshot.len()
                    )
                }
                (_, _, Some(n)) => format!("- ({n} snaps)"),
                _ => "-".into(),
            },
            |f| pct(&f.near_snapshot, 100),
        ),
        row(
            "CPU us per put (leader / follower max)",
            "",
            |f| cost::cell(&f.cost, |c| c.cpu_us),
            |f| f.cost.iter().map(|c| c.cpu_us).reduce(f64::add),
        ),
        row(
            "context switches per put (leader / foll.)",
            "",
            |f| cost::cell(&f.cost, |c| c.switches),
            |f| f.cost.first().map(|c| c.switches),
        ),
        row(
            "minor page faults per put (leader / foll.)",
            "",
            |f| cost::cell(&f.cost, |c| c.faults),
            |f| f.cost.first().map(|c| c.faults),
        ),
        row(
            "RSS high-water per member MiB (max)",
            "<40",
            |f| pct(&f.hwm_mib, 100).map_or("-".into(), |m| format!("{m:.1}")),
            |f| pct(&f.hwm_mib, 100),
        ),
        row(
            "disk per member MiB / live data (max)",
            "<=3x",
            |f| match pct(&f.disk_mib, 100) {
                Some(d) if f.live_mib > 0.0 => format!("{d:.1} / {:.1}x", d / f.live_mib),
                _ => "-".into(),
            },
            |f| pct(&f.disk_mib, 100),
        ),
        row(
            "RSS per member MiB (median / max)",
            "<15",
            |f| match (pct(&f.rss_mib, 50), pct(&f.rss_mib, 100)) {
                (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                _ => "-".into(),
            },
            |f| pct(&f.rss_mib, 50),
        ),
        row(
            "term changes while all cores spin",
            "0",
            |f| f.spurious.map_or("-".into(), |s| s.to_string()),
            |_| None,
        ),
    ];
    for r in rows {
        write!(out, "{:<46}{:>16}", r.label, r.target)?;
        for (_, f) in &cols {
            write!(out, "{:>24}", (r.show)(f))?;
        }
        let ratio = match (cols.first(), cols.get(1)) {
            (Some((_, b)), Some((_, e))) => match ((r.median)(b), (r.median)(e)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}x", x / y),
                _ => "-".into(),
            },
            _ => "-".into(),
        };
        writeln!(out, "{ratio:>14}")?;
    }
    if o.strace {
        writeln!(
            out,
            "\nsyscalls per bulk put (strace -c -f): calls per put (system CPU per call), leader / followers:"
        )?;
        for (name, f) in &cols {
            for l in cost::syscall_lines(name, &f.cost) {
                writeln!(out, "{l}")?;
            }
        }
    }
    writeln!(
        out,
        "\n(ratio: berthd median / etcd hb50/el250 median (worst / max for the bulk rows; CPU: all members' sum); targets from issues 5 and 11; live data = keys and values of the bulk run)"
    )?;
    Ok(())
}
