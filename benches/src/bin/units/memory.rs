//! Memory with N running containers: berthd (plus its one watchdog) running N units, against
//! the helper processes containerd (one containerd-shim-runc-v2 per container) and podman
//! (one conmon per container) keep for N containers of the same image, all on this machine.
//! Only the helpers are counted for containerd and podman (their daemons/CLIs come and go);
//! for berth, everything berthd keeps running: berthd and its watchdog.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_tests::cluster::units::web_image;
use berth_tests::cluster::Cluster;
use serde_json::json;

pub struct Memory {
    n: usize,
    berthd_mib: f64,
    watchdog_mib: f64,
    shims: Option<(usize, f64)>,
    conmons: Option<(usize, f64)>,
    notes: Vec<String>,
}

impl Memory {
    pub fn print(&self) {
        println!("Memory with {} running containers (VmRSS):", self.n);
        println!("| what stays running | processes | RSS total |");
        println!("|---|---|---|");
        println!(
            "| berth: berthd + its watchdog | 2 | {:.1} MiB ({:.1} + {:.1}) |",
            self.berthd_mib + self.watchdog_mib,
            self.berthd_mib,
            self.watchdog_mib
        );
        match self.shims {
            Some((p, mib)) => println!(
                "| containerd: containerd-shim-runc-v2 per container | {p} | {mib:.1} MiB |"
            ),
            None => println!("| containerd | - | not measured |"),
        }
        match self.conmons {
            Some((p, mib)) => println!("| podman: conmon per container | {p} | {mib:.1} MiB |"),
            None => println!("| podman | - | not measured |"),
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Pids whose command line contains every one of `needles`.
fn pids_with(needles: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) {
            out.push(pid);
        }
    }
    out
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn measure(tmp: &Path, n: usize, podman: bool, containerd: bool) -> Result<Memory> {
    let layout = web_image(&tmp.join("mem-image"));
    let (berthd_mib, watchdog_mib) = berth_units(&layout, n)?;
    let mut m = Memory {
        n,
        berthd_mib,
        watchdog_mib,
        shims: None,
        conmons: None,
        notes: Vec::new(),
    };
    if containerd {
        match containerd_shims(tmp, &layout, n) {
            Ok(r) => m.shims = Some(r),
            Err(e) => m.notes.push(format!("containerd not measured: {e:#}")),
        }
    }
    if podman {
        match podman_conmons(&layout, n) {
            Ok(r) => m.conmons = Some(r),
            Err(e) => m.notes.push(format!("podman not measured: {e:#}")),
        }
    }
    Ok(m)
}

/// One node with an agent running `n` units of `sleep`; RSS of berthd and its watchdog.
fn berth_units(layout: &Path, n: usize) -> Result<(f64, f64)> {
    let mut c = Cluster::with_agents();
    c.start_voters("units-mem", 1);
    c.wait_for_agreed_leader(&c.all());
    c.import_image(0, layout, "web:1");
    let sock = c.node(0).socket.clone();
    let call = |method: &str, target: &str, body: serde_json::Value| -> Result<()> {
        let r = berth_tests::cluster::http::unix_request(
            &sock,
            method,
            target,
            Some(&body),
            Duration::from_secs(10),
        )
        .map_err(|e| anyhow!("{method} {target}: {e}"))?;
        if !r.ok() {
            bail!("{method} {target}: {} {}", r.status, r.text());
        }
        Ok(())
    };
    let text = "[Container]\nImage=web:1\nExec=sleep 100000\n\n[Service]\nTimeoutStopSec=1s\n";
    let names: Vec<String> = (0..n).map(|i| format!("m{i}.service")).collect();
    for name in &names {
        call("POST", "/v1/units", json!({"name": name, "text": text}))?;
    }
    call(
        "PUT",
        "/v1/units",
        json!({"names": names, "desired": "launched"}),
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let states = c.node(0).unit_states().map_err(|e| anyhow!(e))?;
        let active = states.iter().filter(|s| s["active"] == "active").count();
        if active == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {active} of {n} units running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the loop settle (reports written, journals drained).
    std::thread::sleep(Duration::from_secs(2));
    let pid = c.node(0).pid().context("berthd pid")?;
    let run_dir = c.dir().join(&c.node(0).name).join("run");
    let watchdog: f64 = pids_with(&["berthd", "watchdog", &run_dir.display().to_string()])
        .into_iter()
        .map(rss_mib)
        .sum();
    Ok((rss_mib(pid), watchdog))
}

/// `n` containers of the image under a private containerd; RSS of their shims.
fn containerd_shims(tmp: &Path, layout: &Path, n: usize) -> Result<(usize, f64)> {
    berth_tests::require_program("containerd", "containerd");
    let dir = tmp.join("ctd");
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("ctd.sock");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display()
        ),
    )?;
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("containerd.log"))?)
        .spawn()
        .context("starting containerd")?;
    let result = (|| -> Result<(usize, f64)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            if Instant::now() > deadline {
                bail!("containerd did not open {}", sock.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = dir.join("web.tar");
        run(Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:web", layout.display()))
            .arg(format!(
                "oci-archive:{}:docker.io/library/bench-web:1",
                archive.display()
            )))?;
        let ctr = || {
            let mut c = Command::new("ctr");
            c.arg("--address")
                .arg(&sock)
                .args(["--namespace", "berthbench"]);
            c
        };
        run(ctr().args(["images", "import"]).arg(&archive))?;
        for i in 0..n {
            run(ctr().args([
                "run",
                "-d",
                "docker.io/library/bench-web:1",
                &format!("b{i}"),
                "sleep",
                "100000",
            ]))?;
        }
        std::thread::sleep(Duration::from_secs(2));
        let shims = pids_with(&["containerd-shim-runc-v2", &sock.display().to_string()]);
        let total: f64 = shims.iter().map(|p| rss_mib(*p)).sum();
        for i in 0..n {
            let id = format!("b{i}");
            let _ = run(ctr().args(["task", "kill", "-s", "SIGKILL", &id]));
        }
        std::thread::sleep(Duration::from_secs(1));
        for i in 0..n {
            let id = format!("b{i}");
            let _ = run(ctr().args(["task", "rm", "-f", &id]));
            let _ = run(ctr().args(["containers", "rm", &id]));
        }
        Ok((shims.len(), total))
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    for p in pids_with(&["containerd-shim-runc-v2", &sock.display().to_string()]) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    berth_tests::images::unmount_under(&dir);
    result
}

/// `n` podman containers of the image; RSS of their conmon processes.
fn podman_conmons(layout: &Path, n: usize) -> Result<(usize, f64)> {
    berth_tests::require_program("podman", "podman");
    let image = "localhost/berth-bench-web:1";
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:web", layout.display()))
        .arg(format!("containers-storage:{image}")))?;
    let result = (|| -> Result<(usize, f64)> {
        let mut ids = Vec::new();
        for _ in 0..n {
            // runc: crun 1.8 refuses this hybrid cgroup host; the ulimits: podman's
            // defaults raise hard limits, which needs CAP_SYS_RESOURCE this VM's root lacks.
            let id = run(Command::new("podman").args([
                "run",
                "-d",
                "--runtime",
                "runc",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                "--label",
                "berth-bench=units",
                "--network",
                "none",
                image,
                "sleep",
                "100000",
            ]))?;
            ids.push(id.trim().to_string());
        }
        std::thread::sleep(Duration::from_secs(2));
        let mut pids = Vec::new();
        for id in &ids {
            pids.extend(pids_with(&["conmon", id]));
        }
        pids.sort_unstable();
        pids.dedup();
        let total: f64 = pids.iter().map(|p| rss_mib(*p)).sum();
        Ok((pids.len(), total))
    })();
    let _ = run(Command::new("podman").args([
        "rm",
        "-f",
        "-t",
        "0",
        "--filter",
        "label=berth-bench=units",
    ]));
    let _ = run(Command::new("podman").args(["rmi", "-f", image]));
    result
}
