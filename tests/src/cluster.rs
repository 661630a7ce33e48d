//! The multi-node cluster harness: real `berthd` processes, each in its own network
//! namespace on a test bridge (see [`net`]), driven through their unix-socket API
//! (see [`http`]). It can kill -9, restart, partition and heal nodes, and tears
//! everything down in `Drop` (daemons, namespaces, bridge, veths, nft tables, temp dirs),
//! also when a test panics; on a panic it prints the tail of every node's log first.
//!
//! Node `k` is named `n<k>`, lives in namespace slot `k` and listens on `10.99.S.(k+1):7380`.

pub mod http;
pub mod net;
mod node;
pub mod units;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

pub use http::{HttpError, Response};
pub use net::Net;
pub use node::{KeyState, Node};

/// The peer port every node listens on (TCP for Raft, UDP for SWIM).
pub const PEER_PORT: u16 = 7380;

/// A deadline generous enough for a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How long one API call may take before we call it failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `probe` until it returns `Ok`, or panics after `deadline` naming `what` and the
/// last reason `probe` gave. Never sleeps longer than 50 ms between polls.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) => {
                if start.elapsed() > deadline {
                    panic!("timed out after {deadline:?} waiting for {what}; last: {why}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A set of `berthd` nodes on one test network.
pub struct Cluster {
    pub net: Net,
    pub nodes: Vec<Node>,
    pub berthd: PathBuf,
    dir: tempfile::TempDir,
    /// Extra flags given to every node started from now on.
    pub extra_args: Vec<String>,
    /// Nodes defined from now on listen on 0.0.0.0 with no `--advertise` (berthd picks
    /// the address to advertise itself).
    pub listen_unspecified: bool,
    /// Nodes defined from now on run with `--insecure` (no credentials).
    pub insecure: bool,
    /// BERTHD_LOG for nodes started from now on (default: $BERTH_TEST_LOG or "info").
    pub log_filter: Option<String>,
    /// Credentials made per cluster ID (`berthd credentials init`): the CA directory tree.
    creds: BTreeMap<String, PathBuf>,
    /// Nodes run agents (see `units`); otherwise they are started with `--no-agent`.
    agents: bool,
}

impl Cluster {
    /// An empty cluster (bridge and temp dir only) using the workspace's `berthd`.
    pub fn empty() -> Cluster {
        Cluster::with_berthd(crate::workspace_bin("berthd"))
    }

    /// An empty cluster using the given `berthd` binary.
    pub fn with_berthd(berthd: PathBuf) -> Cluster {
        let net = Net::create();
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-cluster-{}-", net.id()))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        Cluster {
            net,
            nodes: Vec::new(),
            berthd,
            dir,
            extra_args: Vec::new(),
            listen_unspecified: false,
            insecure: false,
            log_filter: None,
            creds: BTreeMap::new(),
            agents: false,
        }
    }

    /// `voters` bootstrap voters (cluster ID `cluster_id`), a leader they all agree on,
    /// then `learners` nodes joined through n0 and listed as members by every node.
    pub fn start(cluster_id: &str, voters: usize, learners: usize) -> Cluster {
        let mut c = Cluster::empty();
        c.start_voters(cluster_id, voters);
        c.wait_for_agreed_leader(&c.all());
        for _ in 0..learners {
            let k = c.add_learner(cluster_id, 0);
            c.wait_for_member(k);
        }
        c
    }

    /// Adds and starts `n` bootstrap voters sharing one `--bootstrap` list.
    pub fn start_voters(&mut self, cluster_id: &str, n: usize) {
        let first = self.nodes.len();
        let mut slots = Vec::new();
        for _ in 0..n {
            slots.push(self.net.add_slot());
        }
        let bootstrap: Vec<String> = slots
            .iter()
            .map(|&k| format!("n{k}={}:{PEER_PORT}", self.net.slot(k).ip))
            .collect();
        let bootstrap = bootstrap.join(",");
        for &k in &slots {
            let args = vec!["--bootstrap".to_string(), bootstrap.clone()];
            self.define_node(k, cluster_id, args);
        }
        for k in first..first + n {
            self.spawn(k);
        }
        for k in first..first + n {
            self.wait_healthy(k);
        }
    }

    /// Adds one node in its own namespace that joins through node `via` (`--join`, so it
    /// becomes a learner if `cluster_id` matches), starts it and waits until its API
    /// answers; returns its index.
    pub fn add_learner(&mut self, cluster_id: &str, via: usize) -> usize {
        let k = self.net.add_slot();
        let args = vec!["--join".to_string(), self.nodes[via].addr.to_string()];
        self.define_node(k, cluster_id, args);
        self.spawn(k);
        self.wait_healthy(k);
        k
    }

    /// Like [`Cluster::add_learner`], with the given `--credentials` directory instead of
    /// fresh ones from the cluster's CA.
    pub fn add_learner_with_credentials(
        &mut self,
        cluster_id: &str,
        via: usize,
        credentials: &Path,
    ) -> usize {
        let k = self.net.add_slot();
        let args = vec!["--join".to_string(), self.nodes[via].addr.to_string()];
        self.define_node_with(k, cluster_id, args, Some(credentials.to_path_buf()));
        self.spawn(k);
        self.wait_healthy(k);
        k
    }

    /// Node credentials named `name` for `cluster_id` from a CA of their own (not the
    /// cluster's): what an outsider could make.
    pub fn foreign_credentials(&self, cluster_id: &str, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("foreign-{cluster_id}-{name}"));
        self.berthd_tool(&[
            "credentials",
            "init",
            "--out",
            &out.display().to_string(),
            "--cluster-id",
            cluster_id,
            "--node",
            name,
        ]);
        out.join("nodes").join(name)
    }

    fn define_node(&mut self, k: usize, cluster_id: &str, role_args: Vec<String>) {
        self.define_node_with(k, cluster_id, role_args, None);
    }

    fn define_node_with(
        &mut self,
        k: usize,
        cluster_id: &str,
        role_args: Vec<String>,
        credentials: Option<PathBuf>,
    ) {
        assert_eq!(k, self.nodes.len(), "slots and nodes are created together");
        let name = format!("n{k}");
        let addr = SocketAddrV4::new(self.net.slot(k).ip, PEER_PORT);
        let data_dir = self.dir.path().join(&name);
        let socket = self.dir.path().join(format!("{name}.sock"));
        let log = self.dir.path().join(format!("{name}.log"));
        let listen = if self.listen_unspecified {
            format!("0.0.0.0:{PEER_PORT}")
        } else {
            addr.to_string()
        };
        let mut args = vec![
            "--cluster-id".to_string(),
            cluster_id.to_string(),
            "--name".to_string(),
            name.clone(),
            "--listen".to_string(),
            listen,
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--socket".to_string(),
            socket.display().to_string(),
            "--metadata".to_string(),
            format!("slot={k}"),
        ];
        if self.insecure {
            args.push("--insecure".to_string());
        } else {
            let dir = match credentials {
                Some(dir) => dir,
                None => self.issue_node_credentials(cluster_id, &name, &[]),
            };
            args.push("--credentials".to_string());
            args.push(dir.display().to_string());
        }
        args.extend(role_args);
        args.extend(self.agent_args(&name));
        args.extend(self.extra_args.iter().cloned());
        self.nodes.push(Node {
            name,
            cluster_id: cluster_id.to_string(),
            addr,
            data_dir,
            socket,
            log,
            args,
            child: None,
        });
    }

    fn spawn(&mut self, k: usize) {
        let node = &mut self.nodes[k];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", node.log.display()));
        // nsenter joins only the node's network namespace: `ip netns exec` would also mount
        // a fresh /sys, hiding the cgroup filesystems the agent's containers need.
        let mut cmd = Command::new("nsenter");
        // If the test process dies without unwinding (a CI timeout's SIGKILL), its daemons
        // die with it instead of running on. The death signal is tied to the spawning
        // thread, which is the test's own thread and outlives the daemons (Drop kills them).
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe and touches no shared memory.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .arg(format!("--net=/run/netns/{}", self.net.slot(k).netns))
            .arg("--")
            .arg(&self.berthd)
            .args(&node.args)
            .env(
                "BERTHD_LOG",
                self.log_filter
                    .clone()
                    .unwrap_or_else(|| std::env::var("BERTH_TEST_LOG").unwrap_or("info".into())),
            )
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .unwrap_or_else(|e| panic!("dup log fd: {e}")),
            )
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} for {}: {e}",
                    self.berthd.display(),
                    node.name
                )
            });
        node.child = Some(child);
    }

    /// The credentials tree of `cluster_id` (CA, gossip key, per-node and per-client
    /// directories), made with `berthd credentials init` on first use.
    pub fn credentials(&mut self, cluster_id: &str) -> PathBuf {
        if let Some(dir) = self.creds.get(cluster_id) {
            return dir.clone();
        }
        let dir = self.dir.path().join(format!("creds-{cluster_id}"));
        self.berthd_tool(&[
            "credentials",
            "init",
            "--out",
            &dir.display().to_string(),
            "--cluster-id",
            cluster_id,
        ]);
        self.creds.insert(cluster_id.to_string(), dir.clone());
        dir
    }

    /// Issues node credentials for `name` from `cluster_id`'s CA (`extra`: e.g.
    /// `--backdate-days`) and returns the directory to pass as `--credentials`.
    pub fn issue_node_credentials(
        &mut self,
        cluster_id: &str,
        name: &str,
        extra: &[&str],
    ) -> PathBuf {
        let out = self.credentials(cluster_id);
        let dir = out.join("nodes").join(name);
        if !dir.exists() {
            let out_text = out.display().to_string();
            let mut args = vec![
                "credentials",
                "add-node",
                "--out",
                &out_text,
                "--cluster-id",
                cluster_id,
                "--name",
                name,
            ];
            args.extend_from_slice(extra);
            self.berthd_tool(&args);
        }
        dir
    }

    /// Runs `berthd ARGS` (a tool subcommand) and panics with its stderr if it fails.
    pub fn berthd_tool(&self, args: &[&str]) -> String {
        let out = Command::new(&self.berthd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.berthd.display()));
        assert!(
            out.status.success(),
            "berthd {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until node `k` answers `/v1/health` with its own name and cluster ID.
    pub fn wait_healthy(&mut self, k: usize) {
        let what = format!("{} to answer /v1/health", self.nodes[k].name);
        let start = Instant::now();
        loop {
            if let Some(status) = self.reap(k) {
                panic!(
                    "{} exited ({status}) before becoming healthy; log:\n{}",
                    self.nodes[k].name,
                    tail(&self.nodes[k].log, 40)
                );
            }
            let node = &self.nodes[k];
            match node.get_json("/v1/health") {
                Ok(v) if v["ok"] == json!(true) => {
                    assert_eq!(v["name"], json!(node.name), "health of {}: {v}", node.name);
                    assert_eq!(
                        v["cluster_id"],
                        json!(node.cluster_id),
                        "health of {}: {v}",
                        node.name
                    );
                    return;
                }
                Ok(v) => {
                    if start.elapsed() > PATIENCE {
                        panic!("timed out waiting for {what}: {v}");
                    }
                }
                Err(e) => {
                    if start.elapsed() > PATIENCE {
                        panic!("timed out waiting for {what}: {e}");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// If node `k`'s process exited, reaps it and returns its status.
    fn reap(&mut self, k: usize) -> Option<std::process::ExitStatus> {
        let child = self.nodes[k].child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.nodes[k].child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Indices of every node.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Indices of every node whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&k| self.nodes[k].is_running())
            .collect()
    }

    /// Node `k`.
    pub fn node(&self, k: usize) -> &Node {
        &self.nodes[k]
    }

    /// Index of the node called `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node called {name:?}"))
    }

    /// kill -9 node `k` and reap it.
    pub fn kill(&mut self, k: usize) {
        self.signal_and_reap(k, nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGTERM node `k` (graceful leave) and wait for it to exit; returns its exit status.
    pub fn stop(&mut self, k: usize) -> std::process::ExitStatus {
        self.signal_and_reap(k, nix::sys::signal::Signal::SIGTERM)
    }

    fn signal_and_reap(
        &mut self,
        k: usize,
        sig: nix::sys::signal::Signal,
    ) -> std::process::ExitStatus {
        let node = &mut self.nodes[k];
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", node.name));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        // ESRCH means it already exited; wait() below reaps it either way.
        let _ = nix::sys::signal::kill(pid, sig);
        child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", node.name))
    }

    /// Starts node `k` again with the same arguments and data dir; waits until healthy.
    pub fn restart(&mut self, k: usize) {
        self.spawn(k);
        self.wait_healthy(k);
    }

    /// Cuts node `k` off the bridge (its bridge port goes down).
    pub fn isolate(&self, k: usize) {
        self.net.link_down(k);
    }

    /// Undoes [`Cluster::isolate`].
    pub fn reconnect(&self, k: usize) {
        self.net.link_up(k);
    }

    /// Splits nodes into groups that cannot reach each other (nftables drops).
    pub fn partition(&self, groups: &[&[usize]]) {
        self.net.partition(groups);
    }

    /// Removes every nftables partition.
    pub fn heal(&self) {
        self.net.heal();
    }

    /// Waits until every node in `among` reports the same non-null leader, and that leader
    /// is one of the running nodes; returns the leader's index.
    pub fn wait_for_agreed_leader(&self, among: &[usize]) -> usize {
        let name = wait_until("every node to report the same leader", PATIENCE, || {
            self.agreed_leader(among)
        });
        self.index_of(&name)
    }

    /// The leader every node in `among` reports, or why there is none.
    pub fn agreed_leader(&self, among: &[usize]) -> Result<String, String> {
        let mut seen = BTreeMap::new();
        for &k in among {
            let leader = self.nodes[k].leader()?;
            seen.insert(self.nodes[k].name.clone(), leader);
        }
        let first = seen.values().next().cloned().flatten();
        match first {
            Some(l) if seen.values().all(|v| v.as_deref() == Some(l.as_str())) => {
                let k = self
                    .nodes
                    .iter()
                    .position(|n| n.name == l)
                    .ok_or_else(|| format!("unknown leader {l}: {seen:?}"))?;
                if self.nodes[k].is_running() && among.contains(&k) {
                    Ok(l)
                } else {
                    Err(format!("leader {l} is not among the live nodes: {seen:?}"))
                }
            }
            _ => Err(format!("no agreement: {seen:?}")),
        }
    }

    /// Waits until every running node of `k`'s cluster lists node `k` as an alive machine and as a
    /// member in `/v1/cluster`.
    pub fn wait_for_member(&self, k: usize) {
        let name = self.nodes[k].name.clone();
        let cluster_id = self.nodes[k].cluster_id.clone();
        // Only nodes of the same cluster are asked (a foreign node must not list it).
        let peers: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&j| self.nodes[j].cluster_id == cluster_id)
            .collect();
        wait_until(
            &format!("every node to list {name} as alive member"),
            PATIENCE,
            || {
                for &j in &peers {
                    let m = self.nodes[j].machines()?;
                    let state = m.get(&name).map(|v| v["state"].clone());
                    if state != Some(json!("alive")) {
                        return Err(format!("{} sees {name} as {state:?}", self.nodes[j].name));
                    }
                    let members = self.nodes[j].get_json("/v1/cluster")?;
                    let listed = members["members"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|m| m["name"] == json!(name)));
                    if !listed {
                        return Err(format!(
                            "{} members lack {name}: {members}",
                            self.nodes[j].name
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    /// Waits until every node in `among` holds exactly `expected` under `prefix`.
    pub fn wait_for_keys(
        &self,
        among: &[usize],
        prefix: &str,
        expected: &BTreeMap<String, String>,
    ) {
        wait_until(
            &format!("{} keys under {prefix} on nodes {among:?}", expected.len()),
            PATIENCE,
            || {
                for &k in among {
                    let got = self.nodes[k].range(prefix)?;
                    let values: BTreeMap<String, String> =
                        got.into_iter().map(|(k, s)| (k, s.value)).collect();
                    if &values != expected {
                        let missing: Vec<_> = expected
                            .keys()
                            .filter(|key| !values.contains_key(*key))
                            .collect();
                        let wrong: Vec<_> = values
                            .iter()
                            .filter(|(key, v)| expected.get(*key) != Some(*v))
                            .collect();
                        return Err(format!(
                            "{}: missing {missing:?}, unexpected or wrong {wrong:?}",
                            self.nodes[k].name
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    /// The temp dir holding data dirs, sockets and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The last `n` lines of a file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cleanup_agents();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // Already exited is fine; wait() reaps either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "----- {} log (last 30 lines) -----\n{}",
                    node.name,
                    tail(&node.log, 30)
                );
            }
        }
        // Net's Drop removes the namespaces (with their nft tables), veths and bridge;
        // TempDir's Drop removes data dirs, sockets and logs, unless BERTH_KEEP_CLUSTER is
        // set (to look at logs and data files after a bench).
        if std::env::var_os("BERTH_KEEP_CLUSTER").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}")),
            );
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}
