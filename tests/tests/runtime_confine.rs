//! Confinement seen from inside: capability sets and NoNewPrivs in /proc/self/status,
//! seccomp rules returning their configured errno (with argument comparisons), the
//! `features` document agreeing with what the runtime does, and bad confinement input.

use std::collections::BTreeMap;

use berth_tests::runtime::{parse_status, Container, TestEnv};
use serde_json::{json, Value};

fn caps(list: &[&str]) -> Value {
    json!({"bounding": list, "effective": list, "permitted": list, "inheritable": list, "ambient": list})
}

fn status_of(c: &Container) -> BTreeMap<String, String> {
    parse_status(&c.output())
}

#[test]
fn capability_sets_and_no_new_privs_as_root() {
    let env = TestEnv::new("caps");
    let c = env.container(|b| {
        b.set(
            "/process/capabilities",
            json!({
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": [],
                "ambient": []
            }),
        );
        b.set("/process/noNewPrivileges", json!(true));
        b.args(&["cat", "/proc/self/status"]);
    });
    let status = status_of(&c);
    // CAP_CHOWN = 0, CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10. `cat` is exec'd by the init
    // with these sets, so as root it keeps its permitted set as effective (execve rule).
    assert_eq!(status["CapBnd"], "0000000000000421", "{status:?}");
    assert_eq!(status["CapPrm"], "0000000000000421", "{status:?}");
    assert_eq!(status["CapInh"], "0000000000000000", "{status:?}");
    assert_eq!(status["CapAmb"], "0000000000000000", "{status:?}");
    assert_eq!(status["CapEff"], "0000000000000421", "{status:?}");
    assert_eq!(status["NoNewPrivs"], "1", "{status:?}");
}

#[test]
fn ambient_capabilities_survive_the_uid_change() {
    let env = TestEnv::new("ambient");
    let c = env.container(|b| {
        b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
        b.set("/process/capabilities", caps(&["CAP_KILL", "CAP_NET_RAW"]));
        b.set("/process/noNewPrivileges", json!(false));
        b.args(&["cat", "/proc/self/status"]);
    });
    let status = status_of(&c);
    // CAP_KILL = 5, CAP_NET_RAW = 13: 0x2020.
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status[key], "0000000000002020", "{key}: {status:?}");
    }
    assert_eq!(status["NoNewPrivs"], "0", "{status:?}");
    assert!(status["Uid"].starts_with("1000"), "{status:?}");
}

#[test]
fn no_capabilities_for_a_non_root_user() {
    let env = TestEnv::new("nocaps");
    let c = env.container(|b| {
        b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
        b.set("/process/capabilities", caps(&[]));
        b.sh("cat /proc/self/status; (chown 0 /dev/shm) 2>&1; echo end");
    });
    let out = c.output();
    let status = parse_status(&out);
    assert_eq!(status["CapEff"], "0000000000000000", "{out}");
    assert_eq!(status["CapBnd"], "0000000000000000", "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

fn seccomp_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
            {"names": ["this_syscall_does_not_exist"], "action": "SCMP_ACT_ERRNO"},
            // Refuse only signal 10 (SIGUSR1) to any kill(2).
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
            // Refuse setuid bits in chmod/fchmodat modes: (mode & 04000) == 04000.
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 2048, "valueTwo": 2048, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 2, "value": 2048, "valueTwo": 2048, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })
}

