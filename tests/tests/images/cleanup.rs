//! `image run` cleans up whatever ends it, and bundle generation never reads anything but
//! a small regular file from the image (issue 16).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::images::layout::{busybox_layer, Compression, OciLayout, RawTar};
use berth_tests::images::{mounts_under, wait_with_timeout, ImageEnv};
use serde_json::json;

const APPLETS: &[&str] = &["sh", "sleep", "true", "cat", "echo", "grep"];

/// A busybox image whose Cmd waits for SIGTERM (and exits 0 on it), plus `extra` layers.
fn waiting_image(env: &ImageEnv, extra: Option<Vec<u8>>, config: serde_json::Value) -> PathBuf {
    let dir = env.work().join("img");
    let mut layout = OciLayout::new(&dir);
    layout.add_layer(&busybox_layer(APPLETS), Compression::Gzip);
    if let Some(l) = extra {
        layout.add_layer(&l, Compression::Gzip);
    }
    layout.tag("latest", config);
    dir
}

/// Exits on SIGTERM, SIGINT or SIGHUP; a signal that comes before the trap is set is lost
/// (the program is pid 1 of its namespace), so it also ends by itself after 5 s.
const WAIT_FOR_TERM: &str = "trap 'exit 0' TERM INT HUP; sleep 5 & wait";

/// Panics unless the environment has no mount, no snapshot and no container left.
#[track_caller]
fn assert_clean(env: &ImageEnv, context: &str) {
    env.assert_nothing_left_running(context);
    let snaps = env.snapshot_dirs();
    assert!(snaps.is_empty(), "{context}: snapshots left: {snaps:?}");
}

#[test]
fn image_run_rm_terminated_at_any_moment_leaves_nothing() {
    let env = ImageEnv::new();
    let dir = waiting_image(&env, None, json!({"Cmd": ["/bin/sh", "-c", WAIT_FOR_TERM]}));
    env.import(&dir, "wait:1").ok();
    // From before the process has set anything up to well after the container started.
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160, 320] {
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            let mut child = env
                .image_command(&["run", "--rm", "wait:1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start image run");
            std::thread::sleep(Duration::from_millis(delay_ms));
            let pid = i32::try_from(child.id()).expect("pid");
            // SIGINT goes to the whole process group, as a terminal's Ctrl-C does.
            let target = if signal == libc::SIGINT { -pid } else { pid };
            // SAFETY: kill(2) on our own unreaped child (or its process group).
            unsafe { libc::kill(target, signal) };
            let status = wait_with_timeout(&mut child, Duration::from_secs(120))
                .unwrap_or_else(|| panic!("image run ignored signal {signal} after {delay_ms} ms"));
            assert_clean(
                &env,
                &format!("signal {signal} after {delay_ms} ms (exit {status})"),
            );
        }
    }
}

/// Waits until `path` exists (the container's state directory).
fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} did not appear in 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn image_run_killed_with_sigkill_is_cleaned_up_by_the_next_run() {
    let env = ImageEnv::new();
    let dir = waiting_image(&env, None, json!({"Cmd": ["/bin/sh", "-c", WAIT_FOR_TERM]}));
    env.import(&dir, "wait:1").ok();
    for rm in [true, false] {
        let mut args = vec!["run", "--name", "killed"];
        if rm {
            args.push("--rm");
        }
        args.push("wait:1");
        let mut child = env
            .image_command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start image run");
        wait_for(&env.root().join("killed"), "the container");
        child.kill().expect("SIGKILL image run");
        child.wait().expect("reap image run");
        // The runtime's `run` outlives it and removes its container once the program ends.
        let mut kill = Command::new(&env.berth);
        kill.arg("--root")
            .arg(env.root())
            .args(["kill", "killed", "TERM"]);
        env.run(kill).ok();
        let deadline = Instant::now() + Duration::from_secs(120);
        while env.root().join("killed").exists() {
            assert!(Instant::now() < deadline, "the container did not go away");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !mounts_under(&env.store()).is_empty(),
            "the killed run's overlay should still be mounted here (nothing could unmount it)"
        );
        // The next run cleans up after it.
        env.image(&["run", "--rm", "wait:1", "/bin/true"]).ok();
        assert!(
            mounts_under(&env.store()).is_empty(),
            "rm={rm}: the next image run left the killed run's mount"
        );
        if rm {
            assert_clean(&env, "after the next run");
        } else {
            assert_eq!(env.snapshot_dirs(), ["killed"], "a kept snapshot stays");
            env.image(&["prune"]).ok();
            assert_clean(&env, "after prune");
        }
    }
}

#[test]
fn bundles_never_open_fifos_or_devices_of_the_image() {
    let env = ImageEnv::new();
    let mut etc = RawTar::new();
    etc.dir("etc/", 0o755)
        .fifo("etc/passwd", 0o644)
        .char_device("etc/group", 1, 5);
    let dir = waiting_image(
        &env,
        Some(etc.finish()),
        json!({"Cmd": ["/bin/grep", "^Uid:", "/proc/self/status"]}),
    );
    env.import(&dir, "fifo:1").ok();
    // No user named: nothing is read; this used to block forever on the FIFO.
    let limit = Duration::from_secs(60);
    let bundle = env.work().join("bundle");
    env.image_within(
        &["unpack", "fifo:1", bundle.to_str().expect("utf-8")],
        limit,
    )
    .ok();
    let out = env.image_within(&["run", "--rm", "fifo:1"], limit).ok();
    assert!(out.stdout.starts_with("Uid:\t0\t"), "{out}");
    let out = env
        .image_within(&["run", "--rm", "-u", "1234:5", "fifo:1"], limit)
        .ok();
    assert!(out.stdout.starts_with("Uid:\t1234\t"), "{out}");
    // The container's program starts with no signal blocked (image run blocks them for
    // itself only; they used to be handed down, so a container could not be stopped).
    let out = env
        .image_within(
            &[
                "run",
                "--rm",
                "fifo:1",
                "/bin/grep",
                "^SigBlk:",
                "/proc/self/status",
            ],
            limit,
        )
        .ok();
    assert_eq!(out.stdout, "SigBlk:\t0000000000000000\n", "{out}");
    // A user name needs /etc/passwd: a FIFO there is refused at once, naming it.
    let out = env
        .image_within(&["run", "--rm", "-u", "app", "fifo:1"], limit)
        .failed();
    assert!(
        out.stderr.contains("/etc/passwd") && out.stderr.contains("not a regular file"),
        "{out}"
    );
    assert_clean(&env, "after the runs");
}
