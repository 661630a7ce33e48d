use super::*;
use serde_json::json;

fn bundle_with(config: serde_json::Value) -> (tempfile::TempDir, Spec) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let spec = parse(config.to_string().as_bytes()).unwrap();
    (dir, spec)
}

fn base() -> serde_json::Value {
    let mut v = default::default_spec(false, 0, 0);
    v["process"]["terminal"] = json!(false);
    v
}

#[test]
fn default_spec_translates() {
    let (dir, spec) = bundle_with(base());
    let p = plan(&spec, dir.path()).unwrap();
    assert_eq!(p.rootfs, dir.path().join("rootfs"));
    assert!(p.root_readonly);
    assert_eq!(p.hostname.as_deref(), Some("berth"));
    assert!(p.namespaces.creates(NsKind::Network));
    assert!(p.namespaces.creates(NsKind::Mount));
    assert!(!p.namespaces.has(NsKind::User));
    assert_eq!(p.mounts.len(), 7);
    assert_eq!(p.mounts[0].kind, MountKind::Proc);
    assert_eq!(p.mounts[1].data, "mode=755,size=65536k");
    assert_eq!(p.mounts[1].flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
    assert_eq!(p.mounts[6].kind, MountKind::Cgroup);
    assert_eq!(p.process.rlimits, vec![(libc::RLIMIT_NOFILE, 1024, 1024)]);
    assert_eq!(p.rootfs_propagation, libc::MS_SLAVE | libc::MS_REC);
    assert_eq!(p.masked_paths.len(), 10);
}

#[test]
fn field_named_in_parse_error() {
    let mut v = base();
    v["process"]["user"]["uid"] = json!("root");
    let err = parse(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.0, "process.user.uid");
}

#[test]
fn unknown_namespace_is_a_parse_error_naming_it() {
    let mut v = base();
    v["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "bogus"}]);
    let err = parse(v.to_string().as_bytes()).unwrap_err();
    assert!(err.0.starts_with("linux.namespaces"), "{err:?}");
    assert!(err.1.contains("bogus"), "{err:?}");
}

#[test]
fn unsupported_major_version() {
    let mut v = base();
    v["ociVersion"] = json!("2.0.0");
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(e.contains("ociVersion") && e.contains("2.0.0"), "{e}");
}

#[test]
fn missing_rootfs_named() {
    let (dir, spec) = bundle_with(base());
    std::fs::remove_dir(dir.path().join("rootfs")).unwrap();
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(e.contains("root.path") && e.contains("rootfs"), "{e}");
}

#[test]
fn missing_bind_source_named() {
    let mut v = base();
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": "/nonexistent/x", "options": ["rbind", "ro"]}),
    );
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("mounts[7].source") && e.contains("/nonexistent/x"),
        "{e}"
    );
}

#[test]
fn bind_mount_flags_split_into_remount() {
    let mut v = base();
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro", "nosuid", "rprivate"]}),
    );
    let (dir, spec) = bundle_with(v);
    let p = plan(&spec, dir.path()).unwrap();
    let m = &p.mounts[7];
    assert_eq!(m.kind, MountKind::Bind);
    assert_eq!(m.remount_flags, Some(libc::MS_RDONLY | libc::MS_NOSUID));
    assert_eq!(m.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
}

#[test]
fn mount_namespace_required() {
    let mut v = base();
    v["linux"]["namespaces"] = json!([{"type": "pid"}]);
    v["hostname"] = json!(null);
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(e.contains("mount namespace"), "{e}");
}

#[test]
fn hostname_needs_uts() {
    let mut v = base();
    v["linux"]["namespaces"] = json!([{"type": "mount"}]);
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(e.starts_with("hostname:"), "{e}");
}

#[test]
fn user_namespace_mappings() {
    let mut v = default::default_spec(true, 1000, 1000);
    v["process"]["terminal"] = json!(false);
    let (dir, spec) = bundle_with(v.clone());
    let p = plan(&spec, dir.path()).unwrap();
    assert!(p.namespaces.creates(NsKind::User));
    assert_eq!(
        p.uid_mappings,
        vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 1
        }]
    );
    v["linux"].as_object_mut().unwrap().remove("uidMappings");
    let (dir, spec) = bundle_with(v);
    assert!(plan(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .contains("uidMappings"));
}

