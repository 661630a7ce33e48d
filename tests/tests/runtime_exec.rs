//! `exec` into a running container, and terminals through `--console-socket`: a test
//! server receives the pty master over SCM_RIGHTS and talks to the container through it.

use std::fs;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use berth_tests::runtime::{wait_for, Container, TestEnv, COMMAND_TIMEOUT, WAIT_TIMEOUT};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;

fn sleeping(env: &TestEnv, hostname: &str) -> Container {
    let c = env.container(|b| {
        b.set("/hostname", json!(hostname));
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    c
}

#[test]
fn exec_joins_pid_namespace_hostname_and_cgroup() {
    let env = TestEnv::new("exec");
    let c = sleeping(&env, "exec-host");
    let out = c.verb(
        "exec",
        &[],
        &["sh", "-c", "echo $$; hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/self/ns/pid; cat /proc/self/cgroup"],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let pid_inside: i32 = lines[0].parse().expect("pid");
    assert!(pid_inside > 1, "exec'd process is not the init: {out}");
    assert_eq!(lines[1], "exec-host", "{out}");
    assert_eq!(
        lines[2].trim(),
        "sleep 1000",
        "PID 1 seen from the exec is the container's init: {out}"
    );
    let init_ns = fs::read_link(format!("/proc/{}/ns/pid", c.pid())).expect("init pid ns");
    assert_eq!(lines[3], init_ns.to_str().expect("utf-8"), "{out}");
    let want = format!("/berth-test/{}", c.id);
    let memory = lines[4..]
        .iter()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .unwrap_or_else(|| panic!("no memory cgroup line: {out}"));
    assert!(
        memory.ends_with(&want),
        "exec joins the container's cgroup {want}: {out}"
    );
}

#[test]
fn exec_exit_status_env_cwd_and_user() {
    let env = TestEnv::new("execopts");
    let c = sleeping(&env, "h");
    let out = c.verb("exec", &[], &["sh", "-c", "exit 5"]);
    assert_eq!(
        out.code,
        Some(5),
        "exec exits with the process's status:\n{out}"
    );

    let out = c.verb(
        "exec",
        &[
            "--env",
            "FOO=from-exec",
            "--cwd",
            "/etc",
            "--user",
            "1000:1000",
            "--additional-gids",
            "20",
        ],
        &["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G"],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..4], ["from-exec", "/etc", "1000", "1000"], "{out}");
    assert!(lines[4].split_whitespace().any(|g| g == "20"), "{out}");
}

#[test]
fn exec_with_process_json_and_detach() {
    let env = TestEnv::new("execproc");
    let c = sleeping(&env, "h");
    let process = env.path().join("process.json");
    fs::write(
        &process,
        json!({
            "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "env": ["PATH=/bin", "FROM=process-json"],
            "args": ["sh", "-c", "echo $FROM"]
        })
        .to_string(),
    )
    .expect("write process.json");
    let out = c.verb(
        "exec",
        &["--process", process.to_str().expect("utf-8")],
        &[],
    );
    out.ok();
    assert_eq!(out.stdout.trim(), "process-json", "{out}");

    let pid_file = env.path().join("exec.pid");
    c.verb(
        "exec",
        &["--detach", "--pid-file", pid_file.to_str().expect("utf-8")],
        &["sleep", "999"],
    )
    .ok();
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("detached exec is alive");
    assert!(
        cmdline.starts_with(b"sleep\x00999"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cgroup.contains(&format!("/berth-test/{}", c.id)),
        "{cgroup}"
    );
    // As with runc, the program runs once `exec --detach` returns, not still the exec
    // trampoline (a race the pid file's fsync used to hide). A large environment
    // makes the exec itself slow enough to lose that race every time.
    let big: Vec<String> = (0..12)
        .map(|k| format!("BIG{k}={}", "x".repeat(100_000)))
        .collect();
    for i in 0..5 {
        let pid_file = env.path().join(format!("exec-{i}.pid"));
        let mut flags = vec!["--detach", "--pid-file", pid_file.to_str().expect("utf-8")];
        for b in &big {
            flags.extend(["--env", b.as_str()]);
        }
        c.verb("exec", &flags, &["sleep", "998"]).ok();
        let pid = fs::read_to_string(&pid_file).expect("pid file");
        let cmdline = fs::read(format!("/proc/{}/cmdline", pid.trim())).expect("alive");
        assert_eq!(
            String::from_utf8_lossy(&cmdline),
            "sleep\x00998\x00",
            "exec {i}"
        );
    }
    let ps = c.verb("ps", &["--format", "json"], &[]);
    ps.ok();
    let pids: Vec<i64> = serde_json::from_str(&ps.stdout).expect("ps json");
    assert!(
        pids.contains(&i64::from(pid)) && pids.contains(&i64::from(c.pid())),
        "{ps}"
    );
}

/// Receives one file descriptor sent with SCM_RIGHTS on an accepted connection.
fn receive_fd(listener: &UnixListener) -> OwnedFd {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let (stream, _) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nobody connected to the console socket"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept on console socket: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(WAIT_TIMEOUT))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    for cmsg in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us;
                // nothing else owns it.
                return unsafe { OwnedFd::from_raw_fd(fd) };
            }
        }
    }
    panic!("no SCM_RIGHTS descriptor on the console socket");
}

