//! `berth image run --net NAME -p HOST:CONTAINER`: one-off containers on a CNI network with
//! the real plugins, run inside a private network namespace that stands for the host (so
//! its bridge and nat rules vanish with it): the container's address and a published port
//! answer, and nothing is left after the run, after a killed run once `image prune` ran, or
//! after a bad network name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::images::{fixture, ImageEnv};

/// A network namespace deleted on drop (after every process in it is killed).
struct HostNs(String);

impl HostNs {
    fn new() -> HostNs {
        let name = format!("bimg-{}", std::process::id());
        let ok = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        let ns = HostNs(name);
        ok(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// `nsenter --net=NS PROGRAM ARGS...` (only the network namespace: cgroups stay visible).
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.0))
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(Path::new(program), args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl HostNs {
    /// An HTTP/1.0 GET from inside the namespace (a thread that entered it); the body.
    fn http_get(&self, addr: &str, path: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let ns = format!("/run/netns/{}", self.0);
        let (addr, path) = (addr.to_string(), path.to_string());
        std::thread::spawn(move || -> Result<String, String> {
            let f = fs::File::open(&ns).map_err(|e| e.to_string())?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())?;
            let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
            let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut resp = String::new();
            s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
            resp.split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
                .ok_or(format!("no HTTP answer: {resp:?}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the client thread panicked".into()))
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// What networking is left: veths on the bridge, leases, attachment records, namespace files.
fn left(ns: &HostNs, env: &ImageEnv, bridge: &str, ipam: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let links = ns.output("ip", &["-o", "link", "show"]);
    out.extend(
        links
            .lines()
            .filter(|l| l.contains(&format!("master {bridge} ")))
            .map(|l| format!("veth: {l}")),
    );
    let ls = |d: PathBuf| -> Vec<String> {
        fs::read_dir(&d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| format!("{}", e.path().display()))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.extend(
        ls(ipam.join("testnet"))
            .into_iter()
            .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with("10."))),
    );
    let state = env.store().join("cni").join("image-run");
    out.extend(ls(state.join("attachments").join("testnet")));
    out.extend(ls(state.join("netns")));
    out
}

#[test]
fn image_run_joins_a_cni_network_publishes_a_port_and_leaves_nothing() {
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).is_file(),
            "/usr/lib/cni/{p} is missing: install containernetworking-plugins"
        );
    }
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();
    let ns = HostNs::new();
    let bridge = format!("bi{:x}", std::process::id() & 0x00ff_ffff);
    let conf = env.work().join("net.d");
    let ipam = env.work().join("ipam");
    fs::create_dir_all(&conf).expect("net.d");
    fs::write(
        conf.join("50-testnet.conflist"),
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "testnet", "plugins": [
              {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": true,
                "ipam": {{"type": "host-local", "dataDir": "{}",
                         "ranges": [[{{"subnet": "10.123.0.0/24", "gateway": "10.123.0.1"}}]],
                         "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
              {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}"#,
            ipam.display()
        ),
    )
    .expect("conflist");
    let berth = env.berth.clone();
    let (root, store) = (env.root(), env.store());
    let image_args = |args: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--root".to_string(),
            root.display().to_string(),
            "image".into(),
            "--store".into(),
            store.display().to_string(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let conf_s = conf.display().to_string();
    let run = |args: &[&str]| {
        let a = image_args(args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        env.run(ns.command(&berth, &refs))
    };

    // In the foreground: the container has an address on the network's subnet.
    let out = run(&[
        "run",
        "--rm",
        "--net",
        "testnet",
        "--cni-conf-dir",
        &conf_s,
        "bb:1",
        "/bin/busybox",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ])
    .ok();
    assert!(out.stdout.contains("inet 10.123.0."), "{out}");
    assert_eq!(left(&ns, &env, &bridge, &ipam), Vec::<String>::new());

    // A server with a published port, reached from the "host" at the port; then the run is
    // killed (SIGKILL: no cleanup of its own) and its container too.
    let a = image_args(&[
        "run",
        "--rm",
        "--name",
        "srv",
        "--net",
        "testnet",
        "-p",
        "18080:8080",
        "--cni-conf-dir",
        &conf_s,
        "bb:1",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    ]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let server_log = env.work().join("server.log");
    let mut server = ns
        .command(&berth, &refs)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&server_log).expect("log"))
        .stderr(fs::File::create(env.work().join("server.err")).expect("log"))
        .spawn()
        .expect("spawn image run");
    let start = Instant::now();
    let body = loop {
        let b = ns.http_get("10.123.0.1:18080", "/os-release");
        if b.is_ok() || start.elapsed() > Duration::from_secs(60) {
            break b.unwrap_or_else(|e| e);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        body,
        fixture::OS_RELEASE,
        "the published port; the run said: {}{}; nat: {}",
        fs::read_to_string(&server_log).unwrap_or_default(),
        fs::read_to_string(env.work().join("server.err")).unwrap_or_default(),
        ns.output("iptables-save", &["-t", "nat"])
    );
    let _ = server.kill();
    let _ = server.wait();
    let kill = Command::new(&berth)
        .arg("--root")
        .arg(&root)
        .args(["kill", "srv", "KILL"])
        .status()
        .expect("berth kill");
    assert!(kill.success());
    let start = Instant::now();
    while root.join("srv").exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let leftovers = left(&ns, &env, &bridge, &ipam);
    assert!(
        leftovers.iter().any(|l| l.ends_with("srv@eth0.json")) && leftovers.len() >= 3,
        "a killed run leaves its attachment: {leftovers:?}"
    );
    run(&["prune"]).ok();
    assert_eq!(left(&ns, &env, &bridge, &ipam), Vec::<String>::new());
    let nat = ns.output("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("18080"), "portmap rules left: {nat}");

    // Bad input: an unknown network, -p without one; nothing is left either time.
    let out = run(&[
        "run",
        "--rm",
        "--net",
        "nosuch",
        "--cni-conf-dir",
        &conf_s,
        "bb:1",
        "/bin/true",
    ])
    .failed();
    assert!(
        out.stderr.contains("nosuch") && out.stderr.contains(&conf_s),
        "{out}"
    );
    let out = run(&["run", "--rm", "-p", "80:80", "bb:1", "/bin/true"]).failed();
    assert!(out.stderr.contains("-p needs --net"), "{out}");
    assert_eq!(left(&ns, &env, &bridge, &ipam), Vec::<String>::new());
    assert!(env.snapshot_dirs().is_empty(), "{:?}", env.snapshot_dirs());
}
