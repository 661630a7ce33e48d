//! Units on the cluster network with the real CNI plugins: each container in its own network
//! namespace on its machine's subnet, reached across machines by address and by DNS name,
//! published ports through portmap, and nothing left behind by a stop, a crash or a bad
//! network config (checked in the node's own namespace: veths, IPAM leases, nat rules,
//! namespace files, the invoker's records).

use std::net::Ipv4Addr;

use super::*;

/// A unit serving /www on :80 inside its own namespace; `/who` says which unit it is.
/// httpd -v logs each client's address to the journal.
fn server(port: u16, slot: usize) -> String {
    format!(
        "[Container]
Image=web:1
Exec=sh -c 'echo %p > /www/who; exec httpd -f -v -p 80 -h /www'
PublishPort={port}:80

[Service]
TimeoutStopSec=1s

[X-Fleet]
MachineMetadata=slot={slot}
"
    )
}

pub(super) fn plugins_installed() {
    for p in [
        "bridge",
        "host-local",
        "portmap",
        "firewall",
        "loopback",
        "tuning",
    ] {
        assert!(
            Path::new("/usr/lib/cni").join(p).is_file(),
            "/usr/lib/cni/{p} is missing: install containernetworking-plugins (scripts/install-deps)"
        );
    }
}

/// The unit's state record on node `k` once it is active: (machine, container ip, pid).
fn active_state(c: &Cluster, k: usize, unit: &str) -> Result<(String, Ipv4Addr, u32), String> {
    let states = c.node(k).unit_states()?;
    let s = states
        .iter()
        .find(|s| s["unit"] == unit && s["active"] == "active")
        .ok_or_else(|| format!("{unit} not active: {states:?}"))?;
    let ip = s["ip"]
        .as_str()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| format!("no container ip in {s}"))?;
    let pid = s["pid"].as_u64().ok_or(format!("no pid in {s}"))? as u32;
    Ok((
        s["machine"].as_str().unwrap_or_default().to_string(),
        ip,
        pid,
    ))
}