/// Reads from the pty master until the accumulated text contains `want`.
fn read_until(master: &mut fs::File, want: &str) -> String {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut seen = String::new();
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "never read {want:?} from the pty; got {seen:?}"
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis().min(1000)).expect("bounded");
        if poll(&mut fds, PollTimeout::from(ms)).expect("poll pty") == 0 {
            continue;
        }
        let mut buf = [0u8; 1024];
        match master.read(&mut buf) {
            Ok(0) => panic!("pty closed before {want:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("read pty: {e}; got {seen:?}"),
        }
    }
    seen
}

#[test]
fn console_socket_receives_a_working_pty_master() {
    let env = TestEnv::new("console");
    let socket = env.path().join("console.sock");
    let listener = UnixListener::bind(&socket).expect("bind console socket");
    let c = env.container(|b| {
        b.set("/process/terminal", json!(true));
        b.sh("tty; echo ready; read line; echo \"got:$line\"");
    });
    let create = c.spawn(&[
        "create",
        "--console-socket",
        socket.to_str().expect("utf-8"),
        "--bundle",
        c.bundle.path_str(),
        &c.id,
    ]);
    let master = receive_fd(&listener);
    create.wait(COMMAND_TIMEOUT).ok();
    c.start().ok();
    let mut master = fs::File::from(master);
    let hello = read_until(&mut master, "ready");
    assert!(
        hello.contains("/dev/pts/"),
        "the container's stdin is a pty of its own devpts: {hello:?}"
    );
    master.write_all(b"ping\n").expect("write to pty");
    let reply = read_until(&mut master, "got:ping");
    assert!(reply.contains("got:ping"), "{reply:?}");
    c.wait_status("stopped");
}

#[test]
fn exec_with_tty_over_console_socket() {
    let env = TestEnv::new("exectty");
    let c = sleeping(&env, "h");
    let socket = env.path().join("exec.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let pid_file = env.path().join("exec.pid");
    let exec = c.spawn(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        socket.to_str().expect("utf-8"),
        "--pid-file",
        pid_file.to_str().expect("utf-8"),
        &c.id,
        "sh",
        "-c",
        "tty; read line; echo \"exec-got:$line\"; sleep 1000",
    ]);
    let master = receive_fd(&listener);
    exec.wait(COMMAND_TIMEOUT).ok();
    let mut master = fs::File::from(master);
    read_until(&mut master, "/dev/pts/");
    master.write_all(b"pong\n").expect("write");
    read_until(&mut master, "exec-got:pong");
    wait_for("the exec pid file", || {
        fs::read_to_string(&pid_file)
            .ok()
            .filter(|t| !t.trim().is_empty())
    });
}

