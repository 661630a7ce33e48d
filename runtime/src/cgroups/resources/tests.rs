//! Plans for v1 and v2, and apply/freeze/stats against fake cgroupfs trees.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::*;
use crate::cgroups::CgroupHandle;

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

fn files(plan: &[Write]) -> Vec<(String, String)> {
    plan.iter()
        .map(|w| (w.file.clone(), w.value.clone()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const FULL: &str = r#"{
  "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200,
             "swappiness": 10, "disableOOMKiller": true},
  "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
  "pids": {"limit": 64},
  "blockIO": {"weight": 500,
              "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
              "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
  "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
}"#;

#[test]
fn v1_plan_full() {
    let p = plan(&res(FULL), Version::V1).unwrap();
    assert_eq!(
        files(&p),
        pairs(&[
            ("memory.soft_limit_in_bytes", "52428800"),
            ("memory.limit_in_bytes", "104857600"),
            ("memory.memsw.limit_in_bytes", "209715200"),
            ("memory.swappiness", "10"),
            ("memory.oom_control", "1"),
            ("cpu.shares", "512"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "50000"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("pids.max", "64"),
            ("blkio.bfq.weight", "500"),
            ("blkio.throttle.read_bps_device", "8:0 1048576"),
            ("blkio.throttle.write_iops_device", "8:0 100"),
            ("hugetlb.2MB.limit_in_bytes", "4194304"),
            ("hugetlb.2MB.rsvd.limit_in_bytes", "4194304"),
        ])
    );
    assert_eq!(p[11].fallback, Some(("blkio.weight".into(), "500".into())));
    assert_eq!(p[0].controller, "memory");
    assert_eq!(p[8].controller, "cpuset");
}

#[test]
fn v2_plan_full_with_runc_conversions() {
    let p = plan(&res(FULL), Version::V2).unwrap();
    assert_eq!(
        files(&p),
        pairs(&[
            ("memory.low", "52428800"),
            // swap.max is swap alone: (limit+swap) - limit.
            ("memory.swap.max", "104857600"),
            ("memory.max", "104857600"),
            // 1 + (512-2)*9999/262142 = 20
            ("cpu.weight", "20"),
            ("cpu.max", "50000 100000"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("pids.max", "64"),
            ("io.bfq.weight", "500"),
            ("io.max", "8:0 rbps=1048576"),
            ("io.max", "8:0 wiops=100"),
            ("hugetlb.2MB.max", "4194304"),
            ("hugetlb.2MB.rsvd.max", "4194304"),
        ])
    );
    // 1 + (500-10)*9999/990 = 4950
    assert_eq!(
        p[8].fallback,
        Some(("io.weight".into(), "default 4950".into()))
    );
}

#[test]
fn conversions_match_runc_endpoints() {
    use super::v2::{blkio_to_io_weight, shares_to_weight, swap_to_v2};
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(blkio_to_io_weight(10), 1);
    assert_eq!(blkio_to_io_weight(1000), 10_000);
    assert_eq!(swap_to_v2(-1, Some(100)).unwrap(), Some("max".into()));
    assert_eq!(swap_to_v2(100, Some(100)).unwrap(), Some("0".into()));
    assert!(swap_to_v2(100, None)
        .unwrap_err()
        .to_string()
        .contains("memory.swap"));
    assert!(swap_to_v2(50, Some(100)).is_err());
}

#[test]
fn unlimited_values() {
    let r = res(r#"{"memory":{"limit":-1},"cpu":{"quota":-1},"pids":{"limit":-1}}"#);
    let p1 = plan(&r, Version::V1).unwrap();
    assert_eq!(
        files(&p1),
        pairs(&[
            ("memory.limit_in_bytes", "-1"),
            ("memory.memsw.limit_in_bytes", "-1"),
            ("cpu.cfs_quota_us", "-1"),
            ("pids.max", "max"),
        ])
    );
    assert!(p1[1].optional);
    let p2 = plan(&r, Version::V2).unwrap();
    assert_eq!(
        files(&p2),
        pairs(&[
            ("memory.swap.max", "max"),
            ("memory.max", "max"),
            ("cpu.max", "max"),
            ("pids.max", "max"),
        ])
    );
}

#[test]
fn oom_killer_switch_is_not_inverted() {
    let on = plan(&res(r#"{"memory":{"disableOOMKiller":true}}"#), Version::V1).unwrap();
    assert_eq!(files(&on), pairs(&[("memory.oom_control", "1")]));
    let off = plan(
        &res(r#"{"memory":{"disableOOMKiller":false}}"#),
        Version::V1,
    )
    .unwrap();
    assert_eq!(files(&off), pairs(&[("memory.oom_control", "0")]));
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        (r#"{"memory":{"limit":-2}}"#, "memory.limit"),
        (r#"{"memory":{"limit":100,"swap":50}}"#, "memory.swap"),
        (r#"{"memory":{"swappiness":101}}"#, "memory.swappiness"),
        (r#"{"cpu":{"quota":500}}"#, "cpu.quota"),
        (r#"{"cpu":{"period":10}}"#, "cpu.period"),
        (r#"{"cpu":{"cpus":"0-x"}}"#, "cpu.cpus"),
        (r#"{"cpu":{"mems":"3-1"}}"#, "cpu.mems"),
        (r#"{"pids":{"limit":-5}}"#, "pids.limit"),
        (r#"{"blockIO":{"weight":5}}"#, "blockIO.weight"),
        (
            r#"{"hugepageLimits":[{"pageSize":"2XB","limit":1}]}"#,
            "hugepageLimits[0].pageSize",
        ),
        (
            r#"{"hugepageLimits":[{"pageSize":"2MB","limit":-1}]}"#,
            "hugepageLimits[0].limit",
        ),
        (
            r#"{"devices":[{"allow":true,"type":"c","major":-3,"access":"rwm"}]}"#,
            "devices[0].major",
        ),
        (
            r#"{"devices":[{"allow":true,"access":"rwx"}]}"#,
            "devices[0].access",
        ),
    ];
    for (json, field) in cases {
        let e = plan(&res(json), Version::V1).unwrap_err().to_string();
        assert!(e.contains(field), "{json}: {e}");
    }
    let e = plan(&res(r#"{"memory":{"swap":100}}"#), Version::V2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.swap"), "{e}");
}

#[test]
fn devices_v1_in_order_then_defaults_and_v2_program() {
    let r = res(r#"{"devices":[{"allow":false,"access":"rwm"},
        {"allow":true,"type":"c","major":10,"minor":229,"access":"rw"},
        {"allow":false,"type":"b","major":8,"access":"m"}]}"#);
    let p = plan(&r, Version::V1).unwrap();
    let f = files(&p);
    assert_eq!(
        &f[..3],
        &pairs(&[
            ("devices.deny", "a *:* rwm"),
            ("devices.allow", "c 10:229 rw"),
            ("devices.deny", "b 8:* m"),
        ])[..]
    );
    assert_eq!(f.len(), 3 + default_device_rules().len());
    assert!(f.contains(&("devices.allow".into(), "c 1:3 rwm".into())));
    assert!(f.contains(&("devices.allow".into(), "c 136:* rwm".into())));
    assert!(f.contains(&("devices.allow".into(), "c *:* m".into())));
    // v2: no file writes, a program with the same rules and defaults.
    assert!(plan(&r, Version::V2).unwrap().is_empty());
    let prog = plan_devices_v2(&r).unwrap().unwrap();
    use super::devices_bpf::{tests::run, ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR};
    let rw = ACC_READ | ACC_WRITE;
    assert_eq!(run(&prog, DEV_CHAR, rw, 10, 229), 1); // the listed device
    assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 10, 229), 1); // mknod from the defaults
    assert_eq!(run(&prog, DEV_CHAR, rw, 1, 3), 1); // /dev/null from the defaults
    assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0), 0); // deny-all
    assert_eq!(run(&prog, DEV_CHAR, rw, 4, 1), 0);
    assert!(plan_devices_v2(&res("{}")).unwrap().is_none());
}

#[test]
fn unified_only_on_v2_and_validated() {
    let r = res(r#"{"unified":{"memory.high":"1048576","io.weight":"default 100"}}"#);
    assert_eq!(
        files(&plan(&r, Version::V2).unwrap()),
        pairs(&[("io.weight", "default 100"), ("memory.high", "1048576")])
    );
    let e = plan(&r, Version::V1).unwrap_err().to_string();
    assert!(e.contains("unified") && e.contains("v1"), "{e}");
    let e = plan(&res(r#"{"unified":{"../memory.max":"1"}}"#), Version::V2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("../memory.max"), "{e}");
    let e = plan(&res(r#"{"unified":{"cgroup.procs":"1"}}"#), Version::V2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cgroup.procs"), "{e}");
}

#[test]
fn realtime_v1_only() {
    let r = res(r#"{"cpu":{"realtimeRuntime":950000,"realtimePeriod":1000000}}"#);
    assert_eq!(
        files(&plan(&r, Version::V1).unwrap()),
        pairs(&[
            ("cpu.rt_period_us", "1000000"),
            ("cpu.rt_runtime_us", "950000")
        ])
    );
    assert!(plan(&r, Version::V2)
        .unwrap_err()
        .to_string()
        .contains("realtime"));
}

// ---- fake cgroupfs trees ----

const V1_FILES: &[(&str, &[&str])] = &[
    (
        "memory",
        &[
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.swappiness",
            "memory.oom_control",
        ],
    ),
    (
        "cpu",
        &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
    ),
    ("cpuset", &["cpuset.cpus", "cpuset.mems"]),
    ("pids", &["pids.max"]),
    (
        "blkio",
        &[
            "blkio.weight",
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_iops_device",
        ],
    ),
    ("hugetlb", &["hugetlb.2MB.limit_in_bytes"]),
    ("devices", &["devices.allow", "devices.deny"]),
    ("freezer", &["freezer.state"]),
];

pub(crate) fn fake_v1(root: &Path) -> CgroupHandle {
    let mut dirs = BTreeMap::new();
    for (c, fs_) in V1_FILES {
        let d = root.join(c).join("berth/c1");
        fs::create_dir_all(&d).unwrap();
        for f in *fs_ {
            fs::write(d.join(f), "").unwrap();
        }
        dirs.insert(c.to_string(), d);
    }
    fs::write(
        root.join("memory/berth/c1/memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .unwrap();
    CgroupHandle::V1 {
        dirs,
        unified: None,
    }
}

fn read(dir: &Path, f: &str) -> String {
    fs::read_to_string(dir.join(f)).unwrap()
}

pub(crate) fn v1d(h: &CgroupHandle, c: &str) -> PathBuf {
    h.v1_dir(c).unwrap().to_path_buf()
}

#[test]
fn apply_v1_fake_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    set(&h, &res(FULL)).unwrap();
    assert_eq!(
        read(&v1d(&h, "memory"), "memory.limit_in_bytes"),
        "104857600"
    );
    assert_eq!(
        read(&v1d(&h, "memory"), "memory.memsw.limit_in_bytes"),
        "209715200"
    );
    assert_eq!(read(&v1d(&h, "memory"), "memory.oom_control"), "1");
    assert_eq!(read(&v1d(&h, "cpu"), "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&v1d(&h, "cpuset"), "cpuset.cpus"), "0-1");
    assert_eq!(read(&v1d(&h, "pids"), "pids.max"), "64");
    // No blkio.bfq.weight in this tree: the fallback file got it.
    assert_eq!(read(&v1d(&h, "blkio"), "blkio.weight"), "500");
    assert!(!v1d(&h, "blkio").join("blkio.bfq.weight").exists());
    assert_eq!(
        read(&v1d(&h, "hugetlb"), "hugetlb.2MB.limit_in_bytes"),
        "4194304"
    );
    assert!(!v1d(&h, "hugetlb")
        .join("hugetlb.2MB.rsvd.limit_in_bytes")
        .exists());
}

#[test]
fn apply_v1_missing_file_or_controller_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let e = set(&h, &res(r#"{"cpu":{"realtimeRuntime":1000}}"#))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cpu.rt_runtime_us") && e.contains("cpu.realtimeRuntime"),
        "{e}"
    );
    assert!(!v1d(&h, "cpu").join("cpu.rt_runtime_us").exists());
    let e = set(&h, &res(r#"{"network":{"classID":1}}"#))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("net_cls") && e.contains("network.classID"),
        "{e}"
    );
}

#[test]
fn v1_memsw_ordering_follows_current_value() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let mem = v1d(&h, "memory");
    let p = plan(&res(r#"{"memory":{"limit":300,"swap":400}}"#), Version::V1).unwrap();
    // Current memsw 200 < new limit 300: memsw must go first.
    fs::write(mem.join("memory.memsw.limit_in_bytes"), "200\n").unwrap();
    let o = v1::order_memory(&h, &p);
    assert_eq!(o[0].file, "memory.memsw.limit_in_bytes");
    // Current memsw 1000 >= 300: the limit first (lowering memsw below the old limit
    // would otherwise fail).
    fs::write(mem.join("memory.memsw.limit_in_bytes"), "1000\n").unwrap();
    let o = v1::order_memory(&h, &p);
    assert_eq!(o[0].file, "memory.limit_in_bytes");
}

#[test]
fn apply_v2_fake_tree_and_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("berth/c1");
    fs::create_dir_all(&dir).unwrap();
    for f in [
        "memory.low",
        "memory.max",
        "memory.swap.max",
        "cpu.weight",
        "cpu.max",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "io.weight",
        "io.max",
        "hugetlb.2MB.max",
        "memory.high",
    ] {
        fs::write(dir.join(f), "").unwrap();
    }
    let h = CgroupHandle::V2 { dir: dir.clone() };
    set(&h, &res(FULL)).unwrap();
    assert_eq!(read(&dir, "memory.max"), "104857600");
    assert_eq!(read(&dir, "memory.swap.max"), "104857600");
    assert_eq!(read(&dir, "cpu.weight"), "20");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "io.weight"), "default 4950");
    assert_eq!(read(&dir, "pids.max"), "64");
    // update: a new period keeps the saved quota; memory untouched.
    fs::write(dir.join("memory.max"), "sentinel").unwrap();
    let saved = res(FULL);
    let merged = update(
        &h,
        &saved,
        &res(r#"{"cpu":{"period":200000},"pids":{"limit":10}}"#),
    )
    .unwrap();
    assert_eq!(read(&dir, "cpu.max"), "50000 200000");
    assert_eq!(read(&dir, "pids.max"), "10");
    assert_eq!(read(&dir, "memory.max"), "sentinel");
    assert_eq!(merged.cpu().as_ref().unwrap().quota(), Some(50000));
    assert_eq!(merged.cpu().as_ref().unwrap().period(), Some(200000));
    assert_eq!(merged.memory(), saved.memory());
    // unified keys write through; unknown keys are named.
    let mut u = HashMap::new();
    u.insert("memory.high".to_string(), "4096".to_string());
    let mut r = LinuxResources::default();
    r.set_unified(Some(u));
    set(&h, &r).unwrap();
    assert_eq!(read(&dir, "memory.high"), "4096");
    let e = set(&h, &res(r#"{"unified":{"memory.nope":"1"}}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.nope"), "{e}");
}

#[test]
fn update_v1_memory_keeps_saved_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let saved = res(r#"{"memory":{"limit":100,"swap":400},"pids":{"limit":5}}"#);
    let merged = update(&h, &saved, &res(r#"{"memory":{"limit":300}}"#)).unwrap();
    let mem = v1d(&h, "memory");
    assert_eq!(read(&mem, "memory.limit_in_bytes"), "300");
    assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "400");
    assert_eq!(read(&v1d(&h, "pids"), "pids.max"), "");
    assert_eq!(merged.memory().unwrap().limit(), Some(300));
    assert_eq!(merged.pids().unwrap().limit(), 5);
}

#[test]
fn freezer_fake_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let h = fake_v1(tmp.path());
    let f = v1d(&h, "freezer");
    fs::write(f.join("freezer.state"), "THAWED\n").unwrap();
    assert!(!is_frozen(&h).unwrap());
    freeze(&h).unwrap();
    assert_eq!(read(&f, "freezer.state"), "FROZEN");
    assert!(is_frozen(&h).unwrap());
    thaw(&h).unwrap();
    assert!(!is_frozen(&h).unwrap());

    let dir = tmp.path().join("v2");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("cgroup.freeze"), "0\n").unwrap();
    // A fake kernel that has already reported frozen: freeze writes 1 and sees it.
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    let h2 = CgroupHandle::V2 { dir: dir.clone() };
    freeze(&h2).unwrap();
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    assert!(is_frozen(&h2).unwrap());
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    thaw(&h2).unwrap();
    assert_eq!(read(&dir, "cgroup.freeze"), "0");
    assert!(!is_frozen(&h2).unwrap());
}

/// Real cgroup v1 on this host (root): limits land in the kernel's files and read back
/// as the kernel reports them. Cleans up its cgroup even when it fails.
#[test]
fn real_v1_memory_pids_and_freezer() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("real_v1_memory_pids_and_freezer needs root");
    }
    let layout = crate::cgroups::detect().unwrap();
    let rel = format!("/berth-unit-{}", std::process::id());
    let h = layout.resolve(Some(Path::new(&rel)), "x").unwrap();
    if h.version() != Version::V1 {
        // This machine is v1 (hybrid); on a v2 host the fake-tree tests cover v2.
        panic!("real_v1_memory_pids_and_freezer expects a cgroup v1 or hybrid host");
    }
    struct Guard(CgroupHandle);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = thaw(&self.0);
            let _ = crate::cgroups::membership::remove(&self.0);
        }
    }
    crate::cgroups::membership::create(&h).unwrap();
    let g = Guard(h.clone());
    let r = res(
        r#"{"memory":{"limit":67108864,"swap":134217728,"disableOOMKiller":true},
                    "pids":{"limit":16},"cpu":{"shares":256,"quota":20000,"period":100000}}"#,
    );
    set(&g.0, &r).unwrap();
    let mem = v1d(&g.0, "memory");
    assert_eq!(read(&mem, "memory.limit_in_bytes").trim(), "67108864");
    assert_eq!(
        read(&mem, "memory.memsw.limit_in_bytes").trim(),
        "134217728"
    );
    assert!(read(&mem, "memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(read(&v1d(&g.0, "pids"), "pids.max").trim(), "16");
    assert_eq!(read(&v1d(&g.0, "cpu"), "cpu.cfs_quota_us").trim(), "20000");
    // Raising the limit above the current memsw needs memsw written first.
    let merged = update(
        &g.0,
        &r,
        &res(r#"{"memory":{"limit":268435456,"swap":536870912}}"#),
    )
    .unwrap();
    assert_eq!(read(&mem, "memory.limit_in_bytes").trim(), "268435456");
    assert_eq!(merged.memory().unwrap().swap(), Some(536870912));
    // Unlimited again.
    set(&g.0, &res(r#"{"memory":{"limit":-1}}"#)).unwrap();
    assert_eq!(
        read(&mem, "memory.limit_in_bytes").trim(),
        "9223372036854771712"
    );
    assert_eq!(oom_kill_count(&g.0).unwrap(), 0);
    let s = stats(&g.0).unwrap();
    assert_eq!(s.pids.limit, 16);
    freeze(&g.0).unwrap();
    assert!(is_frozen(&g.0).unwrap());
    thaw(&g.0).unwrap();
    assert!(!is_frozen(&g.0).unwrap());
}