#[test]
fn sysctl_must_be_namespaced() {
    let mut v = base();
    v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let (dir, spec) = bundle_with(v.clone());
    assert_eq!(plan(&spec, dir.path()).unwrap().sysctl.len(), 1);
    v["linux"]["sysctl"] = json!({"vm.swappiness": "1"});
    let (dir, spec) = bundle_with(v);
    assert!(plan(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .contains("vm.swappiness"));
}

#[test]
fn join_namespace_paths_sorted_user_first() {
    let mut v = base();
    v["linux"]["namespaces"] = json!([
        {"type": "mount"},
        {"type": "network", "path": "/proc/self/ns/net"},
        {"type": "user", "path": "/proc/self/ns/user"},
        {"type": "uts"}
    ]);
    let (dir, spec) = bundle_with(v);
    let p = plan(&spec, dir.path()).unwrap();
    assert_eq!(p.namespaces.join[0].0, NsKind::User);
    assert_eq!(p.namespaces.join[1].0, NsKind::Network);
    assert!(p.namespaces.creates(NsKind::Uts));
    assert!(!p.namespaces.creates(NsKind::Network));
}

#[test]
fn empty_args_refused() {
    let mut v = base();
    v["process"]["args"] = json!([]);
    let (dir, spec) = bundle_with(v);
    assert!(plan(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .starts_with("process.args"));
}

#[test]
fn bad_rlimit_order() {
    let mut v = base();
    v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]);
    let (dir, spec) = bundle_with(v);
    assert!(plan(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .contains("soft limit"));
}

/// The path-tracking parser (used only to name a bad field) must never accept what
/// serde_json itself rejects: trailing garbage after the object, and nesting deeper
/// than serde_json's recursion limit.
#[test]
fn fallback_parser_accepts_nothing_the_strict_one_rejects() {
    let good = base().to_string();
    let trailing = format!("{good} trailing garbage");
    assert!(serde_json::from_str::<Spec>(&trailing).is_err());
    let err = parse(trailing.as_bytes()).unwrap_err();
    assert!(err.1.contains("trailing"), "{err:?}");

    // windows.credentialSpec holds free-form JSON values, where serde_json counts depth.
    let depth = 100_000;
    let deep = format!(
        "{},\"windows\":{{\"credentialSpec\":{{\"a\":{}{}}}}}}}",
        &good[..good.len() - 1],
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(serde_json::from_str::<Spec>(&deep).is_err());
    let err = parse(deep.as_bytes()).unwrap_err();
    assert!(err.1.contains("recursion"), "{err:?}");
}

/// runc refuses ids above 2^31-1; (uid_t)-1 means "unchanged" to setresuid, so
/// 4294967295 would leave the process root.
#[test]
fn ids_above_i32_max_refused() {
    for (ptr, field) in [
        ("/process/user/uid", "process.user.uid"),
        ("/process/user/gid", "process.user.gid"),
    ] {
        for bad in [2_147_483_648u64, 4_294_967_295] {
            let mut v = base();
            *v.pointer_mut(ptr).unwrap() = json!(bad);
            let (dir, spec) = bundle_with(v);
            let e = plan(&spec, dir.path()).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(&bad.to_string()), "{e}");
        }
    }
    let mut v = base();
    v["process"]["user"]["additionalGids"] = json!([10, 4_294_967_295u64]);
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(e.contains("process.user.additionalGids[1]"), "{e}");
    let mut v = base();
    v["process"]["user"]["uid"] = json!(2_147_483_647u64);
    let (dir, spec) = bundle_with(v);
    assert_eq!(plan(&spec, dir.path()).unwrap().process.uid, 2_147_483_647);
}

/// Hook paths must be absolute (runtime-spec; a relative one would be looked up in
/// the runtime's own PATH and cwd).
#[test]
fn relative_hook_path_refused() {
    let mut v = base();
    v["hooks"] = json!({"poststop": [{"path": "/bin/true"}], "prestart": [{"path": "true"}]});
    let (dir, spec) = bundle_with(v);
    let e = plan(&spec, dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("hooks.prestart[0].path") && e.contains("absolute"),
        "{e}"
    );
}
