//! cgroups as the host's cgroupfs shows them: membership, memory limit and an OOM kill
//! reported by `events`, the pids limit stopping a fork loop, `update`, `pause`/`resume`.
//! This host is hybrid (v1 controllers plus a controller-less cgroup2), so the files read
//! are the v1 ones.

use std::fs;

use berth_tests::runtime::{
    assert_only_listed_devices, read_trim, wait_for, Container, Running, TestEnv,
};
use serde_json::{json, Value};

/// Creates the trigger file the container's script waits for (the rootfs is bind-mounted
/// onto itself, so a file made on the host under rootfs/tmp shows inside as /tmp).
fn trigger(c: &Container, name: &str) {
    fs::write(c.bundle.rootfs().join("tmp").join(name), "").expect("write trigger");
}

const WAIT_GO: &str = "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done";

#[test]
fn init_joins_the_configured_cgroup_everywhere() {
    let env = TestEnv::new("cgjoin");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create().ok();
    let pid = c.pid();
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("init cgroup");
    let want = format!("/berth-test/{}", c.id);
    for controller in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|cs| cs.split(',').any(|x| x == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} line in:\n{text}"));
        assert!(
            line.ends_with(&want),
            "{controller}: init should be in {want}:\n{text}"
        );
        let procs = read_trim(&c.cgroup_dir(controller).join("cgroup.procs"));
        assert!(
            procs.lines().any(|p| p == pid.to_string()),
            "{controller} cgroup.procs lacks {pid}: {procs}"
        );
    }
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// With a cgroup namespace the container's cgroup is its root ("/" in /proc/self/cgroup
/// and as the root of its cgroup mounts), as with runc, while the host sees the process
/// in /berth-test/<id>: the namespace is made after init has joined its cgroup.
#[test]
fn cgroup_namespace_is_rooted_at_the_container_cgroup() {
    let env = TestEnv::new("cgns");
    let c = env.container(|b| {
        b.namespace("cgroup", None);
        b.sh("cat /proc/self/cgroup; echo ---; cat /proc/self/mountinfo; echo done; sleep 1000");
    });
    c.create_and_start();
    let out = c.wait_stdout("done");
    let (cgroups, mountinfo) = out.split_once("---").expect("separator");
    let lines: Vec<&str> = cgroups.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 2, "too few cgroup lines:\n{cgroups}");
    for l in &lines {
        assert!(
            l.ends_with(":/"),
            "not rooted at the container cgroup: {l}\n{cgroups}"
        );
    }
    let cg_mounts: Vec<_> = berth_tests::runtime::parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .collect();
    assert!(!cg_mounts.is_empty(), "no cgroup mounts:\n{mountinfo}");
    for m in &cg_mounts {
        assert_eq!(
            m.root, "/",
            "cgroup mount {} has root {}",
            m.mount_point, m.root
        );
    }
    let host_view = fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).expect("cgroup");
    let want = format!("/berth-test/{}", c.id);
    assert!(
        host_view
            .lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.ends_with(&want)),
        "the host should see the process in {want}:\n{host_view}"
    );
    c.delete(true).ok();
    c.assert_no_leftovers();
}

