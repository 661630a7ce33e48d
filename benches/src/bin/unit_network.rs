//! Time networking adds to a unit's start and stop inside berthd (issue 14), beside
//! podman's `run --network <CNI bridge>` overhead over `--network none` with the same
//! plugins, in one interleaved run; then DNS lookup latency from inside a unit's container
//! to berthd's own resolver.
//!
//! A one-node cluster (berthd with its agent, in a network namespace on a test bridge, the
//! harness of berth-tests) runs the busybox web image. Each trial starts and stops two
//! units, in alternating order: one with `Network=none` and one on the cluster network
//! `berth` (bridge + host-local + portmap + firewall + loopback, as berthd writes it) with a
//! published port. Times are taken from the API request to the unit's state record, seen
//! through a watch on `/state/`:
//! - start: `PUT desired launched` until the record says `active` (the container runs; for
//!   the networked unit, attached, with its address in the record);
//! - stop: `PUT desired loaded` until the record says `inactive` (asked once the program
//!   has set its SIGTERM trap, which it exits on);
//! - released: from the same request until the node holds no attachment record and no
//!   namespace file of the unit (berthd DELs the attachment after the container is gone;
//!   polled every millisecond).
//!
//! The overhead is the per-trial difference between the two units. podman's overhead is
//! the per-trial difference of `podman run --rm ... true` on the network with `-p` and with
//! `--network none` (start and teardown together), so it is set beside berth's start plus
//! release overhead.
//!
//! DNS: 2,000 sequential A queries (after 100 warm-ups) for a running unit's service,
//! sent over UDP to berthd's resolver (the node's address, port 53: what the container's
//! resolv.conf names) from inside the unit's network namespace, and from the node's.
//!
//! Build and run as root (needs containernetworking-plugins, busybox-static, podman and
//! runc for the comparison: `scripts/install-deps bench`):
//!   cargo build --release --workspace --bins && cargo build --release -p berth-benches --bin unit_network
//!   BERTH_BIN_DIR=target/release target/release/unit_network [--trials 30] [--warmup 3] [--dns N] [--no-podman]
//! The whole run is in a private network namespace made at start (the test bridge and
//! podman's bridge and nat rules vanish with it).

#[path = "network/dns_client.rs"]
mod dns_client;
#[path = "network/podman.rs"]
mod podman;
#[path = "unit_network/trial.rs"]
mod trial;
#[path = "network/util.rs"]
mod util;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_orchestrator::network::{node_conflist, NodeNetwork};
use berth_tests::cluster::units::web_image;
use berth_tests::cluster::{wait_until, Cluster};

use podman::Podman;
use trial::{Mode, Times, Units};
use util::{ms, pct, private_netns, row, versions, PLUGINS};

struct Opts {
    trials: usize,
    warmup: usize,
    podman: bool,
    dns: usize,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        trials: 30,
        warmup: 3,
        podman: true,
        dns: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize> {
            let v = args.next().with_context(|| format!("{name} N"))?;
            v.parse()
                .with_context(|| format!("{name}: not a number: {v:?}"))
        };
        match a.as_str() {
            "--trials" => o.trials = num("--trials")?,
            "--warmup" => o.warmup = num("--warmup")?,
            "--dns" => o.dns = num("--dns")?,
            "--no-podman" => o.podman = false,
            other => {
                bail!("unknown argument {other:?} (--trials N, --warmup N, --dns N, --no-podman)")
            }
        }
    }
    if o.trials == 0 {
        bail!("--trials must be at least 1");
    }
    Ok(o)
}

/// One node with its agent and the web image; waits for its cluster network's conflist.
fn node(tmp: &Path) -> Cluster {
    let layout = web_image(tmp);
    let mut c = Cluster::with_agents();
    c.start_voters("unet", 1);
    c.wait_for_agreed_leader(&c.all());
    c.import_image(0, &layout, "web:1");
    let conflist = c.cni_conf_dir("n0").join("10-berth.conflist");
    wait_until(
        "the cluster network's conflist",
        Duration::from_secs(30),
        || {
            conflist
                .is_file()
                .then_some(())
                .ok_or(format!("no {}", conflist.display()))
        },
    );
    c
}

/// podman's network: the chain berthd writes for its nodes (bridge + host-local, portmap,
/// firewall, loopback), on a bridge and range of its own.
fn podman_conflist(dir: &Path) -> Result<String> {
    let mut n = NodeNetwork::new("10.254.0.0/24".parse()?, "10.254.0.0/16".parse()?);
    n.name = podman::NETWORK.into();
    n.bridge = "bpm0".into();
    n.ipam_dir = Some(Podman::ipam_dir(dir));
    Ok(node_conflist(&n).to_string())
}

