//! The container's filesystem as it sees it: masked and read-only paths, a read-only
//! root, bind and tmpfs mounts with their options, device nodes, /dev symlinks, mount
//! destinations that try to escape through symlinks, and --no-pivot.

use std::fs;
use std::os::unix::fs::symlink;

use berth_tests::runtime::{parse_mountinfo, HostMounts, MountEntry, TestEnv, COMMAND_TIMEOUT};
use serde_json::json;

/// The mount that is visible at `mount_point` (the last one stacked there).
fn visible<'a>(mounts: &'a [MountEntry], mount_point: &str) -> &'a MountEntry {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == mount_point)
        .unwrap_or_else(|| panic!("nothing mounted at {mount_point}: {mounts:#?}"))
}

fn split_sections(out: &str) -> Vec<String> {
    out.split("---\n").map(String::from).collect()
}

#[test]
fn masked_and_readonly_paths_and_readonly_root() {
    let env = TestEnv::new("masked");
    let c = env.container(|b| {
        b.set("/root/readonly", json!(true));
        b.set("/linux/maskedPaths", json!(["/proc/timer_list", "/proc/keys", "/proc/acpi", "/sys/firmware", "/proc/does-not-exist"]));
        b.set("/linux/readonlyPaths", json!(["/proc/sys", "/proc/fs"]));
        b.sh(
            "cat /proc/self/mountinfo; echo ---; wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; \
             touch /probe 2>&1; (echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1; echo done",
        );
    });
    let out = c.output();
    let sections = split_sections(&out);
    assert_eq!(sections.len(), 2, "{out}");
    let mounts = parse_mountinfo(&sections[0]);

    let root = visible(&mounts, "/");
    assert!(
        root.options.contains(&"ro".to_string()),
        "root.readonly: / must be ro: {root:?}"
    );
    for path in ["/proc/timer_list", "/proc/keys"] {
        let m = visible(&mounts, path);
        assert!(
            m.root == "/null" || m.root.ends_with("/null"),
            "masked file is /dev/null bound over it: {m:?}"
        );
    }
    let acpi = visible(&mounts, "/proc/acpi");
    assert!(
        acpi.options.contains(&"ro".to_string()),
        "masked dir is an empty ro mount: {acpi:?}"
    );
    let firmware = visible(&mounts, "/sys/firmware");
    assert!(
        firmware.options.contains(&"ro".to_string()),
        "masked dir is an empty ro mount: {firmware:?}"
    );
    // One empty tmpfs for every masked directory, bound where needed.
    assert!(
        acpi.fs_type == "tmpfs" && firmware.fs_type == "tmpfs" && acpi.dev == firmware.dev,
        "masked dirs share one tmpfs: {acpi:?} {firmware:?}"
    );
    for path in ["/proc/sys", "/proc/fs"] {
        let m = visible(&mounts, path);
        assert!(
            m.options.contains(&"ro".to_string()),
            "{path} must be read-only: {m:?}"
        );
    }
    assert!(
        mounts
            .iter()
            .all(|m| m.mount_point != "/proc/does-not-exist"),
        "{mounts:#?}"
    );

    let lines: Vec<&str> = sections[1].lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "masked /proc/timer_list reads empty: {out}"
    );
    assert_eq!(lines[1].trim(), "0", "masked /sys/firmware is empty: {out}");
    assert!(
        lines[2].contains("Read-only file system"),
        "writing to / fails: {out}"
    );
    assert!(
        lines[3].contains("Read-only file system"),
        "writing to /proc/sys fails: {out}"
    );
    assert_eq!(lines[4], "done");
}