#[test]
fn memory_limit_and_oom_kill_reported_by_events() {
    let env = TestEnv::new("oom");
    let limit: u64 = 32 << 20;
    let c = env.container(|b| {
        b.set("/root/readonly", json!(false));
        b.set("/linux/resources/memory", json!({"limit": limit}));
        b.sh(&format!(
            "{WAIT_GO}; sh -c 'x=0123456789abcdef; while :; do x=$x$x; done'; echo child-status=$?; exec sleep 1000"
        ));
    });
    c.create().ok();
    assert_eq!(
        read_trim(&c.cgroup_dir("memory").join("memory.limit_in_bytes")),
        limit.to_string()
    );
    c.start().ok();
    c.wait_stdout("ready");

    let events_out = env.path().join("events.out");
    let events_err = env.path().join("events.err");
    let mut events = Running::spawn(
        &mut c.rt.command(&["events", "--interval", "1s", &c.id]),
        Some(&events_out),
        Some(&events_err),
    );
    // The first stats line means the event stream (and its OOM notification) is set up.
    wait_for("a first line from events", || {
        fs::read_to_string(&events_out)
            .ok()
            .filter(|t| t.contains('\n'))
    });
    trigger(&c, "go");
    let out = c.wait_stdout("child-status=");
    assert!(
        out.contains("child-status=137"),
        "the memory hog is SIGKILLed by the OOM killer:\n{out}"
    );
    let stream = wait_for("an oom event", || {
        let text = fs::read_to_string(&events_out).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["type"] == "oom" && v["id"] == c.id.as_str())
            .then_some(text)
    });
    let _ = events.child.kill();
    let _ = events.child.wait();
    assert!(
        stream
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"stats\"")),
        "{stream}"
    );
    let oom_control = read_trim(&c.cgroup_dir("memory").join("memory.oom_control"));
    assert!(
        oom_control
            .lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "memory.oom_control should count the kill:\n{oom_control}"
    );

    let stats = c.verb("events", &["--stats"], &[]);
    stats.ok();
    let stats: Value = serde_json::from_str(stats.stdout.trim())
        .unwrap_or_else(|e| panic!("events --stats JSON: {e}\n{stats}"));
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["id"], c.id.as_str(), "{stats}");
    let memory = &stats["data"]["memory"]["usage"];
    assert_eq!(memory["limit"], limit, "{stats}");
    assert!(
        memory["failcnt"].as_u64().is_some_and(|n| n > 0),
        "the limit was hit: {stats}"
    );
    assert!(
        stats["data"]["pids"]["current"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{stats}"
    );
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let env = TestEnv::new("pids");
    let c = env.container(|b| {
        b.set("/linux/resources/pids", json!({"limit": 8}));
        // A failed fork ends busybox sh, so the loop runs in a subshell and PID 1 lives on.
        b.sh("(i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done); echo loop-exit=$?; exec sleep 1000");
    });
    c.create().ok();
    assert_eq!(read_trim(&c.cgroup_dir("pids").join("pids.max")), "8");
    c.start().ok();
    let out = c.wait_stdout("loop-exit=");
    assert!(
        !out.contains("loop-exit=0"),
        "the fork loop must fail: {out}"
    );
    assert!(
        c.stderr().contains("fork"),
        "forks past the limit fail: {}",
        c.stderr()
    );
    let current: u64 = read_trim(&c.cgroup_dir("pids").join("pids.current"))
        .parse()
        .expect("number");
    assert!(
        current <= 8,
        "pids.current {current} must not pass the limit"
    );
    let events = read_trim(&c.cgroup_dir("pids").join("pids.events"));
    assert!(
        events.starts_with("max ") && events != "max 0",
        "pids.events counts refusals: {events}"
    );
}

