//! The cgroup v2 plan: the unified hierarchy's files in the container's one directory,
//! with runc's conversions from the v1-shaped spec values.

use oci_spec::runtime::LinuxResources;

use super::util::{
    blkio_weight, cpuset_writes, invalid, memory_limits, page_size, pids_writes, MemoryLimits,
};
use super::{ResourceError, Write};

fn unsupported(field: &str, reason: &'static str) -> ResourceError {
    ResourceError::Unsupported {
        field: field.to_string(),
        version: "v2",
        reason,
    }
}

fn max_or(v: i64) -> String {
    if v == -1 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// runc's cpu.shares (2..262144) -> cpu.weight (1..10000): 1 + (shares-2)*9999/262142.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// runc's blkio weight (10..1000) -> io.weight (1..10000): 1 + (w-10)*9999/990.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).saturating_sub(10) * 9999) / 990
}

/// runc's memory.swap (memory+swap, v1 style) -> memory.swap.max (swap alone):
/// -1 stays unlimited; swap == limit means no swap (0); a swap limit needs a limit.
pub fn swap_to_v2(swap: i64, limit: Option<i64>) -> Result<Option<String>, ResourceError> {
    if swap == -1 {
        return Ok(Some("max".into()));
    }
    match limit {
        None | Some(-1) => Err(invalid(
            "memory.swap",
            swap,
            "a swap limit needs a memory limit on cgroup v2",
        )),
        Some(l) if swap < l => Err(invalid(
            "memory.swap",
            swap,
            format!("memory+swap must be at least the memory limit ({l})"),
        )),
        Some(l) => Ok(Some((swap - l).to_string())),
    }
}

