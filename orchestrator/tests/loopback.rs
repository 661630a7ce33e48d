//! End-to-end tests of real berthd processes on 127.0.0.1 (no root needed). The multi-host
//! network-namespace harness lives in tests/; these check the daemon itself: election,
//! replication, failover, service expiry, bad input, restart from disk, learners.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_orchestrator::client::{Client, ClientError};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    bootstrap: String,
}

fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                port: free_port(),
                dir: tmp.path().join(format!("n{i}")),
                child: None,
            })
            .collect();
        let bootstrap = nodes
            .iter()
            .map(|n| format!("{}=127.0.0.1:{}", n.name, n.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            tmp,
            nodes,
            bootstrap,
        };
        // Peer TLS and sealed gossip, as berthd runs by default.
        let out = c.tmp.path().join("creds");
        let status = Command::new(env!("CARGO_BIN_EXE_berthd"))
            .args(["credentials", "init", "--cluster-id", "loop"])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run berthd credentials init");
        assert!(status.success(), "berthd credentials init failed");
        for i in 0..n {
            c.start(i, &[]);
        }
        c
    }

    fn sock(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("{}.sock", self.nodes[i].name))
    }

    /// The node's credentials directory, issued on first use.
    fn creds(&self, i: usize) -> PathBuf {
        let out = self.tmp.path().join("creds");
        let name = &self.nodes[i].name;
        let dir = out.join("nodes").join(name);
        if !dir.exists() {
            let status = Command::new(env!("CARGO_BIN_EXE_berthd"))
                .args([
                    "credentials",
                    "add-node",
                    "--cluster-id",
                    "loop",
                    "--name",
                    name,
                ])
                .arg("--out")
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .expect("run berthd credentials add-node");
            assert!(status.success(), "berthd credentials add-node failed");
        }
        dir
    }

    fn start(&mut self, i: usize, extra: &[&str]) {
        let sock = self.sock(i);
        let creds = self.creds(i);
        let log = std::fs::File::create(self.tmp.path().join(format!("n{}.log", i + 1)))
            .expect("log file");
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthd"));
        cmd.args(["--cluster-id", "loop", "--name", &n.name])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", n.port))
            .arg("--data-dir")
            .arg(&n.dir)
            .arg("--socket")
            .arg(&sock)
            .arg("--credentials")
            .arg(&creds)
            .args(["--metadata", &format!("idx={i}")])
            // These nodes run no units (and need no root).
            .arg("--no-agent")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if extra.is_empty() {
            cmd.args(["--bootstrap", &self.bootstrap]);
        }
        n.child = Some(cmd.spawn().expect("spawn berthd"));
    }

    fn add_node(&mut self, join_port: u16) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            name: format!("n{}", i + 1),
            port: free_port(),
            dir: self.tmp.path().join(format!("n{}", i + 1)),
            child: None,
        });
        let join = format!("127.0.0.1:{join_port}");
        self.start(i, &["--join", &join]);
        i
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&self.sock(i))
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited 0.
    fn stop(&mut self, i: usize) -> bool {
        let Some(mut c) = self.nodes[i].child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let p = self.tmp.path().join(format!("n{}.log", i + 1));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- n{} ---\n", i + 1));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Polls `f` until it returns Some, or panics with the daemons' logs.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > WAIT {
                panic!("timed out waiting for {what}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader's name once every live node agrees on one.
    fn agreed_leader(&self) -> String {
        self.agreed_leader_except("")
    }

    /// Like [`Cluster::agreed_leader`], ignoring agreement on `old`.
    fn agreed_leader_except(&self, old: &str) -> String {
        self.wait_for("all live nodes to agree on a leader", || {
            let mut names = Vec::new();
            for i in self.live() {
                let v = self.client(i).json("GET", "/v1/leader", None).ok()?;
                names.push(v.get("leader")?.as_str()?.to_string());
            }
            let first = names.first()?.clone();
            (first != old && names.iter().all(|n| *n == first)).then_some(first)
        })
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("known node")
    }

    /// A write, retried while the cluster has no leader (503).
    fn put(&self, i: usize, key: &str, value: &str) -> Value {
        self.wait_for(&format!("put {key} on n{}", i + 1), || {
            match self.client(i).json(
                "PUT",
                &format!("/v1/keys{key}"),
                Some(&json!({ "value": value })),
            ) {
                Ok(v) => Some(v),
                Err(ClientError::Api { status: 503, .. }) => None,
                Err(e) => panic!("put {key}: {e}"),
            }
        })
    }

    fn get(&self, i: usize, key: &str) -> Option<String> {
        let v = self
            .client(i)
            .json("GET", &format!("/v1/keys{key}"), None)
            .ok()?;
        Some(v.get("value")?.as_str()?.to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

#[test]
fn elects_one_leader_replicates_and_fails_over() {
    let mut c = Cluster::new(3);
    let leader = c.agreed_leader();
    let li = c.index_of(&leader);
    let follower = (0..3).find(|i| *i != li).expect("a follower");
    // a write on a follower is forwarded, and visible on every node
    c.put(follower, "/k/1", "one");
    for i in 0..3 {
        c.wait_for("replication", || {
            (c.get(i, "/k/1").as_deref() == Some("one")).then_some(())
        });
    }
    c.kill9(li);
    let new_leader = c.agreed_leader_except(&leader);
    assert_ne!(new_leader, leader);
    let survivor = c.live()[0];
    c.put(survivor, "/k/2", "two");
    for i in c.live() {
        assert_eq!(
            c.get(i, "/k/1").as_deref(),
            Some("one"),
            "acknowledged write lost on n{}",
            i + 1
        );
        c.wait_for("replication after failover", || {
            (c.get(i, "/k/2").as_deref() == Some("two")).then_some(())
        });
    }
}

#[test]
fn killed_nodes_services_vanish_from_every_node() {
    let mut c = Cluster::new(3);
    c.agreed_leader();
    let body = json!({"name": "web", "ip": "10.1.2.3", "port": 8080, "meta": {"v": "1"}});
    c.wait_for("service registration on n1", || {
        match c.client(0).json("POST", "/v1/services", Some(&body)) {
            Ok(v) => Some(v),
            Err(ClientError::Api { status: 503, .. }) => None,
            Err(e) => panic!("register: {e}"),
        }
    });
    for i in 1..3 {
        let list = c.wait_for("service visible on other nodes", || {
            let v = c.client(i).json("GET", "/v1/services/web", None).ok()?;
            let a = v.as_array()?.clone();
            (!a.is_empty()).then_some(a)
        });
        assert_eq!(list[0]["machine"], "n1");
        assert_eq!(list[0]["ip"], "10.1.2.3");
        assert_eq!(list[0]["port"], 8080);
    }
    c.kill9(0);
    for i in 1..3 {
        c.wait_for("the dead node's service to vanish", || {
            let v = c.client(i).json("GET", "/v1/services/web", None).ok()?;
            v.as_array()?.is_empty().then_some(())
        });
        c.wait_for("the dead node's machine key to vanish", || {
            c.get(i, "/machines/n1").is_none().then_some(())
        });
        c.wait_for("n1 listed as dead", || {
            let machines = c.client(i).json("GET", "/v1/machines", None).ok()?;
            let n1 = machines
                .as_array()?
                .iter()
                .find(|m| m["name"] == "n1")?
                .clone();
            (n1["state"] == "dead").then_some(())
        });
    }
}

#[test]
fn garbage_on_every_port_is_dropped_and_the_daemon_keeps_serving() {
    use std::io::{Read, Write};
    let c = Cluster::new(3);
    c.agreed_leader();
    let port = c.nodes[0].port;
    let junk: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for payload in [
        &junk[..],
        &[0xff, 0xff, 0xff, 0xff][..],
        b"\x00\x00\x00\x09\x01\x02zzabcde",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect peer port");
        let _ = s.write_all(payload);
    }
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.send_to(&junk[..1000], ("127.0.0.1", port)).expect("send");
    u.send_to(b"BS\x05other", ("127.0.0.1", port))
        .expect("send");
    let mut api = std::os::unix::net::UnixStream::connect(c.sock(0)).expect("api");
    api.write_all(b"\x01\x02 nonsense\r\n\r\n").expect("write");
    let mut resp = String::new();
    let _ = api.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"error\""), "{resp}");
    // still serving, still in the cluster
    let h = c.client(0).json("GET", "/v1/health", None).expect("health");
    assert_eq!(h["ok"], true);
    c.put(0, "/after-garbage", "ok");
    c.wait_for("replication", || {
        (c.get(2, "/after-garbage").as_deref() == Some("ok")).then_some(())
    });
}

#[test]
fn full_restart_recovers_from_disk() {
    let mut c = Cluster::new(3);
    let leader = c.agreed_leader();
    let li = c.index_of(&leader);
    for k in 0..20 {
        c.put(li, &format!("/data/{k}"), &k.to_string());
    }
    for i in 0..3 {
        assert!(c.stop(i), "n{} did not exit 0 on SIGTERM", i + 1);
    }
    for i in 0..3 {
        c.start(i, &[]);
    }
    c.agreed_leader();
    for i in 0..3 {
        c.wait_for("keys recovered", || {
            let v = c
                .client(i)
                .json("GET", "/v1/keys/data/?prefix=true", None)
                .ok()?;
            (v["kvs"].as_array()?.len() == 20).then_some(())
        });
        assert_eq!(c.get(i, "/data/7").as_deref(), Some("7"));
    }
}

#[test]
fn joined_node_is_a_learner_with_the_data_and_can_be_promoted() {
    let mut c = Cluster::new(3);
    let leader = c.agreed_leader();
    c.put(c.index_of(&leader), "/before-join", "x");
    let j = c.add_node(c.nodes[1].port);
    c.wait_for("the joiner to receive the registry", || {
        (c.get(j, "/before-join").as_deref() == Some("x")).then_some(())
    });
    let role = |c: &Cluster, i: usize| -> Option<String> {
        let v = c.client(i).json("GET", "/v1/cluster", None).ok()?;
        let m = v["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "n4")?
            .clone();
        Some(m["role"].as_str()?.to_string())
    };
    assert_eq!(c.wait_for("n4 listed", || role(&c, 0)), "learner");
    let v = c
        .client(j)
        .json("POST", "/v1/cluster/voters", Some(&json!({"name": "n4"})))
        .expect("promote");
    assert!(
        v["voters"]
            .as_array()
            .expect("voters")
            .iter()
            .any(|n| n == "n4"),
        "{v}"
    );
    c.wait_for("n4 is a voter everywhere", || {
        (0..4)
            .all(|i| role(&c, i).as_deref() == Some("voter"))
            .then_some(())
    });
    // a dead member is removed from the configuration; the rest keep committing
    c.kill9(j);
    c.wait_for("n4 to be removed", || {
        match c.client(0).json("DELETE", "/v1/cluster/members/n4", None) {
            Ok(v) => Some(v),
            Err(ClientError::Api { status: 503, .. }) => None,
            Err(e) => panic!("remove n4: {e}"),
        }
    });
    for i in 0..3 {
        c.wait_for("n4 gone from the configuration", || {
            role(&c, i).is_none().then_some(())
        });
    }
    c.put(2, "/after-removal", "y");
}

#[test]
fn leases_expire_cas_conflicts_and_watch_streams_in_order() {
    let c = Cluster::new(3);
    c.agreed_leader();
    // a lease that is never kept alive takes its key with it, on every node
    let lease = c.wait_for("lease grant", || {
        c.client(1)
            .json("POST", "/v1/leases", Some(&json!({"ttl": 1})))
            .ok()
    });
    let id = lease["id"].as_u64().expect("lease id");
    c.client(1)
        .json(
            "PUT",
            "/v1/keys/tmp/a",
            Some(&json!({"value": "x", "lease": id})),
        )
        .expect("put under lease");
    for i in 0..3 {
        c.wait_for("the key to appear", || c.get(i, "/tmp/a"));
    }
    for i in 0..3 {
        c.wait_for("the key to vanish with its lease", || {
            c.get(i, "/tmp/a").is_none().then_some(())
        });
    }
    match c
        .client(0)
        .json("POST", &format!("/v1/leases/{id}/keepalive"), None)
    {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("keepalive of an expired lease: {other:?}"),
    }
    // compare-and-swap on mod_revision
    let rev = c.put(0, "/cas", "1")["revision"]
        .as_u64()
        .expect("revision");
    match c.client(2).json(
        "PUT",
        "/v1/keys/cas",
        Some(&json!({"value": "2", "prev_revision": rev + 100})),
    ) {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("CAS with a wrong revision: {other:?}"),
    }
    c.client(2)
        .json(
            "PUT",
            "/v1/keys/cas",
            Some(&json!({"value": "2", "prev_revision": rev})),
        )
        .expect("CAS with the right revision");
    // a watch from a revision replays history then streams, each event once, in order
    let start = c.put(0, "/w/0", "a")["revision"]
        .as_u64()
        .expect("revision");
    c.put(1, "/w/1", "b");
    let client = c.client(2);
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            c.put(0, "/w/2", "c");
            c.client(0)
                .json("DELETE", "/v1/keys/w/?prefix=true", None)
                .expect("prefix delete");
        });
        client
            .stream(
                &format!("/v1/watch?prefix=/w/&from_revision={start}"),
                |line| {
                    let e: Value = serde_json::from_str(line).expect("event JSON");
                    seen.push((
                        e["type"].as_str().unwrap_or("").to_string(),
                        e["key"].as_str().unwrap_or("").to_string(),
                        e["mod_revision"].as_u64().unwrap_or(0),
                    ));
                    seen.len() < 6
                },
            )
            .expect("watch stream");
    });
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(t, k, _)| (t.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("put", "/w/0"),
            ("put", "/w/1"),
            ("put", "/w/2"),
            ("delete", "/w/0"),
            ("delete", "/w/1"),
            ("delete", "/w/2"),
        ]
    );
    assert_eq!(seen[0].2, start);
    assert!(
        seen.windows(2).all(|w| w[0].2 <= w[1].2),
        "revisions go forward: {seen:?}"
    );
    assert_eq!(seen[3].2, seen[5].2, "one prefix delete is one revision");
}