#[test]
fn update_changes_limits_of_a_running_container() {
    let env = TestEnv::new("update");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    c.verb(
        "update",
        &[
            "--memory",
            "100M",
            "--pids-limit",
            "50",
            "--cpu-share",
            "512",
        ],
        &[],
    )
    .ok();
    assert_eq!(
        read_trim(&c.cgroup_dir("memory").join("memory.limit_in_bytes")),
        (100u64 << 20).to_string()
    );
    assert_eq!(read_trim(&c.cgroup_dir("pids").join("pids.max")), "50");
    assert_eq!(read_trim(&c.cgroup_dir("cpu").join("cpu.shares")), "512");

    let resources = env.path().join("resources.json");
    fs::write(
        &resources,
        json!({"memory": {"limit": 64u64 << 20}, "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 20}})
            .to_string(),
    )
    .expect("write resources");
    c.verb(
        "update",
        &["--resources", resources.to_str().expect("utf-8")],
        &[],
    )
    .ok();
    assert_eq!(
        read_trim(&c.cgroup_dir("memory").join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read_trim(&c.cgroup_dir("cpu").join("cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read_trim(&c.cgroup_dir("cpu").join("cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(read_trim(&c.cgroup_dir("pids").join("pids.max")), "20");

    c.verb(
        "update",
        &[
            "--memory",
            "150M",
            "--memory-swap",
            "200M",
            "--memory-reservation",
            "50M",
            "--cpu-quota",
            "30000",
            "--cpu-period",
            "200000",
            "--cpuset-cpus",
            "0",
        ],
        &[],
    )
    .ok();
    let memory = c.cgroup_dir("memory");
    assert_eq!(
        read_trim(&memory.join("memory.limit_in_bytes")),
        (150u64 << 20).to_string()
    );
    assert_eq!(
        read_trim(&memory.join("memory.memsw.limit_in_bytes")),
        (200u64 << 20).to_string()
    );
    assert_eq!(
        read_trim(&memory.join("memory.soft_limit_in_bytes")),
        (50u64 << 20).to_string()
    );
    assert_eq!(
        read_trim(&c.cgroup_dir("cpu").join("cpu.cfs_quota_us")),
        "30000"
    );
    assert_eq!(
        read_trim(&c.cgroup_dir("cpu").join("cpu.cfs_period_us")),
        "200000"
    );
    assert_eq!(read_trim(&c.cgroup_dir("cpuset").join("cpuset.cpus")), "0");
    assert_eq!(c.state()["status"], "running");
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let env = TestEnv::new("pause");
    let c = env.container(|b| {
        b.sh("i=0; while :; do i=$((i+1)); echo $i > /dev/shm/tick; sleep 0.01; done");
    });
    c.create_and_start();
    let freezer = c.cgroup_dir("freezer").join("freezer.state");
    assert_eq!(read_trim(&freezer), "THAWED");
    c.verb("pause", &[], &[]).ok();
    assert_eq!(read_trim(&freezer), "FROZEN");
    assert_eq!(c.state()["status"], "paused");
    let list = c.rt.run(&["list", "--format", "json"]);
    list.ok();
    assert!(list.stdout.contains("\"paused\""), "{list}");
    c.verb("resume", &[], &[]).ok();
    assert_eq!(read_trim(&freezer), "THAWED");
    assert_eq!(c.state()["status"], "running");
    // Paused containers cannot be deleted without --force; resumed ones are running again.
    c.delete(true).ok();
    c.assert_no_leftovers();
}

#[test]
fn memory_cpu_and_cpuset_settings_reach_cgroupfs() {
    let env = TestEnv::new("cgset");
    let c = env.container(|b| {
        b.set(
            "/linux/resources/memory",
            json!({"limit": 64u64 << 20, "reservation": 32u64 << 20, "swappiness": 10, "disableOOMKiller": true}),
        );
        b.set(
            "/linux/resources/cpu",
            json!({"shares": 256, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"}),
        );
        b.args(&["cat", "/proc/self/status"]);
    });
    c.create().ok();
    let memory = c.cgroup_dir("memory");
    assert_eq!(
        read_trim(&memory.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read_trim(&memory.join("memory.soft_limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read_trim(&memory.join("memory.swappiness")), "10");
    let oom = read_trim(&memory.join("memory.oom_control"));
    assert!(
        oom.lines().any(|l| l == "oom_kill_disable 1"),
        "disableOOMKiller: {oom}"
    );
    let cpu = c.cgroup_dir("cpu");
    assert_eq!(read_trim(&cpu.join("cpu.shares")), "256");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
    let cpuset = c.cgroup_dir("cpuset");
    assert_eq!(read_trim(&cpuset.join("cpuset.cpus")), "0");
    assert_eq!(read_trim(&cpuset.join("cpuset.mems")), "0");
    c.start().ok();
    c.wait_status("stopped");
    let status = berth_tests::runtime::parse_status(&c.stdout());
    assert_eq!(
        status.get("Cpus_allowed_list").map(String::as_str),
        Some("0"),
        "{status:?}"
    );
}

#[test]
fn device_cgroup_allows_only_listed_devices() {
    let env = TestEnv::new("devcg");
    let c = env.container(|b| {
        b.only_listed_devices();
    });
    c.create().ok();
    let list = read_trim(&c.cgroup_dir("devices").join("devices.list"));
    let rules: Vec<&str> = list.lines().collect();
    assert!(
        !rules.contains(&"a *:* rwm"),
        "deny-all must replace the default allow-all: {list}"
    );
    assert!(
        rules.contains(&"c 10:200 rwm"),
        "the spec's allow rule is present: {list}"
    );
    assert!(
        rules.contains(&"c 1:3 rwm"),
        "the default /dev/null rule is present: {list}"
    );
    c.start().ok();
    c.wait_status("stopped");
    assert_only_listed_devices(&c.stdout(), "the devices cgroup");
}

#[test]
fn events_stats_report_cpu_memory_and_pids() {
    let env = TestEnv::new("stats");
    let c = env.container(|b| {
        b.set("/linux/resources/pids", json!({"limit": 64}));
        b.sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000 & sleep 1000 & echo busy-done; exec sleep 1000");
    });
    c.create_and_start();
    c.wait_stdout("busy-done");
    let out = c.verb("events", &["--stats"], &[]);
    out.ok();
    let stats: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("events --stats JSON: {e}\n{out}"));
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["id"], c.id.as_str(), "{stats}");
    let data = &stats["data"];
    let cpu_total = data["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    let cpuacct: u64 = read_trim(&c.cgroup_dir("cpuacct").join("cpuacct.usage"))
        .parse()
        .expect("cpuacct.usage");
    assert!(
        cpu_total > 0 && cpu_total <= cpuacct,
        "cpu total {cpu_total} vs cgroup {cpuacct}: {stats}"
    );
    let usage = data["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(usage > 0, "memory usage: {stats}");
    assert_eq!(
        data["pids"]["current"], 3,
        "the init and two background sleeps: {stats}"
    );
    assert_eq!(data["pids"]["limit"], 64, "{stats}");
}

#[test]
fn force_delete_of_a_paused_container() {
    let env = TestEnv::new("pausedel");
    let c = env.container(|b| {
        b.sh("sleep 1000 & exec sleep 1000");
    });
    c.create_and_start();
    let pid = c.pid();
    c.verb("pause", &[], &[]).ok();
    assert_eq!(c.state()["status"], "paused");
    let refused = c.delete(false);
    refused.failed();
    assert_eq!(
        c.state()["status"],
        "paused",
        "a refused delete leaves it paused"
    );
    // Frozen tasks cannot die until thawed: --force must still get rid of everything.
    c.delete(true).ok();
    wait_for("the paused init to be gone", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    c.assert_no_leftovers();
}

/// The container's /sys/fs/cgroup on this hybrid host: a read-only tmpfs with a
/// read-only bind of the container's directory in every hierarchy the host mounts,
/// whether berth builds that tree before init attaches it (no user namespace) or init
/// builds it itself (in a user namespace).
#[test]
fn the_cgroup_mount_binds_every_hierarchy_read_only_with_or_without_a_user_namespace() {
    let host = fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    let mut want: Vec<String> = berth_tests::runtime::parse_mountinfo(&host)
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .filter_map(|m| {
            m.mount_point
                .strip_prefix("/sys/fs/cgroup/")
                .map(String::from)
        })
        .collect();
    want.sort();
    assert!(want.len() >= 2, "a v1 or hybrid host: {want:?}");
    for userns in [false, true] {
        let env = TestEnv::new(if userns { "cgmntu" } else { "cgmnt" });
        let c = env.container(|b| {
            if userns {
                b.user_namespace(100000);
            }
            b.sh("cat /proc/self/mountinfo; echo ---; cat /sys/fs/cgroup/pids/cgroup.procs");
        });
        let out = c.output();
        let (mountinfo, procs) = out.split_once("---").expect("separator");
        let mounts = berth_tests::runtime::parse_mountinfo(mountinfo);
        let tmpfs = mounts
            .iter()
            .rfind(|m| m.mount_point == "/sys/fs/cgroup")
            .unwrap_or_else(|| panic!("no /sys/fs/cgroup mount (userns {userns}):\n{out}"));
        assert!(
            tmpfs.fs_type == "tmpfs" && tmpfs.options.contains(&"ro".to_string()),
            "userns {userns}: {tmpfs:?}"
        );
        let binds: Vec<_> = mounts
            .iter()
            .filter(|m| m.mount_point.starts_with("/sys/fs/cgroup/"))
            .collect();
        let mut got: Vec<String> = binds
            .iter()
            .map(|m| {
                m.mount_point
                    .trim_start_matches("/sys/fs/cgroup/")
                    .to_string()
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "userns {userns}:\n{out}");
        for m in &binds {
            assert!(
                m.options.contains(&"ro".to_string()) && m.fs_type.starts_with("cgroup"),
                "userns {userns}: {m:?}"
            );
        }
        // The pids hierarchy shows the container's own cgroup: its processes only.
        let pids: Vec<&str> = procs.split_whitespace().collect();
        assert!(
            pids.contains(&"1") && pids.len() <= 3,
            "userns {userns}: {procs:?}"
        );
    }
}