/// Runs a program of the web image inside the container whose init is `pid` (its network
/// and mount namespaces, so its resolv.conf too).
pub(super) fn in_container(pid: u32, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args([
            "5",
            "nsenter",
            "-t",
            &pid.to_string(),
            "-n",
            "-m",
            "-r",
            "-w",
            "--",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} in the container: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a command in node `k`'s network namespace; its stdout.
pub(super) fn in_node(c: &Cluster, k: usize, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.net.slot(k).netns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        c.node(k).name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What networking a node holds for its units: veths on the cluster bridge, host-local
/// leases, nat rules naming container addresses, namespace files, attachment records.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) veths: usize,
    pub(super) leases: Vec<String>,
    pub(super) nat: Vec<String>,
    pub(super) netns: Vec<String>,
    pub(super) records: Vec<String>,
}

fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(super) fn held(c: &Cluster, k: usize, bridge: &str, network: &str) -> Held {
    let node = c.node(k);
    let links = in_node(c, k, &["ip", "-o", "link", "show"]);
    let veths = links
        .lines()
        .filter(|l| l.contains(&format!("master {bridge} ")))
        .count();
    let nat = in_node(c, k, &["iptables-save", "-t", "nat"])
        .lines()
        .filter(|l| l.contains("10.88.") && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let cni = node.data_dir.join("cni");
    Held {
        veths,
        leases: files(&cni.join("ipam").join(network), |n| {
            n.parse::<Ipv4Addr>().is_ok()
        }),
        nat,
        netns: files(&node.data_dir.join("run").join("netns"), |_| true),
        records: files(&cni.join("attachments").join(network), |_| true),
    }
}

#[test]
fn containers_reach_each_other_across_machines_by_address_and_name() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let a = unit_file(tmp.path(), "a.service", &server(8081, 1));
    let b = unit_file(tmp.path(), "b.service", &server(8082, 2));
    ctl(&c, 0, &["start", a.to_str().expect("utf-8")]);
    ctl(&c, 0, &["start", b.to_str().expect("utf-8")]);
    let (ma, ip_a, pid_a) = wait_until("a to run", UNIT_PATIENCE, || {
        active_state(&c, 0, "a.service")
    });
    let (mb, ip_b, pid_b) = wait_until("b to run", UNIT_PATIENCE, || {
        active_state(&c, 0, "b.service")
    });
    assert_eq!((ma.as_str(), mb.as_str()), ("n1", "n2"));

    // Each machine's containers come from its own subnet, as the leader allocated them.
    let subnet = |m: &str| -> ipnet::Ipv4Net {
        let v = c
            .node(0)
            .get_key(&format!("/network/subnets/{m}"))
            .expect("read")
            .unwrap_or_else(|| panic!("no subnet for {m}"));
        v["value"].as_str().expect("value").parse().expect("subnet")
    };
    let (na, nb) = (subnet("n1"), subnet("n2"));
    assert_ne!(na, nb);
    assert!(
        na.contains(&ip_a) && nb.contains(&ip_b),
        "{ip_a} in {na}, {ip_b} in {nb}"
    );
    // Every node's subnet is distinct (n0 has one too).
    let n0 = subnet("n0");
    assert!(n0 != na && n0 != nb);

    // From inside a: b by its address, across machines, and the source is a's own address
    // (not masqueraded between cluster subnets).
    let who = wait_until("a to reach b by address", UNIT_PATIENCE, || {
        in_container(
            pid_a,
            &["wget", "-q", "-O", "-", &format!("http://{ip_b}/who")],
        )
    });
    assert_eq!(who.trim(), "b");
    let log = ctl(&c, 0, &["journal", "-n", "50", "b.service"]);
    assert!(
        log.contains(&ip_a.to_string()),
        "b sees a's container address as the source: {log}"
    );

    // By DNS name, from the container's own resolver (berthd on its machine).
    let resolv = in_container(pid_a, &["cat", "/etc/resolv.conf"]).expect("resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {}", c.net.slot(1).ip)),
        "{resolv}"
    );
    for name in ["b.service.berth", "b"] {
        let who = wait_until("a to reach b by name", UNIT_PATIENCE, || {
            in_container(
                pid_a,
                &["wget", "-q", "-O", "-", &format!("http://{name}/who")],
            )
        });
        assert_eq!(who.trim(), "b", "{name}");
    }
    // And the other way round.
    let who = in_container(
        pid_b,
        &["wget", "-q", "-O", "-", "http://a.service.berth/who"],
    )
    .expect("b to reach a by name");
    assert_eq!(who.trim(), "a");

    // Every node registers both addresses; any node's DNS answers A and SRV from it.
    for k in c.all() {
        let list = c.node(k).service("b").expect("lookup");
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["ip"], c.net.slot(2).ip.to_string());
        assert_eq!(list[0]["port"], 8082);
        assert_eq!(list[0]["container_ip"], ip_b.to_string());
        assert_eq!(list[0]["container_port"], 80);
    }
    let lookup = ctl(&c, 0, &["services", "lookup", "b"]);
    assert!(
        lookup.contains(&format!("{}:8082", c.net.slot(2).ip))
            && lookup.contains(&format!("{ip_b}:80")),
        "{lookup}"
    );
    let dns0 = c.net.slot(0).ip.to_string();
    let a_rec = in_node(
        &c,
        0,
        &["dig", "+short", &format!("@{dns0}"), "b.service.berth", "A"],
    );
    assert_eq!(a_rec.trim(), ip_b.to_string());
    let over_tcp = in_node(
        &c,
        0,
        &[
            "dig",
            "+tcp",
            "+short",
            &format!("@{dns0}"),
            "a.service.berth",
            "A",
        ],
    );
    assert_eq!(over_tcp.trim(), ip_a.to_string(), "DNS over TCP");
    let srv = in_node(
        &c,
        0,
        &[
            "dig",
            "+short",
            &format!("@{dns0}"),
            "b.service.berth",
            "SRV",
        ],
    );
    assert!(srv.contains(" 80 "), "{srv}");

    // A published port answers on the machine's address, asked from a third machine.
    let body = http_get(&c, 0, &format!("http://{}:8082/who", c.net.slot(2).ip)).expect("8082");
    assert_eq!(body.trim(), "b");
}

