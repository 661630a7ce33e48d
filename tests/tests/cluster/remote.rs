//! The remote API: `--api-listen` serves the HTTP API over TLS to clients with a
//! certificate from the cluster CA; `berthctl --endpoint https://HOST:PORT --cert --key --ca`
//! manages the cluster from another host; a read-only certificate only reads; anyone else is
//! refused; the unix socket stays root-only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::cluster::{wait_until, Cluster, PATIENCE};

const API_PORT: u16 = 7381;

/// berthctl run inside namespace `ns` against `endpoint` with the client credentials `dir`
/// (client.pem, client.key) and the CA `ca`.
fn remote_ctl(ns: &str, endpoint: &str, dir: &Path, ca: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(berth_tests::workspace_bin("berthctl"))
        .args(["--endpoint", endpoint, "--timeout", "10"])
        .arg("--cert")
        .arg(dir.join("client.pem"))
        .arg("--key")
        .arg(dir.join("client.key"))
        .arg("--ca")
        .arg(ca)
        .args(args)
        .output()
        .expect("run berthctl in the workstation namespace")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn berthctl_manages_the_cluster_over_mtls_and_read_only_certificates_only_read() {
    let mut c = Cluster::empty();
    c.extra_args = vec!["--api-listen".into(), format!("0.0.0.0:{API_PORT}")];
    c.start_voters("remote", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    let creds = c.credentials("remote");
    let ca = creds.join("ca/ca.pem");
    let add_client = |name: &str, read_only: bool| -> PathBuf {
        let out = creds.display().to_string();
        let mut args = vec![
            "credentials",
            "add-client",
            "--out",
            &out,
            "--cluster-id",
            "remote",
            "--name",
            name,
        ];
        if read_only {
            args.push("--read-only");
        }
        c.berthd_tool(&args);
        creds.join("clients").join(name)
    };
    let alice = add_client("alice", false);
    let bob = add_client("bob", true);
    let outsider_out = c.dir().join("outsider");
    c.berthd_tool(&[
        "credentials",
        "init",
        "--out",
        &outsider_out.display().to_string(),
        "--cluster-id",
        "remote",
    ]);
    c.berthd_tool(&[
        "credentials",
        "add-client",
        "--out",
        &outsider_out.display().to_string(),
        "--cluster-id",
        "remote",
        "--name",
        "mallory",
    ]);
    let mallory = outsider_out.join("clients/mallory");

    let ws = c.net.add_slot();
    let ns = c.net.slot(ws).netns.clone();
    let endpoint = |k: usize| format!("https://{}:{API_PORT}", c.node(k).addr.ip());
    let follower = (0..3).find(|&k| k != leader).expect("a follower");

    // Full access: a write through a follower, read back through another node.
    let put = remote_ctl(
        &ns,
        &endpoint(follower),
        &alice,
        &ca,
        &["kv", "put", "/t/remote", "hello"],
    );
    assert!(put.status.success(), "alice's put: {}", text(&put));
    wait_until("the remote write on every node", PATIENCE, || {
        for k in c.all() {
            let o = remote_ctl(&ns, &endpoint(k), &alice, &ca, &["kv", "get", "/t/remote"]);
            if String::from_utf8_lossy(&o.stdout).trim() != "hello" {
                return Err(format!("{}: {}", c.node(k).name, text(&o)));
            }
        }
        Ok(())
    });
    let machines = remote_ctl(
        &ns,
        &endpoint(leader),
        &alice,
        &ca,
        &["--format", "json", "list-machines"],
    );
    assert!(machines.status.success(), "{}", text(&machines));

    // Read-only: reads work, writes are refused with 403 and change nothing.
    let get = remote_ctl(
        &ns,
        &endpoint(leader),
        &bob,
        &ca,
        &["kv", "get", "/t/remote"],
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "hello",
        "{}",
        text(&get)
    );
    let put = remote_ctl(
        &ns,
        &endpoint(leader),
        &bob,
        &ca,
        &["kv", "put", "/t/remote", "bob"],
    );
    assert_eq!(put.status.code(), Some(1), "{}", text(&put));
    let err = String::from_utf8_lossy(&put.stderr);
    assert!(err.contains("read-only") && err.contains("403"), "{err}");
    assert_eq!(
        c.node(leader)
            .get_key("/t/remote")
            .expect("get")
            .map(|v| v["value"].clone()),
        Some(serde_json::json!("hello"))
    );

    // Another CA's client certificate is refused by the server (even when the client
    // trusts our CA), and a plain-HTTP request gets no answer.
    let refused = remote_ctl(
        &ns,
        &endpoint(leader),
        &mallory,
        &ca,
        &["kv", "get", "/t/remote"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("hello"));
    let addr = SocketAddr::new(std::net::IpAddr::V4(*c.node(leader).addr.ip()), API_PORT);
    let plain = c.net.in_netns(ws, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(b"GET /v1/keys/t/remote HTTP/1.1\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    });
    assert!(
        !String::from_utf8_lossy(&plain).contains("hello"),
        "plain HTTP was served: {:?}",
        String::from_utf8_lossy(&plain)
    );
    // https:// without a client certificate is refused by berthctl itself, clearly.
    let bare = Command::new(berth_tests::workspace_bin("berthctl"))
        .args(["--endpoint", &endpoint(leader), "kv", "get", "/t/remote"])
        .output()
        .expect("run berthctl");
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("--cert"),
        "{}",
        text(&bare)
    );

    // The unix socket answers root, and nobody else.
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(berth_tests::workspace_bin("berthctl"))
        .arg("--endpoint")
        .arg(&c.node(leader).socket)
        .args(["kv", "get", "/t/remote"])
        .output()
        .expect("run berthctl as nobody");
    assert_eq!(nobody.status.code(), Some(1), "{}", text(&nobody));
    assert!(!String::from_utf8_lossy(&nobody.stdout).contains("hello"));
}

#[test]
fn a_flood_of_idle_connections_on_the_remote_api_port_leaves_berthctl_served() {
    let mut c = Cluster::empty();
    c.extra_args = vec!["--api-listen".into(), format!("0.0.0.0:{API_PORT}")];
    c.start_voters("rflood", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    let creds = c.credentials("rflood");
    c.berthd_tool(&[
        "credentials",
        "add-client",
        "--out",
        &creds.display().to_string(),
        "--cluster-id",
        "rflood",
        "--name",
        "ops",
    ]);
    let ops = creds.join("clients/ops");
    let ca = creds.join("ca/ca.pem");
    let attacker = c.net.add_slot();
    let addr = SocketAddr::new(std::net::IpAddr::V4(*c.node(leader).addr.ip()), API_PORT);
    // 400 idle connections: more than the 256 remote clients allowed and far more than
    // the 32 that may sit in their handshake.
    let held: Vec<TcpStream> = c.net.in_netns(attacker, || {
        (0..400)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
            .collect()
    });
    let ns = c.net.slot(attacker).netns.clone();
    let endpoint = format!("https://{}:{API_PORT}", c.node(leader).addr.ip());
    let put = remote_ctl(&ns, &endpoint, &ops, &ca, &["kv", "put", "/t/flood", "ok"]);
    assert!(put.status.success(), "put during the flood: {}", text(&put));
    drop(held);
    let get = remote_ctl(&ns, &endpoint, &ops, &ca, &["kv", "get", "/t/flood"]);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "ok",
        "{}",
        text(&get)
    );
}
