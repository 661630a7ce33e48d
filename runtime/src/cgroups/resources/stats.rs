//! Resource usage for `events --stats`, shaped like runc's JSON, and the OOM kill count.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::ResourceError;
use crate::cgroups::CgroupHandle;

/// `{"type":"stats","id":..,"data":{..}}` as runc's `events` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub data: Stats,
}

impl StatsEvent {
    pub fn new(id: &str, data: Stats) -> StatsEvent {
        StatsEvent {
            kind: "stats",
            id: id.to_string(),
            data,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// Nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuUsage {
    pub total: u64,
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Bytes; `limit` of an unlimited cgroup is the kernel's "max" reading (u64::MAX on v2).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Blkio {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Reads a file; a missing file (controller or feature absent) reads as None.
fn opt_read(dir: &Path, file: &str) -> Result<Option<String>, ResourceError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResourceError::Read {
            path,
            reason: e.to_string(),
        }),
    }
}

/// A single number ("max" = u64::MAX); missing file = 0.
fn num(dir: &Path, file: &str) -> Result<u64, ResourceError> {
    let Some(s) = opt_read(dir, file)? else {
        return Ok(0);
    };
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().map_err(|_| ResourceError::Read {
        path: dir.join(file),
        reason: format!("expected a number, read {t:?}"),
    })
}

/// "key value" lines into a map (non-numeric values skipped).
fn kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn kv_file(dir: &Path, file: &str) -> Result<BTreeMap<String, u64>, ResourceError> {
    Ok(opt_read(dir, file)?.map(|s| kv(&s)).unwrap_or_default())
}

/// USER_HZ ticks (cpuacct.stat) to nanoseconds; USER_HZ is 100 on Linux.
const NS_PER_TICK: u64 = 10_000_000;

/// v1 blkio lines: "8:0 Read 4096" (the "Total" lines are skipped).
fn v1_blkio(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (maj, min) = it.next()?.split_once(':')?;
            let op = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some(BlkioEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                op: op.to_string(),
                value,
            })
        })
        .collect()
}

/// v2 io.stat lines: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
fn v2_io(text: &str) -> Blkio {
    let mut b = Blkio::default();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        let vals: BTreeMap<&str, u64> = it
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let entry = |op: &str, key: &str| BlkioEntry {
            major,
            minor,
            op: op.to_string(),
            value: vals.get(key).copied().unwrap_or(0),
        };
        b.io_service_bytes_recursive.push(entry("Read", "rbytes"));
        b.io_service_bytes_recursive.push(entry("Write", "wbytes"));
        b.io_serviced_recursive.push(entry("Read", "rios"));
        b.io_serviced_recursive.push(entry("Write", "wios"));
    }
    b
}

fn first_existing(dir: &Path, files: &[&str]) -> Result<String, ResourceError> {
    for f in files {
        if let Some(s) = opt_read(dir, f)? {
            return Ok(s);
        }
    }
    Ok(String::new())
}

