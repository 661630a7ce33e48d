//! Mount options runc knows beyond the classic flags (tmpcopyup, the recursive `r*`
//! attributes, idmap), options berth does not know, and every rootfsPropagation value.
//! Each is checked from inside the container (mountinfo, stat, writes) or the host.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_tests::runtime::{HostMounts, TestEnv};
use serde_json::json;

/// podman puts `tmpcopyup` on every tmpfs it makes: the image's content at the
/// destination is copied into the tmpfs with owners, modes, symlinks and extended
/// attributes, and writes stay in the tmpfs. Before the fix the option reached the
/// kernel as tmpfs data and create failed with EINVAL.
#[test]
fn tmpcopyup_fills_the_tmpfs_with_the_images_content() {
    let env = TestEnv::new("copyup");
    let c = env.container(|b| {
        b.push(
            "/mounts",
            json!({"destination": "/etc/app", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "tmpcopyup", "mode=755"]}),
        );
        b.sh(
            "grep ' /etc/app ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; \
             stat -c '%a %u:%g' /etc/app/a.conf /etc/app/sub /etc/app/sub/b; \
             readlink /etc/app/link; cat /etc/app/a.conf; \
             echo new > /etc/app/new; echo ready; sleep 1000",
        );
    });
    let app = c.bundle.rootfs().join("etc/app");
    fs::create_dir_all(app.join("sub")).expect("mkdir");
    fs::write(app.join("a.conf"), "content\n").expect("write");
    fs::set_permissions(app.join("a.conf"), fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::chown(app.join("a.conf"), Some(1000), Some(1000)).expect("chown");
    fs::write(app.join("sub/b"), "b\n").expect("write");
    fs::set_permissions(app.join("sub/b"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(app.join("sub"), fs::Permissions::from_mode(0o710)).expect("chmod");
    std::os::unix::fs::symlink("a.conf", app.join("link")).expect("symlink");
    let xattr = c"user.berth-test";
    set_xattr(&app.join("a.conf"), xattr, b"kept");
    c.create_and_start();
    let out = c.wait_stdout("ready");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "tmpfs",
            "644 1000:1000",
            "710 0:0",
            "600 0:0",
            "a.conf",
            "content"
        ],
        "{out}"
    );
    let inside = format!("/proc/{}/root/etc/app/a.conf", c.pid());
    assert_eq!(get_xattr(std::path::Path::new(&inside), xattr), b"kept");
    assert!(!app.join("new").exists(), "writes stay in the tmpfs");
    c.delete(true).ok();
    c.assert_no_leftovers();
}

fn set_xattr(p: &std::path::Path, name: &std::ffi::CStr, value: &[u8]) {
    let c = std::ffi::CString::new(p.to_str().expect("utf-8")).expect("path");
    // SAFETY: setxattr reads the two NUL-terminated strings and value.len() bytes.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr(p: &std::path::Path, name: &std::ffi::CStr) -> Vec<u8> {
    let c = std::ffi::CString::new(p.to_str().expect("utf-8")).expect("path");
    let mut buf = vec![0u8; 256];
    // SAFETY: getxattr writes at most buf.len() bytes into our buffer.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

/// `rro` makes a recursive bind read-only all the way down (plain `ro` only reaches
/// the bind itself), through mount_setattr(AT_RECURSIVE); `rnoexec` likewise. Before
/// the fix both were dropped without a word and the volume was writable.
#[test]
fn recursive_attributes_reach_every_submount() {
    use nix::mount::MsFlags;
    let env = TestEnv::new("rro");
    let src = env.path().join("volume");
    fs::create_dir_all(src.join("inner")).expect("mkdir");
    let mut host = HostMounts::default();
    host.mount(
        Some("tmpfs"),
        &src.join("inner"),
        Some("tmpfs"),
        MsFlags::empty(),
    );
    let c = env.container(|b| {
        b.push(
            "/mounts",
            json!({"destination": "/vol", "type": "bind", "source": src,
                   "options": ["rbind", "rro", "rnoexec"]}),
        );
        b.push(
            "/mounts",
            json!({"destination": "/plain", "type": "bind", "source": src,
                   "options": ["rbind", "ro"]}),
        );
        b.sh(
            "for f in /vol/top /vol/inner/x /plain/top /plain/inner/x; do \
               (echo > $f) 2>/dev/null && echo \"$f writable\" || echo \"$f read-only\"; done; \
             grep -E ' /vol(/inner)? ' /proc/self/mountinfo | cut -d' ' -f5,6",
        );
    });
    let out = c.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "/vol/top read-only",
            "/vol/inner/x read-only",
            "/plain/top read-only",
            "/plain/inner/x writable"
        ],
        "{out}"
    );
    assert_eq!(lines.len(), 6, "/vol and /vol/inner in mountinfo: {out}");
    for l in &lines[4..] {
        let opts = l.split(' ').nth(1).unwrap_or_default();
        assert!(opts.split(',').any(|o| o == "noexec"), "rnoexec: {out}");
    }
    c.assert_no_leftovers();
}

