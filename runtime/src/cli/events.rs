//! `berth events <id>`: runc-shaped JSON events: `--stats` once, or stats every
//! `--interval` plus `oom` events when the OOM-kill counter rises.

use std::time::Duration;

use super::GlobalOpts;
use crate::cgroups::resources::{self, StatsEvent};
use crate::container::{ContainerDir, Status};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Print one stats event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Interval between stats events (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// The container id.
    pub id: String,
}

fn parse_interval(s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow::anyhow!("--interval: invalid duration {s:?} (e.g. 5s, 500ms, 1m)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(g: &GlobalOpts, a: EventsArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let interval = parse_interval(&a.interval)?;
    let (cgroup, id) = {
        let dir = ContainerDir::open(&g.root, &a.id)?;
        let state = dir.load()?;
        if state.status(&dir.path) == Status::Stopped {
            anyhow::bail!("container {} is not running", a.id);
        }
        (state.cgroup, state.id)
    };
    if a.stats {
        let s =
            resources::stats(&cgroup).map_err(|e| anyhow::anyhow!("reading stats of {id}: {e}"))?;
        println!("{}", serde_json::to_string(&StatsEvent::new(&id, s))?);
        return Ok(0);
    }
    let mut ooms = resources::oom_kill_count(&cgroup).unwrap_or(0);
    loop {
        // Stop when the container is gone.
        let Ok(dir) = ContainerDir::open(&g.root, &id) else {
            return Ok(0);
        };
        let Ok(state) = dir.load() else { return Ok(0) };
        drop(dir);
        let now = resources::oom_kill_count(&cgroup).unwrap_or(ooms);
        if now > ooms {
            println!("{}", serde_json::json!({"type": "oom", "id": id}));
            ooms = now;
        }
        if let Ok(s) = resources::stats(&cgroup) {
            println!("{}", serde_json::to_string(&StatsEvent::new(&id, s))?);
        }
        if state.status(&g.root.join(&id)) == Status::Stopped {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}