#[test]
fn bind_and_tmpfs_mounts_with_options() {
    let env = TestEnv::new("binds");
    let ro_src = env.path().join("ro-src");
    let rw_src = env.path().join("rw-src");
    fs::create_dir_all(&ro_src).expect("mkdir");
    fs::create_dir_all(&rw_src).expect("mkdir");
    fs::write(ro_src.join("hello"), "hello from the host\n").expect("write");
    let file_src = env.path().join("single-file");
    fs::write(&file_src, "a single file\n").expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let c = env.container(|b| {
        b.set("/root/readonly", json!(false));
        b.push(
            "/mounts",
            json!({"destination": "/mnt/ro", "type": "bind", "source": path(&ro_src),
                   "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
        );
        b.push("/mounts", json!({"destination": "/mnt/rw", "type": "bind", "source": path(&rw_src), "options": ["bind"]}));
        b.push(
            "/mounts",
            json!({"destination": "/etc/berth-file", "type": "bind", "source": path(&file_src), "options": ["bind", "ro"]}),
        );
        b.push(
            "/mounts",
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=0750", "size=1m"]}),
        );
        b.sh(
            "cat /proc/self/mountinfo; echo ---; cat /mnt/ro/hello; touch /mnt/ro/new 2>&1; \
             echo written > /mnt/rw/out; cat /etc/berth-file; (echo x >> /etc/berth-file) 2>&1; \
             dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>&1 | grep -c 'No space'; echo done",
        );
    });
    let out = c.output();
    let sections = split_sections(&out);
    let mounts = parse_mountinfo(&sections[0]);
    let ro = visible(&mounts, "/mnt/ro");
    for opt in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            ro.options.contains(&opt.to_string()),
            "/mnt/ro lacks {opt}: {ro:?}"
        );
    }
    assert!(visible(&mounts, "/mnt/rw")
        .options
        .contains(&"rw".to_string()));
    assert!(visible(&mounts, "/etc/berth-file")
        .options
        .contains(&"ro".to_string()));
    let scratch = visible(&mounts, "/scratch");
    assert_eq!(scratch.fs_type, "tmpfs");
    assert!(
        scratch.options.contains(&"nosuid".to_string())
            && scratch.options.contains(&"nodev".to_string())
    );
    assert!(
        scratch.super_options.contains(&"size=1024k".to_string()),
        "{scratch:?}"
    );
    assert!(
        scratch.super_options.contains(&"mode=750".to_string()),
        "{scratch:?}"
    );

    let lines: Vec<&str> = sections[1].lines().collect();
    assert_eq!(lines[0], "hello from the host", "{out}");
    assert!(lines[1].contains("Read-only file system"), "{out}");
    assert_eq!(lines[2], "a single file", "{out}");
    assert!(lines[3].contains("Read-only file system"), "{out}");
    assert_eq!(
        lines[4], "1",
        "a 2 MiB write to a 1 MiB tmpfs runs out of space: {out}"
    );
    assert_eq!(lines[5], "done");
    assert_eq!(
        fs::read_to_string(rw_src.join("out")).expect("written through rw bind"),
        "written\n"
    );
    assert!(!ro_src.join("new").exists());
    c.assert_no_leftovers();
}

#[test]
fn mount_destinations_cannot_escape_through_symlinks() {
    let env = TestEnv::new("escape");
    let outside = env.path().join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    let c = env.container(|b| {
        b.set("/root/readonly", json!(false));
        b.push(
            "/mounts",
            json!({"destination": "/mnt/escape/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        );
        b.sh("echo inside > /mnt/escape/sub/file && cat /mnt/escape/sub/file");
    });
    // A symlink in the rootfs pointing at an absolute host path: resolved inside the
    // container's root it names <rootfs><outside>, never the host's directory.
    symlink(&outside, c.bundle.rootfs().join("mnt/escape")).expect("symlink");
    let out = c.output();
    assert_eq!(out.trim(), "inside");
    assert!(
        fs::read_dir(&outside)
            .expect("read outside")
            .next()
            .is_none(),
        "the runtime created or mounted something in the host's {}",
        outside.display()
    );
    let inner = c
        .bundle
        .rootfs()
        .join(outside.strip_prefix("/").expect("absolute"))
        .join("sub");
    assert!(
        inner.is_dir(),
        "the mount point was made inside the rootfs at {}",
        inner.display()
    );
    c.assert_no_leftovers();
}

fn major_minor(hex: &str) -> (u64, u64) {
    let (major, minor) = hex.split_once(':').expect("major:minor");
    (
        u64::from_str_radix(major, 16).expect("hex"),
        u64::from_str_radix(minor, 16).expect("hex"),
    )
}

#[test]
fn default_and_spec_device_nodes() {
    let env = TestEnv::new("devices");
    let c = env.container(|b| {
        b.push(
            "/linux/devices",
            json!({"path": "/dev/berth-fuse", "type": "c", "major": 10, "minor": 229,
                   "fileMode": 0o640, "uid": 0, "gid": 20}),
        );
        b.sh(
            "stat -c '%n %F %t:%T %a %g' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty \
             /dev/berth-fuse; echo ---; echo x > /dev/null && echo null-ok; \
             head -c 4 /dev/zero | od -An -tx1; (echo x > /dev/full) 2>&1; head -c 8 /dev/urandom | wc -c",
        );
    });
    let out = c.output();
    let sections = split_sections(&out);
    let mut nodes = std::collections::BTreeMap::new();
    for line in sections[0].lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 5, "unexpected stat line {line:?} in:\n{out}");
        let kind = words[1..words.len() - 3].join(" ");
        nodes.insert(
            words[0].to_string(),
            (
                kind,
                major_minor(words[words.len() - 3]),
                words[words.len() - 2].to_string(),
                words[words.len() - 1].to_string(),
            ),
        );
    }
    for (path, dev) in [
        ("/dev/null", (1, 3)),
        ("/dev/zero", (1, 5)),
        ("/dev/full", (1, 7)),
        ("/dev/random", (1, 8)),
        ("/dev/urandom", (1, 9)),
        ("/dev/tty", (5, 0)),
    ] {
        let (kind, got, mode, _) = nodes
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing:\n{out}"));
        assert_eq!(kind, "character special file", "{path}: {out}");
        assert_eq!(*got, dev, "{path} major:minor: {out}");
        assert_eq!(mode, "666", "{path} mode: {out}");
    }
    let (kind, got, mode, gid) = nodes
        .get("/dev/berth-fuse")
        .unwrap_or_else(|| panic!("spec device missing:\n{out}"));
    assert_eq!(
        (kind.as_str(), *got, mode.as_str(), gid.as_str()),
        ("character special file", (10, 229), "640", "20")
    );

    let lines: Vec<&str> = sections[1].lines().collect();
    assert_eq!(lines[0], "null-ok", "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["00", "00", "00", "00"],
        "{out}"
    );
    assert!(lines[2].contains("No space left on device"), "{out}");
    assert_eq!(lines[3].trim(), "8", "{out}");
}

#[test]
fn dev_symlinks() {
    let env = TestEnv::new("devlinks");
    let c = env.container(|b| {
        b.sh("for l in fd stdin stdout stderr ptmx; do echo \"$l=$(readlink /dev/$l)\"; done");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "fd=/proc/self/fd",
            "stdin=/proc/self/fd/0",
            "stdout=/proc/self/fd/1",
            "stderr=/proc/self/fd/2",
            "ptmx=pts/ptmx"
        ],
        "{out}"
    );
}

#[test]
fn no_pivot_still_confines_the_root() {
    let env = TestEnv::new("nopivot");
    let c = env.container(|b| {
        b.sh("grep -c '^user:x:1000' /etc/passwd; ls /; cat /proc/self/mountinfo | wc -l");
    });
    let out = c
        .spawn(&["run", "--no-pivot", "--bundle", c.bundle.path_str(), &c.id])
        .wait(COMMAND_TIMEOUT);
    out.ok();
    let stdout = c.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "1", "sees the bundle's /etc/passwd: {stdout}");
    for dir in ["bin", "etc", "proc", "dev"] {
        assert!(lines.contains(&dir), "/ lists {dir}: {stdout}");
    }
    assert!(
        !lines.contains(&"boot") && !lines.contains(&"usr"),
        "/ is the bundle's rootfs, not the host's: {stdout}"
    );
    c.assert_no_leftovers();
}

