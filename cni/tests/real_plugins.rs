//! The invoker against the real plugins (Debian's containernetworking-plugins), as root.
//!
//! Each test makes two network namespaces of its own: a "host" one, which the test thread
//! enters (plugins started from that thread inherit it, so the bridge, veths and nat rules
//! land there and never touch the machine's own), and a "container" one. Both are deleted
//! by a guard, also when the test fails.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_cni::{
    find_network, Attachment, AttachmentKey, Error, Invoker, InvokerConfig, NetworkConfigList,
    PortMapping, RuntimeConfig,
};

const PLUGINS: &str = "/usr/lib/cni";

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests make network namespaces: run them as root"
    );
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            Path::new(PLUGINS).join(p).is_file(),
            "CNI plugin {PLUGINS}/{p} missing: install containernetworking-plugins (scripts/install-deps)"
        );
    }
    for tool in ["ip", "iptables-save"] {
        let found = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .any(|d| Path::new(d).join(tool).is_file());
        assert!(found, "{tool} missing: install iproute2 and iptables");
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two named netns; the current thread is moved into the "host" one.
struct Namespaces {
    host: String,
    container: String,
}

impl Namespaces {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let ns = Namespaces {
            host: format!("bcni-{tag}h-{pid}"),
            container: format!("bcni-{tag}c-{pid}"),
        };
        run("ip", &["netns", "add", &ns.host]);
        run("ip", &["netns", "add", &ns.container]);
        let f = File::open(format!("/run/netns/{}", ns.host)).expect("open the host netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("enter the host netns");
        run("ip", &["link", "set", "lo", "up"]);
        ns
    }
    fn container_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.container))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.container])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .status();
    }
}

fn conflist(name: &str, bridge: &str, subnet: &str, ipam_dir: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
          {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
            "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],
                     "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}},
          {{"type":"portmap","capabilities":{{"portMappings":true}}}}{extra},
          {{"type":"loopback"}}]}}"#,
        ipam_dir.display()
    )
}

fn invoker(state: &Path, dirs: Vec<PathBuf>) -> Invoker {
    Invoker::new(InvokerConfig {
        plugin_dirs: dirs,
        state_dir: state.to_path_buf(),
        timeout: Duration::from_secs(60),
    })
}

fn host_links() -> String {
    run("ip", &["-o", "link", "show"])
}

fn nat_rules() -> String {
    run("iptables-save", &["-t", "nat"])
}

