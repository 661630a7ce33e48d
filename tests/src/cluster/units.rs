//! Units in the cluster harness: nodes that run agents (each with its own berth root, image
//! store and cgroup parent), the web image the unit tests run, `berthctl` on a node, killing
//! a whole node (berthd, its watchdog and its containers) and cleaning all of it up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use super::{Cluster, Node};
use crate::images::layout::{Compression, OciLayout, RawTar};

/// The applets the web image links to /bin/busybox.
const WEB_APPLETS: &[&str] = &[
    "sh", "httpd", "echo", "cat", "sleep", "hostname", "wget", "ls", "true", "false", "kill", "rm",
    "test",
];

/// Builds `dir/web`, an OCI layout tagged `web` holding busybox-static, its applets and a
/// `/www/index.html`; its Cmd serves /www with busybox httpd on port 8080.
pub fn web_image(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is required: install it with `apt-get install -y busybox-static`"
    );
    let bytes = fs::read(busybox).expect("read /bin/busybox");
    let mut tar = RawTar::new();
    tar.dir("bin", 0o755)
        .file("bin/busybox", 0o755, &bytes)
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nwww:x:33:\n")
        .dir("www", 0o755)
        .file("www/index.html", 0o644, b"hello from a berth unit\n")
        .dir("tmp", 0o1777)
        .dir("root", 0o700);
    for a in WEB_APPLETS {
        tar.symlink(&format!("bin/{a}"), "busybox");
    }
    let layout_dir = dir.join("web");
    let mut layout = OciLayout::new(&layout_dir);
    layout.add_layer(&tar.finish(), Compression::Gzip);
    layout.tag(
        "web",
        json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            "WorkingDir": "/www",
        }),
    );
    layout_dir
}

impl Cluster {
    /// An empty cluster whose nodes run agents (started with `start_voters`, `add_learner`).
    pub fn with_agents() -> Cluster {
        let mut c = Cluster::empty();
        c.agents = true;
        c
    }

    /// The cgroup under which node `name`'s containers live (unique per test network).
    pub fn cgroup_parent(&self, name: &str) -> String {
        format!("/berthtest-{}/{name}", self.net.id())
    }

    /// The agent flags of node `name`: its own berth root, image store and cgroup parent,
    /// or `--no-agent`.
    pub(super) fn agent_args(&self, name: &str) -> Vec<String> {
        if !self.agents {
            return vec!["--no-agent".into()];
        }
        let node_dir = self.dir().join(name);
        vec![
            "--berth".into(),
            crate::workspace_bin("berth").display().to_string(),
            "--run-dir".into(),
            node_dir.join("run").display().to_string(),
            "--image-store".into(),
            node_dir.join("images").display().to_string(),
            "--cgroup-parent".into(),
            self.cgroup_parent(name),
            // Every node writes its own cluster network config (they share the host's /etc).
            "--cni-conf-dir".into(),
            self.cni_conf_dir(name).display().to_string(),
        ]
    }

    /// Node `name`'s CNI config directory (its cluster network's conflist is written there).
    pub fn cni_conf_dir(&self, name: &str) -> PathBuf {
        self.dir().join(name).join("net.d")
    }

