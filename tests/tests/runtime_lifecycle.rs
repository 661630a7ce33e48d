//! Lifecycle through the runc command line: create/start/state/kill/delete, run, list, ps,
//! concurrent creates and duplicate ids. Runs as root; `BERTH_TEST_RUNTIME=/usr/sbin/runc`
//! runs the same tests against runc.

use std::fs;
use std::path::{Path, PathBuf};

use berth_tests::runtime::{wait_for, Bundle, Container, TestEnv, COMMAND_TIMEOUT};
use serde_json::Value;

/// A shell loop that prints `ready` and then waits for signals; `traps` installs handlers.
fn trapping(traps: &str) -> String {
    format!("{traps}; echo ready; while :; do sleep 0.05; done")
}

fn proc_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The `cgroup.procs` files of the container's cgroup in every hierarchy that has one.
fn cgroup_procs_files(c: &Container) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir("/sys/fs/cgroup").expect("cgroupfs").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let procs = c.cgroup_dir(&name).join("cgroup.procs");
        if procs.exists() {
            files.push(procs);
        }
    }
    files
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn state_reports_every_stage() {
    let env = TestEnv::new("stages");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create().ok();

    let created = c.state();
    assert_eq!(created["status"], "created", "{created}");
    assert_eq!(created["id"], c.id.as_str(), "{created}");
    assert_eq!(created["bundle"], c.bundle.path_str(), "{created}");
    let version = created["ociVersion"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("1."),
        "ociVersion should be 1.x: {created}"
    );
    let pid = c.pid();
    assert!(
        pid > 1 && proc_exists(pid),
        "created container's pid {pid} should be alive: {created}"
    );
    // create stops before the user program: the init has not exec'd `sleep` yet.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_ne!(
        String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
        "sleep 1000",
        "create must not run the user program before start"
    );

    c.start().ok();
    let running = c.state();
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(c.pid(), pid, "start keeps the same init pid");
    let cmdline = wait_for("init to exec sleep", || {
        let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let text = String::from_utf8_lossy(&raw).replace('\0', " ");
        (text.trim() == "sleep 1000").then_some(text)
    });
    assert_eq!(cmdline.trim(), "sleep 1000");

    c.kill("KILL").ok();
    let stopped = c.wait_status("stopped");
    assert_eq!(stopped["id"], c.id.as_str(), "{stopped}");
    assert_eq!(stopped["bundle"], c.bundle.path_str(), "{stopped}");

    c.delete(false).ok();
    let gone = env.rt.run(&["state", &c.id]);
    gone.failed();
    assert!(
        gone.stderr.contains(&c.id) || gone.stderr.contains("not exist"),
        "{gone}"
    );
    c.assert_no_leftovers();
}

#[test]
fn kill_with_names_numbers_and_default_signal() {
    let env = TestEnv::new("killsig");
    let c = env.container(|b| {
        b.sh(&trapping(
            "trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 0' TERM",
        ));
    });
    c.create_and_start();
    c.wait_stdout("ready");
    for (i, signal) in ["USR1", "SIGUSR1", "10"].iter().enumerate() {
        c.kill(signal).ok();
        wait_for(&format!("got-USR1 #{} after kill {signal}", i + 1), || {
            (count(&c.stdout(), "got-USR1") == i + 1).then_some(())
        });
    }
    // No signal at all means SIGTERM.
    c.verb("kill", &[], &[]).ok();
    c.wait_status("stopped");
    assert_eq!(count(&c.stdout(), "got-TERM"), 1, "stdout: {}", c.stdout());
    c.delete(false).ok();
    c.assert_no_leftovers();
}

#[test]
fn kill_sigkill_spelled_three_ways() {
    let env = TestEnv::new("killnine");
    for signal in ["KILL", "SIGKILL", "9"] {
        let c = env.container(|b| {
            b.args(&["sleep", "1000"]);
        });
        c.create_and_start();
        let pid = c.pid();
        c.kill(signal).ok();
        c.wait_status("stopped");
        wait_for("the killed init to be reaped", || {
            (!proc_exists(pid)).then_some(())
        });
        c.delete(false).ok();
        c.assert_no_leftovers();
    }
}

