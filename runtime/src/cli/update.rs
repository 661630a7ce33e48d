//! `berth update <id>`: runc's flags or `-r FILE` (a linux.resources JSON, `-` for stdin).

use std::io::Read;
use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::GlobalOpts;
use crate::container::{ContainerDir, Status};

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// JSON file with the resources to apply (`-` reads stdin).
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g allowed).
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory + swap limit (-1: unlimited).
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// CPU shares (relative weight); runc spells it --cpu-share.
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPU realtime period in microseconds.
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds.
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// Block IO weight (10-1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS quota in microseconds.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPUs to use (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of pids (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// The container id.
    pub id: String,
}

/// runc-style sizes: plain bytes, or with k/m/g (binary) suffixes; -1 is unlimited.
pub fn parse_size(flag: &str, s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.trim_end_matches('b').len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.trim_end_matches('b').len() - 1], 1i64 << 20),
        Some('g') => (&t[..t.trim_end_matches('b').len() - 1], 1i64 << 30),
        _ => (t.trim_end_matches('b'), 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--{flag}: invalid size {s:?}"))?;
    if n < 0 {
        anyhow::bail!("--{flag}: invalid size {s:?} (negative)");
    }
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("--{flag}: size {s:?} is too large"))
}

fn patch_from_flags(a: &UpdateArgs) -> anyhow::Result<Value> {
    let mut mem = Map::new();
    if let Some(m) = &a.memory {
        mem.insert("limit".into(), json!(parse_size("memory", m)?));
    }
    if let Some(m) = &a.memory_swap {
        mem.insert("swap".into(), json!(parse_size("memory-swap", m)?));
    }
    if let Some(m) = &a.memory_reservation {
        mem.insert(
            "reservation".into(),
            json!(parse_size("memory-reservation", m)?),
        );
    }
    let mut cpu = Map::new();
    if let Some(v) = a.cpu_shares {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = a.cpu_quota {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = a.cpu_period {
        cpu.insert("period".into(), json!(v));
    }
    if let Some(v) = a.cpu_rt_period {
        cpu.insert("realtimePeriod".into(), json!(v));
    }
    if let Some(v) = a.cpu_rt_runtime {
        cpu.insert("realtimeRuntime".into(), json!(v));
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = &a.cpuset_mems {
        cpu.insert("mems".into(), json!(v));
    }
    let mut out = Map::new();
    if !mem.is_empty() {
        out.insert("memory".into(), Value::Object(mem));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = a.pids_limit {
        out.insert("pids".into(), json!({"limit": p}));
    }
    if let Some(w) = a.blkio_weight {
        if !(10..=1000).contains(&w) {
            anyhow::bail!("--blkio-weight {w}: must be between 10 and 1000");
        }
        out.insert("blockIO".into(), json!({"weight": w}));
    }
    Ok(Value::Object(out))
}

pub fn run(g: &GlobalOpts, a: UpdateArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let dir = ContainerDir::open(&g.root, &a.id)?;
    let mut state = dir.load()?;
    let status = state.status(&dir.path);
    if status == Status::Stopped {
        anyhow::bail!("cannot update container {}: it is stopped", a.id);
    }
    let patch_value = match &a.resources {
        Some(p) => {
            let mut text = String::new();
            if p.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
            }
            let mut v: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--resources {}: {e}", p.display()))?;
            // Flags given alongside the file win, as in runc.
            if let (Value::Object(o), Value::Object(f)) = (&mut v, patch_from_flags(&a)?) {
                for (k, val) in f {
                    o.insert(k, val);
                }
            }
            v
        }
        None => patch_from_flags(&a)?,
    };
    let patch_text = patch_value.to_string();
    let de = &mut serde_json::Deserializer::from_str(&patch_text);
    let patch: LinuxResources = serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("resources: {}: {}", e.path(), e.inner()))?;
    let saved = state.resources.clone().unwrap_or_default();
    let merged = crate::cgroups::resources::update(&state.cgroup, &saved, &patch)
        .map_err(|e| anyhow::anyhow!("updating container {}: {e}", a.id))?;
    state.resources = Some(merged);
    dir.save(&state)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("m", "64m").unwrap(), 64 << 20);
        assert_eq!(super::parse_size("m", "1G").unwrap(), 1 << 30);
        assert_eq!(super::parse_size("m", "1024").unwrap(), 1024);
        assert_eq!(super::parse_size("m", "-1").unwrap(), -1);
        assert!(super::parse_size("m", "-5").is_err());
        assert!(super::parse_size("m", "lots").is_err());
    }
}
