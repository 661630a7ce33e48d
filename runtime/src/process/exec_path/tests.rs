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

/// Runs the trampoline (from a sealed memfd, as init does) with argv `argv`.
#[cfg(target_arch = "x86_64")]
fn run_trampoline(image: &[u8], argv: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mem = crate::sys::trampoline::sealed_memfd(image).unwrap();
    let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", mem.as_raw_fd()));
    cmd.arg0(argv[0]).args(&argv[1..]).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_execs_the_program_with_its_argv_and_env() {
    let img = host_image().unwrap();
    let out = run_trampoline(
        &img,
        &[
            "/bin/sh",
            "my-sh",
            "-c",
            "head -c 5 /proc/$$/cmdline; echo \"|$0|$1|$FOO\"",
            "zero",
            "one",
        ],
        &[("FOO", "bar")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "my-sh|zero|one|bar\n");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_reports_exec_failures_like_init() {
    let img = host_image().unwrap();
    let out = run_trampoline(&img, &["/nonexistent/prog", "prog"], &[]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth init: exec /nonexistent/prog: No such file or directory (os error 2)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x01\x02not a program").unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run_trampoline(&img, &[junk.to_str().unwrap(), "junk"], &[]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "berth init: exec {}: Exec format error (os error 8)\n",
            junk.display()
        )
    );
    // An errno without a message in the table is printed as a number.
    let bare = elf_image(
        62,
        crate::sys::trampoline::code().unwrap(),
        &errno_table(&[]),
    );
    let out = run_trampoline(&bare, &["/nonexistent/prog"], &[]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth init: exec /nonexistent/prog: os error 2\n"
    );
}

/// CVE-2019-5736: a program path of /proc/self/exe, run through the trampoline, finds
/// the sealed trampoline again (which, left without a program, gives up), never the
/// binary that started it.
#[cfg(target_arch = "x86_64")]
#[test]
fn proc_self_exe_under_the_trampoline_is_the_sealed_trampoline() {
    let img = host_image().unwrap();
    let out = run_trampoline(&img, &["/proc/self/exe"], &[]);
    assert_eq!(out.status.code(), Some(127));
    // Linux 5.18 and later give an empty argv an empty argv[0]; older ones do not.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err == "berth init: exec: no program to run\n"
            || err == "berth init: exec : No such file or directory (os error 2)\n",
        "{err}"
    );
    // Through one more level it runs the program named next, from the same image.
    let out = run_trampoline(
        &img,
        &["/proc/self/exe", "/bin/sh", "sh", "-c", "echo through"],
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through\n", "{out:?}");
    let mem = crate::sys::trampoline::sealed_memfd(&img).unwrap();
    let seals = nix::fcntl::fcntl(&mem, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
    assert_ne!(seals & libc::F_SEAL_WRITE, 0);
    let mut f = std::fs::File::from(mem);
    assert!(std::io::Write::write_all(&mut f, b"x").is_err());
}

#[test]
fn exec_needs_only_the_trampoline_and_execveat() {
    assert_eq!(
        choose_for_exec(false, false, true, 9, |_: &str, _: [u64; 6]| false),
        ExecPath::Trampoline,
        "without a profile nothing is asked"
    );
    assert_eq!(
        choose_for_exec(true, true, true, 9, allow_all),
        ExecPath::Direct
    );
    assert!(matches!(
        choose_for_exec(true, false, false, 9, allow_all),
        ExecPath::ProtectBinary(r) if r.contains("architecture")
    ));
    // An exec'd process is born non-dumpable: only execveat comes after its filter.
    let asked = std::cell::RefCell::new(Vec::new());
    let only_execveat = |name: &str, _: [u64; 6]| {
        asked.borrow_mut().push(name.to_string());
        name == "execveat"
    };
    assert_eq!(
        choose_for_exec(true, false, true, 9, only_execveat),
        ExecPath::Trampoline
    );
    assert_eq!(asked.into_inner(), ["execveat"]);
    assert!(matches!(
        choose_for_exec(true, false, true, 9, |n: &str, _: [u64; 6]| n != "execveat"),
        ExecPath::ProtectBinary(r) if r.contains("execveat")
    ));
}