#[test]
fn kill_all_reaches_every_process() {
    let env = TestEnv::new("killall");
    // Each child says child-ready only once its trap is installed.
    let child =
        "trap 'echo child-got-TERM; exit 0' TERM; echo child-ready; while :; do sleep 0.05; done";
    let script = format!(
        "trap 'echo init-got-TERM' TERM; sh -c \"{child}\" & sh -c \"{child}\" & echo ready; while :; do sleep 0.05; done"
    );
    let c = env.container(|b| {
        b.sh(&script);
    });
    c.create_and_start();
    c.wait_stdout("ready");
    wait_for("both children to install their traps", || {
        (count(&c.stdout(), "child-ready") == 2).then_some(())
    });
    let procs = cgroup_procs_files(&c);
    assert!(
        !procs.is_empty(),
        "container {} has no cgroup under /sys/fs/cgroup/*/berth-test",
        c.id
    );
    c.verb("kill", &["--all"], &["TERM"]).ok();
    wait_for("both children to report TERM", || {
        (count(&c.stdout(), "child-got-TERM") == 2).then_some(())
    });
    wait_for("init to report TERM", || {
        c.stdout().contains("init-got-TERM").then_some(())
    });

    c.verb("kill", &["--all"], &["KILL"]).ok();
    c.wait_status("stopped");
    for file in &procs {
        wait_for(&format!("{} to empty", file.display()), || {
            fs::read_to_string(file)
                .ok()
                .filter(|t| t.trim().is_empty())
        });
    }
    c.delete(false).ok();
    c.assert_no_leftovers();
}

#[test]
fn delete_refuses_a_running_container_without_force() {
    let env = TestEnv::new("delforce");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let pid = c.pid();
    let refused = c.delete(false);
    refused.failed();
    assert!(
        !refused.stderr.trim().is_empty(),
        "refusal must say why:\n{refused}"
    );
    assert_eq!(
        c.state()["status"],
        "running",
        "a refused delete must leave the container running"
    );
    assert!(proc_exists(pid));

    c.delete(true).ok();
    env.rt.run(&["state", &c.id]).failed();
    wait_for("the init to be gone", || (!proc_exists(pid)).then_some(()));
    c.assert_no_leftovers();
}

#[test]
fn delete_force_removes_a_created_container() {
    let env = TestEnv::new("delcreated");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create().ok();
    let pid = c.pid();
    c.delete(true).ok();
    env.rt.run(&["state", &c.id]).failed();
    wait_for("the init to be gone", || (!proc_exists(pid)).then_some(()));
    c.assert_no_leftovers();
}

#[test]
fn run_exits_with_the_container_status() {
    let env = TestEnv::new("runexit");
    let c = env.container(|b| {
        b.sh("echo out-line; echo err-line >&2; exit 3");
    });
    let out = c.run();
    assert_eq!(
        out.code,
        Some(3),
        "run must exit with the container's status:\n{out}"
    );
    assert_eq!(c.stdout().trim(), "out-line");
    assert!(c.stderr().contains("err-line"), "stderr: {}", c.stderr());
    // run without --keep deletes the container.
    env.rt.run(&["state", &c.id]).failed();
    c.assert_no_leftovers();
}

#[test]
fn run_killed_by_sigkill_exits_137() {
    let env = TestEnv::new("run137");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    let run = c.spawn(&["run", "--bundle", c.bundle.path_str(), &c.id]);
    wait_for("the container to be running", || {
        env.rt.try_state(&c.id).filter(|s| s["status"] == "running")
    });
    c.kill("KILL").ok();
    let out = run.wait(COMMAND_TIMEOUT);
    assert_eq!(out.code, Some(137), "killed by SIGKILL means 128+9:\n{out}");
    c.assert_no_leftovers();
}

#[test]
fn run_forwards_signals_to_the_container() {
    let env = TestEnv::new("runfwd");
    let c = env.container(|b| {
        b.sh(&trapping("trap 'echo got-TERM; exit 7' TERM"));
    });
    let run = c.spawn(&["run", "--bundle", c.bundle.path_str(), &c.id]);
    c.wait_stdout("ready");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal run");
    let out = run.wait(COMMAND_TIMEOUT);
    assert_eq!(
        out.code,
        Some(7),
        "run should forward SIGTERM and exit with the container's 7:\n{out}"
    );
    assert!(c.stdout().contains("got-TERM"), "stdout: {}", c.stdout());
    c.assert_no_leftovers();
}

