//! Processes entering a container: what a container process can reach of them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use berth_tests::runtime::{Bundle, Container, Running, TestEnv};
use serde_json::{json, Value};

use super::{rel, up_to_root, writable_runtime_binary, HostMarker};

/// The default capabilities plus CAP_SYS_PTRACE, which lets a process look through
/// /proc/<pid>/{root,cwd,fd,exe} of any process in its pid namespace, dumpable or not
/// (no user namespace: the capability is the host's).
fn with_ptrace(b: &mut Bundle) {
    let caps = json!([
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_PTRACE"
    ]);
    b.set(
        "/process/capabilities",
        json!({"bounding": caps, "effective": caps, "permitted": caps}),
    );
}

/// Bind-mounts the runtime binary read-only at /runtime-ref, so that `[ X -ef
/// /runtime-ref ]` inside tells whether X is the host's runtime binary.
fn runtime_ref(b: &mut Bundle, bin: &Path) {
    b.push(
        "/mounts",
        json!({"destination": "/runtime-ref", "type": "bind", "source": bin,
               "options": ["bind", "ro"]}),
    );
}

/// Shell code that looks at process `$p` (`$d` = /proc/$p) the way an attacker would
/// and prints `escape <what> <pid>` for anything of the host it reaches: its root, its
/// cwd, any directory descriptor (climbing to the host's `/` and the marker), and its
/// executable when that is the host's runtime binary.
fn probe(marker: &HostMarker) -> String {
    let m = marker.path.display();
    let climb = format!("{}{}", up_to_root(), rel(&marker.path));
    format!(
        "[ -e \"$d/root{m}\" ] && echo \"escape root $p\"; \
         [ -e \"$d/cwd/{climb}\" ] && echo \"escape cwd $p\"; \
         [ \"$d/exe\" -ef /runtime-ref ] && echo \"escape exe $p\"; \
         for f in \"$d\"/fd/*; do [ -e \"$f/{climb}\" ] && echo \"escape fd $p $f\"; done; "
    )
}

/// A started container with CAP_SYS_PTRACE whose init runs [`probe`] on every other
/// process of its pid namespace, over and over; the marker must live as long as it.
fn started_watcher(env: &TestEnv) -> (Container, HostMarker) {
    let (bin, _) = writable_runtime_binary(env);
    let marker = HostMarker::new(env);
    let watch = format!(
        "echo ready; while :; do for d in /proc/[0-9]*; do p=${{d#/proc/}}; \
         [ \"$p\" = 1 ] && continue; {} done; done",
        probe(&marker)
    );
    let c = env.container(|b| {
        with_ptrace(b);
        runtime_ref(b, &bin);
        b.sh(&watch);
    });
    c.create_and_start();
    c.wait_stdout("ready");
    (c, marker)
}

/// CVE-2019-5736 class through `exec`, with CAP_SYS_PTRACE and no user namespace: the
/// container's init watches every new pid while `berth exec` runs 100 times. A process
/// entering the container must already have the container's root and cwd, hold no
/// host descriptor and not be the host's runtime binary from the moment it is
/// visible. Before the fix, the helper that `exec` forked joined the pid namespace
/// before the mount namespace, and the watcher saw its host root, cwd and cgroup
/// directory descriptor, and the runtime binary as its exe, in most of 100 runs.
#[test]
fn exec_helpers_show_nothing_of_the_host_to_a_ptrace_capable_container() {
    let env = TestEnv::new("sec-exec-ptrace");
    let (c, _marker) = started_watcher(&env);
    const EXECS: usize = 100;
    for _ in 0..EXECS {
        c.verb("exec", &[], &["true"]).ok();
    }
    let out = c.stdout();
    c.delete(true).ok();
    assert!(
        !out.contains("escape"),
        "a container process reached the host through an exec'd process:\n{out}"
    );
    c.assert_no_leftovers();
}