#[test]
fn missing_console_socket_is_named() {
    let env = TestEnv::new("nosock");
    let socket = env.path().join("no-such.sock");
    let c = env.container(|b| {
        b.set("/process/terminal", json!(true));
    });
    let out = c
        .spawn(&[
            "create",
            "--console-socket",
            socket.to_str().expect("utf-8"),
            "--bundle",
            c.bundle.path_str(),
            &c.id,
        ])
        .wait(COMMAND_TIMEOUT);
    out.failed();
    assert!(
        out.stderr.contains("no-such.sock"),
        "the error names the socket:\n{out}"
    );
    assert!(c.rt.run(&["state", &c.id]).code != Some(0));
    c.assert_no_leftovers();
}

#[test]
fn exec_capabilities_and_no_new_privs() {
    let env = TestEnv::new("execcaps");
    let c = env.container(|b| {
        let caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
        b.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps}),
        );
        b.set("/process/noNewPrivileges", json!(false));
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let status = |extra: &[&str]| {
        let out = c.verb("exec", extra, &["cat", "/proc/self/status"]);
        out.ok();
        berth_tests::runtime::parse_status(&out.stdout)
    };
    let cap_eff = |s: &std::collections::BTreeMap<String, String>| {
        u64::from_str_radix(&s["CapEff"], 16).expect("hex CapEff")
    };
    // CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10, CAP_SYS_ADMIN = 21.
    let plain = status(&[]);
    assert_eq!(
        cap_eff(&plain),
        (1 << 5) | (1 << 10),
        "exec inherits the container's caps: {plain:?}"
    );
    assert_eq!(plain["NoNewPrivs"], "0", "{plain:?}");
    let with_cap = status(&["--cap", "CAP_SYS_ADMIN"]);
    assert_eq!(
        cap_eff(&with_cap),
        (1 << 5) | (1 << 10) | (1 << 21),
        "{with_cap:?}"
    );
    let nnp = status(&["--no-new-privs"]);
    assert_eq!(nnp["NoNewPrivs"], "1", "{nnp:?}");
}

#[test]
fn exec_keeps_the_container_seccomp_and_rlimits() {
    let env = TestEnv::new("execconf");
    let c = env.container(|b| {
        b.set("/root/readonly", json!(false));
        b.set(
            "/process/rlimits",
            json!([{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 888}]),
        );
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]}),
        );
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let out = c.verb(
        "exec",
        &[],
        &[
            "sh",
            "-c",
            "ulimit -n; grep -i '^seccomp:' /proc/self/status; (mkdir /tmp/x) 2>&1",
        ],
    );
    assert_eq!(
        out.code,
        Some(1),
        "exec exits with the failed mkdir's status:\n{out}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "777", "exec keeps the container's rlimits: {out}");
    assert!(
        lines[1].ends_with('2'),
        "exec runs in seccomp filter mode: {out}"
    );
    assert!(
        lines[2].contains("Invalid cross-device link"),
        "the container's filter applies: {out}"
    );
}

#[test]
fn foreground_run_with_a_terminal_uses_the_callers_pty() {
    let env = TestEnv::new("fgtty");
    let c = env.container(|b| {
        b.set("/process/terminal", json!(true));
        b.sh("tty; echo ready; read line; echo \"fg-got:$line\"");
    });
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd =
        c.rt.command(&["run", "--bundle", c.bundle.path_str(), &c.id]);
    let slave = fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let mut child = cmd.spawn().expect("spawn run");
    let mut master = fs::File::from(pty.master);
    let hello = read_until(&mut master, "ready");
    assert!(hello.contains("/dev/pts/"), "{hello:?}");
    master.write_all(b"over-the-pty\n").expect("write");
    read_until(&mut master, "fg-got:over-the-pty");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait run") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("run did not exit after the container did");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    c.assert_no_leftovers();
}

#[test]
fn exec_into_a_user_namespace_container() {
    let env = TestEnv::new("execuserns");
    let c = env.container(|b| {
        b.user_namespace(100000);
        b.set("/hostname", json!("userns-host"));
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let out = c.verb(
        "exec",
        &[],
        &[
            "sh",
            "-c",
            "id -u; hostname; cat /proc/self/uid_map; readlink /proc/self/ns/user",
        ],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "userns-host", "{out}");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{out}"
    );
    let init_ns = fs::read_link(format!("/proc/{}/ns/user", c.pid())).expect("init userns");
    assert_eq!(lines[3], init_ns.to_str().expect("utf-8"), "{out}");
}
