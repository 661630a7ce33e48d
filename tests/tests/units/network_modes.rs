//! `Network=none`, `Network=host` and `Network=<a CNI network's name>` units, as their
//! containers see their network: a namespace of their own with loopback only, or the
//! machine's own namespace (a published port answering on the machine's address from
//! another machine), neither taking anything from the cluster network (no veth, lease, nat
//! rule, namespace file or attachment record) nor registered at a container address; or an
//! address of the named network's own range, given back when the unit stops.

use std::path::Path;

use super::network::{held, in_node, plugins_installed, Held};
use super::*;

/// The network namespace of `pid` (the `net:[inode]` link).
fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/net: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// `ip -o link` in the network namespace of `pid` (the host's ip binary; busybox in the
/// web image has no ip applet): the interface names.
fn links_of(pid: u32) -> Vec<String> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "-o", "link", "show"])
        .stdin(Stdio::null())
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// The network namespace link of node `k`'s own namespace (where its berthd runs).
fn node_netns(c: &Cluster, k: usize) -> String {
    let path = Path::new("/run/netns").join(&c.net.slot(k).netns);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).expect("netns file"));
    format!("net:[{ino}]")
}

#[test]
fn a_none_unit_has_loopback_only_and_a_host_unit_the_machines_network() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let none = unit_file(
        tmp.path(),
        "alone.service",
        "[Container]\nImage=web:1\nExec=sleep 1000\nNetwork=none\n\n[Service]\nTimeoutStopSec=1s\n\n[X-Fleet]\nMachineMetadata=slot=1\n",
    );
    let host = unit_file(
        tmp.path(),
        "hostnet.service",
        "[Container]\nImage=web:1\nExec=sh -c 'echo host > /www/who; exec httpd -f -p 8095 -h /www'\nNetwork=host\nPublishPort=8095:8095\n\n[Service]\nTimeoutStopSec=1s\n\n[X-Fleet]\nMachineMetadata=slot=1\n",
    );
    ctl(&c, 0, &["start", none.to_str().expect("utf-8")]);
    ctl(&c, 0, &["start", host.to_str().expect("utf-8")]);
    let pid_of = |unit: &str| {
        wait_until("the unit to run", UNIT_PATIENCE, || {
            let states = c.node(0).unit_states()?;
            let s = states
                .iter()
                .find(|s| s["unit"] == unit && s["active"] == "active")
                .ok_or_else(|| format!("{unit} not active: {states:?}"))?;
            assert!(s.get("ip").is_none(), "no container address: {s}");
            assert_eq!(s["machine"], "n1", "{s}");
            s["pid"].as_u64().map(|p| p as u32).ok_or(format!("{s}"))
        })
    };
    let (p_none, p_host) = (pid_of("alone.service"), pid_of("hostnet.service"));

    // none: a namespace of its own, with nothing but lo.
    let n1 = node_netns(&c, 1);
    assert_ne!(netns_of(p_none), n1);
    assert_eq!(links_of(p_none), ["lo"]);
    // host: the machine's namespace; its port answers on the machine's address from n0.
    assert_eq!(netns_of(p_host), n1);
    let url = format!("http://{}:8095/who", c.net.slot(1).ip);
    let body = wait_until("the host unit's port", UNIT_PATIENCE, || {
        http_get(&c, 0, &url)
    });
    assert_eq!(body.trim(), "host");
    let list = c.node(2).service("hostnet").expect("lookup");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["ip"], c.net.slot(1).ip.to_string());
    assert_eq!(list[0]["port"], 8095);
    assert!(list[0].get("container_ip").is_none(), "{list:?}");

    // Nothing of the cluster network was taken for either (n1 got its bridge conflist,
    // but no attachment exists).
    assert_eq!(held(&c, 1, "berth0", "berth"), Held::default());
    // The node's only veth is its own link to the test bridge (eth0).
    let links = in_node(&c, 1, &["ip", "-o", "link", "show", "type", "veth"]);
    let veths: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .filter(|n| !n.starts_with("eth0@"))
        .collect();
    assert!(veths.is_empty(), "veths on n1: {links}");
}

#[test]
fn a_unit_on_a_named_network_gets_its_address_and_gives_it_back() {
    plugins_installed();
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let conf_dir = c.cni_conf_dir("n1");
    std::fs::create_dir_all(&conf_dir).expect("net.d");
    let ipam = c.node(1).data_dir.join("lab-ipam");
    std::fs::write(
        conf_dir.join("30-lab.conflist"),
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "lab", "plugins": [
                {{"type": "bridge", "bridge": "lab0", "isGateway": true,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.77.0.0/24"}}]],
                           "dataDir": "{}"}}}},
                {{"type": "loopback"}}]}}"#,
            ipam.display()
        ),
    )
    .expect("write");
    let f = unit_file(
        tmp.path(),
        "labbed.service",
        "[Container]\nImage=web:1\nExec=sleep 1000\nNetwork=lab\n\n[Service]\nTimeoutStopSec=1s\n\n[X-Fleet]\nMachineMetadata=slot=1\n",
    );
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    let (pid, ip) = wait_until("the unit to run", UNIT_PATIENCE, || {
        let states = c.node(0).unit_states()?;
        let s = states
            .iter()
            .find(|s| s["unit"] == "labbed.service" && s["active"] == "active")
            .ok_or_else(|| format!("not active: {states:?}"))?;
        assert_eq!(s["network"], "lab", "{s}");
        let ip = s["ip"].as_str().ok_or(format!("no ip: {s}"))?.to_string();
        Ok((s["pid"].as_u64().ok_or(format!("{s}"))? as u32, ip))
    });
    assert!(ip.starts_with("10.77.0."), "{ip}");
    // The container's eth0 has it, on lab0's side of n1.
    let addrs = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ])
        .output()
        .expect("nsenter");
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    assert_eq!(held(&c, 1, "lab0", "lab").veths, 1);
    let lease = ipam.join("lab").join(&ip);
    assert!(lease.is_file(), "{}", lease.display());
    // The cluster network was not used (the one namespace file is this unit's).
    let berth = held(&c, 1, "berth0", "berth");
    assert_eq!(berth.netns.len(), 1, "{berth:?}");
    assert_eq!(
        berth,
        Held {
            netns: berth.netns.clone(),
            ..Held::default()
        }
    );

    ctl(&c, 0, &["stop", "labbed.service"]);
    wait_until("lab's attachment to be gone", UNIT_PATIENCE, || {
        let now = held(&c, 1, "lab0", "lab");
        (now == Held::default() && !lease.exists())
            .then_some(())
            .ok_or(format!("{now:?}, lease {}", lease.exists()))
    });
}