#[test]
fn a_stop_removes_the_veth_lease_nat_rules_and_namespace() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let f = unit_file(tmp.path(), "s.service", &server(8083, 1));
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    let (_, ip, _) = wait_until("s to run", UNIT_PATIENCE, || {
        active_state(&c, 0, "s.service")
    });
    let before = held(&c, 1, "berth0", "berth");
    assert_eq!(before.veths, 1, "{before:?}");
    assert_eq!(before.leases, [ip.to_string()], "{before:?}");
    assert!(
        before.nat.iter().any(|l| l.contains(&format!("{ip}:80"))),
        "portmap's DNAT: {before:?}"
    );
    assert_eq!(before.netns.len(), 1, "{before:?}");
    assert_eq!(before.records.len(), 1, "{before:?}");

    ctl(&c, 0, &["stop", "s.service"]);
    wait_until("s's network to be gone", UNIT_PATIENCE, || {
        let now = held(&c, 1, "berth0", "berth");
        if now == Held::default() {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    let states = c.node(0).unit_states().expect("states");
    let s = states
        .iter()
        .find(|s| s["unit"] == "s.service")
        .expect("state");
    assert!(s.get("ip").is_none(), "no address once stopped: {s}");
}

#[test]
fn a_killed_berthd_leaves_networks_that_its_restart_removes() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = cluster_with_web(tmp.path());
    let f = unit_file(tmp.path(), "k.service", &server(8084, 1));
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    let (_, old_ip, old_pid) = wait_until("k to run", UNIT_PATIENCE, || {
        active_state(&c, 0, "k.service")
    });
    // berthd, its watchdog and the container die at once: the network stays behind.
    c.kill_node(1);
    let left = held(&c, 1, "berth0", "berth");
    assert_eq!(left.veths, 1, "{left:?}");
    assert_eq!(left.leases, [old_ip.to_string()], "{left:?}");
    assert_eq!(left.records.len(), 1, "{left:?}");

    c.restart(1);
    // The unit comes back on n1 (its only eligible machine) in a new container (the old
    // state record lives on under n1's lease for a while: wait for the new pid) with a
    // new attachment, and the old one is gone: one veth, one lease, one namespace, nat
    // rules of the new address only.
    let new_ip = wait_until("k to run again", UNIT_PATIENCE, || {
        let (m, ip, pid) = active_state(&c, 1, "k.service")?;
        (m == "n1" && pid != old_pid)
            .then_some(ip)
            .ok_or(format!("pid {pid} on {m}"))
    });
    wait_until("only the new attachment on n1", UNIT_PATIENCE, || {
        let now = held(&c, 1, "berth0", "berth");
        let stale_nat =
            new_ip != old_ip && now.nat.iter().any(|l| l.contains(&format!("{old_ip}:")));
        let ok = now.veths == 1
            && now.leases == [new_ip.to_string()]
            && now.netns.len() == 1
            && now.records.len() == 1
            && !stale_nat;
        ok.then_some(()).ok_or(format!("{now:?}"))
    });
}

#[test]
fn a_malformed_conflist_or_a_failing_plugin_fails_the_unit_and_leaves_nothing() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let conf_dir = c.cni_conf_dir("n1");
    std::fs::create_dir_all(&conf_dir).expect("net.d");
    std::fs::write(
        conf_dir.join("20-broken.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "bridge""#,
    )
    .expect("write");
    let ipam = c.node(1).data_dir.join("lab-ipam");
    std::fs::write(
        conf_dir.join("30-lab.conflist"),
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "lab", "plugins": [
                {{"type": "bridge", "bridge": "lab0", "isGateway": true,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.77.0.0/24"}}]],
                           "dataDir": "{}"}}}},
                {{"type": "tuning", "sysctl": {{"net.ipv4.conf.eth0.no_such_knob": "1"}}}}]}}"#,
            ipam.display()
        ),
    )
    .expect("write");
    for (unit, network, want) in [
        ("m.service", "broken", "20-broken.conflist"),
        ("t.service", "lab", "tuning"),
    ] {
        let text = format!(
            "[Container]\nImage=web:1\nNetwork={network}\n\n[X-Fleet]\nMachineMetadata=slot=1\n"
        );
        let f = unit_file(tmp.path(), unit, &text);
        let out = c.berthctl(0, &["start", "--no-block", f.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{out:?}");
        let err = wait_until("the unit to fail", UNIT_PATIENCE, || {
            let states = c.node(0).unit_states()?;
            let s = states
                .iter()
                .find(|s| s["unit"] == unit && s["active"] == "failed")
                .ok_or_else(|| format!("{states:?}"))?;
            Ok(s["error"].as_str().unwrap_or_default().to_string())
        });
        eprintln!("{unit}: {err}");
        assert!(
            err.starts_with("network: ") && err.contains(want),
            "{unit}: {err}"
        );
    }
    // Nothing of either attempt is left on n1.
    assert_eq!(held(&c, 1, "lab0", "lab"), Held::default());
    let leases = files(&ipam.join("lab"), |n| n.parse::<Ipv4Addr>().is_ok());
    assert!(leases.is_empty(), "lab leases: {leases:?}");
    assert!(
        files(&c.node(1).data_dir.join("cni").join("attachments"), |_| {
            true
        })
        .is_empty()
    );
}

#[test]
fn a_container_that_fails_to_start_gives_its_network_back() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    // The ADD succeeds (the cluster network is fine); the container's program does not
    // exist, so its start fails after the attachment was made.
    let f = unit_file(
        tmp.path(),
        "nox.service",
        "[Container]\nImage=web:1\nExec=/bin/no-such-program\nPublishPort=8086:80\n\n[X-Fleet]\nMachineMetadata=slot=1\n",
    );
    let out = c.berthctl(0, &["start", "--no-block", f.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    let err = wait_until("the unit to fail", UNIT_PATIENCE, || {
        let states = c.node(0).unit_states()?;
        let s = states
            .iter()
            .find(|s| s["unit"] == "nox.service" && s["active"] == "failed")
            .ok_or_else(|| format!("{states:?}"))?;
        Ok(s["error"].as_str().unwrap_or_default().to_string())
    });
    assert!(err.contains("no-such-program"), "{err}");
    wait_until("nox's network to be gone", UNIT_PATIENCE, || {
        let now = held(&c, 1, "berth0", "berth");
        (now == Held::default())
            .then_some(())
            .ok_or(format!("{now:?}"))
    });
}
