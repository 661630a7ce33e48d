//! OCI hooks: each hook writes the state JSON it receives on stdin to a file the test
//! parses; a failing create-time hook fails `create` and leaves nothing behind.

use std::fs;
use std::path::Path;

use berth_tests::runtime::{Bundle, TestEnv};
use serde_json::{json, Value};

const ALL_HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook that saves its stdin to `<dir>/<name>.json`. `dir` is also bind-mounted at
/// the same path inside the container, so the hook finds it whether it runs in the host's
/// mount namespace or in the container's (before or after pivot_root), and /bin/sh and
/// cat exist in both.
fn saving_hook(dir: &Path, name: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {}/{name}.json", dir.display())],
        "env": ["PATH=/usr/bin:/bin"],
        "timeout": 30
    })
}

fn share_dir(b: &mut Bundle, dir: &Path) {
    let dir = dir.to_str().expect("utf-8");
    b.push(
        "/mounts",
        json!({"destination": dir, "type": "bind", "source": dir, "options": ["rbind", "rw"]}),
    );
}

#[test]
fn every_hook_receives_the_state_on_stdin() {
    let env = TestEnv::new("hooks");
    let dir = env.path().join("hook-out");
    fs::create_dir_all(&dir).expect("mkdir");
    let c = env.container(|b| {
        share_dir(b, &dir);
        for hook in ALL_HOOKS {
            b.push(&format!("/hooks/{hook}"), saving_hook(&dir, hook));
        }
        b.args(&["sleep", "1000"]);
    });
    c.create().ok();
    let pid = c.pid();
    c.start().ok();
    c.kill("KILL").ok();
    c.wait_status("stopped");
    c.delete(false).ok();

    let read = |hook: &str| -> Value {
        let path = dir.join(format!("{hook}.json"));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("hook {hook} did not run ({}: {e})", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("hook {hook} got non-JSON stdin ({e}): {text:?}"))
    };
    for hook in ALL_HOOKS {
        let state = read(hook);
        assert_eq!(state["id"], c.id.as_str(), "{hook}: {state}");
        assert_eq!(state["bundle"], c.bundle.path_str(), "{hook}: {state}");
        assert!(
            state["ociVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.")),
            "{hook}: {state}"
        );
        match hook {
            "poststop" => {}
            // These run in the container's namespaces, where runc reports the init as 1.
            "createContainer" | "startContainer" => {
                assert!(
                    state["pid"] == pid || state["pid"] == 1,
                    "{hook} sees the init's pid: {state}"
                );
            }
            _ => assert_eq!(
                state["pid"], pid,
                "{hook} sees the init's host pid: {state}"
            ),
        }
    }
    // The runtime-spec's lifecycle: prestart (the legacy hook in createRuntime's
    // place) sees the container created, as crun reports it; the program runs by the
    // time poststart does.
    for (hook, status) in [
        ("prestart", "created"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        assert_eq!(read(hook)["status"], status, "{hook}");
    }
    c.assert_no_leftovers();
}

#[test]
fn hook_args_and_env_are_passed() {
    let env = TestEnv::new("hookargs");
    let out = env.path().join("args.txt");
    let c = env.container(|b| {
        b.push(
            "/hooks/createRuntime",
            json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", "echo \"$0 $1 $HOOK_VAR\" > \"$2\"", "first", "second", out.to_str().expect("utf-8")],
                "env": ["HOOK_VAR=from-env", "PATH=/usr/bin:/bin"]
            }),
        );
    });
    c.create().ok();
    assert_eq!(
        fs::read_to_string(&out).expect("hook ran"),
        "first second from-env\n"
    );
}

#[test]
fn failing_create_runtime_hook_fails_create_and_cleans_up() {
    let env = TestEnv::new("hookfail");
    let c = env.container(|b| {
        b.push(
            "/hooks/createRuntime",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "echo hook-said-no >&2; exit 3"]}),
        );
        b.args(&["sleep", "1000"]);
    });
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.contains("createRuntime") || out.stderr.contains("hook"),
        "the error names the hook:\n{out}"
    );
    assert!(
        c.rt.run(&["state", &c.id]).code != Some(0),
        "no container after a failed hook"
    );
    c.assert_no_leftovers();
}

#[test]
fn non_executable_hook_is_refused_with_its_path() {
    let env = TestEnv::new("hooknoexec");
    let script = env.path().join("not-executable.sh");
    fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    let script = script.to_str().expect("utf-8").to_string();
    let c = env.container(|b| {
        b.push("/hooks/prestart", json!({"path": script}));
        b.args(&["sleep", "1000"]);
    });
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.contains(&script),
        "the error names {script}:\n{out}"
    );
    assert!(c.rt.run(&["state", &c.id]).code != Some(0));
    c.assert_no_leftovers();
}

#[test]
fn failing_poststop_hook_only_warns() {
    let env = TestEnv::new("poststopfail");
    let c = env.container(|b| {
        b.push(
            "/hooks/poststop",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}),
        );
        b.sh("echo ran");
    });
    c.create_and_start();
    c.wait_status("stopped");
    c.delete(false).ok();
    assert_eq!(c.stdout().trim(), "ran");
    assert!(c.rt.run(&["state", &c.id]).code != Some(0));
    c.assert_no_leftovers();
}

