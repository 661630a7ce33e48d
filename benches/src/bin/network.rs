//! Time networking adds to a container: berth-cni's ADD and DEL with bridge + host-local +
//! portmap, beside podman's `run --network <CNI bridge network>` over `--network none` with
//! the same plugins and a published port, in one interleaved run.
//!
//! Then DNS lookup latency from a container: berthd's responder on a UDP socket at the
//! bridge's address, queried 2,000 times from inside a namespace attached by berth-cni
//! and from the host (network/dns.rs).
//!
//! Run as root: `cargo run --release -p berth-benches --bin network -- [--trials 50 --warmup 5]
//! [--no-podman]`. Needs containernetworking-plugins, iproute2, iptables and (for the
//! comparison) podman and busybox (`scripts/install-deps bench`).
//!
//! The whole bench runs in a private network namespace made at start, so the bridges and
//! nat rules of both land there and vanish with it. Each trial, in turn: a network
//! namespace is made with `ip netns add` (timed apart), berth-cni ADDs and DELs it (each
//! timed), the namespace is deleted (timed); then podman runs busybox `true` once with
//! `--network none` and once on the CNI network with `-p`, in alternating order. podman's
//! networking overhead is the per-trial difference of the two (it includes podman's own
//! namespace handling, the plugins' ADD and DEL and its bookkeeping); how podman is set up
//! is in network/podman.rs.
//!
//! The time networking adds to a unit's start and stop inside berthd: `unit_network`.

#[path = "network/dns.rs"]
mod dns;
#[path = "network/dns_client.rs"]
mod dns_client;
#[path = "network/podman.rs"]
mod podman;
#[path = "network/util.rs"]
mod util;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::collections::BTreeMap;

use podman::Podman;
use util::{ms, pct, private_netns, row, timed, versions, PLUGINS};

use berth_cni::{
    Attachment, AttachmentKey, Error as CniError, Invocation, Invoker, NetworkConfigList,
    PluginRunner, PortMapping, ProcessRunner, RuntimeConfig,
};

struct Opts {
    trials: usize,
    warmup: usize,
    podman: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        trials: 50,
        warmup: 5,
        podman: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--trials" => o.trials = args.next().context("--trials N")?.parse()?,
            "--warmup" => o.warmup = args.next().context("--warmup N")?.parse()?,
            "--no-podman" => o.podman = false,
            other => bail!("unknown argument {other:?} (--trials N, --warmup N, --no-podman)"),
        }
    }
    if o.trials == 0 {
        bail!("--trials must be at least 1");
    }
    Ok(o)
}