#[test]
fn seccomp_rules_return_the_configured_errno() {
    let env = TestEnv::new("seccomp");
    let c = env.container(|b| {
        b.set("/root/readonly", json!(false));
        b.set("/linux/seccomp", seccomp_profile());
        b.sh("trap 'echo got-USR2' USR2; \
             (mkdir /tmp/blocked) 2>&1; echo mkdir=$?; \
             touch /tmp/file && echo touch-ok; \
             chmod 755 /tmp/file && echo chmod-plain-ok; \
             (chmod 4755 /tmp/file) 2>&1; echo chmod-suid=$?; \
             (kill -USR1 $$) 2>&1; echo kill-usr1=$?; \
             kill -USR2 $$; echo kill-usr2=$?");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("Invalid cross-device link"),
        "mkdir gets errno 18 (EXDEV): {out}"
    );
    assert_eq!(lines[1], "mkdir=1", "{out}");
    assert_eq!(lines[2], "touch-ok", "other syscalls are allowed: {out}");
    assert_eq!(
        lines[3], "chmod-plain-ok",
        "a mode without setuid passes the masked compare: {out}"
    );
    assert!(
        lines[4].contains("Operation not permitted"),
        "setuid chmod is refused: {out}"
    );
    assert_eq!(lines[5], "chmod-suid=1", "{out}");
    assert!(
        lines[6].contains("Operation not permitted"),
        "kill with SIGUSR1 is refused: {out}"
    );
    assert_ne!(lines[7], "kill-usr1=0", "{out}");
    assert!(
        out.contains("got-USR2") && out.contains("kill-usr2=0"),
        "other signals pass: {out}"
    );
}

#[test]
fn features_parse_and_agree_with_behaviour() {
    let env = TestEnv::new("features");
    let out = env.rt.run(&["features"]);
    out.ok();
    let features: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("features JSON: {e}\n{out}"));
    let strings = |pointer: &str| -> Vec<String> {
        features
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("features lack {pointer}: {features}"))
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    assert!(
        features["ociVersionMin"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{features}"
    );
    assert!(
        features["ociVersionMax"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{features}"
    );
    let hooks = strings("/hooks");
    for hook in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(
            hooks.iter().any(|h| h == hook),
            "{hook} missing from {hooks:?}"
        );
    }
    let options = strings("/mountOptions");
    for opt in [
        "ro",
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "bind",
        "rbind",
        "rprivate",
        "rro",
        "rnosuid",
        "rnoatime",
        "rnosymfollow",
        "tmpcopyup",
        "idmap",
        "ridmap",
    ] {
        assert!(
            options.iter().any(|o| o == opt),
            "mount option {opt} missing: {options:?}"
        );
    }
    // Listed because they work: tests/tests/runtime_mounts.rs.
    assert_eq!(
        features.pointer("/linux/mountExtensions/idmap/enabled"),
        Some(&Value::Bool(true)),
        "{features}"
    );
    let caps = strings("/linux/capabilities");
    for cap in [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_ADMIN",
    ] {
        assert!(caps.iter().any(|c| c == cap), "{cap} missing: {caps:?}");
    }
    assert_eq!(
        features.pointer("/linux/seccomp/enabled"),
        Some(&json!(true)),
        "{features}"
    );
    let actions = strings("/linux/seccomp/actions");
    for action in ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing: {actions:?}"
        );
    }
    let operators = strings("/linux/seccomp/operators");
    for op in [
        "SCMP_CMP_EQ",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_GE",
    ] {
        assert!(
            operators.iter().any(|o| o == op),
            "{op} missing: {operators:?}"
        );
    }
    assert!(
        strings("/linux/seccomp/archs")
            .iter()
            .any(|a| a == "SCMP_ARCH_X86_64"),
        "{features}"
    );

    // Every namespace the document lists can be created.
    let namespaces = strings("/linux/namespaces");
    for kind in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
        assert!(
            namespaces.iter().any(|n| n == kind),
            "{kind} missing: {namespaces:?}"
        );
    }
    let host_links: BTreeMap<String, String> = namespaces
        .iter()
        .map(|kind| {
            let file = ns_file(kind);
            let link = std::fs::read_link(format!("/proc/self/ns/{file}")).expect("host ns link");
            (kind.clone(), link.to_string_lossy().into_owned())
        })
        .collect();
    for kind in &namespaces {
        let file = ns_file(kind);
        let c = env.container(|b| {
            if kind == "user" {
                b.user_namespace(200000);
            } else {
                b.namespace(kind, None);
            }
            b.args(&["readlink", &format!("/proc/self/ns/{file}")]);
        });
        let link = c.output();
        assert_ne!(
            link.trim(),
            host_links[kind],
            "a listed {kind} namespace was not created"
        );
        assert!(link.trim().starts_with(&format!("{file}:[")), "{link}");
    }
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "network" => "net",
        "mount" => "mnt",
        other => other,
    }
}

fn refused(name: &str, edit: impl FnOnce(&mut berth_tests::runtime::Bundle), needle: &str) {
    let env = TestEnv::new(name);
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
        edit(b);
    });
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.contains(needle),
        "the error names {needle:?}:\n{out}"
    );
    assert!(
        c.rt.run(&["state", &c.id]).code != Some(0),
        "nothing created"
    );
    c.assert_no_leftovers();
}

#[test]
fn unknown_capability_is_named() {
    refused(
        "badcap",
        |b| {
            b.set("/process/capabilities", caps(&["CAP_KILL", "CAP_BOGUS"]));
        },
        "CAP_BOGUS",
    );
}

#[test]
fn unknown_seccomp_action_is_named() {
    refused(
        "badaction",
        |b| {
            b.set(
                "/linux/seccomp",
                json!({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]}),
            );
        },
        "SCMP_ACT_BOGUS",
    );
}

