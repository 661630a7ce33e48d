//! Validation and merging shared by the v1 and v2 planners.

use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxPids, LinuxResources};

use super::{ResourceError, Write};

pub(crate) fn invalid(
    field: &str,
    value: impl ToString,
    reason: impl Into<String>,
) -> ResourceError {
    ResourceError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A byte limit: -1 is unlimited, other negatives are errors. `None` for 0 (unset,
/// as runc treats it).
pub(crate) fn byte_limit(field: &str, v: i64) -> Result<Option<i64>, ResourceError> {
    match v {
        0 => Ok(None),
        -1 => Ok(Some(-1)),
        v if v < -1 => Err(invalid(
            field,
            v,
            "must be a positive number of bytes or -1 for unlimited",
        )),
        v => Ok(Some(v)),
    }
}

/// A cpuset list ("0-3,5,7-8"): ranges of non-negative integers.
pub(crate) fn cpuset_list(field: &str, s: &str) -> Result<String, ResourceError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(invalid(field, s, "empty list"));
    }
    for part in t.split(',') {
        let ok = match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) => a <= b,
                _ => false,
            },
            None => part.parse::<u32>().is_ok(),
        };
        if !ok {
            return Err(invalid(
                field,
                s,
                format!("{part:?} is not a number or an ascending range N-M"),
            ));
        }
    }
    Ok(t.to_string())
}

/// A hugetlb page size as the kernel names it in file names ("2MB", "1GB", "64KB").
pub(crate) fn page_size(field: &str, s: &str) -> Result<String, ResourceError> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    if digits.is_empty() || digits.parse::<u64>().is_err() || !matches!(unit, "KB" | "MB" | "GB") {
        return Err(invalid(
            field,
            s,
            "a page size is a number followed by KB, MB or GB (e.g. 2MB)",
        ));
    }
    Ok(s.to_string())
}

/// One device cgroup rule as the v1 devices.allow/deny files take it: "c 1:3 rwm".
pub(crate) fn device_rule(field: &str, d: &LinuxDeviceCgroup) -> Result<String, ResourceError> {
    let num = |n: Option<i64>, what: &str| -> Result<String, ResourceError> {
        match n {
            None | Some(-1) => Ok("*".to_string()),
            Some(v) if v >= 0 => Ok(v.to_string()),
            Some(v) => Err(invalid(
                &format!("{field}.{what}"),
                v,
                "must be >= 0 (or -1 / absent for any)",
            )),
        }
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".to_string());
    let mut seen = String::new();
    for c in access.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(invalid(
                &format!("{field}.access"),
                &access,
                "must be letters from r, w, m, each once",
            ));
        }
        seen.push(c);
    }
    if access.is_empty() {
        return Err(invalid(
            &format!("{field}.access"),
            &access,
            "must not be empty",
        ));
    }
    let typ = d
        .typ()
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| "a".to_string());
    if !matches!(typ.as_str(), "a" | "b" | "c") {
        return Err(invalid(
            &format!("{field}.type"),
            &typ,
            "the device cgroup knows a, b and c",
        ));
    }
    if typ == "a" {
        return Ok(format!("a *:* {access}"));
    }
    Ok(format!(
        "{typ} {}:{} {access}",
        num(d.major(), "major")?,
        num(d.minor(), "minor")?
    ))
}

