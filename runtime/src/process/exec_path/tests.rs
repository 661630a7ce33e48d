use super::*;
use serde_json::json;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

fn plan_of(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, Plan) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let mut v = crate::spec::default::default_spec(false, 0, 0);
    v["process"]["terminal"] = json!(false);
    edit(&mut v);
    let spec = crate::spec::parse(v.to_string().as_bytes()).unwrap();
    let plan = crate::spec::plan(&spec, dir.path()).unwrap();
    (dir, plan)
}

fn allow_all(_: &str, _: [u64; 6]) -> bool {
    true
}

#[test]
fn trampoline_for_a_default_container() {
    let (_d, p) = plan_of(|_| {});
    assert_eq!(choose(&p, false, true, 9, allow_all), ExecPath::Trampoline);
    // Already unwritable: nothing to add.
    assert_eq!(choose(&p, true, true, 9, allow_all), ExecPath::Direct);
    assert!(matches!(
        choose(&p, false, false, 9, allow_all),
        ExecPath::ProtectBinary(r) if r.contains("architecture")
    ));
}

#[test]
fn shared_or_host_pid_namespace_protects_the_binary() {
    for pid_ns in [
        json!({"type": "pid", "path": "/proc/self/ns/pid"}),
        json!(null),
    ] {
        let (_d, p) = plan_of(|v| {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
            if !pid_ns.is_null() {
                ns.push(pid_ns.clone());
            }
        });
        assert!(matches!(
            choose(&p, false, true, 9, allow_all),
            ExecPath::ProtectBinary(r) if r.contains("pid namespace")
        ));
    }
}

#[test]
fn hooks_run_by_init_protect_the_binary() {
    for kind in ["createContainer", "startContainer"] {
        let (_d, p) = plan_of(|v| v["hooks"] = json!({kind: [{"path": "/bin/true"}]}));
        assert!(matches!(
            choose(&p, false, true, 9, allow_all),
            ExecPath::ProtectBinary(r) if r.contains("hooks")
        ));
    }
    // Hooks the runtime runs itself do not matter.
    let (_d, p) = plan_of(|v| {
        v["hooks"] =
            json!({"prestart": [{"path": "/bin/true"}], "poststop": [{"path": "/bin/true"}]})
    });
    assert_eq!(choose(&p, false, true, 9, allow_all), ExecPath::Trampoline);
}