#[test]
fn hook_past_its_timeout_fails_create_and_cleans_up() {
    let env = TestEnv::new("hooktimeout");
    let c = env.container(|b| {
        b.push(
            "/hooks/createRuntime",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 600"], "timeout": 1}),
        );
        b.args(&["sleep", "1000"]);
    });
    let out = c.create();
    out.failed();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "the error says the hook timed out:\n{out}"
    );
    assert!(
        c.rt.run(&["state", &c.id]).code != Some(0),
        "no container after a failed hook"
    );
    c.assert_no_leftovers();
}

/// The runtime spec: a failing poststart hook is logged as a warning and the lifecycle
/// continues (runc 1.1 instead tears the container down, so this fails against it).
#[test]
fn failing_poststart_hook_only_warns() {
    let env = TestEnv::new("poststartfail");
    let c = env.container(|b| {
        b.push(
            "/hooks/poststart",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}),
        );
        b.args(&["sleep", "1000"]);
    });
    c.create().ok();
    let start = c.start();
    start.ok();
    assert_eq!(
        c.state()["status"],
        "running",
        "the container keeps running:\n{start}"
    );
    assert!(
        start.stderr.to_lowercase().contains("poststart"),
        "a warning names the hook:\n{start}"
    );
}

/// A poststart hook that appends the init's command line (from the pid in its state) to
/// `out`, one line per run.
fn cmdline_hook(out: &Path) -> Value {
    let script = format!(
        "pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); \
         tr '\\0' ' ' < /proc/$pid/cmdline >> {0}; echo >> {0}",
        out.display()
    );
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/usr/bin:/bin"]})
}

/// poststart hooks run once the program has been exec'd (runtime-spec): with a
/// startContainer hook that takes 0.3 s between `start` and the exec, the poststart
/// hook reads the init's command line from /proc, which must be the program's by then,
/// never berth's; 5 times through create and start, 3 through run. Before the fix
/// poststart ran as soon as `start` had signalled init, and saw berth every time.
#[test]
fn poststart_runs_after_the_program_is_executed() {
    let env = TestEnv::new("poststart-order");
    let slow_start = json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.3"]});
    let out = env.path().join("cmdlines");
    let c = env.container(|b| {
        b.push("/hooks/startContainer", slow_start.clone());
        b.push("/hooks/poststart", cmdline_hook(&out));
        b.args(&["sleep", "1000"]);
    });
    for _ in 0..5 {
        c.create_and_start();
        c.delete(true).ok();
    }
    let seen = fs::read_to_string(&out).expect("the hook ran");
    let lines: Vec<&str> = seen.lines().map(str::trim).collect();
    assert_eq!(lines, ["sleep 1000"; 5], "{seen}");
    c.assert_no_leftovers();

    let out = env.path().join("cmdlines-run");
    let c = env.container(|b| {
        b.push("/hooks/startContainer", slow_start.clone());
        b.push("/hooks/poststart", cmdline_hook(&out));
        b.args(&["sleep", "0.5"]);
    });
    for _ in 0..3 {
        c.run().ok();
    }
    let seen = fs::read_to_string(&out).expect("the hook ran");
    let lines: Vec<&str> = seen.lines().map(str::trim).collect();
    assert_eq!(lines, ["sleep 0.5"; 3], "{seen}");
    c.assert_no_leftovers();
}

/// `run --detach` runs poststart hooks too, after the program's exec, as runc does.
/// Before the fix it ran none.
#[test]
fn detached_run_runs_poststart_hooks() {
    let env = TestEnv::new("poststart-detach");
    let out = env.path().join("cmdlines");
    let c = env.container(|b| {
        b.push("/hooks/poststart", cmdline_hook(&out));
        b.args(&["sleep", "1000"]);
    });
    c.verb("run", &["-d", "--bundle", c.bundle.path_str()], &[])
        .ok();
    let seen = fs::read_to_string(&out).expect("the poststart hook ran");
    assert_eq!(seen.trim(), "sleep 1000", "{seen}");
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// `run` queues `Start` for init behind the messages of the create-time hooks: with
/// prestart and createRuntime hooks (run by berth while init waits) and a poststart one,
/// the program runs once, after both, and so does poststart. Each hook and the
/// program append their name to one file, in a directory the container shares.
#[test]
fn run_starts_the_program_after_the_create_time_hooks() {
    let env = TestEnv::new("run-hook-order");
    let dir = env.path().join("order");
    fs::create_dir_all(&dir).expect("mkdir");
    let log = dir.join("log");
    let append = |name: &str| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {name} >> {}", log.display())],
            "env": ["PATH=/usr/bin:/bin"],
        })
    };
    let c = env.container(|b| {
        share_dir(b, &dir);
        for hook in ["prestart", "createRuntime", "poststart"] {
            b.push(&format!("/hooks/{hook}"), append(hook));
        }
        b.args(&["sh", "-c", &format!("echo program >> {}", log.display())]);
    });
    for round in 1..=3 {
        c.run().ok();
        let seen = fs::read_to_string(&log).expect("the hooks and the program ran");
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines.len(), 4, "round {round}: {seen}");
        assert_eq!(
            lines[..2],
            ["prestart", "createRuntime"],
            "round {round}: {seen}"
        );
        let mut rest = lines[2..].to_vec();
        rest.sort_unstable();
        assert_eq!(rest, ["poststart", "program"], "round {round}: {seen}");
        fs::remove_file(&log).expect("rm log");
    }
    c.assert_no_leftovers();
}
