//! What the container's process sees: PID 1, hostname, network, user and groups, user
//! namespace mappings, rlimits, env, cwd, umask, oom_score_adj, sysctl, a joined netns,
//! and the closed escapes (no host fd inside, the runtime binary not writable through
//! /proc/<pid>/exe).

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use berth_tests::runtime::{parse_status, run_command, Running, TestEnv, COMMAND_TIMEOUT};
use serde_json::json;

#[test]
fn process_is_pid_1_with_hostname_and_only_loopback() {
    let env = TestEnv::new("pid1");
    let c = env.container(|b| {
        b.set("/hostname", json!("berth-box"));
        b.sh("echo pid=$$; cut -d' ' -f1 /proc/self/stat; hostname; cat /proc/sys/kernel/hostname; cat /proc/net/dev; ip -o link");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_ne!(lines[1], "1", "a child of PID 1 is not PID 1: {out}");
    assert_eq!(lines[2], "berth-box", "{out}");
    assert_eq!(lines[3], "berth-box", "{out}");
    let ifaces: Vec<&str> = lines[4..]
        .iter()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| {
            !name.contains('|') && !name.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(ifaces, ["lo"], "/proc/net/dev should list only lo:\n{out}");
    let links: Vec<&str> = lines[4..]
        .iter()
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .copied()
        .collect();
    assert_eq!(links.len(), 1, "ip link should show only lo:\n{out}");
    assert!(links[0].contains(": lo:"), "{out}");
}

#[test]
fn exec_of_the_args_is_pid_1_itself() {
    let env = TestEnv::new("pid1exec");
    let c = env.container(|b| {
        b.args(&["cat", "/proc/self/stat"]);
    });
    let out = c.output();
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[0], "1", "{out}");
    assert_eq!(fields[1], "(cat)", "{out}");
}

#[test]
fn user_group_and_additional_gids() {
    let env = TestEnv::new("uidgid");
    let c = env.container(|b| {
        b.set(
            "/process/user",
            json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}),
        );
        b.args(&["cat", "/proc/self/status"]);
    });
    let status = parse_status(&c.output());
    let fields = |k: &str| {
        status
            .get(k)
            .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
    };
    assert_eq!(
        fields("Uid"),
        Some(vec!["1000".to_string(); 4]),
        "{status:?}"
    );
    assert_eq!(
        fields("Gid"),
        Some(vec!["1000".to_string(); 4]),
        "{status:?}"
    );
    let mut groups = fields("Groups").unwrap_or_default();
    groups.sort();
    assert_eq!(groups, ["10", "20"], "{status:?}");
}

#[test]
fn user_namespace_with_mappings() {
    let env = TestEnv::new("userns");
    let c = env.container(|b| {
        b.user_namespace(100000);
        b.sh(
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; echo ready; exec sleep 1000",
        );
    });
    c.create_and_start();
    let out = c.wait_stdout("ready");
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "0 100000 65536", "{out}");
    assert_eq!(lines[1], "0 100000 65536", "{out}");
    assert_eq!(lines[2], "0", "{out}");
    assert_eq!(lines[3], "0", "{out}");
    let status = parse_status(
        &fs::read_to_string(format!("/proc/{}/status", c.pid())).expect("init status"),
    );
    assert!(
        status["Uid"].starts_with("100000"),
        "seen from the host, the init runs as 100000: {status:?}"
    );
    let host_ns = fs::read_link("/proc/self/ns/user").expect("own userns");
    let ctr_ns = fs::read_link(format!("/proc/{}/ns/user", c.pid())).expect("init userns");
    assert_ne!(host_ns, ctr_ns);
}

#[test]
fn rlimits_are_applied() {
    let env = TestEnv::new("rlimits");
    let c = env.container(|b| {
        b.set(
            "/process/rlimits",
            json!([
                {"type": "RLIMIT_NOFILE", "soft": 1234, "hard": 2345},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096}
            ]),
        );
        b.sh("ulimit -n; cat /proc/self/limits");
    });
    let out = c.output();
    assert_eq!(out.lines().next(), Some("1234"), "{out}");
    let limit = |name: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
        line[name.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(limit("Max open files")[..2], ["1234", "2345"], "{out}");
    assert_eq!(limit("Max core file size")[..2], ["0", "4096"], "{out}");
}