#[test]
fn run_detached_and_pid_files() {
    let env = TestEnv::new("rundetach");
    let c = env.container(|b| {
        b.sh("echo detached-ok; exec sleep 1000");
    });
    let pid_file = env.path().join("run.pid");
    let out = c
        .spawn(&[
            "run",
            "-d",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
            "--bundle",
            c.bundle.path_str(),
            &c.id,
        ])
        .wait(COMMAND_TIMEOUT);
    out.ok();
    assert_eq!(c.state()["status"], "running");
    c.wait_stdout("detached-ok");
    let written: i32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert_eq!(written, c.pid(), "--pid-file must hold the init's host pid");
    c.delete(true).ok();
    c.assert_no_leftovers();

    let c2 = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    let pid_file2 = env.path().join("create.pid");
    c2.spawn(&[
        "create",
        "--pid-file",
        pid_file2.to_str().expect("utf-8"),
        "--bundle",
        c2.bundle.path_str(),
        &c2.id,
    ])
    .wait(COMMAND_TIMEOUT)
    .ok();
    let written: i32 = fs::read_to_string(&pid_file2)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(written, c2.pid());
}

fn list_json(env: &TestEnv) -> Vec<Value> {
    let out = env.rt.run(&["list", "--format", "json"]);
    out.ok();
    match serde_json::from_str::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("list json ({e}):\n{out}"))
    {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => panic!("list --format json should print an array, got {other}"),
    }
}

#[test]
fn list_and_ps() {
    let env = TestEnv::new("listps");
    let created = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    created.create().ok();
    let running = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    running.create_and_start();

    let table = env.rt.run(&["list"]);
    table.ok();
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    for (c, status) in [(&created, "created"), (&running, "running")] {
        let row: Vec<&str> = table
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&c.id.as_str()))
            .unwrap_or_else(|| panic!("{} missing from list:\n{table}", c.id));
        assert_eq!(row[1], c.pid().to_string(), "{table}");
        assert_eq!(row[2], status, "{table}");
        assert_eq!(row[3], c.bundle.path_str(), "{table}");
    }

    let items = list_json(&env);
    assert_eq!(items.len(), 2, "{items:?}");
    for (c, status) in [(&created, "created"), (&running, "running")] {
        let item = items
            .iter()
            .find(|i| i["id"] == c.id.as_str())
            .expect("listed");
        assert_eq!(item["status"], status);
        assert_eq!(item["pid"], c.pid());
        assert_eq!(item["bundle"], c.bundle.path_str());
    }

    let quiet = env.rt.run(&["list", "--quiet"]);
    quiet.ok();
    let mut ids: Vec<&str> = quiet.stdout.lines().collect();
    ids.sort_unstable();
    let mut want = vec![created.id.as_str(), running.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    let ps = running.verb("ps", &["--format", "json"], &[]);
    ps.ok();
    let pids: Vec<i64> =
        serde_json::from_str(&ps.stdout).unwrap_or_else(|e| panic!("ps json ({e}):\n{ps}"));
    assert_eq!(
        pids,
        vec![i64::from(running.pid())],
        "ps --format json lists the container's processes"
    );

    let ps_table = running.verb("ps", &[], &[]);
    ps_table.ok();
    assert!(
        ps_table
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("PID"),
        "{ps_table}"
    );
    let pid = running.pid().to_string();
    assert!(
        ps_table
            .stdout
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().any(|w| w == pid)),
        "ps table should show pid {pid}:\n{ps_table}"
    );
}

