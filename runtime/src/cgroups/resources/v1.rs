//! The cgroup v1 plan: one file per setting in each controller's directory.

use oci_spec::runtime::LinuxResources;

use super::util::{
    blkio_weight, byte_limit, cpuset_writes, device_rule, invalid, memory_limits, page_size,
    pids_writes, MemoryLimits,
};
use super::{default_device_rules, ResourceError, Write};
use crate::cgroups::CgroupHandle;

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
                "memory.soft_limit_in_bytes",
                v,
                "memory.reservation",
            ));
        }
        if let Some(l) = limit {
            w.push(Write::new(
                "memory",
                "memory.limit_in_bytes",
                l,
                "memory.limit",
            ));
        }
        match (limit, swap) {
            // v1's memsw is memory+swap together: it cannot be below the memory limit.
            (Some(l), Some(s)) if l != -1 && s != -1 && s < l => {
                return Err(invalid(
                    "memory.swap",
                    s,
                    format!("memory+swap must be at least the memory limit ({l})"),
                ))
            }
            (_, Some(s)) => w.push(Write::new(
                "memory",
                "memory.memsw.limit_in_bytes",
                s,
                "memory.swap",
            )),
            // An unlimited memory limit lifts memsw too (it would otherwise stay below).
            (Some(-1), None) => w.push(
                Write::new("memory", "memory.memsw.limit_in_bytes", -1, "memory.limit").optional(),
            ),
            _ => {}
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(invalid("memory.swappiness", s, "must be 0 to 100"));
            }
            w.push(Write::new(
                "memory",
                "memory.swappiness",
                s,
                "memory.swappiness",
            ));
        }
        if let Some(k) = m.kernel_tcp() {
            if let Some(v) = byte_limit("memory.kernelTCP", k)? {
                w.push(Write::new(
                    "memory",
                    "memory.kmem.tcp.limit_in_bytes",
                    v,
                    "memory.kernelTCP",
                ));
            }
        }
        if m.kernel().is_some() {
            tracing::warn!(
                "linux.resources.memory.kernel is deprecated and ignored (as runc does)"
            );
        }
        // oom_control: 1 disables the OOM killer, 0 enables it.
        if let Some(d) = m.disable_oom_killer() {
            w.push(Write::new(
                "memory",
                "memory.oom_control",
                if d { "1" } else { "0" },
                "memory.disableOOMKiller",
            ));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            w.push(Write::new("cpu", "cpu.shares", s, "cpu.shares"));
        }
        if let Some(p) = c.period().filter(|p| *p != 0) {
            if !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "cpu.period",
                    p,
                    "must be 1000 to 1000000 microseconds",
                ));
            }
            w.push(Write::new("cpu", "cpu.cfs_period_us", p, "cpu.period"));
        }
        if let Some(q) = c.quota().filter(|q| *q != 0) {
            if q < -1 || (0..1000).contains(&q) {
                return Err(invalid(
                    "cpu.quota",
                    q,
                    "must be at least 1000 microseconds, or -1 for unlimited",
                ));
            }
            w.push(Write::new("cpu", "cpu.cfs_quota_us", q, "cpu.quota"));
        }
        if let Some(b) = c.burst() {
            w.push(Write::new("cpu", "cpu.cfs_burst_us", b, "cpu.burst"));
        }
        if let Some(i) = c.idle() {
            if !(0..=1).contains(&i) {
                return Err(invalid("cpu.idle", i, "must be 0 or 1"));
            }
            w.push(Write::new("cpu", "cpu.idle", i, "cpu.idle"));
        }
        // The period first: the runtime must fit in it.
        if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
            w.push(Write::new(
                "cpu",
                "cpu.rt_period_us",
                p,
                "cpu.realtimePeriod",
            ));
        }
        if let Some(rt) = c.realtime_runtime().filter(|r| *r != 0) {
            if rt < -1 {
                return Err(invalid(
                    "cpu.realtimeRuntime",
                    rt,
                    "must be >= 0 or -1 for unlimited",
                ));
            }
            w.push(Write::new(
                "cpu",
                "cpu.rt_runtime_us",
                rt,
                "cpu.realtimeRuntime",
            ));
        }
        cpuset_writes(c, &mut w)?;
    }
    if let Some(p) = r.pids() {
        pids_writes(p, &mut w)?;
    }
    if let Some(b) = r.block_io() {
        if let Some(v) = b.weight() {
            let v = blkio_weight("blockIO.weight", v)?;
            w.push(
                Write::new("blkio", "blkio.bfq.weight", v, "blockIO.weight").or("blkio.weight", v),
            );
        }
        if let Some(v) = b.leaf_weight() {
            let v = blkio_weight("blockIO.leafWeight", v)?;
            w.push(Write::new(
                "blkio",
                "blkio.leaf_weight",
                v,
                "blockIO.leafWeight",
            ));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            let f = format!("blockIO.weightDevice[{i}]");
            if let Some(v) = d.weight() {
                let v = blkio_weight(&f, v)?;
                let s = format!("{}:{} {v}", d.major(), d.minor());
                w.push(
                    Write::new(
                        "blkio",
                        "blkio.bfq.weight_device",
                        &s,
                        "blockIO.weightDevice",
                    )
                    .or("blkio.weight_device", &s),
                );
            }
            if let Some(v) = d.leaf_weight() {
                let v = blkio_weight(&f, v)?;
                w.push(Write::new(
                    "blkio",
                    "blkio.leaf_weight_device",
                    format!("{}:{} {v}", d.major(), d.minor()),
                    "blockIO.weightDevice",
                ));
            }
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "blockIO.throttleReadBpsDevice",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "blockIO.throttleWriteBpsDevice",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "blockIO.throttleReadIOPSDevice",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "blockIO.throttleWriteIOPSDevice",
            ),
        ];
        for (list, file, field) in throttles {
            for d in list.iter().flatten() {
                if d.major() < 0 || d.minor() < 0 {
                    return Err(invalid(
                        field,
                        format!("{}:{}", d.major(), d.minor()),
                        "device numbers must be >= 0",
                    ));
                }
                w.push(Write::new(
                    "blkio",
                    file,
                    format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                    field,
                ));
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = "hugepageLimits";
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
            format!("hugetlb.{ps}.limit_in_bytes"),
            h.limit(),
            field,
        ));
        w.push(
            Write::new(
                "hugetlb",
                format!("hugetlb.{ps}.rsvd.limit_in_bytes"),
                h.limit(),
                field,
            )
            .optional(),
        );
    }
    if let Some(devs) = r.devices() {
        // In order, then runc's default allow list (as runc appends it).
        let defaults = default_device_rules();
        for (i, d) in devs.iter().chain(defaults.iter()).enumerate() {
            let rule = device_rule(&format!("devices[{i}]"), d)?;
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            w.push(Write::new("devices", file, rule, "devices"));
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            w.push(Write::new(
                "net_cls",
                "net_cls.classid",
                id,
                "network.classID",
            ));
        }
        for p in n.priorities().iter().flatten() {
            w.push(Write::new(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                "network.priorities",
            ));
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ResourceError::Unsupported {
            field: "rdma".into(),
            version: "v1",
            reason: "Berth does not implement the rdma controller",
        });
    }
    if r.unified().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ResourceError::Unsupported {
            field: "unified".into(),
            version: "v1",
            reason: "unified key/values are cgroup v2 files; this host applies limits through v1",
        });
    }
    Ok(w)
}

/// Puts memsw before the memory limit when the new limit exceeds the current memsw
/// (memsw >= limit must hold after every write); otherwise keeps the plan's order.
pub(super) fn order_memory(handle: &CgroupHandle, writes: &[Write]) -> Vec<Write> {
    let mut out = writes.to_vec();
    let pos = |f: &str| out.iter().position(|w| w.file == f);
    let (Some(li), Some(si)) = (
        pos("memory.limit_in_bytes"),
        pos("memory.memsw.limit_in_bytes"),
    ) else {
        return out;
    };
    let as_u = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map(|v| if v < 0 { u64::MAX } else { v as u64 })
            .unwrap_or(u64::MAX)
    };
    let new_limit = as_u(&out[li].value);
    let current_memsw = handle
        .v1_dir("memory")
        .and_then(|d| std::fs::read_to_string(d.join("memory.memsw.limit_in_bytes")).ok())
        .map(|s| as_u(&s))
        .unwrap_or(u64::MAX);
    if new_limit > current_memsw && si > li {
        let s = out.remove(si);
        out.insert(li, s);
    }
    out
}