pub(super) fn plan(r: &LinuxResources) -> Result<Vec<Write>, ResourceError> {
    let mut w = Vec::new();
    if let Some(m) = r.memory() {
        let MemoryLimits {
            limit,
            swap,
            reservation,
        } = memory_limits(m)?;
        if let Some(v) = reservation {
            w.push(Write::new(
                "memory",
                "memory.low",
                max_or(v),
                "memory.reservation",
            ));
        }
        // swap.max before max, so lowering both never has a moment with more swap.
        if let Some(s) = swap {
            if let Some(v) = swap_to_v2(s, limit)? {
                w.push(Write::new("memory", "memory.swap.max", v, "memory.swap"));
            }
        } else if limit == Some(-1) {
            w.push(Write::new("memory", "memory.swap.max", "max", "memory.limit").optional());
        }
        if let Some(l) = limit {
            w.push(Write::new(
                "memory",
                "memory.max",
                max_or(l),
                "memory.limit",
            ));
        }
        if m.swappiness().is_some() {
            tracing::warn!(
                "linux.resources.memory.swappiness has no cgroup v2 file; ignored (as runc does)"
            );
        }
        if m.disable_oom_killer() == Some(true) {
            tracing::warn!("linux.resources.memory.disableOOMKiller has no cgroup v2 file; ignored (as runc does)");
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            tracing::warn!(
                "linux.resources.memory.kernel/kernelTCP have no cgroup v2 file; ignored"
            );
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            w.push(Write::new(
                "cpu",
                "cpu.weight",
                shares_to_weight(s),
                "cpu.shares",
            ));
        }
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        if let Some(p) = period {
            if !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "cpu.period",
                    p,
                    "must be 1000 to 1000000 microseconds",
                ));
            }
        }
        if let Some(q) = quota {
            if q < -1 || (0..1000).contains(&q) {
                return Err(invalid(
                    "cpu.quota",
                    q,
                    "must be at least 1000 microseconds, or -1 for unlimited",
                ));
            }
        }
        if quota.is_some() || period.is_some() {
            let q = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let v = match period {
                Some(p) => format!("{q} {p}"),
                None => q,
            };
            w.push(Write::new("cpu", "cpu.max", v, "cpu.quota"));
        }
        if let Some(b) = c.burst() {
            w.push(Write::new("cpu", "cpu.max.burst", b, "cpu.burst"));
        }
        if let Some(i) = c.idle() {
            if !(0..=1).contains(&i) {
                return Err(invalid("cpu.idle", i, "must be 0 or 1"));
            }
            w.push(Write::new("cpu", "cpu.idle", i, "cpu.idle"));
        }
        if c.realtime_runtime().is_some_and(|v| v != 0)
            || c.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(unsupported(
                "cpu.realtimeRuntime",
                "cgroup v2 has no realtime group scheduling files",
            ));
        }
        cpuset_writes(c, &mut w)?;
    }
    if let Some(p) = r.pids() {
        pids_writes(p, &mut w)?;
    }
    if let Some(b) = r.block_io() {
        // io.bfq.weight takes the blkio range as is; io.weight needs runc's conversion.
        if let Some(v) = b.weight() {
            let v = blkio_weight("blockIO.weight", v)?;
            w.push(
                Write::new("io", "io.bfq.weight", v, "blockIO.weight")
                    .or("io.weight", format!("default {}", blkio_to_io_weight(v))),
            );
        }
        if b.leaf_weight().is_some() {
            tracing::warn!("linux.resources.blockIO.leafWeight has no cgroup v2 file; ignored");
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(v) = d.weight() {
                let v = blkio_weight(&format!("blockIO.weightDevice[{i}].weight"), v)?;
                let dev = format!("{}:{}", d.major(), d.minor());
                w.push(
                    Write::new(
                        "io",
                        "io.bfq.weight",
                        format!("{dev} {v}"),
                        "blockIO.weightDevice",
                    )
                    .or("io.weight", format!("{dev} {}", blkio_to_io_weight(v))),
                );
            }
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "rbps",
                "blockIO.throttleReadBpsDevice",
            ),
            (
                b.throttle_write_bps_device(),
                "wbps",
                "blockIO.throttleWriteBpsDevice",
            ),
            (
                b.throttle_read_iops_device(),
                "riops",
                "blockIO.throttleReadIOPSDevice",
            ),
            (
                b.throttle_write_iops_device(),
                "wiops",
                "blockIO.throttleWriteIOPSDevice",
            ),
        ];
        for (list, key, field) in throttles {
            for d in list.iter().flatten() {
                if d.major() < 0 || d.minor() < 0 {
                    return Err(invalid(
                        field,
                        format!("{}:{}", d.major(), d.minor()),
                        "device numbers must be >= 0",
                    ));
                }
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                w.push(Write::new(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={rate}", d.major(), d.minor()),
                    field,
                ));
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let ps = page_size(&format!("hugepageLimits[{i}].pageSize"), h.page_size())?;
        if h.limit() < 0 {
            return Err(invalid(
                &format!("hugepageLimits[{i}].limit"),
                h.limit(),
                "must be >= 0 bytes",
            ));
        }
        w.push(Write::new(
            "hugetlb",
            format!("hugetlb.{ps}.max"),
            h.limit(),
            "hugepageLimits",
        ));
        w.push(
            Write::new(
                "hugetlb",
                format!("hugetlb.{ps}.rsvd.max"),
                h.limit(),
                "hugepageLimits",
            )
            .optional(),
        );
    }
    // linux.resources.devices becomes an eBPF program: see `plan_devices_v2`.
    if r.network().is_some() {
        return Err(unsupported(
            "network",
            "cgroup v2 has no net_cls/net_prio controllers",
        ));
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported(
            "rdma",
            "Berth does not implement the rdma controller",
        ));
    }
    let mut unified: Vec<(&String, &String)> = r.unified().iter().flatten().collect();
    unified.sort();
    for (k, v) in unified {
        let ok = !k.contains('/')
            && !k.starts_with('.')
            && k.contains('.')
            && !matches!(
                k.as_str(),
                "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control"
            );
        if !ok {
            return Err(invalid(
                &format!("unified[{k:?}]"),
                v,
                "the key must be a controller file name such as memory.high (no '/'; not cgroup.procs, .threads or .subtree_control)",
            ));
        }
        w.push(Write::new("unified", k.clone(), v, "unified"));
    }
    Ok(w)
}