#[test]
fn twenty_concurrent_creates() {
    let env = TestEnv::new("conc");
    let containers: Vec<Container> = (0..20)
        .map(|_| {
            env.container(|b| {
                b.args(&["sleep", "1000"]);
            })
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| s.spawn(move || c.create()))
            .collect();
        for h in handles {
            h.join().expect("create thread").ok();
        }
    });
    let items = list_json(&env);
    assert_eq!(items.len(), 20, "all 20 containers listed: {items:?}");
    for c in &containers {
        let item = items
            .iter()
            .find(|i| i["id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("{} not listed", c.id));
        assert_eq!(item["status"], "created");
        assert!(item["pid"].as_i64().is_some_and(|p| p > 1));
    }
    let pids: std::collections::BTreeSet<i64> =
        items.iter().filter_map(|i| i["pid"].as_i64()).collect();
    assert_eq!(pids.len(), 20, "every container has its own init");
    std::thread::scope(|s| {
        for c in &containers {
            s.spawn(move || c.delete(true).ok().code);
        }
    });
    for c in &containers {
        c.assert_no_leftovers();
    }
}

#[test]
fn duplicate_id_is_refused() {
    let env = TestEnv::new("dup");
    let first = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    first.create().ok();
    let pid = first.pid();

    let second = Bundle::new(&env.rt, &first.id);
    second.write();
    let out = env
        .rt
        .run(&["create", "--bundle", second.path_str(), &first.id]);
    out.failed();
    assert!(
        out.stderr.contains("already exists"),
        "duplicate id must say it already exists:\n{out}"
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line of error:\n{out}"
    );

    let state = first.state();
    assert_eq!(
        state["status"], "created",
        "the first container is untouched: {state}"
    );
    assert_eq!(state["bundle"], first.bundle.path_str());
    assert_eq!(first.pid(), pid);
    assert!(berth_tests::runtime::mounts_under(second.path()).is_empty());
}

#[test]
fn spec_writes_a_default_and_refuses_to_overwrite() {
    let env = TestEnv::new("spec");
    let dir = berth_tests::runtime::open_tempdir("berth-spec-");
    let bundle = dir.path().to_str().expect("utf-8");
    env.rt.run(&["spec", "--bundle", bundle]).ok();
    let config: Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("config.json")).expect("config.json"),
    )
    .expect("JSON");
    assert!(
        config["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{config}"
    );
    assert_eq!(config["root"]["path"], "rootfs");
    assert_eq!(config["process"]["args"], serde_json::json!(["sh"]));
    let kinds: Vec<&str> = config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for kind in ["pid", "ipc", "uts", "mount"] {
        assert!(
            kinds.contains(&kind),
            "default spec lacks {kind}: {kinds:?}"
        );
    }
    let before = fs::read(dir.path().join("config.json")).expect("read");
    env.rt.run(&["spec", "--bundle", bundle]).failed();
    assert_eq!(
        fs::read(dir.path().join("config.json")).expect("read"),
        before,
        "spec must not overwrite"
    );
}

#[test]
fn concurrent_starts_of_one_container_start_it_once() {
    let env = TestEnv::new("conc-start");
    let c = env.container(|b| {
        b.sh("echo started; exec sleep 1000");
    });
    c.create().ok();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| c.start())).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    let ok = outcomes.iter().filter(|o| o.success()).count();
    assert_eq!(ok, 1, "exactly one start wins: {outcomes:#?}");
    for o in outcomes.iter().filter(|o| !o.success()) {
        assert!(!o.stderr.trim().is_empty(), "a refused start says why: {o}");
    }
    c.wait_stdout("started");
    assert_eq!(c.state()["status"], "running");
    assert_eq!(count(&c.stdout(), "started"), 1, "the program ran once");
}

#[test]
fn concurrent_force_deletes_of_one_container() {
    let env = TestEnv::new("conc-del");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let pid = c.pid();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| c.delete(true))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("delete thread"))
            .collect()
    });
    assert!(outcomes.iter().any(|o| o.success()), "{outcomes:#?}");
    for o in &outcomes {
        assert!(matches!(o.code, Some(0 | 1)), "no crash or hang: {o}");
    }
    env.rt.run(&["state", &c.id]).failed();
    wait_for("the init to be gone", || (!proc_exists(pid)).then_some(()));
    c.assert_no_leftovers();
}

#[test]
fn status_follows_the_real_process() {
    let env = TestEnv::new("realproc");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let pid = c.pid();
    // Killed behind the runtime's back: state must notice, and delete must still clean up.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill init");
    c.wait_status("stopped");
    c.delete(false).ok();
    c.assert_no_leftovers();
}

/// The berth binary the tests run, checked to sit on a writable filesystem: the
/// CVE-2019-5736 tests below only mean something when it could be written.
fn writable_host_binary(env: &TestEnv) -> (PathBuf, String) {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let host_bin = env.rt.bin.clone();
    let host_flags = statvfs(&host_bin)
        .expect("statvfs of the berth binary")
        .flags();
    assert!(
        !host_flags.contains(FsFlags::ST_RDONLY),
        "the test needs berth on a writable filesystem to mean anything ({})",
        host_bin.display()
    );
    let meta = fs::metadata(&host_bin).expect("stat of the berth binary");
    let dev_ino = format!(
        "{}:{}",
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta)
    );
    (host_bin, dev_ino)
}