#[test]
fn seccomp_is_asked_about_the_added_syscalls_only_with_a_profile() {
    let (_d, plain) = plan_of(|_| {});
    let deny_all = |_: &str, _: [u64; 6]| false;
    // No profile: nothing to ask.
    assert_eq!(
        choose(&plain, false, true, 9, deny_all),
        ExecPath::Trampoline
    );
    let (_d, p) = plan_of(|v| v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let asked = std::cell::RefCell::new(Vec::new());
    let no_execveat = |name: &str, args: [u64; 6]| {
        asked.borrow_mut().push((name.to_string(), args));
        name != "execveat"
    };
    assert!(matches!(
        choose(&p, false, true, 9, no_execveat),
        ExecPath::ProtectBinary(r) if r.contains("seccomp")
    ));
    let asked = asked.into_inner();
    assert_eq!(asked[0].0, "execveat");
    assert_eq!(asked[0].1[0], 9);
    assert_eq!(asked[0].1[4], libc::AT_EMPTY_PATH as u64);
    assert_eq!(choose(&p, false, true, 9, allow_all), ExecPath::Trampoline);
}

#[test]
fn elf_header_describes_one_loadable_segment() {
    let code = [0x90u8; 10];
    let table = errno_table(&[libc::ENOENT]);
    let img = elf_image(62, &code, &table);
    assert_eq!(&img[..4], b"\x7fELF");
    assert_eq!(img[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([img[16], img[17]]), 3, "ET_DYN");
    assert_eq!(u16::from_le_bytes([img[18], img[19]]), 62);
    let entry = u64::from_le_bytes(img[24..32].try_into().unwrap());
    assert_eq!(entry as usize, CODE_OFFSET);
    assert_eq!(&img[CODE_OFFSET..CODE_OFFSET + 10], &code);
    assert_eq!(&img[CODE_OFFSET + 10..], &table[..]);
    // The PT_LOAD covers the whole file, readable and executable, not writable.
    let ph = &img[64..120];
    assert_eq!(u32::from_le_bytes(ph[0..4].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(ph[4..8].try_into().unwrap()), 5);
    assert_eq!(
        u64::from_le_bytes(ph[32..40].try_into().unwrap()) as usize,
        img.len()
    );
}

#[test]
fn errno_table_holds_the_messages_init_prints() {
    let t = errno_table(&[libc::ENOENT, libc::ENOEXEC]);
    let text = "No such file or directory (os error 2)\n";
    assert_eq!(u32::from_ne_bytes(t[0..4].try_into().unwrap()), 2);
    assert_eq!(
        u32::from_ne_bytes(t[4..8].try_into().unwrap()) as usize,
        text.len()
    );
    assert_eq!(&t[8..8 + text.len()], text.as_bytes());
    let next = 8 + text.len();
    assert_eq!(u32::from_ne_bytes(t[next..next + 4].try_into().unwrap()), 8);
    assert_eq!(&t[t.len() - 4..], &[0, 0, 0, 0]);
}

/// Runs the trampoline (from a sealed memfd, as init does) with argv `argv` and, with
/// `fds`, descriptors dup'ed onto the given numbers.
#[cfg(target_arch = "x86_64")]
fn spawn_trampoline(
    image: &[u8],
    argv: &[&str],
    env: &[(&str, &str)],
    fds: &[(i32, i32)],
) -> std::process::Child {
    let mem = crate::sys::trampoline::sealed_memfd(image).unwrap();
    let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", mem.as_raw_fd()));
    cmd.arg0(argv[0]).args(&argv[1..]).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let fds = fds.to_vec();
    // SAFETY: dup2 is async-signal-safe; it runs in the forked child before exec.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in &fds {
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[cfg(target_arch = "x86_64")]
fn run_trampoline(image: &[u8], argv: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    spawn_trampoline(image, argv, env, &[])
        .wait_with_output()
        .unwrap()
}

/// The trampoline's argv for `mode` and the program `args` (args[0] is its path too).
fn tramp_argv(mode: TrampolineMode, args: &[&str]) -> Vec<String> {
    let rest: Vec<String> = args[1..].iter().map(|s| s.to_string()).collect();
    let mut v = trampoline_argv(mode, args[0], &[args[0].to_string()]);
    v.pop();
    v.extend(rest);
    v
}

#[test]
fn trampoline_argv_carries_magic_control_path_and_the_programs_argv() {
    let args = vec!["sh".to_string(), "-c".to_string()];
    assert_eq!(
        trampoline_argv(TrampolineMode::Exec, "/bin/sh", &args),
        ["berth-trampoline", "x", "/bin/sh", "sh", "-c"]
    );
    assert_eq!(
        control_arg(TrampolineMode::Wait {
            ready_fd: 3,
            wait_fd: 14
        }),
        "w3,14"
    );
    assert_eq!(
        control_arg(TrampolineMode::Spawn {
            report_fd: 5,
            tty: true
        }),
        "s5t"
    );
    assert_eq!(
        control_arg(TrampolineMode::Spawn {
            report_fd: 12,
            tty: false
        }),
        "s12"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_execs_the_program_with_its_argv_and_env() {
    let img = host_image().unwrap();
    let argv = tramp_argv(
        TrampolineMode::Exec,
        &[
            "/bin/sh",
            "my-sh",
            "-c",
            "head -c 5 /proc/$$/cmdline; echo \"|$0|$1|$FOO\"",
            "zero",
            "one",
        ],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run_trampoline(&img, &argv, &[("FOO", "bar")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "my-sh|zero|one|bar\n");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_reports_exec_failures_like_init() {
    let img = host_image().unwrap();
    let run = |img: &[u8], args: &[&str]| {
        let argv = tramp_argv(TrampolineMode::Exec, args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_trampoline(img, &argv, &[])
    };
    let out = run(&img, &["/nonexistent/prog", "prog"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth init: exec /nonexistent/prog: No such file or directory (os error 2)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x01\x02not a program").unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run(&img, &[junk.to_str().unwrap(), "junk"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "berth init: exec {}: Exec format error (os error 8)\n",
            junk.display()
        )
    );
    // An errno without a message in the table is printed as a number; the ready
    // message's length (odd here) must not throw off the table's alignment.
    let bare = elf_image(
        62,
        crate::sys::trampoline::code().unwrap(),
        &data_table(TRAMPOLINE_MAGIC, b"\"R\"", &[]),
    );
    let out = run(&bare, &["/nonexistent/prog"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth init: exec /nonexistent/prog: os error 2\n"
    );
}

/// CVE-2019-5736: a program path of /proc/self/exe, run through the trampoline, finds
/// the sealed trampoline again, which refuses to run (exit 127) instead of taking the
/// program's arguments for a program; it is never the binary that started it.
#[cfg(target_arch = "x86_64")]
#[test]
fn proc_self_exe_under_the_trampoline_refuses_to_run() {
    let img = host_image().unwrap();
    let refusal =
        "berth: refusing to run berth's exec trampoline as a program (/proc/self/exe, or a script it interprets)\n";
    for args in [
        &["/proc/self/exe", "--version"][..],
        &["/proc/self/exe", "/bin/sh", "sh", "-c", "echo through"][..],
    ] {
        let argv = tramp_argv(TrampolineMode::Exec, args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run_trampoline(&img, &argv, &[]);
        assert_eq!(out.status.code(), Some(127));
        assert_eq!(String::from_utf8_lossy(&out.stderr), refusal);
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // Started without the magic (a script interpreted by it, say): the same.
    let out = run_trampoline(&img, &["/tmp/script", "x", "/bin/true", "true"], &[]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(String::from_utf8_lossy(&out.stderr), refusal);
    let mem = crate::sys::trampoline::sealed_memfd(&img).unwrap();
    let seals = nix::fcntl::fcntl(&mem, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
    assert_ne!(seals & libc::F_SEAL_WRITE, 0);
    let mut f = std::fs::File::from(mem);
    assert!(std::io::Write::write_all(&mut f, b"x").is_err());
}

/// init's mode: the `Ready` message comes first, the program only after a byte arrives
/// on the wait descriptor, and neither descriptor reaches the program.
#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_reports_ready_then_waits_for_start() {
    use std::io::{Read, Write};
    let img = host_image().unwrap();
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (start_r, start_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mode = TrampolineMode::Wait {
        ready_fd: 20,
        wait_fd: 21,
    };
    let argv = tramp_argv(
        mode,
        &["/bin/sh", "sh", "-c", "echo started; ls /proc/self/fd"],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = spawn_trampoline(
        &img,
        &argv,
        &[],
        &[(ready_w.as_raw_fd(), 20), (start_r.as_raw_fd(), 21)],
    );
    drop((ready_w, start_r));
    let mut ready = std::fs::File::from(ready_r);
    let want = serde_json::to_vec(&crate::process::protocol::Message::Ready).unwrap();
    let mut got = vec![0u8; want.len()];
    ready.read_exact(&mut got).unwrap();
    assert_eq!(got, want, "the Ready message first");
    std::fs::File::from(start_w).write_all(b"0").unwrap();
    let mut rest = Vec::new();
    ready.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "nothing after Ready, then the descriptor closes"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("started\n"), "{text}");
    assert!(!text.lines().any(|l| l == "20" || l == "21"), "{text}");
}

/// exec's mode: the process is a child of the trampoline's parent (CLONE_PARENT), its
/// pid is reported, and the report descriptor does not reach it.
#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_spawns_a_sibling_and_reports_its_pid() {
    use std::io::Read;
    let img = host_image().unwrap();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mode = TrampolineMode::Spawn {
        report_fd: 20,
        tty: false,
    };
    let argv = tramp_argv(
        mode,
        &["/bin/sh", "sh", "-c", "echo pid=$$; ls /proc/self/fd"],
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = spawn_trampoline(&img, &argv, &[], &[(w.as_raw_fd(), 20)]);
    drop(w);
    let mut report = Vec::new();
    std::fs::File::from(r).read_to_end(&mut report).unwrap();
    let pid = crate::process::exec_helper::decode_pid(&report).expect("a pid report");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the trampoline exits 0: {out:?}");
    // The process is our child: we reap it.
    let status = crate::sys::wait(pid).unwrap();
    assert_eq!(crate::sys::exit_code(status), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("pid={pid}\n")), "{text}");
    assert!(!text.lines().any(|l| l == "20"), "{text}");
}

#[test]
fn exec_asks_seccomp_about_the_trampolines_syscalls() {
    assert_eq!(
        choose_for_exec(false, false, false, true, 9, |_: &str, _: [u64; 6]| false),
        ExecPath::Trampoline,
        "without a profile nothing is asked"
    );
    assert_eq!(
        choose_for_exec(true, false, true, true, 9, allow_all),
        ExecPath::Direct
    );
    assert!(matches!(
        choose_for_exec(true, false, false, false, 9, allow_all),
        ExecPath::ProtectBinary(r) if r.contains("architecture")
    ));
    let asked = std::cell::RefCell::new(Vec::new());
    let record = |name: &str, _: [u64; 6]| {
        asked.borrow_mut().push(name.to_string());
        true
    };
    assert_eq!(
        choose_for_exec(true, true, false, true, 9, record),
        ExecPath::Trampoline
    );
    assert_eq!(
        asked.into_inner(),
        [
            "execveat",
            "prctl",
            "close",
            "clone",
            "write",
            "exit_group",
            "setsid",
            "ioctl"
        ]
    );
    assert!(matches!(
        choose_for_exec(true, false, false, true, 9, |n: &str, _: [u64; 6]| n != "clone"),
        ExecPath::ProtectBinary(r) if r.contains("seccomp")
    ));
}