#[test]
fn bridge_hostlocal_portmap_loopback_add_and_del() {
    prerequisites();
    let ns = Namespaces::new("a");
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (name, bridge) = (format!("bcni{pid}"), format!("bcb{}", pid % 1_000_000));
    let doc = conflist(
        &name,
        &bridge,
        "10.251.7.0/24",
        &tmp.path().join("ipam"),
        "",
    );
    let net = NetworkConfigList::from_conflist(doc.as_bytes(), None).unwrap();
    let inv = invoker(&tmp.path().join("state"), vec![PLUGINS.into()]);
    let cid = format!("ctr{pid}");
    let att = Attachment {
        container_id: cid.clone(),
        netns: ns.container_path(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 18080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            extra: Default::default(),
        },
    };

    let result = inv.add(&net, &att).unwrap();
    let ip = result.container_ip().unwrap().to_string();
    assert!(ip.starts_with("10.251.7."), "{result:?}");
    let veth = result
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name != bridge)
        .map(|i| i.name.clone())
        .expect("a host-side veth in the result");

    // inside the container: eth0 has the address, lo is up
    let addrs = run(
        "ip",
        &["-n", &ns.container, "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    let lo = run("ip", &["-n", &ns.container, "-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let routes = run("ip", &["-n", &ns.container, "route", "show", "default"]);
    assert!(routes.contains("via 10.251.7.1"), "{routes}");
    // on the host: the veth is on the bridge; the lease and the nat rules exist
    let links = host_links();
    let veth_line = links
        .lines()
        .find(|l| l.contains(&format!("{veth}@")))
        .unwrap_or_else(|| panic!("{links}"));
    assert!(
        veth_line.contains(&format!("master {bridge}")),
        "{veth_line}"
    );
    let lease = tmp.path().join("ipam").join(&name).join(&ip);
    assert_eq!(
        std::fs::read_to_string(&lease).unwrap().lines().next(),
        Some(cid.as_str())
    );
    let nat = nat_rules();
    assert!(
        nat.contains("--dport 18080") && nat.contains(&format!("--to-destination {ip}:80")),
        "{nat}"
    );
    assert!(
        nat.contains(&format!("id: \\\"{cid}\\\"")) || nat.contains(&cid),
        "masquerade rule: {nat}"
    );
    // CHECK passes on a healthy attachment
    let key = AttachmentKey {
        network: name.clone(),
        container_id: cid.clone(),
        ifname: "eth0".into(),
    };
    match inv.check(&key) {
        Ok(()) => {}
        // portmap up to 1.2 checks ip6tables rules it never made for an IPv4-only container
        // (containernetworking/plugins#819); bridge's CHECK, which runs first, passed.
        Err(Error::Plugin { plugin, error, .. })
            if plugin == "portmap" && error.msg.contains("ipv6") => {}
        Err(e) => panic!("CHECK: {e}"),
    }
    assert_eq!(inv.attachments().unwrap().len(), 1);
    // CHECK finds a broken attachment: the container's default route taken away (the
    // address stays: bridge 1.1's DEL reads it from the interface to find its masquerade
    // rules), the bridge plugin (first in the chain) reports it with its own message.
    run("ip", &["-n", &ns.container, "route", "del", "default"]);
    match inv.check(&key) {
        Err(Error::Plugin { plugin, error, .. }) => {
            assert_eq!(plugin, "bridge", "{error:?}");
            assert!(
                error.msg.contains("Route") && error.msg.contains("not found"),
                "{error:?}"
            );
        }
        other => panic!("CHECK of a container without its default route: {other:?}"),
    }

    assert!(inv.del(&key).unwrap());
    let links = host_links();
    assert!(!links.contains(&format!("{veth}@")), "veth left: {links}");
    let gone = Command::new("ip")
        .args(["-n", &ns.container, "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "eth0 still in the container");
    assert!(!lease.exists(), "IPAM lease left");
    let nat = nat_rules();
    assert!(
        !nat.contains("--dport 18080") && !nat.contains(&ip) && !nat.contains(&cid),
        "nat rules left: {nat}"
    );
    assert!(inv.attachments().unwrap().is_empty());
    assert!(!inv.del(&key).unwrap());
}

#[test]
fn failing_plugin_leaves_nothing_behind() {
    prerequisites();
    let ns = Namespaces::new("f");
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let fail = plugins.join("refuse");
    std::fs::write(
        &fail,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"cniVersion\":\"1.0.0\",\"code\":101,\"msg\":\"refused by policy\",\"details\":\"test plugin\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fail, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (name, bridge) = (format!("bcnif{pid}"), format!("bcf{}", pid % 1_000_000));
    let doc = conflist(
        &name,
        &bridge,
        "10.251.8.0/24",
        &tmp.path().join("ipam"),
        r#",{"type":"refuse"}"#,
    );
    let net = NetworkConfigList::from_conflist(doc.as_bytes(), None).unwrap();
    let inv = invoker(&tmp.path().join("state"), vec![plugins, PLUGINS.into()]);
    let att = Attachment {
        container_id: format!("ctrf{pid}"),
        netns: ns.container_path(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 18081,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            extra: Default::default(),
        },
    };
    let e = inv.add(&net, &att).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Plugin { .. }), "{e:?}");
    assert!(
        text.contains("ADD refuse (network bcnif")
            && text.contains("refused by policy (code 101): test plugin"),
        "{text}"
    );
    // bridge and portmap ran and were undone
    let links = host_links();
    assert!(
        !links.lines().any(|l| l.contains("veth")),
        "veth left: {links}"
    );
    let gone = Command::new("ip")
        .args(["-n", &ns.container, "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "eth0 still in the container");
    let leases = std::fs::read_dir(tmp.path().join("ipam").join(&name)).unwrap();
    let left: Vec<String> = leases
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(left.is_empty(), "leases left: {left:?}");
    assert!(!nat_rules().contains("--dport 18081"), "portmap rules left");
    assert!(inv.attachments().unwrap().is_empty());
}

#[test]
fn missing_plugin_and_malformed_conflist_are_clear_errors() {
    prerequisites();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"bridge"},{}]}"#,
    )
    .unwrap();
    let e = find_network(tmp.path(), "bad").unwrap_err().to_string();
    assert!(
        e.contains("no CNI network named \"bad\"")
            && e.contains("10-bad.conflist: plugins[1]: no type"),
        "{e}"
    );

    let ns = Namespaces::new("m");
    let net = NetworkConfigList::from_conflist(
        br#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"no-such-plugin"}]}"#,
        None,
    )
    .unwrap();
    let inv = invoker(&tmp.path().join("state"), vec![PLUGINS.into()]);
    let att = Attachment {
        container_id: "c".into(),
        netns: ns.container_path(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: Default::default(),
    };
    let e = inv.add(&net, &att).unwrap_err().to_string();
    assert!(
        e.contains("CNI plugin \"no-such-plugin\" not found in /usr/lib/cni"),
        "{e}"
    );
    assert!(inv.attachments().unwrap().is_empty());
    // VERSION against a real plugin
    let v = inv.version("bridge").unwrap();
    assert!(v.supported_versions.iter().any(|s| s == "1.0.0"), "{v:?}");
}

#[test]
fn leftovers_of_a_dead_process_are_cleaned_by_the_next_one() {
    prerequisites();
    let _ns = Namespaces::new("l");
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (name, bridge) = (format!("bcnil{pid}"), format!("bcl{}", pid % 1_000_000));
    let doc = conflist(
        &name,
        &bridge,
        "10.251.9.0/24",
        &tmp.path().join("ipam"),
        "",
    );
    let net = NetworkConfigList::from_conflist(doc.as_bytes(), None).unwrap();
    let state = tmp.path().join("state");
    // the container's namespace made by berth-cni's own helper, as the agent may
    struct Held(PathBuf);
    impl Drop for Held {
        fn drop(&mut self) {
            let _ = berth_cni::netns::remove(&self.0);
        }
    }
    let held = Held(PathBuf::from(format!("/run/netns/bcni-x-{pid}")));
    berth_cni::netns::create(&held.0).unwrap();
    let att = Attachment {
        container_id: format!("ctrl{pid}"),
        netns: held.0.clone(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 18082,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            extra: Default::default(),
        },
    };
    let ip = invoker(&state, vec![PLUGINS.into()])
        .add(&net, &att)
        .unwrap()
        .container_ip()
        .unwrap()
        .to_string();
    let inside = run(
        "ip",
        &[
            "-n",
            &format!("bcni-x-{pid}"),
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(inside.contains(&format!("inet {ip}/")), "{inside}");
    // The first invoker is gone without a DEL (as after kill -9); a new one, as after a
    // restart, finds the record and removes what ADD made.
    let next = invoker(&state, vec![PLUGINS.into()]);
    let report = next.cleanup_leftovers(|_| false).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(
        !host_links().lines().any(|l| l.contains("veth")),
        "veth left"
    );
    assert!(
        !tmp.path().join("ipam").join(&name).join(&ip).exists(),
        "lease left"
    );
    assert!(!nat_rules().contains("--dport 18082"), "portmap rules left");
    assert!(next.attachments().unwrap().is_empty());
}

/// Where the ADD of [`an_add_killed_halfway_is_deleted_by_the_next_process`] runs: a child
/// process (this test binary again), so the test can SIGKILL it in the middle of the chain.
/// Does nothing unless that test started it.
#[test]
#[ignore = "a helper run by an_add_killed_halfway_is_deleted_by_the_next_process"]
fn helper_add_until_killed() {
    let Ok(dir) = std::env::var("BERTH_CNI_HALFWAY") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let doc = std::fs::read(dir.join("net.conflist")).unwrap();
    let net = NetworkConfigList::from_conflist(&doc, None).unwrap();
    let att = Attachment {
        container_id: "halfway".into(),
        netns: PathBuf::from(std::env::var("BERTH_CNI_NETNS").unwrap()),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 18083,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
            }],
            extra: Default::default(),
        },
    };
    let inv = invoker(
        &dir.join("state"),
        vec![PLUGINS.into(), dir.join("plugins")],
    );
    let _ = inv.add(&net, &att);
    panic!("the ADD was expected to hang until killed");
}