/// Whether the file behind `exe` (a /proc/<pid>/exe link) sits on a read-only mount or
/// is a memfd sealed against writes.
fn unwritable(exe: &str) -> bool {
    let read_only = nix::sys::statvfs::statvfs(exe)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let sealed = fs::File::open(exe).is_ok_and(|f| {
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GET_SEALS)
            .is_ok_and(|s| s & libc::F_SEAL_WRITE != 0)
    });
    read_only || sealed
}

/// CVE-2019-5736: a created container's init still runs berth; a process that enters
/// the container then (`exec` before `start`) must not be able to reach the host's
/// binary through /proc/1/exe: either it cannot open it at all, or what it finds is
/// another file (an unwritable copy). Fails if init is left reachable.
#[test]
fn created_init_exe_is_out_of_reach_from_inside() {
    let env = TestEnv::new("exe-ro");
    let (_, host_dev_ino) = writable_host_binary(&env);
    let c = env.container(|b| {
        b.args(&["true"]);
    });
    c.create().ok();
    let out = c.verb(
        "exec",
        &[],
        &[
            "sh",
            "-c",
            "stat -L -c %d:%i /proc/1/exe 2>/dev/null || echo unreachable; \
             cat /proc/1/exe >/dev/null 2>&1 && echo readable || echo unreadable",
        ],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_ne!(
        lines[0], host_dev_ino,
        "a process in the container reaches the host's berth binary: {out}"
    );
    if lines[0] != "unreachable" {
        // A copy it can see must be one it cannot write.
        let exe = format!("/proc/{}/exe", c.pid());
        assert!(unwritable(&exe), "init's exe is writable: {out}");
    } else {
        assert_eq!(lines[1], "unreadable", "{out}");
    }
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// When the trampoline cannot be used (a seccomp profile refusing execveat, a hook that
/// init runs, a pid namespace shared with another container), berth re-executes itself
/// from an unwritable image before it makes anything: the created init's exe is then
/// read-only or sealed, and the program still runs; `exec` falls back the same way.
#[test]
fn init_runs_from_a_protected_copy_when_the_trampoline_cannot_be_used() {
    use serde_json::json;
    let env = TestEnv::new("exe-fallback");
    writable_host_binary(&env);
    let sleeper = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    sleeper.create_and_start();
    let shared_pid_ns = format!("/proc/{}/ns/pid", sleeper.pid());
    type Edit<'a> = Box<dyn Fn(&mut Bundle) + 'a>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a seccomp profile refusing execveat",
            Box::new(|b| {
                b.set(
                    "/linux/seccomp",
                    json!({"defaultAction": "SCMP_ACT_ALLOW",
                           "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO"}]}),
                );
            }),
        ),
        (
            "a startContainer hook",
            Box::new(|b| {
                b.set("/hooks", json!({"startContainer": [{"path": "/bin/true"}]}));
            }),
        ),
        (
            "a shared pid namespace",
            Box::new(|b| {
                b.namespace("pid", Some(&shared_pid_ns));
            }),
        ),
    ];
    for (what, edit) in cases {
        let c = env.container(|b| {
            b.args(&["sh", "-c", "echo ran"]);
            edit(b);
        });
        c.create().ok();
        let exe = format!("/proc/{}/exe", c.pid());
        assert!(
            unwritable(&exe),
            "with {what}, the created init runs a writable binary: {:?}",
            fs::read_link(&exe)
        );
        c.start().ok();
        c.wait_stdout("ran");
        c.delete(true).ok();
        c.assert_no_leftovers();
    }
    // `exec` into a container whose profile refuses execveat takes the same way out.
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO"}]}),
        );
    });
    c.create_and_start();
    let out = c.verb("exec", &[], &["sh", "-c", "echo via-exec"]);
    out.ok();
    assert_eq!(out.stdout, "via-exec\n", "{out}");
    c.delete(true).ok();
    c.assert_no_leftovers();
    sleeper.delete(true).ok();
    sleeper.assert_no_leftovers();
}