/// `patch` over `saved`, field by field within memory, cpu and blockIO; whole lists
/// (devices, hugepage limits, unified keys ...) of `patch` replace the saved ones.
pub(crate) fn merge(saved: &LinuxResources, patch: &LinuxResources) -> LinuxResources {
    let mut out = saved.clone();
    if let Some(pm) = patch.memory() {
        let mut m = (*saved.memory()).unwrap_or_default();
        if let Some(v) = pm.limit() {
            m.set_limit(Some(v));
        }
        if let Some(v) = pm.reservation() {
            m.set_reservation(Some(v));
        }
        if let Some(v) = pm.swap() {
            m.set_swap(Some(v));
        }
        if let Some(v) = pm.kernel() {
            m.set_kernel(Some(v));
        }
        if let Some(v) = pm.kernel_tcp() {
            m.set_kernel_tcp(Some(v));
        }
        if let Some(v) = pm.swappiness() {
            m.set_swappiness(Some(v));
        }
        if let Some(v) = pm.disable_oom_killer() {
            m.set_disable_oom_killer(Some(v));
        }
        out.set_memory(Some(m));
    }
    if let Some(pc) = patch.cpu() {
        let mut c = saved.cpu().clone().unwrap_or_default();
        if let Some(v) = pc.shares() {
            c.set_shares(Some(v));
        }
        if let Some(v) = pc.quota() {
            c.set_quota(Some(v));
        }
        if let Some(v) = pc.period() {
            c.set_period(Some(v));
        }
        if let Some(v) = pc.burst() {
            c.set_burst(Some(v));
        }
        if let Some(v) = pc.idle() {
            c.set_idle(Some(v));
        }
        if let Some(v) = pc.realtime_runtime() {
            c.set_realtime_runtime(Some(v));
        }
        if let Some(v) = pc.realtime_period() {
            c.set_realtime_period(Some(v));
        }
        if let Some(v) = pc.cpus() {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = pc.mems() {
            c.set_mems(Some(v.clone()));
        }
        out.set_cpu(Some(c));
    }
    if let Some(pb) = patch.block_io() {
        let mut b = saved.block_io().clone().unwrap_or_default();
        if let Some(v) = pb.weight() {
            b.set_weight(Some(v));
        }
        if let Some(v) = pb.leaf_weight() {
            b.set_leaf_weight(Some(v));
        }
        if let Some(v) = pb.weight_device() {
            b.set_weight_device(Some(v.clone()));
        }
        if let Some(v) = pb.throttle_read_bps_device() {
            b.set_throttle_read_bps_device(Some(v.clone()));
        }
        if let Some(v) = pb.throttle_write_bps_device() {
            b.set_throttle_write_bps_device(Some(v.clone()));
        }
        if let Some(v) = pb.throttle_read_iops_device() {
            b.set_throttle_read_iops_device(Some(v.clone()));
        }
        if let Some(v) = pb.throttle_write_iops_device() {
            b.set_throttle_write_iops_device(Some(v.clone()));
        }
        out.set_block_io(Some(b));
    }
    if patch.pids().is_some() {
        out.set_pids(*patch.pids());
    }
    if patch.devices().is_some() {
        out.set_devices(patch.devices().clone());
    }
    if patch.hugepage_limits().is_some() {
        out.set_hugepage_limits(patch.hugepage_limits().clone());
    }
    if patch.network().is_some() {
        out.set_network(patch.network().clone());
    }
    if patch.rdma().is_some() {
        out.set_rdma(patch.rdma().clone());
    }
    if let Some(pu) = patch.unified() {
        let mut u = saved.unified().clone().unwrap_or_default();
        u.extend(pu.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.set_unified(Some(u));
    }
    out
}

/// The subsystems of `merged` that `patch` names (what an update writes).
pub(crate) fn restrict(merged: &LinuxResources, patch: &LinuxResources) -> LinuxResources {
    let mut out = LinuxResources::default();
    if patch.memory().is_some() {
        out.set_memory(*merged.memory());
    }
    if patch.cpu().is_some() {
        out.set_cpu(merged.cpu().clone());
    }
    if patch.block_io().is_some() {
        out.set_block_io(merged.block_io().clone());
    }
    out.set_pids(*patch.pids());
    out.set_devices(patch.devices().clone());
    out.set_hugepage_limits(patch.hugepage_limits().clone());
    out.set_network(patch.network().clone());
    out.set_rdma(patch.rdma().clone());
    out.set_unified(patch.unified().clone());
    out
}

/// cpu.cpus and cpu.mems: the same cpuset files on v1 and v2.
pub(crate) fn cpuset_writes(c: &LinuxCpu, w: &mut Vec<Write>) -> Result<(), ResourceError> {
    if let Some(s) = c.cpus() {
        w.push(Write::new(
            "cpuset",
            "cpuset.cpus",
            cpuset_list("cpu.cpus", s)?,
            "cpu.cpus",
        ));
    }
    if let Some(s) = c.mems() {
        w.push(Write::new(
            "cpuset",
            "cpuset.mems",
            cpuset_list("cpu.mems", s)?,
            "cpu.mems",
        ));
    }
    Ok(())
}

/// pids.limit: the same pids.max file on v1 and v2 (0 leaves it, -1 is unlimited).
pub(crate) fn pids_writes(p: &LinuxPids, w: &mut Vec<Write>) -> Result<(), ResourceError> {
    let v = match p.limit() {
        0 => None,
        l if l > 0 => Some(l.to_string()),
        -1 => Some("max".to_string()),
        l => return Err(invalid("pids.limit", l, "must be > 0, or -1 for unlimited")),
    };
    if let Some(v) = v {
        w.push(Write::new("pids", "pids.max", v, "pids.limit"));
    }
    Ok(())
}

/// A blockIO weight, which both versions take in blkio's range.
pub(crate) fn blkio_weight(field: &str, v: u16) -> Result<u16, ResourceError> {
    if (10..=1000).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, v, "must be 10 to 1000"))
    }
}

/// memory.limit, memory.swap and memory.reservation, each checked by [`byte_limit`].
pub(crate) struct MemoryLimits {
    pub limit: Option<i64>,
    pub swap: Option<i64>,
    pub reservation: Option<i64>,
}

pub(crate) fn memory_limits(m: &LinuxMemory) -> Result<MemoryLimits, ResourceError> {
    let checked = |field: &str, v: Option<i64>| v.map(|v| byte_limit(field, v)).transpose();
    Ok(MemoryLimits {
        limit: checked("memory.limit", m.limit())?.flatten(),
        swap: checked("memory.swap", m.swap())?.flatten(),
        reservation: checked("memory.reservation", m.reservation())?.flatten(),
    })
}
