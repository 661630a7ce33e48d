//! One unit's start and stop on node 0, timed through the API and a watch on its state
//! record; what the node holds of its network afterwards.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use berth_tests::cluster::http::{unix_request, LineStream};
use berth_tests::cluster::Cluster;
use serde_json::{json, Value};

use crate::poll_until;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Network=none`: a namespace with loopback only, made by the runtime.
    None,
    /// The cluster network `berth` with one published port.
    Cluster,
}

/// One start/stop, each from the API request.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start: Duration,
    pub stop: Duration,
    pub released: Duration,
}

struct Event {
    put: bool,
    key: String,
    value: Value,
    at: Instant,
}

/// Units on node 0, with a watch on its state records.
pub struct Units<'a> {
    c: &'a Cluster,
    rx: mpsc::Receiver<Event>,
}

const T: Duration = Duration::from_secs(30);

/// The unit's program: httpd on :80 in the background, and a shell as the container's
/// init that exits on SIGTERM (a pid 1 without a handler ignores it, and the stop would
/// wait for TimeoutStopSec and SIGKILL).
const EXEC: &str =
    "sh -c 'trap \"exit 0\" TERM; httpd -p 80 -h /www; while :; do sleep 1 & wait; done'";

impl<'a> Units<'a> {
    pub fn watch(c: &'a Cluster) -> Result<Self> {
        let stream = UnixStream::connect(&c.node(0).socket)?;
        let mut ls = LineStream::open(stream, "GET", "/v1/watch?prefix=/state/", None)?;
        if ls.status != 200 {
            bail!("watch on n0 answered {}", ls.status);
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(line)) = ls.next_line() {
                let at = Instant::now();
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let value = v["value"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                let e = Event {
                    put: v["type"] == "put",
                    key: v["key"].as_str().unwrap_or_default().to_string(),
                    value,
                    at,
                };
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        Ok(Units { c, rx })
    }

    fn call(&self, method: &str, target: &str, body: Option<&Value>) -> Result<()> {
        let r = unix_request(&self.c.node(0).socket, method, target, body, T)
            .map_err(|e| anyhow!("{method} {target}: {e}"))?;
        if !r.ok() {
            bail!("{method} {target}: {} {}", r.status, r.text());
        }
        Ok(())
    }

    fn desired(&self, unit: &str, desired: &str) -> Result<()> {
        self.call(
            "PUT",
            &format!("/v1/units/{unit}/desired"),
            Some(&json!({ "desired": desired })),
        )
    }

    /// The first state event of `unit` for which `want` holds (`None`: its deletion).
    fn wait(&self, unit: &str, want: Option<&str>) -> Result<(Instant, Value)> {
        let key = format!("/state/n0/{unit}");
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self
                .rx
                .recv_timeout(left)
                .map_err(|_| anyhow!("{unit}: no state {want:?} within {T:?}"))?;
            if e.key != key {
                continue;
            }
            let active = e.value["active"].as_str();
            if active == Some("failed") {
                bail!("{unit} failed: {}", e.value);
            }
            let hit = match want {
                None => !e.put,
                Some(w) => e.put && active == Some(w),
            };
            if hit {
                return Ok((e.at, e.value));
            }
        }
    }

    fn text(mode: Mode, port: u16) -> String {
        let net = match mode {
            Mode::None => "Network=none".to_string(),
            Mode::Cluster => format!("PublishPort={port}:80"),
        };
        format!("[Container]\nImage=web:1\nExec={EXEC}\n{net}\n\n[Service]\nTimeoutStopSec=5s\n")
    }

    fn submit(&self, unit: &str, text: &str) -> Result<()> {
        self.call(
            "POST",
            "/v1/units",
            Some(&json!({ "name": unit, "text": text })),
        )
    }

    /// Whether node 0 holds no network of any unit: attachment records, namespace files.
    fn released(&self) -> bool {
        let data = &self.c.node(0).data_dir;
        empty(data.join("cni/attachments/berth")) && empty(data.join("run/netns"))
    }

    /// Starts and stops one unit; its times.
    pub fn trial(&self, mode: Mode, i: usize) -> Result<Times> {
        let tag = match mode {
            Mode::None => "none",
            Mode::Cluster => "net",
        };
        let unit = format!("{tag}{i}.service");
        self.submit(&unit, &Self::text(mode, 9000 + (i % 500) as u16))?;
        while self.rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        self.desired(&unit, "launched")?;
        let (up, rec) = self.wait(&unit, Some("active"))?;
        if (mode == Mode::Cluster) != rec.get("ip").is_some() {
            bail!("{unit}: unexpected address in its state: {rec}");
        }
        // Not timed: the program's trap is set (a SIGTERM before it would be ignored by the
        // container's init and the stop would wait for TimeoutStopSec).
        let pid = rec["pid"]
            .as_u64()
            .ok_or_else(|| anyhow!("{unit}: no pid in {rec}"))?;
        poll_until(&format!("{unit}'s SIGTERM trap"), || catches_term(pid))?;
        let t1 = Instant::now();
        self.desired(&unit, "loaded")?;
        let (down, _) = self.wait(&unit, Some("inactive"))?;
        let released = poll_until(&format!("{unit}'s network released"), || self.released())?;
        self.call("DELETE", &format!("/v1/units/{unit}"), None)?;
        self.wait(&unit, None)?;
        Ok(Times {
            start: up.duration_since(t0),
            stop: down.duration_since(t1),
            released: released.duration_since(t1),
        })
    }

    /// Starts `dns.service` on the cluster network (registered as service `dns`); the pid
    /// of its container's init.
    pub fn start_for_dns(&self) -> Result<u32> {
        self.submit("dns.service", &Self::text(Mode::Cluster, 9999))?;
        while self.rx.try_recv().is_ok() {}
        self.desired("dns.service", "launched")?;
        let (_, rec) = self.wait("dns.service", Some("active"))?;
        let pid = rec["pid"]
            .as_u64()
            .ok_or_else(|| anyhow!("no pid in {rec}"))?;
        // Registered (the service entry follows the state record).
        let deadline = Instant::now() + T;
        loop {
            let list = self.c.node(0).service("dns").map_err(|e| anyhow!(e))?;
            if !list.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("dns.service not registered within {T:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(pid as u32)
    }

    pub fn stop_dns(&self) -> Result<()> {
        self.call("DELETE", "/v1/units/dns.service", None)?;
        self.wait("dns.service", None)?;
        poll_until("dns.service's network released", || self.released())?;
        Ok(())
    }

    /// What node 0 still holds of its units' networks.
    pub fn leftovers(&self) -> String {
        let data = &self.c.node(0).data_dir;
        let count = |p: PathBuf| std::fs::read_dir(p).map_or(0, |r| r.flatten().count());
        let leases = std::fs::read_dir(data.join("cni/ipam/berth")).map_or(0, |r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        });
        format!(
            "{} attachment records, {} namespace files, {leases} IPAM leases",
            count(data.join("cni/attachments/berth")),
            count(data.join("run/netns"))
        )
    }
}

/// Whether process `pid` has a handler for SIGTERM (`SigCgt` of its status).
fn catches_term(pid: u64) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

fn empty(dir: PathBuf) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut r| r.next().is_none())
}