fn stats_v1(handle: &CgroupHandle) -> Result<Stats, ResourceError> {
    let mut s = Stats::default();
    if let Some(d) = handle.v1_dir("cpuacct") {
        s.cpu.usage.total = num(d, "cpuacct.usage")?;
        s.cpu.usage.percpu = opt_read(d, "cpuacct.usage_percpu")?
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let st = kv_file(d, "cpuacct.stat")?;
        s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * NS_PER_TICK;
        s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * NS_PER_TICK;
    }
    if let Some(d) = handle.v1_dir("cpu") {
        let st = kv_file(d, "cpu.stat")?;
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(d) = handle.v1_dir("memory") {
        let entry = |prefix: &str| -> Result<MemoryEntry, ResourceError> {
            Ok(MemoryEntry {
                limit: num(d, &format!("{prefix}.limit_in_bytes"))?,
                usage: num(d, &format!("{prefix}.usage_in_bytes"))?,
                max: num(d, &format!("{prefix}.max_usage_in_bytes"))?,
                failcnt: num(d, &format!("{prefix}.failcnt"))?,
            })
        };
        s.memory.usage = entry("memory")?;
        s.memory.swap = entry("memory.memsw")?;
        s.memory.raw = kv_file(d, "memory.stat")?;
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(d) = handle.v1_dir("pids") {
        s.pids.current = num(d, "pids.current")?;
        s.pids.limit = match num(d, "pids.max")? {
            u64::MAX => 0,
            v => v,
        };
    }
    if let Some(d) = handle.v1_dir("blkio") {
        let bytes = first_existing(
            d,
            &[
                "blkio.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
            ],
        )?;
        let ios = first_existing(
            d,
            &[
                "blkio.io_serviced_recursive",
                "blkio.throttle.io_serviced_recursive",
                "blkio.bfq.io_serviced_recursive",
            ],
        )?;
        s.blkio.io_service_bytes_recursive = v1_blkio(&bytes);
        s.blkio.io_serviced_recursive = v1_blkio(&ios);
    }
    Ok(s)
}

fn stats_v2(d: &Path) -> Result<Stats, ResourceError> {
    let mut s = Stats::default();
    let cpu = kv_file(d, "cpu.stat")?;
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
    s.cpu.usage.total = us("usage_usec");
    s.cpu.usage.user = us("user_usec");
    s.cpu.usage.kernel = us("system_usec");
    s.cpu.throttling = Throttling {
        periods: cpu.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: us("throttled_usec"),
    };
    let events = kv_file(d, "memory.events")?;
    let usage = num(d, "memory.current")?;
    let limit = num(d, "memory.max")?;
    s.memory.usage = MemoryEntry {
        limit,
        usage,
        max: num(d, "memory.peak")?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // As runc reports it: swap as memory+swap, like v1's memsw.
    let swap_usage = num(d, "memory.swap.current")?;
    let swap_limit = num(d, "memory.swap.max")?;
    s.memory.swap = MemoryEntry {
        limit: if swap_limit == u64::MAX || limit == u64::MAX {
            u64::MAX
        } else {
            swap_limit + limit
        },
        usage: swap_usage + usage,
        max: 0,
        failcnt: 0,
    };
    s.memory.raw = kv_file(d, "memory.stat")?;
    s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    s.pids.current = num(d, "pids.current")?;
    s.pids.limit = match num(d, "pids.max")? {
        u64::MAX => 0,
        v => v,
    };
    s.blkio = v2_io(&opt_read(d, "io.stat")?.unwrap_or_default());
    Ok(s)
}

/// Current usage of the cgroup. Controllers that are absent read as zero.
pub fn stats(handle: &CgroupHandle) -> Result<Stats, ResourceError> {
    match handle {
        CgroupHandle::V1 { .. } => stats_v1(handle),
        CgroupHandle::V2 { dir } => stats_v2(dir),
    }
}

/// How many tasks of the cgroup the OOM killer has killed so far (v1: oom_kill in
/// memory.oom_control; v2: oom_kill in memory.events). Compare two readings to see a
/// new OOM kill.
pub fn oom_kill_count(handle: &CgroupHandle) -> Result<u64, ResourceError> {
    let (dir, file) = match handle {
        CgroupHandle::V1 { .. } => match handle.v1_dir("memory") {
            Some(d) => (d.to_path_buf(), "memory.oom_control"),
            None => {
                return Err(ResourceError::NoController {
                    controller: "memory".into(),
                    field: "(OOM kill count)".into(),
                })
            }
        },
        CgroupHandle::V2 { dir } => (dir.clone(), "memory.events"),
    };
    let text = opt_read(&dir, file)?.ok_or_else(|| ResourceError::Read {
        path: dir.join(file),
        reason: "missing".into(),
    })?;
    Ok(kv(&text).get("oom_kill").copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::resources::tests::{fake_v1, v1d};
    use std::fs;

    #[test]
    fn stats_v1_and_oom_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = fake_v1(tmp.path());
        let acct = tmp.path().join("cpuacct/berth/c1");
        fs::create_dir_all(&acct).unwrap();
        fs::write(acct.join("cpuacct.usage"), "5000000\n").unwrap();
        fs::write(acct.join("cpuacct.usage_percpu"), "3000000 2000000 \n").unwrap();
        fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        if let CgroupHandle::V1 { dirs, .. } = &mut h {
            dirs.insert("cpuacct".into(), acct);
        }
        let mem = v1d(&h, "memory");
        fs::write(mem.join("memory.limit_in_bytes"), "104857600\n").unwrap();
        fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(mem.join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        fs::write(mem.join("memory.failcnt"), "2\n").unwrap();
        fs::write(mem.join("memory.stat"), "cache 100\nrss 200\n").unwrap();
        fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        let pids = v1d(&h, "pids");
        fs::write(pids.join("pids.current"), "4\n").unwrap();
        fs::write(pids.join("pids.max"), "max\n").unwrap();
        fs::write(
            v1d(&h, "blkio").join("blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
        )
        .unwrap();
        let s = stats(&h).unwrap();
        assert_eq!(s.cpu.usage.total, 5_000_000);
        assert_eq!(s.cpu.usage.percpu, vec![3_000_000, 2_000_000]);
        assert_eq!(s.cpu.usage.user, 30_000_000);
        assert_eq!(s.memory.usage.limit, 104_857_600);
        assert_eq!(s.memory.usage.max, 8192);
        assert_eq!(s.memory.usage.failcnt, 2);
        assert_eq!(s.memory.cache, 100);
        assert_eq!(s.pids.current, 4);
        assert_eq!(s.pids.limit, 0);
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(oom_kill_count(&h).unwrap(), 3);
        let j = serde_json::to_value(StatsEvent::new("c1", s)).unwrap();
        assert_eq!(j["type"], "stats");
        assert_eq!(j["id"], "c1");
        assert_eq!(j["data"]["cpu"]["usage"]["total"], 5_000_000);
        assert_eq!(j["data"]["memory"]["usage"]["usage"], 4096);
        assert_eq!(j["data"]["memory"]["raw"]["rss"], 200);
        assert_eq!(j["data"]["pids"]["current"], 4);
        assert_eq!(
            j["data"]["blkio"]["ioServiceBytesRecursive"][0]["op"],
            "Read"
        );
    }

    #[test]
    fn stats_v2_and_oom_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\nnr_throttled 2\nthrottled_usec 30\n").unwrap();
        fs::write(d.join("memory.current"), "4096\n").unwrap();
        fs::write(d.join("memory.max"), "max\n").unwrap();
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n",
        )
        .unwrap();
        fs::write(d.join("memory.stat"), "anon 10\nfile 20\n").unwrap();
        fs::write(d.join("pids.current"), "3\n").unwrap();
        fs::write(d.join("pids.max"), "10\n").unwrap();
        fs::write(
            d.join("io.stat"),
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
        )
        .unwrap();
        let h = CgroupHandle::V2 { dir: d };
        let s = stats(&h).unwrap();
        assert_eq!(s.cpu.usage.total, 1_500_000);
        assert_eq!(s.cpu.usage.kernel, 500_000);
        assert_eq!(s.cpu.throttling.throttled_time, 30_000);
        assert_eq!(s.memory.usage.usage, 4096);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.failcnt, 5);
        assert_eq!(s.memory.cache, 20);
        assert_eq!(s.pids.limit, 10);
        assert_eq!(s.blkio.io_service_bytes_recursive[1].value, 200);
        assert_eq!(s.blkio.io_serviced_recursive[0].value, 1);
        assert_eq!(oom_kill_count(&h).unwrap(), 1);
    }

    /// Real cgroup v1 (root): a process exceeding the memory limit is OOM-killed and
    /// the kill shows in oom_kill_count; the peak usage reached the limit.
    #[test]
    fn real_v1_oom_kill_is_counted() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("real_v1_oom_kill_is_counted needs root");
        }
        let layout = crate::cgroups::detect().unwrap();
        let rel = format!("/berth-oom-{}", std::process::id());
        let h = layout
            .resolve(Some(std::path::Path::new(&rel)), "x")
            .unwrap();
        assert_eq!(
            h.version(),
            crate::cgroups::Version::V1,
            "expects a v1/hybrid host"
        );
        struct Guard(CgroupHandle);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = crate::cgroups::membership::remove(&self.0);
            }
        }
        crate::cgroups::membership::create(&h).unwrap();
        let g = Guard(h);
        let r: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":33554432,"swap":33554432}}"#).unwrap();
        crate::cgroups::resources::set(&g.0, &r).unwrap();
        assert_eq!(oom_kill_count(&g.0).unwrap(), 0);
        let procs = std::ffi::CString::new(
            v1d(&g.0, "memory")
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: the child only makes raw syscalls and touches memory it mapped.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls; the mapping is written only within its length.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(3);
                }
                let len = 256usize << 20;
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(4);
                }
                let bytes = p.cast::<u8>();
                let mut off = 0;
                while off < len {
                    *bytes.add(off) = 1;
                    off += 4096;
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "child was not OOM-killed (status {status:#x})"
        );
        assert_eq!(oom_kill_count(&g.0).unwrap(), 1);
        let s = stats(&g.0).unwrap();
        assert_eq!(s.memory.usage.limit, 33554432);
        // The child's usage climbed to the limit before it was killed.
        assert!(s.memory.usage.max >= 33554432 - 65536, "{s:?}");
    }
}
