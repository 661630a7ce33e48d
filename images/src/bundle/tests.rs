use super::*;
use crate::manifest::{ExecConfig, RootFs};

fn image(exec: ExecConfig) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        created: Some("2024-01-01T00:00:00Z".into()),
        author: None,
        config: Some(exec),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![],
        },
    }
}

fn db() -> UserDb {
    UserDb {
        users: parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# c\nbad\n",
        ),
        groups: parse_group("root:x:0:\nwww:x:33:\nstaff:x:50:www,other\nadm:x:4:www\n"),
    }
}

#[test]
fn entrypoint_cmd_env_and_cwd_follow_the_image() {
    let exec = ExecConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
        working_dir: Some("/srv".into()),
        ..Default::default()
    };
    let v = generate(&image(exec.clone()), &db(), &Overrides::default()).unwrap();
    assert_eq!(v["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(
        v["process"]["env"],
        json!(["PATH=/bin", "A=1", "HOME=/root"])
    );
    assert_eq!(v["process"]["cwd"], "/srv");
    assert_eq!(v["root"]["path"], "rootfs");
    let ov = Overrides {
        cmd: Some(vec!["echo bye".into()]),
        env: vec!["A=2".into(), "B=3".into()],
        cwd: Some("/tmp".into()),
        ..Default::default()
    };
    let v = generate(&image(exec), &db(), &ov).unwrap();
    assert_eq!(v["process"]["args"], json!(["/bin/sh", "-c", "echo bye"]));
    assert_eq!(
        v["process"]["env"],
        json!(["PATH=/bin", "A=2", "B=3", "HOME=/root"])
    );
    assert_eq!(v["process"]["cwd"], "/tmp");
}

#[test]
fn no_command_is_an_error_and_path_defaults() {
    let err = generate(&image(ExecConfig::default()), &db(), &Overrides::default()).unwrap_err();
    assert!(matches!(err, BundleError::NoCommand));
    let unpack = Overrides {
        fallback_args: vec!["sh".into()],
        ..Default::default()
    };
    let v = generate(&image(ExecConfig::default()), &db(), &unpack).unwrap();
    assert_eq!(v["process"]["args"], json!(["sh"]));
    let ov = Overrides {
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    let v = generate(&image(ExecConfig::default()), &db(), &ov).unwrap();
    assert_eq!(v["process"]["env"][0], DEFAULT_PATH);
}

#[test]
fn users_resolve_through_passwd_and_group() {
    let d = db();
    assert_eq!(
        resolve_user("www", &d).unwrap(),
        ExecUser {
            uid: 33,
            gid: 33,
            additional_gids: vec![50, 4],
            home: "/var/www".into()
        }
    );
    assert_eq!(resolve_user("www:staff", &d).unwrap().gid, 50);
    assert_eq!(resolve_user("33:7", &d).unwrap().gid, 7);
    let u = resolve_user("1000", &d).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 0, "/"));
    assert_eq!(resolve_user("", &d).unwrap().home, "/root");
    assert!(
        matches!(resolve_user("nobody", &d), Err(BundleError::UnknownUser(u)) if u == "nobody")
    );
    assert!(matches!(
        resolve_user("www:nogroup", &d),
        Err(BundleError::UnknownGroup(_))
    ));
    assert!(matches!(
        resolve_user("www:", &d),
        Err(BundleError::BadUser(_))
    ));
}

#[test]
fn image_user_and_override() {
    let exec = ExecConfig {
        cmd: Some(vec!["id".into()]),
        user: Some("www".into()),
        ..Default::default()
    };
    let v = generate(&image(exec.clone()), &db(), &Overrides::default()).unwrap();
    assert_eq!(
        v["process"]["user"],
        json!({"uid": 33, "gid": 33, "additionalGids": [50, 4]})
    );
    let ov = Overrides {
        user: Some("0:0".into()),
        ..Default::default()
    };
    let v = generate(&image(exec), &db(), &ov).unwrap();
    assert_eq!(v["process"]["user"], json!({"uid": 0, "gid": 0}));
}