#[test]
fn malformed_memory_limit_is_named() {
    refused(
        "badlimit",
        |b| {
            b.set("/linux/resources/memory", json!({"limit": "lots"}));
        },
        "limit",
    );
}

/// The repository's Docker-style default profile (defaultAction ERRNO, ~315 names).
fn docker_default_profile() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/src/seccomp/testdata/docker-default.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("profile is JSON")
}

#[test]
fn docker_default_profile_runs_busybox_and_blocks_unshare() {
    let env = TestEnv::new("dockerprof");
    let script =
        "echo alive; (sh -c 'exit 0') && echo fork-ok; (unshare -m true) 2>&1 && echo unshare-ok";
    let admin = ["CAP_SYS_ADMIN", "CAP_KILL"];
    // Control: with CAP_SYS_ADMIN and no profile, unshare works, so a refusal below is
    // the profile's doing and not a missing capability.
    let control = env.container(|b| {
        b.set("/process/capabilities", caps(&admin));
        b.sh(script);
    });
    assert_eq!(control.output(), "alive\nfork-ok\nunshare-ok\n");
    let c = env.container(|b| {
        b.set("/process/capabilities", caps(&admin));
        b.set("/linux/seccomp", docker_default_profile());
        b.sh(script);
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["alive", "fork-ok"], "{out}");
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.contains("Operation not permitted")),
        "unshare is not in the profile: defaultErrnoRet 1 (EPERM): {out}"
    );
    assert!(!out.contains("unshare-ok"), "{out}");
}

#[test]
fn seccomp_notify_without_listener_is_refused() {
    let env = TestEnv::new("notify");
    let c = env.container(|b| {
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
        );
        b.args(&["sleep", "1000"]);
    });
    let out = c.create();
    out.failed();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("notify") || err.contains("listenerpath"),
        "the error names the notify action or its missing listenerPath:\n{out}"
    );
    assert!(
        c.rt.run(&["state", &c.id]).code != Some(0),
        "nothing created"
    );
    c.assert_no_leftovers();
}

#[test]
fn apparmor_profile_on_a_host_without_apparmor_is_refused() {
    let env = TestEnv::new("apparmor");
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y");
    assert!(
        !enabled,
        "this test expects a host without AppArmor (this one has it enabled)"
    );
    let c = env.container(|b| {
        b.set("/process/apparmorProfile", json!("berth-test-profile"));
        b.args(&["sleep", "1000"]);
    });
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.to_lowercase().contains("apparmor"),
        "the error names AppArmor:\n{out}"
    );
    assert!(
        c.rt.run(&["state", &c.id]).code != Some(0),
        "nothing created"
    );
    c.assert_no_leftovers();
}

#[test]
fn negative_memory_limit_is_refused() {
    refused(
        "neglimit",
        |b| {
            b.set("/linux/resources/memory", json!({"limit": -5}));
        },
        "-5",
    );
}

/// Capability names by number (linux/capability.h), 0 to 40.
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn features_strings(env: &TestEnv, pointer: &str) -> Vec<String> {
    let out = env.rt.run(&["features"]);
    out.ok();
    let features: Value = serde_json::from_str(&out.stdout).expect("features JSON");
    features
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("features lack {pointer}"))
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[test]
fn features_capabilities_and_seccomp_tables_are_honoured() {
    let env = TestEnv::new("featcaps");
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    // Only what the kernel knows and this process itself holds can be granted.
    let own = parse_status(&std::fs::read_to_string("/proc/self/status").expect("own status"));
    let own_bnd = u64::from_str_radix(&own["CapBnd"], 16).expect("hex");
    let listed = features_strings(&env, "/linux/capabilities");
    let usable: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|c| {
            CAP_NAMES
                .iter()
                .position(|n| n == c)
                .is_some_and(|i| i <= last && own_bnd & (1u64 << i) != 0)
        })
        .collect();
    assert!(
        usable.len() >= 30,
        "features should list the usual capabilities: {listed:?}"
    );
    let want: u64 = usable
        .iter()
        .map(|c| 1u64 << CAP_NAMES.iter().position(|n| n == c).expect("known"))
        .sum();
    let c = env.container(|b| {
        b.set("/process/capabilities", caps(&usable));
        b.args(&["cat", "/proc/self/status"]);
    });
    let status = status_of(&c);
    let bnd = u64::from_str_radix(&status["CapBnd"], 16).expect("hex");
    assert_eq!(
        bnd, want,
        "every listed capability can be granted: {status:?}"
    );

    // Every listed action and operator is accepted in a profile (rules on mkdir, which
    // `true` never calls; SCMP_ACT_NOTIFY needs a listener and is left out).
    let actions = features_strings(&env, "/linux/seccomp/actions");
    let operators = features_strings(&env, "/linux/seccomp/operators");
    let mut rules: Vec<Value> = operators
        .iter()
        .map(|op| {
            json!({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                   "args": [{"index": 1, "value": 1, "valueTwo": 1, "op": op}]})
        })
        .collect();
    for action in actions
        .iter()
        .filter(|a| *a != "SCMP_ACT_NOTIFY" && *a != "SCMP_ACT_ALLOW")
    {
        rules.push(json!({"names": ["rmdir"], "action": action, "errnoRet": 1}));
        let c = env.container(|b| {
            b.set(
                "/linux/seccomp",
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rules.last()]}),
            );
            b.args(&["true"]);
        });
        c.create().ok();
        c.start().ok();
        c.wait_status("stopped");
        rules.pop();
    }
    let c = env.container(|b| {
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}),
        );
        b.args(&["true"]);
    });
    c.output();
}

