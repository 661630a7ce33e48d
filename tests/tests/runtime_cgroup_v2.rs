//! cgroup v2 as most hosts in the field have it, on this hybrid machine: every berth
//! command runs in a private mount namespace whose /sys/fs/cgroup is the unified
//! hierarchy alone (the v1 mounts detached), so berth detects a v2-only host and takes
//! its v2 path against the real kernel: CLONE_INTO_CGROUP membership, the cgroup
//! namespace, the eBPF device program, cgroup.freeze and removal. The controllers stay
//! bound to v1 here, so v2 resource limits are not exercised (their files are
//! unit-tested against a fake cgroupfs). Assertions read the unified hierarchy from the
//! host side (/sys/fs/cgroup/unified) and what the container sees.

use std::fs;
use std::path::{Path, PathBuf};

use berth_tests::runtime::{
    assert_only_listed_devices, read_trim, runtime_bin, Container, TestEnv, CGROUP_PARENT,
};

const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// A test environment whose runtime is berth behind a wrapper that gives it a
/// v2-only view of cgroupfs.
fn v2_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    berth_tests::require_program("unshare", "util-linux");
    assert!(
        Path::new(UNIFIED).join("cgroup.procs").exists(),
        "these tests need the unified cgroup2 hierarchy at {UNIFIED} (a hybrid host)"
    );
    let wrapper = env.path().join("berth-v2only");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             # berth on a v2-only view of cgroupfs (private mount namespace).\n\
             exec unshare -m --propagation private sh -c \
             'umount -l /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\"' \
             {} \"$@\"\n",
            runtime_bin().display()
        ),
    )
    .expect("writing the v2-only wrapper");
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the wrapper");
    env.rt.bin = wrapper;
    env
}

/// The container's cgroup as the host sees it in the unified hierarchy.
fn unified_dir(c: &Container) -> PathBuf {
    Path::new(UNIFIED).join(CGROUP_PARENT).join(&c.id)
}

#[test]
fn v2_only_host_membership_cgroup_namespace_and_removal() {
    let env = v2_env("v2member");
    let c = env.container(|b| {
        b.namespace("cgroup", None);
        b.sh("grep '^0::' /proc/self/cgroup; grep ' - cgroup2 ' /proc/self/mountinfo | cut -d' ' -f4,5; sleep 1000");
    });
    c.create_and_start();
    let out = c.wait_stdout("/sys/fs/cgroup");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "0::/",
        "the cgroup namespace is rooted at the container's cgroup: {out}"
    );
    assert_eq!(
        lines[1], "/ /sys/fs/cgroup",
        "the container's /sys/fs/cgroup is its own cgroup2 directory: {out}"
    );
    let dir = unified_dir(&c);
    let procs = read_trim(&dir.join("cgroup.procs"));
    assert!(
        procs.lines().any(|p| p == c.pid().to_string()),
        "init {} is in {}: {procs:?}",
        c.pid(),
        dir.display()
    );
    assert_eq!(c.state()["status"], "running");
    c.delete(true).ok();
    assert!(!dir.exists(), "delete removes {}", dir.display());
    c.assert_no_leftovers();
}

#[test]
fn v2_only_host_device_program_allows_only_listed_devices() {
    let env = v2_env("v2devcg");
    let c = env.container(|b| {
        b.only_listed_devices();
    });
    c.create().ok();
    c.start().ok();
    c.wait_status("stopped");
    assert_only_listed_devices(&c.stdout(), "the device program");
    c.delete(false).ok();
    c.assert_no_leftovers();
}

#[test]
fn v2_only_host_pause_freezes_through_cgroup_freeze() {
    let env = v2_env("v2pause");
    let c = env.container(|b| {
        b.sh("while :; do sleep 0.01; done");
    });
    c.create_and_start();
    let events = unified_dir(&c).join("cgroup.events");
    let frozen = || {
        read_trim(&events)
            .lines()
            .find_map(|l| l.strip_prefix("frozen ").map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(frozen(), "0");
    c.verb("pause", &[], &[]).ok();
    assert_eq!(frozen(), "1", "pause freezes the cgroup");
    assert_eq!(c.state()["status"], "paused");
    c.verb("resume", &[], &[]).ok();
    assert_eq!(frozen(), "0", "resume thaws it");
    assert_eq!(c.state()["status"], "running");
    c.delete(true).ok();
    c.assert_no_leftovers();
}