#[test]
fn spec_device_inside_a_user_namespace() {
    let env = TestEnv::new("usernsdev");
    let c = env.container(|b| {
        b.user_namespace(100000);
        // A user namespace cannot mknod: the runtime binds the host's node instead.
        b.push(
            "/linux/devices",
            json!({"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200, "fileMode": 0o600}),
        );
        b.sh("stat -c '%F %t:%T' /dev/net/tun /dev/null; echo x > /dev/null && echo null-ok");
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "character special file a:c8",
            "character special file 1:3",
            "null-ok"
        ],
        "{out}"
    );
    c.assert_no_leftovers();
}

#[test]
fn bind_mount_propagation_flags() {
    use nix::mount::MsFlags;
    let env = TestEnv::new("propagation");
    let shared = env.path().join("shared-src");
    fs::create_dir_all(shared.join("sub")).expect("mkdir");
    let mut host = HostMounts::default();
    // A shared mount on the host whose later submounts can propagate into containers.
    host.mount(
        Some(shared.to_str().expect("utf-8")),
        &shared,
        None,
        MsFlags::MS_BIND,
    );
    host.mount(None, &shared, None, MsFlags::MS_SHARED);
    let src = shared.to_str().expect("utf-8").to_string();
    let c = env.container(|b| {
        b.push(
            "/mounts",
            json!({"destination": "/mnt/slave", "type": "bind", "source": src, "options": ["rbind", "rslave"]}),
        );
        b.push(
            "/mounts",
            json!({"destination": "/mnt/private", "type": "bind", "source": src, "options": ["rbind", "rprivate"]}),
        );
        b.sh(
            "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; \
             cat /mnt/slave/sub/marker; (cat /mnt/private/sub/marker) 2>&1; echo done",
        );
    });
    c.create_and_start();
    c.wait_stdout("ready");
    // Mounted on the host after the container started: only the rslave view receives it.
    host.mount(
        Some("tmpfs"),
        &shared.join("sub"),
        Some("tmpfs"),
        MsFlags::empty(),
    );
    fs::write(shared.join("sub/marker"), "propagated\n").expect("write marker");
    fs::write(c.bundle.rootfs().join("tmp/go"), "").expect("trigger");
    let out = c.wait_stdout("done");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1], "propagated",
        "rslave receives host submounts: {out}"
    );
    assert!(
        lines[2].contains("No such file"),
        "rprivate does not: {out}"
    );
    c.wait_status("stopped");
    c.delete(false).ok();
    c.assert_no_leftovers();
}

/// A fifo in linux.devices is made as a fifo and gets no device-cgroup rule (the
/// device cgroup knows only character and block devices). Before the fix its rule was
/// refused and the container could not be created.
#[test]
fn fifo_devices_are_made_without_cgroup_rules() {
    let env = TestEnv::new("fifodev");
    let c = env.container(|b| {
        b.push(
            "/linux/devices",
            json!({"path": "/dev/myfifo", "type": "p", "fileMode": 0o640, "uid": 0, "gid": 0}),
        );
        b.sh("stat -c '%F %a' /dev/myfifo");
    });
    let out = c.output();
    assert_eq!(out.trim(), "fifo 640", "{out}");
    c.assert_no_leftovers();
}