/// With noNewPrivileges off, the seccomp filter is loaded while the user changes (it
/// needs CAP_SYS_ADMIN then); the working-directory check (getcwd, CVE-2024-21626)
/// comes before it, so a profile that refuses getcwd does not break the start. Before
/// the fix every start failed.
#[test]
fn working_directory_is_checked_before_the_seccomp_filter() {
    let env = TestEnv::new("cwdseccomp");
    let c = env.container(|b| {
        b.set("/process/noNewPrivileges", json!(false));
        b.set("/process/cwd", json!("/tmp"));
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}),
        );
        b.sh("echo started in $(readlink /proc/self/cwd)");
    });
    let out = c.output();
    assert_eq!(out, "started in /tmp\n", "{out}");
    c.assert_no_leftovers();
}

/// A static i386 program (a few instructions, written here) that prints "ok" with
/// write(2) and exits 0 through `int 0x80`: the 32-bit ABI an x86_64 kernel also runs.
fn i386_hello() -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    const CODE: u32 = 52 + 32;
    let mut code: Vec<u8> = Vec::new();
    let imm = |c: &mut Vec<u8>, op: u8, v: u32| {
        c.push(op);
        c.extend_from_slice(&v.to_le_bytes());
    };
    imm(&mut code, 0xb8, 4); // mov eax, 4 (write)
    imm(&mut code, 0xbb, 1); // mov ebx, 1
    let msg_at = code.len();
    imm(&mut code, 0xb9, 0); // mov ecx, msg (patched below)
    imm(&mut code, 0xba, 3); // mov edx, 3
    code.extend_from_slice(&[0xcd, 0x80]); // int 0x80
    imm(&mut code, 0xb8, 1); // mov eax, 1 (exit)
    code.extend_from_slice(&[0x31, 0xdb, 0xcd, 0x80]); // xor ebx, ebx; int 0x80
    let msg = BASE + CODE + code.len() as u32;
    code.extend_from_slice(b"ok\n");
    code[msg_at + 1..msg_at + 5].copy_from_slice(&msg.to_le_bytes());
    let total = CODE + code.len() as u32;
    let mut elf: Vec<u8> = b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    for h in [2u16, 3] {
        elf.extend_from_slice(&h.to_le_bytes()); // ET_EXEC, EM_386
    }
    for w in [1u32, BASE + CODE, 52, 0, 0] {
        elf.extend_from_slice(&w.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for h in [52u16, 32, 1, 40, 0, 0] {
        elf.extend_from_slice(&h.to_le_bytes());
    }
    for w in [1u32, 0, BASE, BASE, total, total, 5, 0x1000] {
        elf.extend_from_slice(&w.to_le_bytes()); // PT_LOAD, R+X
    }
    elf.extend_from_slice(&code);
    elf
}

/// Docker's and podman's default profiles list the x86 and x32 ABIs next to x86_64:
/// a 32-bit program in the container gets the profile's rules (here: write and exit
/// allowed) instead of being killed. Before the fix it died of SIGSYS (only x86_64
/// was translated). The x32 ABI is checked by the filter's unit tests (this kernel
/// may not run x32 programs).
#[test]
fn docker_default_profile_lets_a_32_bit_program_run() {
    let env = TestEnv::new("seccomp-i386");
    let c = env.container(|b| {
        b.set("/linux/seccomp", docker_default_profile());
        b.args(&["/hello32"]);
    });
    let prog = c.bundle.rootfs().join("hello32");
    std::fs::write(&prog, i386_hello()).expect("write the i386 program");
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = c.run();
    assert_eq!(out.code, Some(0), "{out}\n{}", c.stderr());
    assert_eq!(c.stdout(), "ok\n");
    c.assert_no_leftovers();
}
