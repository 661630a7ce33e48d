//! Command-line details real clients rely on: the JSON log containerd and podman read on
//! failure, `run --keep`, `--preserve-fds`, and the domain name.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use berth_tests::runtime::{Running, TestEnv, COMMAND_TIMEOUT};
use serde_json::{json, Value};

#[test]
fn json_log_carries_the_error() {
    let env = TestEnv::new("jsonlog");
    let log = env.path().join("runtime.log");
    let missing = env.path().join("no-such-bundle");
    let out = env.rt.run(&[
        "--log",
        log.to_str().expect("utf-8"),
        "--log-format",
        "json",
        "create",
        "--bundle",
        missing.to_str().expect("utf-8"),
        "jsonlog-c",
    ]);
    out.failed();
    let text = fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("no log at {}: {e}\n{out}", log.display()));
    let last: Value = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"))
        })
        .unwrap_or_else(|| panic!("empty log\n{out}"));
    assert_eq!(last["level"], "error", "{last}");
    assert!(
        last["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-bundle")),
        "the logged error names the bundle: {last}"
    );
    assert!(
        last["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{last}"
    );
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let env = TestEnv::new("keep");
    let c = env.container(|b| {
        b.sh("echo kept; exit 4");
    });
    let out = c
        .spawn(&["run", "--keep", "--bundle", c.bundle.path_str(), &c.id])
        .wait(COMMAND_TIMEOUT);
    assert_eq!(out.code, Some(4), "{out}");
    assert_eq!(c.stdout().trim(), "kept");
    let state = c.state();
    assert_eq!(state["status"], "stopped", "{state}");
    c.delete(false).ok();
    c.assert_no_leftovers();
}

/// Makes `fd` in the child a non-close-on-exec copy of `source` (async-signal-safe).
fn give_fd(cmd: &mut std::process::Command, source: i32, fd: i32) {
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the forked child before
    // exec and touch only that child's descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if source == fd {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(source, fd)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn preserve_fds_hands_descriptors_to_the_container() {
    let env = TestEnv::new("preserve");
    let data = env.path().join("passed.txt");
    fs::write(&data, "through fd 3\n").expect("write");
    let file = fs::File::open(&data).expect("open");
    let c = env.container(|b| {
        b.sh("cat <&3; ls /proc/self/fd | tr '\\n' ' '");
    });
    let mut cmd = c.rt.command(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        c.bundle.path_str(),
        &c.id,
    ]);
    give_fd(&mut cmd, file.as_raw_fd(), 3);
    let out = Running::spawn(&mut cmd, Some(&c.stdout_path()), Some(&c.stderr_path()))
        .wait(COMMAND_TIMEOUT);
    out.ok();
    let stdout = c.stdout();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("through fd 3"), "{stdout}");
    let fds: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // 0-2 stdio, 3 preserved, 4 the directory ls opened.
    assert_eq!(fds, ["0", "1", "2", "3", "4"], "{stdout}");
    c.assert_no_leftovers();
}

/// runc 1.1 ignores `domainname` (runc 1.2 added it), so this one fails against runc 1.1.
#[test]
fn domainname_is_set() {
    let env = TestEnv::new("domain");
    let c = env.container(|b| {
        b.set("/hostname", json!("box"));
        b.set("/domainname", json!("berth.example"));
        b.sh("cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname");
    });
    assert_eq!(c.output(), "box\nberth.example\n");
}
