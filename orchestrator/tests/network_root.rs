//! The network building blocks against the kernel, as root, in network namespaces these
//! tests make and delete (also on failure): host-gw routes between two "nodes", and a
//! node's generated conflist run through the CNI invoker with the real plugins.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_cni::{
    Attachment, AttachmentKey, Invoker, InvokerConfig, NetworkConfigList, PortMapping,
    RuntimeConfig,
};
use berth_orchestrator::network::{
    desired_routes, node_conflist, NodeNetwork, Peer, RouteTable, ROUTE_PROTOCOL,
};

fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests make network namespaces: run them as root"
    );
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (install iproute2/iptables)"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named network namespaces, deleted on drop.
struct Netns(Vec<String>);

impl Netns {
    fn new(names: &[String]) -> Self {
        let ns = Netns(names.to_vec());
        for n in names {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread inside the named namespace (sockets it makes stay in it).
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("open netns");
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

#[test]
fn host_gw_routes_are_added_used_and_removed() {
    need_root();
    let pid = std::process::id();
    let (a, b) = (format!("bnet-a-{pid}"), format!("bnet-b-{pid}"));
    let _ns = Netns::new(&[a.clone(), b.clone()]);
    // node A 10.77.0.1 <-> node B 10.77.0.2 on one link; B's containers in 10.88.2.0/24
    run(&[
        "ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
    ]);
    run(&["ip", "-n", &a, "addr", "add", "10.77.0.1/24", "dev", "eth0"]);
    run(&["ip", "-n", &b, "addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    run(&["ip", "-n", &a, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", &b, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", &b, "link", "add", "berth0", "type", "bridge"]);
    run(&[
        "ip",
        "-n",
        &b,
        "addr",
        "add",
        "10.88.2.1/24",
        "dev",
        "berth0",
    ]);
    run(&["ip", "-n", &b, "link", "set", "berth0", "up"]);
    // a route of someone else's in A's table: never touched
    run(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.77.0.2",
    ]);

    let table = RouteTable {
        netns: Some(a.clone()),
        protocol: ROUTE_PROTOCOL,
    };
    let peers = [
        Peer {
            machine: "b".into(),
            subnet: "10.88.2.0/24".parse().unwrap(),
            addr: "10.77.0.2".parse().unwrap(),
        },
        Peer {
            machine: "c".into(),
            subnet: "10.88.3.0/24".parse().unwrap(),
            addr: "10.77.0.3".parse().unwrap(),
        },
    ];
    let desired = desired_routes("a", Some("10.88.1.0/24".parse().unwrap()), &peers);
    let diff = table.sync(&desired).unwrap();
    assert_eq!(diff.add.len(), 2);
    assert_eq!(table.list().unwrap(), desired);
    let shown = run(&[
        "ip",
        "-n",
        &a,
        "route",
        "show",
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ]);
    assert!(
        shown.contains("10.88.2.0/24 via 10.77.0.2 dev eth0"),
        "{shown}"
    );
    // the kernel uses it: B's container address is reached through B
    let get = run(&["ip", "-n", &a, "route", "get", "10.88.2.1"]);
    assert!(get.contains("via 10.77.0.2 dev eth0"), "{get}");
    // and a connection from A to B's container address is made over it
    let listener = in_netns(&b, || std::net::TcpListener::bind("10.88.2.1:0").unwrap());
    let target = listener.local_addr().unwrap();
    let conn = in_netns(&a, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
    });
    assert!(conn.is_ok(), "connect from A to {target}: {conn:?}");
    let (_, from) = listener.accept().unwrap();
    assert_eq!(from.ip().to_string(), "10.77.0.1");
    // a second sync changes nothing
    assert!(table.sync(&desired).unwrap().is_empty());

    // c leaves: its route goes, b's stays, the foreign route stays
    let desired = desired_routes("a", Some("10.88.1.0/24".parse().unwrap()), &peers[..1]);
    let diff = table.sync(&desired).unwrap();
    assert_eq!(diff.remove.len(), 1);
    assert_eq!(diff.remove[0].dst.to_string(), "10.88.3.0/24");
    let all = run(&["ip", "-n", &a, "route", "show"]);
    assert!(!all.contains("10.88.3.0/24"), "{all}");
    assert!(
        all.contains("10.88.2.0/24") && all.contains("10.99.0.0/24 via 10.77.0.2"),
        "{all}"
    );
    // everything goes
    table.sync(&[]).unwrap();
    let all = run(&["ip", "-n", &a, "route", "show"]);
    assert!(!all.contains("10.88."), "{all}");
    assert!(all.contains("10.99.0.0/24"), "{all}");
    // an unreachable gateway is the kernel's clear error
    let bad = desired_routes(
        "a",
        None,
        &[Peer {
            machine: "far".into(),
            subnet: "10.88.9.0/24".parse().unwrap(),
            addr: "192.0.2.1".parse().unwrap(),
        }],
    );
    let errs = table.sync(&bad).unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .contains("route replace 10.88.9.0/24 via 192.0.2.1"),
        "{}",
        errs[0]
    );
}

#[test]
fn the_node_conflist_runs_with_the_real_plugins_and_del_removes_everything() {
    need_root();
    for p in ["bridge", "host-local", "portmap", "firewall", "loopback"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).is_file(),
            "/usr/lib/cni/{p} missing: install containernetworking-plugins"
        );
    }
    let pid = std::process::id();
    let (host, ctr) = (format!("bnet-h-{pid}"), format!("bnet-c-{pid}"));
    let _ns = Netns::new(&[host.clone(), ctr.clone()]);
    // this thread (and the plugins it starts) live in the private "host" namespace
    let f = File::open(format!("/run/netns/{host}")).unwrap();
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let mut node = NodeNetwork::new(
        "10.88.5.0/24".parse().unwrap(),
        "10.88.0.0/16".parse().unwrap(),
    );
    node.ipam_dir = Some(tmp.path().join("ipam"));
    let doc = node_conflist(&node).to_string();
    let net = NetworkConfigList::from_conflist(doc.as_bytes(), None).unwrap();
    let inv = Invoker::new(InvokerConfig {
        plugin_dirs: vec!["/usr/lib/cni".into()],
        state_dir: tmp.path().join("state"),
        timeout: Duration::from_secs(60),
    });
    let att = Attachment {
        container_id: format!("unit{pid}"),
        netns: format!("/run/netns/{ctr}").into(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            extra: Default::default(),
        },
    };
    let result = inv.add(&net, &att).unwrap();
    let ip = result.container_ip().unwrap().to_string();
    assert!(ip.starts_with("10.88.5."), "{ip}");
    let addr = run(&["ip", "-n", &ctr, "-o", "addr", "show", "dev", "eth0"]);
    // the node's subnet, with the cluster's prefix (what keeps the cluster unmasqueraded)
    assert!(addr.contains(&format!("{ip}/16")), "{addr}");
    let bridge = run(&["ip", "-o", "addr", "show", "dev", "berth0"]);
    assert!(bridge.contains("10.88.5.1/16"), "{bridge}");
    // other nodes' subnets go through the gateway, not on-link
    let via = run(&["ip", "-n", &ctr, "route", "get", "10.88.9.9"]);
    assert!(via.contains("via 10.88.5.1 dev eth0"), "{via}");
    let outside = run(&["ip", "-n", &ctr, "route", "get", "192.0.2.1"]);
    assert!(outside.contains("via 10.88.5.1 dev eth0"), "{outside}");
    let filter = run(&["iptables-save", "-t", "filter"]);
    assert!(
        filter.contains("CNI-FORWARD") && filter.contains(&ip),
        "firewall rules: {filter}"
    );
    let nat = run(&["iptables-save", "-t", "nat"]);
    assert!(nat.contains(&format!("--to-destination {ip}:80")), "{nat}");
    // the container's masquerade chain leaves the whole cluster range alone, then
    // masquerades the rest (before: only this node's /24 was left alone)
    let chain = nat
        .lines()
        .find(|l| l.starts_with(&format!("-A POSTROUTING -s {ip}/32")))
        .and_then(|l| l.split("-j ").nth(1))
        .unwrap_or_else(|| panic!("no masquerade jump for {ip}: {nat}"))
        .trim()
        .to_string();
    let rules: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")))
        .collect();
    assert!(
        rules.len() == 2
            && rules[0].contains("-d 10.88.0.0/16")
            && rules[0].ends_with("-j ACCEPT")
            && rules[1].ends_with("-j MASQUERADE"),
        "{rules:?}"
    );

    let key = AttachmentKey {
        network: "berth".into(),
        container_id: att.container_id.clone(),
        ifname: "eth0".into(),
    };
    assert!(inv.del(&key).unwrap());
    assert!(
        !run(&["iptables-save", "-t", "filter"]).contains(&ip),
        "firewall rules left"
    );
    assert!(
        !run(&["iptables-save", "-t", "nat"]).contains(&ip),
        "nat rules left"
    );
    assert!(!run(&["ip", "-o", "link"]).contains("veth"), "veth left");
    assert!(
        !tmp.path().join("ipam/berth").join(&ip).exists(),
        "lease left"
    );
}