    /// Imports the image layout `layout` as `reference` into node `k`'s store.
    pub fn import_image(&self, k: usize, layout: &Path, reference: &str) {
        let store = self.dir().join(&self.nodes[k].name).join("images");
        let out = Command::new(crate::workspace_bin("berth"))
            .args(["image", "--store"])
            .arg(&store)
            .arg("import")
            .arg(layout)
            .args(["--name", reference])
            .stdin(Stdio::null())
            .output()
            .expect("run berth image import");
        assert!(
            out.status.success(),
            "berth image import into {}: {}",
            store.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `berthctl --endpoint <node k's socket> ARGS`.
    pub fn berthctl(&self, k: usize, args: &[&str]) -> Output {
        Command::new(crate::workspace_bin("berthctl"))
            .arg("--endpoint")
            .arg(&self.nodes[k].socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berthctl")
    }

    /// Every pid of node `k`: its network namespace's processes (berthd, its watchdog,
    /// host-network containers) and every process in its containers' cgroups.
    pub fn node_pids(&self, k: usize) -> Vec<i32> {
        let mut pids = Vec::new();
        let out = Command::new("ip")
            .args(["netns", "pids", &self.net.slot(k).netns])
            .output();
        if let Ok(out) = out {
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
        for dir in cgroup_dirs(&self.cgroup_parent(&self.nodes[k].name)) {
            collect_procs(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// kill -9 of a whole node: berthd, its watchdog and every process of its containers.
    pub fn kill_node(&mut self, k: usize) {
        if self.nodes[k].is_running() {
            self.kill(k);
        }
        for _ in 0..50 {
            let pids = self.node_pids(k);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills every node's processes and removes their cgroups (from `Drop`).
    pub(super) fn cleanup_agents(&mut self) {
        if !self.agents {
            return;
        }
        for k in 0..self.nodes.len() {
            self.kill_node(k);
        }
        // Snapshots a killed berthd left mounted.
        crate::images::unmount_under(self.dir());
        let top = format!("/berthtest-{}", self.net.id());
        for dir in cgroup_dirs(&top) {
            remove_cgroup_tree(&dir);
        }
    }
}

impl Node {
    /// `GET /v1/units/NAME` on this node.
    pub fn unit(&self, name: &str) -> Result<Value, String> {
        self.get_json(&format!("/v1/units/{name}"))
    }

    /// `GET /v1/unit-states` on this node.
    pub fn unit_states(&self) -> Result<Vec<Value>, String> {
        let v = self.get_json("/v1/unit-states")?;
        v.as_array()
            .cloned()
            .ok_or_else(|| format!("unit-states is not a list: {v}"))
    }
}

/// The directories of cgroup `path` in every mounted hierarchy (v1 controllers, the hybrid
/// unified tree, or a v2-only /sys/fs/cgroup).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    if root.join("cgroup.controllers").exists() {
        let d = root.join(rel);
        if d.is_dir() {
            out.push(d);
        }
        return out;
    }
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let d = e.path().join(rel);
            if d.is_dir() && !e.path().is_symlink() {
                out.push(d);
            }
        }
    }
    out
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                collect_procs(&e.path(), pids);
            }
        }
    }
}

/// rmdir of a cgroup tree, children first (retried: killed tasks leave within moments).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    eprintln!("cannot remove cgroup {}", dir.display());
}

/// Debian's `docker-registry` in a namespace of its own on the cluster's bridge (no berthd
/// there), plain HTTP on port 5000; stopped on drop.
pub struct NetRegistry {
    child: std::process::Child,
    /// `IP:5000` on the test bridge.
    pub addr: String,
    dir: tempfile::TempDir,
    netns: String,
}

impl Cluster {
    /// Starts a registry in a new namespace of this cluster's network; the nodes reach it at
    /// the returned registry's `addr`.
    pub fn start_registry(&mut self) -> NetRegistry {
        let bin = crate::require_program("docker-registry", "docker-registry");
        let k = self.net.add_slot();
        let netns = self.net.slot(k).netns.clone();
        let addr = format!("{}:5000", self.net.slot(k).ip);
        let dir = tempfile::Builder::new()
            .prefix("berth-netreg-")
            .tempdir()
            .expect("registry dir");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("--")
            .arg(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("access.log")).expect("registry log"))
            .stderr(fs::File::create(dir.path().join("registry.log")).expect("registry log"))
            .spawn()
            .expect("start docker-registry");
        let reg = NetRegistry {
            child,
            addr,
            dir,
            netns,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !reg.in_netns(&[
            "busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{}/v2/", reg.addr),
        ]) {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not answer on {} in 60 s",
                reg.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        reg
    }

    /// A registries.conf marking `registry` insecure (plain HTTP), for `--registries-conf`.
    pub fn insecure_registries_conf(&self, registry: &NetRegistry) -> PathBuf {
        let p = self.dir().join("registries.conf");
        fs::write(
            &p,
            format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                registry.addr
            ),
        )
        .expect("write registries.conf");
        p
    }
}

impl NetRegistry {
    fn in_netns(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(["timeout", "5"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Pushes the OCI layout `layout` (tag `tag`) as `repo` (`name:tag`) with skopeo, from
    /// inside the registry's namespace.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        crate::require_program("skopeo", "skopeo");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.addr))
            .stdin(Stdio::null())
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo push to {}: {}",
            self.addr,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's storage directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// How many requests the registry logged whose line contains `needle`.
    pub fn requests_containing(&self, needle: &str) -> usize {
        ["access.log", "registry.log"]
            .iter()
            .filter_map(|f| fs::read_to_string(self.dir.path().join(f)).ok())
            .map(|t| t.lines().filter(|l| l.contains(needle)).count())
            .sum()
    }
}

impl Drop for NetRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