#[test]
fn an_add_killed_halfway_is_deleted_by_the_next_process() {
    prerequisites();
    let ns = Namespaces::new("k");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pid = std::process::id();
    let (name, bridge) = (format!("bcnik{pid}"), format!("bck{}", pid % 1_000_000));
    // A plugin after portmap that hangs in ADD (and says where it is), and succeeds in DEL.
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let mark = dir.join("hanging");
    std::fs::write(
        plugins.join("hang"),
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then echo $$ > {m}.tmp; mv {m}.tmp {m}; exec sleep 60; fi\nexit 0\n",
            m = mark.display()
        ),
    )
    .unwrap();
    run("chmod", &["755", plugins.join("hang").to_str().unwrap()]);
    std::fs::write(
        dir.join("net.conflist"),
        conflist(
            &name,
            &bridge,
            "10.251.11.0/24",
            &dir.join("ipam"),
            r#",{"type":"hang"}"#,
        ),
    )
    .unwrap();
    // Started from this thread, the child is in the test's "host" namespace too.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_add_until_killed"])
        .env("BERTH_CNI_HALFWAY", dir)
        .env("BERTH_CNI_NETNS", ns.container_path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !mark.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the chain never reached the hanging plugin"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // bridge and portmap have run: a veth, a lease and nat rules exist.
    assert!(
        host_links().contains(&format!("master {bridge}")),
        "no veth"
    );
    let leases = || -> Vec<String> {
        std::fs::read_dir(dir.join("ipam").join(&name))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(leases().len(), 1);
    assert!(nat_rules().contains("--dport 18083"), "no portmap rule");
    // kill -9 of the process in the middle of its ADD (and of the plugin it waits for).
    child.kill().unwrap();
    child.wait().unwrap();
    let hang: i32 = std::fs::read_to_string(&mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hang),
        nix::sys::signal::Signal::SIGKILL,
    );

    // The next process finds the incomplete record and DELs the whole chain.
    let next = invoker(&dir.join("state"), vec![PLUGINS.into(), plugins.clone()]);
    let records = next.attachments().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(!records[0].complete, "{records:?}");
    let report = next.cleanup_leftovers(|_| true).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(
        !host_links().contains(&format!("master {bridge}")),
        "veth left: {}",
        host_links()
    );
    assert!(leases().is_empty(), "lease left: {:?}", leases());
    let nat = nat_rules();
    assert!(
        !nat.contains("--dport 18083") && !nat.contains("halfway"),
        "nat rules left: {nat}"
    );
    assert!(next.attachments().unwrap().is_empty());
}