#[test]
fn env_cwd_path_lookup_umask_and_oom_score_adj() {
    let env = TestEnv::new("envcwd");
    let c = env.container(|b| {
        b.set(
            "/process/env",
            json!(["PATH=/bin", "FOO=bar baz", "EMPTY="]),
        );
        b.set("/process/cwd", json!("/etc"));
        b.set("/process/user/umask", json!(0o027));
        b.set("/process/oomScoreAdj", json!(123));
        b.sh("echo \"foo=$FOO\"; env; pwd; umask; cat /proc/self/oom_score_adj");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "foo=bar baz", "{out}");
    assert!(lines.contains(&"FOO=bar baz"), "{out}");
    assert!(lines.contains(&"EMPTY="), "{out}");
    assert!(lines.contains(&"PATH=/bin"), "{out}");
    let tail = &lines[lines.len() - 3..];
    assert_eq!(tail, ["/etc", "0027", "123"], "{out}");
}

#[test]
fn sysctl_applies_in_the_new_netns_only() {
    let env = TestEnv::new("sysctl");
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl");
    let want = if host_before.trim() == "1" { "0" } else { "1" };
    let c = env.container(|b| {
        b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": want}));
        b.args(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    });
    assert_eq!(c.output().trim(), want);
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl"),
        host_before
    );
}

/// A named network namespace (`ip netns add`) with a veth pair inside, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> NetNs {
        berth_tests::require_program("ip", "iproute2");
        run_command(Command::new("ip").args(["netns", "add", name])).ok();
        let ns = NetNs(name.to_string());
        run_command(Command::new("ip").args([
            "-n",
            name,
            "link",
            "add",
            "berthveth0",
            "type",
            "veth",
            "peer",
            "name",
            "berthveth1",
        ]))
        .ok();
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run_command(Command::new("ip").args(["netns", "delete", &self.0]));
    }
}

/// The network and ipc namespaces are unshared by init after the clone (they cost
/// a third of a millisecond to make): they must still be new, the container's own,
/// and the ones its sysfs was mounted in.
#[test]
fn new_network_and_ipc_namespaces_are_the_containers_own() {
    let env = TestEnv::new("netipcns");
    let c = env.container(|b| {
        b.sh("for f in net ipc; do readlink /proc/self/ns/$f; done; ls /sys/class/net");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    let host = |ns: &str| {
        fs::read_link(format!("/proc/self/ns/{ns}"))
            .expect("host namespace link")
            .to_string_lossy()
            .into_owned()
    };
    assert!(
        lines[0].starts_with("net:[") && lines[0] != host("net"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("ipc:[") && lines[1] != host("ipc"),
        "{out}"
    );
    assert_eq!(
        lines[2..],
        ["lo"],
        "sysfs shows the container's netns: {out}"
    );
    c.assert_no_leftovers();
}

#[test]
fn joins_a_network_namespace_by_path() {
    let env = TestEnv::new("netnspath");
    let name = format!("berth-test-{}", std::process::id());
    let ns = NetNs::new(&name);
    let path = format!("/var/run/netns/{}", ns.0);
    let c = env.container(|b| {
        b.namespace("network", Some(&path));
        b.args(&["cat", "/proc/net/dev"]);
    });
    let out = c.output();
    assert!(
        out.contains("berthveth0:") && out.contains("berthveth1:"),
        "the joined netns has its veth pair:\n{out}"
    );
    c.assert_no_leftovers();
}

#[test]
fn no_host_file_descriptor_reaches_the_container() {
    let env = TestEnv::new("fdleak");
    let c = env.container(|b| {
        b.sh("ls /proc/self/fd; echo cwd=$(readlink /proc/1/cwd)");
    });
    // The runtime inherits an extra open, non-close-on-exec descriptor (fd 7), the way
    // a careless caller would hand one over; the container must not see it.
    let secret = env.path().join("host-secret");
    fs::write(&secret, "secret").expect("write secret");
    let file = fs::File::open(&secret).expect("open secret");
    let mut cmd =
        c.rt.command(&["run", "--bundle", c.bundle.path_str(), &c.id]);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the forked child before
    // exec and touch only that child's descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear the flag instead.
            let rc = if raw == 7 {
                libc::fcntl(7, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 7)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = Running::spawn(&mut cmd, Some(&c.stdout_path()), Some(&c.stderr_path()))
        .wait(COMMAND_TIMEOUT);
    out.ok();
    let stdout = c.stdout();
    let fds: Vec<&str> = stdout
        .lines()
        .take_while(|l| !l.starts_with("cwd="))
        .collect();
    // 0-2 are stdio and 3 is the directory `ls` itself opened.
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio may reach the container:\n{stdout}"
    );
    assert!(
        stdout.contains("cwd=/\n"),
        "the init's cwd is the container's /:\n{stdout}"
    );
}

/// berth started with stdin, stdout and stderr closed (as a careless supervisor may):
/// the files it opens must not take descriptors 0-2, which the container inherits; the
/// container's stdio is /dev/null instead. Fails if berth skips its own stdio check.
#[test]
fn closed_stdio_is_dev_null_in_the_container() {
    let env = TestEnv::new("stdio-closed");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    let mut cmd =
        c.rt.command(&["create", "--bundle", c.bundle.path_str(), &c.id]);
    // SAFETY: close(2) only, in the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..3 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let status = cmd
        .status()
        .expect("spawning berth create with closed stdio");
    assert!(status.success(), "create with closed stdio: {status}");
    let pid = c.pid();
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .unwrap_or_else(|e| panic!("init's fd {fd}: {e}"));
        assert_eq!(
            target,
            std::path::Path::new("/dev/null"),
            "init's descriptor {fd} is a file berth opened"
        );
    }
    c.delete(true).ok();
    c.assert_no_leftovers();
}