/// An option berth does not know on a bind mount is refused, naming the option and
/// the mount; never dropped. Before the fix the bind was made without it.
#[test]
fn unknown_bind_option_is_refused_by_name() {
    let env = TestEnv::new("bindopt");
    let src = env.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let c = env.container(|b| {
        b.push(
            "/mounts",
            json!({"destination": "/vol", "type": "bind", "source": src,
                   "options": ["bind", "ro", "rnosuidd"]}),
        );
    });
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.contains("\"rnosuidd\"") && out.stderr.contains("/vol"),
        "{out}"
    );
    c.assert_no_leftovers();
}

/// An idmapped bind (runc 1.2): a file owned by 0:0 on disk shows as 1000:1000 through
/// a mount idmapped with the mount's own mappings 0 -> 1000, while the disk keeps 0:0.
/// Before the fix the mappings and the option were ignored and the owner stayed 0:0.
#[test]
fn idmapped_bind_maps_owners() {
    let env = TestEnv::new("idmap");
    let src = env.path().join("data");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let c = env.container(|b| {
        b.push(
            "/mounts",
            json!({"destination": "/vol", "type": "bind", "source": src,
                   "options": ["bind", "idmap"], "uidMappings": map, "gidMappings": map}),
        );
        b.sh("stat -c '%u:%g' /vol/f");
    });
    let out = c.output();
    assert_eq!(out.trim(), "1000:1000", "{out}");
    assert_eq!(fs::metadata(src.join("f")).expect("stat").uid(), 0);
    c.assert_no_leftovers();
}

/// Every rootfsPropagation value: the container starts and its root mount has the
/// propagation asked for (a slave has a master only when the host's mount is shared).
/// Before the fix `shared` failed in pivot_root and `unbindable` in the rootfs bind.
#[test]
fn every_rootfs_propagation_value_works() {
    let env = TestEnv::new("rootprop");
    let host_shared = host_mount_is_shared(env.path());
    let slave = if host_shared { "master:" } else { "" };
    for (value, want) in [
        ("shared", "shared:"),
        ("rshared", "shared:"),
        ("slave", slave),
        ("rslave", slave),
        ("private", ""),
        ("rprivate", ""),
        ("unbindable", "unbindable"),
        ("runbindable", "unbindable"),
    ] {
        let c = env.container(|b| {
            b.set("/linux/rootfsPropagation", json!(value));
            b.sh("awk '$5 == \"/\"' /proc/self/mountinfo | cut -d' ' -f7- | sed 's/ - .*//'");
        });
        let out = c.output();
        let fields = out.trim();
        assert!(
            want.starts_with("shared") || !fields.contains("shared:"),
            "{value}: the root mount is {fields:?}"
        );
        if want.is_empty() {
            assert!(
                !fields.contains("shared:") && !fields.contains("master:"),
                "{value}: {out}"
            );
        } else {
            assert!(
                fields.contains(want),
                "{value}: the root mount is {fields:?}"
            );
        }
        c.assert_no_leftovers();
    }
}

/// Whether the host mount holding `path` is shared (the longest mount point above it).
fn host_mount_is_shared(path: &std::path::Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut best: Option<(usize, bool)> = None;
    for line in info.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let mp = berth_tests::runtime::unescape_mountinfo(f[4]);
        if path.starts_with(&mp) && best.is_none_or(|(len, _)| mp.len() >= len) {
            best = Some((mp.len(), f[6..].iter().any(|x| x.starts_with("shared:"))));
        }
    }
    best.is_some_and(|(_, shared)| shared)
}

/// The podman case: a container in a user namespace (0 -> 100000) with a host volume
/// owned by root, idmapped with `idmap` and no mappings of its own (the container's are
/// taken): inside, the files are root's, and the container's root can write them.
/// Without idmapping they would be nobody's. Works because `create` makes the idmapped
/// bind before the clone; init in the user namespace could not.
#[test]
fn idmapped_bind_in_a_user_namespace_takes_the_containers_mappings() {
    let env = TestEnv::new("idmap-userns");
    let src = env.path().join("volume");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("f"), "x").expect("write");
    let c = env.container(|b| {
        b.user_namespace(100000);
        b.push(
            "/mounts",
            json!({"destination": "/vol", "type": "bind", "source": src,
                   "options": ["rbind", "idmap"]}),
        );
        b.sh("stat -c '%u:%g' /vol/f; echo y > /vol/new && echo wrote");
    });
    // The rootfs belongs to the host's root, unmapped inside: the mount point is made
    // here, as an image's would be.
    fs::create_dir(c.bundle.rootfs().join("vol")).expect("mkdir vol");
    let out = c.output();
    assert_eq!(out, "0:0\nwrote\n", "{out}");
    // On disk the new file belongs to the host's root, as the volume does.
    assert_eq!(fs::metadata(src.join("new")).expect("stat").uid(), 0);
    c.assert_no_leftovers();
}