/// The same for a created container's init, which a process `exec`'d before `start`
/// can see: with CAP_SYS_PTRACE it must find neither the host's runtime binary as its
/// exe nor a host directory behind its descriptors. Before the fix, init waited for
/// `start` as the host's berth binary holding the host's cgroup2 directory open.
#[test]
fn created_init_shows_nothing_of_the_host_to_a_ptrace_capable_exec() {
    let env = TestEnv::new("sec-init-ptrace");
    let (bin, _) = writable_runtime_binary(&env);
    let marker = HostMarker::new(&env);
    let c = env.container(|b| {
        with_ptrace(b);
        runtime_ref(b, &bin);
        b.args(&["true"]);
    });
    c.create().ok();
    let script = format!("p=1; d=/proc/1; {} echo probed", probe(&marker));
    let out = c.verb("exec", &[], &["sh", "-c", &script]);
    out.ok();
    assert_eq!(out.stdout, "probed\n", "{out}");
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// The program path that reaches `host_prog` through descriptor `fd` when that is a
/// host directory.
fn through_fd(host_prog: &Path, fd: u32) -> String {
    format!("/proc/self/fd/{fd}/{}{}", up_to_root(), rel(host_prog))
}

/// A copy of the host's busybox outside every container, named `echo` (busybox picks
/// its applet from the name).
fn host_program(env: &TestEnv) -> std::path::PathBuf {
    let busybox = berth_tests::require_program("busybox", "busybox-static");
    let dir = env.path().join("host-only");
    fs::create_dir(&dir).expect("mkdir host-only");
    let host_prog = dir.join("echo");
    fs::copy(
        fs::canonicalize(busybox).expect("resolve busybox"),
        &host_prog,
    )
    .expect("copy busybox");
    host_prog
}

/// CVE-2024-21626 class on the re-exec path (a createContainer hook makes init run
/// from a protected copy of berth and exec the program itself): a program path through
/// /proc/self/fd/N of a host directory berth still holds must find nothing, because
/// every descriptor above stdio is closed, not only marked close-on-exec, before the
/// path is resolved. Tries N = 3..=15. Before the fix the host cgroup2 directory was
/// still open and the host's busybox ran.
#[test]
fn init_resolves_the_program_with_no_host_descriptor_open() {
    let env = TestEnv::new("sec-init-fds");
    let host_prog = host_program(&env);
    for fd in 3..=15 {
        let c = env.container(|b| {
            b.set(
                "/hooks",
                json!({"createContainer": [{"path": "/bin/true"}]}),
            );
            b.args(&[&through_fd(&host_prog, fd), "PWNED"]);
        });
        if c.create().success() {
            c.start().ok();
            c.wait_status("stopped");
        }
        let out = c.stdout();
        c.delete(true);
        assert!(!out.contains("PWNED"), "fd {fd} led to the host:\n{out}");
        c.assert_no_leftovers();
    }
}

/// The same for `exec` on its re-exec path (a seccomp profile that refuses execveat
/// keeps it off the trampoline). Before the fix the exec'd child still held the
/// container's cgroup2 directory, and the host's busybox ran.
#[test]
fn exec_resolves_the_program_with_no_host_descriptor_open() {
    let env = TestEnv::new("sec-exec-fds");
    let host_prog = host_program(&env);
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_ERRNO"}]}),
        );
    });
    c.create_and_start();
    for fd in 3..=15 {
        let out = c.verb("exec", &[], &[&through_fd(&host_prog, fd), "PWNED"]);
        assert!(
            !out.stdout.contains("PWNED"),
            "fd {fd} led to the host:\n{out}"
        );
    }
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// CVE-2019-5736, the entrypoint trick: the program /proc/self/exe reaches berth's
/// exec trampoline, never berth (which would print its version), for init and for an
/// `exec`'d process; the trampoline refuses to run itself (exit 127, saying so), with
/// the arguments left alone. Before the fix it took its own next argument as the
/// program and said "exec --version: No such file or directory".
#[test]
fn trampoline_refuses_to_run_itself() {
    let env = TestEnv::new("sec-tramp-self");
    let refusal = "refusing to run berth's exec trampoline";
    let c = env.container(|b| {
        b.args(&["/proc/self/exe", "--version"]);
    });
    let out = c.run();
    assert_eq!(out.code, Some(127), "{out}");
    let stderr = c.stderr();
    assert!(stderr.contains(refusal), "{out}\n{stderr}");
    assert!(!stderr.contains("--version"), "{stderr}");
    assert!(!c.stdout().contains("version"), "{}", c.stdout());
    c.assert_no_leftovers();
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let out = c.verb("exec", &[], &["/proc/self/exe", "--version"]);
    assert_eq!(out.code, Some(127), "{out}");
    assert!(out.stderr.contains(refusal), "{out}");
    assert!(!out.stdout.contains("version"), "{out}");
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// A script whose interpreter is /proc/self/exe, run by `exec`: the trampoline is its
/// interpreter and refuses, once. Before the fix it ran the script, which ran it, and
/// so on, at full CPU and forever (the bound here is only for that hang).
#[test]
fn script_interpreted_by_proc_self_exe_does_not_loop() {
    let env = TestEnv::new("sec-tramp-loop");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    let script = c.bundle.rootfs().join("loop.sh");
    fs::write(&script, "#!/proc/self/exe\necho never\n").expect("write the script");
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the script");
    c.create_and_start();
    let mut cmd = c.rt.command(&["exec", &c.id, "/loop.sh"]);
    let out = Running::spawn(&mut cmd, None, None)
        .try_wait_for(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("exec of the script never ended: {e}"));
    assert_eq!(out.code, Some(127), "{out}");
    assert!(
        out.stderr
            .contains("refusing to run berth's exec trampoline"),
        "{out}"
    );
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// The processes in the container's cgroup (host pids and command lines).
fn processes_of(c: &Container) -> Vec<(String, String)> {
    let cgroup = format!("/{}/{}", berth_tests::runtime::CGROUP_PARENT, c.id);
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let in_cgroup = fs::read_to_string(entry.path().join("cgroup"))
            .is_ok_and(|t| t.lines().any(|l| l.ends_with(&cgroup)));
        if in_cgroup {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((name, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// An `exec` that fails after its process started (here: the pid file cannot be
/// written) kills and reaps that process: nothing it started stays in the container.
/// Before the fix the process kept running.
#[test]
fn failed_exec_leaves_no_process_behind() {
    let env = TestEnv::new("sec-exec-guard");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let pid_file = env.path().join("no-such-dir").join("exec.pid");
    let out = c.verb(
        "exec",
        &["--pid-file", pid_file.to_str().expect("utf-8 path")],
        &["sleep", "1001"],
    );
    out.failed();
    let left: Vec<(String, String)> = processes_of(&c)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("1001"))
        .collect();
    assert!(left.is_empty(), "the failed exec left {left:?}\n{out}");
    let state: Value = c.state();
    assert_eq!(state["status"], "running", "{state}");
    c.delete(true).ok();
    c.assert_no_leftovers();
}

/// The same class through `create` with a pid namespace joined by path (a pod's, or
/// `--pid container:X`): a CAP_SYS_PTRACE container watches every new pid of its
/// namespace while 30 containers joining it are created and deleted. Their init must
/// never show up there with the host's root, cwd, a host directory descriptor or the
/// host's runtime binary; each created one must be in that namespace. Before the fix
/// (init cloned straight into the namespace, then built the rootfs there) the watcher
/// reached the host's root, cwd and cgroup directory through every one of the first 6.
#[test]
fn init_joining_a_pid_namespace_shows_nothing_of_the_host() {
    let env = TestEnv::new("sec-joinpid-ptrace");
    let (c, _marker) = started_watcher(&env);
    let ns = format!("/proc/{}/ns/pid", c.pid());
    let ns_id = fs::read_link(&ns).expect("the watcher's pid namespace");
    const CREATES: usize = 30;
    for _ in 0..CREATES {
        let d = env.container(|b| {
            b.namespace("pid", Some(&ns));
            b.args(&["true"]);
        });
        d.create().ok();
        let joined = fs::read_link(format!("/proc/{}/ns/pid", d.pid()));
        d.delete(true).ok();
        assert_eq!(
            joined.ok().as_ref(),
            Some(&ns_id),
            "the init is in the namespace"
        );
        d.assert_no_leftovers();
    }
    let out = c.stdout();
    c.delete(true).ok();
    assert!(
        !out.contains("escape"),
        "a container process reached the host through a joining container's init:\n{out}"
    );
    c.assert_no_leftovers();
}

/// A container joining another's pid namespace (init built it outside and forked the
/// container's init into it) runs in it and sees it: its /proc is that namespace's
/// (pid 1 is the owner's program), its oomScoreAdj is set; alone, and with the owner's
/// user namespace joined too (root inside, the owner's mapping).
#[test]
fn joining_a_pid_namespace_gives_its_procfs() {
    let env = TestEnv::new("joinpid");
    let probe = "readlink /proc/self/ns/pid; tr '\\0' ' ' < /proc/1/cmdline; echo; \
                 cat /proc/self/oom_score_adj; id -u; tr -s ' ' < /proc/self/uid_map";
    for userns in [false, true] {
        let owner = env.container(|b| {
            if userns {
                b.user_namespace(200000);
            }
            b.args(&["sleep", "1000"]);
        });
        owner.create_and_start();
        let ns = |kind: &str| format!("/proc/{}/ns/{kind}", owner.pid());
        let want = fs::read_link(ns("pid")).expect("the owner's pid namespace");
        let c = env.container(|b| {
            b.namespace("pid", Some(&ns("pid")));
            if userns {
                b.namespace("user", Some(&ns("user")));
            }
            b.set("/process/oomScoreAdj", json!(123));
            b.sh(probe);
        });
        let out = c.output();
        let map = if userns {
            " 0 200000 65536"
        } else {
            " 0 0 4294967295"
        };
        assert_eq!(
            out,
            format!("{}\nsleep 1000 \n123\n0\n{map}\n", want.display()),
            "user namespace joined: {userns}"
        );
        c.assert_no_leftovers();
        owner.delete(true).ok();
        owner.assert_no_leftovers();
    }
}