#[derive(Default)]
struct Samples {
    none: Vec<Times>,
    net: Vec<Times>,
    podman_none: Vec<Duration>,
    podman_net: Vec<Duration>,
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: the bench runs berthd, containers, bridges and nat rules");
    }
    for p in ["bridge", "host-local", "portmap", "firewall", "loopback"] {
        if !Path::new(PLUGINS).join(p).is_file() {
            bail!("{PLUGINS}/{p} missing: apt-get install containernetworking-plugins");
        }
    }
    private_netns()?;
    let tmp = tempfile::tempdir()?;
    let pdir = tmp.path().join("podman");
    let podman = if opts.podman {
        Some(
            Podman::setup(&pdir, &podman_conflist(&pdir)?)
                .context("podman setup (apt-get install podman)")?,
        )
    } else {
        None
    };
    let c = node(tmp.path());
    let units = Units::watch(&c)?;
    let mut s = Samples::default();
    for i in 0..opts.warmup + opts.trials {
        let keep = i >= opts.warmup;
        let order = if i % 2 == 0 {
            [Mode::None, Mode::Cluster]
        } else {
            [Mode::Cluster, Mode::None]
        };
        for mode in order {
            let t = units.trial(mode, i)?;
            if keep {
                match mode {
                    Mode::None => s.none.push(t),
                    Mode::Cluster => s.net.push(t),
                }
            }
        }
        if let Some(p) = &podman {
            let (none, with) = p.pair(i, 21000 + (i % 1000) as u16)?;
            if keep {
                s.podman_none.push(none);
                s.podman_net.push(with);
            }
        }
        eprintln!("trial {i} done");
    }
    let dns = dns_latency(&c, &units, opts.dns).context("DNS lookups")?;
    print!("{}", report(&opts, &s, podman.is_some()));
    println!(
        "\nDNS lookups from a unit (`dns.service.berth` A, 1 answer; {} sequential UDP queries after 100 warm-ups, to berthd at the node's address:53, the container's resolv.conf nameserver):\n\n| client | p50 us | p90 us | p99 us |\n|---|---:|---:|---:|",
        opts.dns
    );
    let mut rows = String::new();
    row(
        &mut rows,
        "inside the unit's container (veth, bridge)",
        &dns.0,
    );
    row(&mut rows, "in the node's namespace", &dns.1);
    print!("{rows}");
    let left = units.leftovers();
    let podman_left = podman.as_ref().map_or(0, Podman::leases);
    println!("\nleft on the node after the run: {left}; podman IPAM leases left: {podman_left}");
    Ok(())
}

/// Lookups from inside a running networked unit and from its node's namespace.
fn dns_latency(c: &Cluster, units: &Units, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let pid = units.start_for_dns()?;
    let server = SocketAddr::new(c.net.slot(0).ip.into(), 53);
    let from = |ns: String| -> Result<Vec<f64>> {
        let f = std::fs::File::open(&ns).with_context(|| ns.clone())?;
        std::thread::spawn(move || -> Result<Vec<f64>> {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns {ns}"))?;
            dns_client::lookups(server, "dns.service.berth", 1, 100, n)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("DNS client thread panicked"))?
    };
    let container = from(format!("/proc/{pid}/ns/net"));
    let node = from(format!("/run/netns/{}", c.net.slot(0).netns));
    units.stop_dns()?;
    Ok((container?, node?))
}

fn report(opts: &Opts, s: &Samples, podman: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Networking in a unit's start and stop: berthd (cluster network `berth`) vs podman (CNI bridge + host-local + portmap)\n"
    );
    let _ = writeln!(
        out,
        "command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        out,
        "trials: {} after {} warm-ups, interleaved (Network=none and networked units in alternating order, then podman's pair); wall time",
        opts.trials, opts.warmup
    );
    let _ = writeln!(
        out,
        "berthd: {}",
        berth_tests::workspace_bin("berthd").display()
    );
    versions(&mut out, podman);
    let _ = writeln!(
        out,
        "\n| step | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|"
    );
    let col = |v: &[Times], f: fn(&Times) -> Duration| -> Vec<f64> {
        v.iter().map(|t| ms(f(t))).collect()
    };
    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let start = (col(&s.none, |t| t.start), col(&s.net, |t| t.start));
    let stop = (col(&s.none, |t| t.stop), col(&s.net, |t| t.stop));
    let rel = (col(&s.none, |t| t.released), col(&s.net, |t| t.released));
    row(&mut out, "unit start, Network=none", &start.0);
    row(
        &mut out,
        "unit start, cluster network + PublishPort",
        &start.1,
    );
    let start_over = diff(&start.1, &start.0);
    row(
        &mut out,
        "  networking's share of the start (per-trial difference)",
        &start_over,
    );
    row(&mut out, "unit stop -> inactive, Network=none", &stop.0);
    row(&mut out, "unit stop -> inactive, cluster network", &stop.1);
    row(
        &mut out,
        "  networking's share of the stop (per-trial difference)",
        &diff(&stop.1, &stop.0),
    );
    row(
        &mut out,
        "unit stop -> network released, cluster network",
        &rel.1,
    );
    let rel_over = diff(&rel.1, &rel.0);
    row(
        &mut out,
        "  networking's share of stop -> released (per-trial difference)",
        &rel_over,
    );
    let both: Vec<f64> = start_over
        .iter()
        .zip(&rel_over)
        .map(|(a, b)| a + b)
        .collect();
    row(
        &mut out,
        "networking's share of start + stop -> released",
        &both,
    );
    if podman {
        let none: Vec<f64> = s.podman_none.iter().map(|d| ms(*d)).collect();
        let net: Vec<f64> = s.podman_net.iter().map(|d| ms(*d)).collect();
        let over = diff(&net, &none);
        row(&mut out, "podman run --rm --network none true", &none);
        row(
            &mut out,
            "podman run --rm --network benchnet -p P:80 true (berthd's chain)",
            &net,
        );
        row(
            &mut out,
            "podman's networking overhead (per-trial difference)",
            &over,
        );
        let _ = writeln!(
            out,
            "\nmedians: berthd's networking overhead (start + stop -> released) {:.1} ms vs podman's {:.1} ms = {:.2}x; start alone {:.1} ms = {:.2}x",
            pct(&both, 50.0),
            pct(&over, 50.0),
            pct(&both, 50.0) / pct(&over, 50.0),
            pct(&start_over, 50.0),
            pct(&start_over, 50.0) / pct(&over, 50.0),
        );
    }
    out
}

/// The instant `f` first returns true, polling every millisecond for at most 30 s.
pub fn poll_until(what: &str, mut f: impl FnMut() -> bool) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if f() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 30 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