/// bridge (gateway, masquerade) + host-local + portmap, as podman's CNI backend uses them.
fn conflist(name: &str, bridge: &str, subnet: &str, ipam: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
          {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
            "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}},
          {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
        ipam.display()
    )
}

/// The real runner, timing each plugin run (for the per-plugin breakdown).
struct TimingRunner {
    inner: ProcessRunner,
    times: RefCell<BTreeMap<String, Vec<Duration>>>,
    keep: std::cell::Cell<bool>,
    /// Plugin time since the last `take_spent` (to tell the invoker's own time apart).
    spent: std::cell::Cell<Duration>,
}

impl TimingRunner {
    fn take_spent(&self) -> Duration {
        self.spent.replace(Duration::ZERO)
    }
}

impl PluginRunner for &TimingRunner {
    fn run(&self, inv: &Invocation) -> Result<Vec<u8>, CniError> {
        let t = Instant::now();
        let out = self.inner.run(inv);
        self.spent.set(self.spent.get() + t.elapsed());
        if self.keep.get() {
            let key = format!("{} {}", inv.command.as_str(), inv.plugin);
            self.times
                .borrow_mut()
                .entry(key)
                .or_default()
                .push(t.elapsed());
        }
        out
    }
    fn available(&self, plugin: &str) -> Result<(), CniError> {
        self.inner.available(plugin)
    }
}

#[derive(Default)]
struct Samples {
    ns_add: Vec<Duration>,
    add: Vec<Duration>,
    del: Vec<Duration>,
    ns_del: Vec<Duration>,
    /// ADD and DEL time outside the plugin runs (records, planning, process start-up).
    own_add: Vec<Duration>,
    own_del: Vec<Duration>,
    podman_none: Vec<Duration>,
    podman_net: Vec<Duration>,
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: the bench makes network namespaces, bridges and nat rules");
    }
    for p in ["bridge", "host-local", "portmap"] {
        if !Path::new(PLUGINS).join(p).is_file() {
            bail!("{PLUGINS}/{p} missing: apt-get install containernetworking-plugins");
        }
    }
    private_netns()?;
    let tmp = tempfile::tempdir()?;
    let pdir = tmp.path().join("podman");
    let podman = if opts.podman {
        Some(
            Podman::setup(
                &pdir,
                &conflist(
                    podman::NETWORK,
                    "bpm0",
                    "10.254.0.0/24",
                    &Podman::ipam_dir(&pdir),
                ),
            )
            .context("podman setup (apt-get install podman)")?,
        )
    } else {
        None
    };
    let net = NetworkConfigList::from_conflist(
        conflist(
            "berthbench",
            "bnb0",
            "10.253.0.0/24",
            &tmp.path().join("ipam"),
        )
        .as_bytes(),
        None,
    )?;
    let runner = TimingRunner {
        inner: ProcessRunner {
            plugin_dirs: vec![PLUGINS.into()],
            timeout: Duration::from_secs(60),
        },
        times: RefCell::new(BTreeMap::new()),
        keep: std::cell::Cell::new(false),
        spent: std::cell::Cell::new(Duration::ZERO),
    };
    let inv = Invoker::with_runner(&runner, vec![PLUGINS.into()], tmp.path().join("state"));
    let pid = std::process::id();
    let mut s = Samples::default();
    for i in 0..opts.warmup + opts.trials {
        let keep = i >= opts.warmup;
        runner.keep.set(keep);
        let ns = format!("bnb-{pid}-{i}");
        let t_ns_add = timed(Command::new("ip").args(["netns", "add", &ns]))?;
        let att = Attachment {
            container_id: format!("bench{i}"),
            netns: format!("/run/netns/{ns}").into(),
            ifname: "eth0".into(),
            args: vec![],
            runtime_config: RuntimeConfig {
                port_mappings: vec![PortMapping {
                    host_port: 20000 + (i % 1000) as u16,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: None,
                }],
                extra: Default::default(),
            },
        };
        runner.take_spent();
        let t = Instant::now();
        inv.add(&net, &att)?;
        let t_add = t.elapsed();
        let own_add = t_add.saturating_sub(runner.take_spent());
        let key = AttachmentKey {
            network: net.name.clone(),
            container_id: att.container_id.clone(),
            ifname: "eth0".into(),
        };
        let t = Instant::now();
        inv.del(&key)?;
        let t_del = t.elapsed();
        let own_del = t_del.saturating_sub(runner.take_spent());
        let t_ns_del = timed(Command::new("ip").args(["netns", "del", &ns]))?;
        if keep {
            s.ns_add.push(t_ns_add);
            s.add.push(t_add);
            s.del.push(t_del);
            s.ns_del.push(t_ns_del);
            s.own_add.push(own_add);
            s.own_del.push(own_del);
        }
        if let Some(p) = &podman {
            let (none, with) = p.pair(i, 21000 + (i % 1000) as u16)?;
            if keep {
                s.podman_none.push(none);
                s.podman_net.push(with);
            }
        }
    }
    runner.keep.set(false);
    let lookups = dns::lookup_latency(&inv, &net, 2000).context("DNS lookup latency")?;
    print!("{}", report(&opts, &s, podman.is_some()));
    println!("\nDNS lookups (`web.service.berth` A, 3 answers; 2,000 sequential queries after 100 warm-ups, UDP to berthd's responder at the bridge address):\n\n| client | p50 us | p90 us | p99 us |\n|---|---:|---:|---:|");
    let mut dns_rows = String::new();
    row(
        &mut dns_rows,
        "inside a container (veth, bridge)",
        &lookups.container,
    );
    row(&mut dns_rows, "on the host", &lookups.host);
    print!("{dns_rows}");
    println!("\nper plugin run (berth-cni, the same trials):\n\n| plugin run | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|");
    let mut rows = String::new();
    for (k, d) in runner.times.borrow().iter() {
        let v: Vec<f64> = d.iter().map(|x| ms(*x)).collect();
        row(&mut rows, &format!("`{k}`"), &v);
    }
    print!("{rows}");
    let leases = |d: PathBuf| {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0)
    };
    let left =
        leases(tmp.path().join("ipam/berthbench")) + podman.as_ref().map_or(0, Podman::leases);
    println!("\nIPAM leases left after the run: {left}");
    Ok(())
}

fn report(opts: &Opts, s: &Samples, podman: bool) -> String {
    let v = |d: &[Duration]| d.iter().map(|x| ms(*x)).collect::<Vec<f64>>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Networking overhead: berth-cni vs podman (CNI bridge + host-local + portmap)\n"
    );
    let _ = writeln!(
        out,
        "command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        out,
        "trials: {} after {} warm-ups, interleaved; wall time",
        opts.trials, opts.warmup
    );
    versions(&mut out, podman);
    let _ = writeln!(
        out,
        "\n| step | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|"
    );
    let add = v(&s.add);
    let del = v(&s.del);
    let both: Vec<f64> = add.iter().zip(&del).map(|(a, d)| a + d).collect();
    let whole: Vec<f64> = both
        .iter()
        .zip(v(&s.ns_add).iter().zip(v(&s.ns_del)))
        .map(|(b, (na, nd))| b + na + nd)
        .collect();
    row(
        &mut out,
        "berth-cni ADD (bridge, host-local, portmap)",
        &add,
    );
    row(&mut out, "berth-cni DEL", &del);
    row(&mut out, "berth-cni ADD + DEL", &both);
    row(
        &mut out,
        "  of which berth-cni's own, in ADD (records, fsyncs, spawning)",
        &v(&s.own_add),
    );
    row(
        &mut out,
        "  of which berth-cni's own, in DEL",
        &v(&s.own_del),
    );
    row(&mut out, "`ip netns add`", &v(&s.ns_add));
    row(&mut out, "`ip netns del`", &v(&s.ns_del));
    row(&mut out, "netns add + ADD + DEL + netns del", &whole);
    if podman {
        let none = v(&s.podman_none);
        let net = v(&s.podman_net);
        let over: Vec<f64> = net.iter().zip(&none).map(|(n, z)| n - z).collect();
        row(&mut out, "podman run --rm --network none true", &none);
        row(
            &mut out,
            "podman run --rm --network benchnet -p P:80 true",
            &net,
        );
        row(
            &mut out,
            "podman's networking overhead (per-trial difference)",
            &over,
        );
        let ratio = pct(&whole, 50.0) / pct(&over, 50.0);
        let _ = writeln!(
            out,
            "\nberth (netns + ADD + DEL) vs podman's overhead, medians: {:.2} ms vs {:.2} ms = {ratio:.2}x",
            pct(&whole, 50.0),
            pct(&over, 50.0)
        );
    }
    out
}