#[test]
fn ports_and_labels_become_annotations() {
    let mut ports = BTreeMap::new();
    ports.insert("80/tcp".to_string(), json!({}));
    ports.insert("53/udp".to_string(), json!({}));
    let mut labels = BTreeMap::new();
    labels.insert("org.example.team".to_string(), "infra".to_string());
    let exec = ExecConfig {
        cmd: Some(vec!["x".into()]),
        exposed_ports: Some(ports),
        labels: Some(labels),
        stop_signal: Some("SIGQUIT".into()),
        ..Default::default()
    };
    let v = generate(&image(exec), &db(), &Overrides::default()).unwrap();
    let a = &v["annotations"];
    assert_eq!(a["org.opencontainers.image.exposedPorts"], "53/udp,80/tcp");
    assert_eq!(a["org.example.team"], "infra");
    assert_eq!(a["org.opencontainers.image.stopSignal"], "SIGQUIT");
    assert_eq!(
        a["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
}

#[test]
fn defaults_match_runc_spec_and_net_memory_apply() {
    let exec = ExecConfig {
        cmd: Some(vec!["x".into()]),
        ..Default::default()
    };
    let v = generate(&image(exec.clone()), &db(), &Overrides::default()).unwrap();
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, vec!["pid", "network", "ipc", "uts", "mount"]);
    let mounts: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        vec![
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys"
        ]
    );
    assert_eq!(
        v["process"]["capabilities"]["bounding"],
        json!(DEFAULT_CAPS)
    );
    assert!(v["linux"]["resources"].get("memory").is_none());
    let ov = Overrides {
        net: Net::Host,
        memory: Some(64 << 20),
        ..Default::default()
    };
    let v = generate(&image(exec), &db(), &ov).unwrap();
    assert!(!v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network"));
    assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
}

#[test]
fn memory_sizes_parse_like_runc() {
    assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
    assert_eq!(parse_memory("64MB").unwrap(), 64 << 20);
    assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
    assert_eq!(parse_memory("512k").unwrap(), 512 << 10);
    assert_eq!(parse_memory("4096").unwrap(), 4096);
    assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
    for bad in ["", "m", "-1m", "12x", "0"] {
        assert!(parse_memory(bad).is_err(), "{bad}");
    }
}

#[test]
fn env_without_equals_is_refused() {
    let exec = ExecConfig {
        cmd: Some(vec!["x".into()]),
        ..Default::default()
    };
    let ov = Overrides {
        env: vec!["NOVALUE".into()],
        ..Default::default()
    };
    assert!(
        matches!(generate(&image(exec), &db(), &ov), Err(BundleError::BadEnv(e)) if e == "NOVALUE")
    );
}

fn rootfs_with_etc() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    (dir, root)
}

/// Runs `f` on a thread and fails the test if it does not return within 20 s
/// (a read of a FIFO would block forever).
fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("reading the image's user database blocked")
}

#[test]
fn user_db_is_read_only_for_user_or_group_names() {
    for (spec, needed) in [
        ("", false),
        ("0", false),
        ("1000:1000", false),
        ("app", true),
        ("1000:staff", true),
        ("app:0", true),
    ] {
        assert_eq!(needs_user_db(spec), needed, "{spec}");
    }
    // A FIFO as /etc/passwd would block a reader forever: numeric users never open it.
    let (_dir, root) = rootfs_with_etc();
    nix::unistd::mkfifo(
        &root.join("etc/passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &root.join("etc/group"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    for spec in ["", "0", "1000:1000"] {
        let r = root.clone();
        let db = within_20s(move || read_user_db(&r, spec)).unwrap();
        assert_eq!(db, UserDb::default(), "{spec}");
    }
    // A name needs the file, and a FIFO is refused without blocking.
    let r = root.clone();
    let err = within_20s(move || read_user_db(&r, "app")).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
}

#[test]
fn user_db_is_a_small_regular_file_never_followed() {
    let (dir, root) = rootfs_with_etc();
    // A symlink, even one that stays inside the rootfs, is not followed.
    std::fs::write(dir.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/real/passwd", root.join("etc/passwd")).unwrap();
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::write(root.join("real/passwd"), "app:x:7:8::/app:/bin/sh\n").unwrap();
    let err = read_user_db(&root, "app").unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    std::fs::remove_file(root.join("etc/passwd")).unwrap();
    // Too big.
    std::fs::write(root.join("etc/passwd"), vec![b'#'; 5 << 20]).unwrap();
    let err = read_user_db(&root, "app").unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // A device node (here /dev/zero's numbers) is never opened.
    std::fs::remove_file(root.join("etc/passwd")).unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::sys::stat::mknod(
            &root.join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            libc::makedev(1, 5),
        )
        .unwrap();
        let err = read_user_db(&root, "app").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
    }
    // The ordinary case; a missing /etc/group is an empty group list.
    std::fs::write(root.join("etc/passwd"), "app:x:7:8::/app:/bin/sh\n").unwrap();
    let db = read_user_db(&root, "app").unwrap();
    assert_eq!(db.users.len(), 1);
    assert_eq!(db.users[0].name, "app");
    assert!(db.groups.is_empty());
}
