//! Bad input: each case fails with exit 1 and one line of error naming the field, path or
//! value at fault, and leaves nothing behind (state dir, cgroup, mount, process).
//!
//! Against runc, `malformed_config_json` (runc says only "unexpected EOF") and
//! `unsupported_oci_version_major` (runc accepts any ociVersion) and
//! `unknown_signal_leaves_the_container_running` (runc passes signal 99999 to the kernel
//! and reports only "invalid argument") fail: Berth's contract is stricter there.

use std::fs;

use berth_tests::runtime::{assert_no_leftovers, Bundle, Container, Outcome, TestEnv};
use serde_json::json;

/// Exit 1, exactly one line on stderr, and that line names one of `needles`
/// (case-insensitively).
#[track_caller]
fn assert_error_names(out: &Outcome, needles: &[&str]) {
    assert_eq!(out.code, Some(1), "bad input must exit 1:\n{out}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "bad input gets one line of error:\n{out}");
    let line = lines[0].to_lowercase();
    assert!(
        needles.iter().any(|n| line.contains(&n.to_lowercase())),
        "the error should name one of {needles:?}:\n{out}"
    );
}

/// Runs `create` on a bundle edited by `edit` (before config.json is written) and
/// `damage` (after), asserts the error names one of `needles`, then scans for leftovers.
fn refused_create(
    name: &str,
    edit: impl FnOnce(&mut Bundle),
    damage: impl FnOnce(&Bundle),
    needles: &[&str],
) {
    let env = TestEnv::new(name);
    let mut bundle = env.bundle();
    edit(&mut bundle);
    // The guard force-deletes whatever a runtime that wrongly accepts the input made.
    let c = Container::new(&env.rt, bundle);
    damage(&c.bundle);
    let out = c.create();
    assert_error_names(&out, needles);
    assert!(
        env.rt.run(&["state", &c.id]).code != Some(0),
        "a refused create leaves no container"
    );
    c.assert_no_leftovers();
}

#[test]
fn malformed_config_json() {
    refused_create(
        "badjson",
        |_| {},
        |b| {
            fs::write(
                b.path().join("config.json"),
                "{\"ociVersion\": \"1.0.2\", \"process\": ",
            )
            .expect("write")
        },
        &["config.json"],
    );
}

#[test]
fn missing_config_json() {
    refused_create(
        "nocfg",
        |_| {},
        |b| fs::remove_file(b.path().join("config.json")).expect("rm"),
        &["config.json"],
    );
}

#[test]
fn unsupported_oci_version_major() {
    refused_create(
        "ociver",
        |b| {
            b.set("/ociVersion", json!("2.0.0"));
        },
        |_| {},
        &["ociVersion", "2.0.0"],
    );
}

#[test]
fn missing_rootfs() {
    refused_create(
        "norootfs",
        |b| {
            b.set("/root/path", json!("no-such-rootfs"));
        },
        |_| {},
        &["no-such-rootfs"],
    );
}

#[test]
fn missing_mount_source() {
    let missing = std::env::temp_dir().join(format!("berth-missing-src-{}", std::process::id()));
    let missing = missing.to_str().expect("utf-8").to_string();
    refused_create(
        "nomntsrc",
        |b| {
            b.push("/mounts", json!({"destination": "/mnt/x", "type": "bind", "source": missing, "options": ["bind"]}));
        },
        |_| {},
        &[&missing],
    );
}

/// A mount init cannot make, placed before the cgroup mount: init fails while the runtime
/// is still creating the v1 cgroup it would hand over, so its report can race the
/// runtime's next message. Repeated, the error must always be init's, naming the mount.
#[test]
fn failing_mount_before_the_cgroup_is_reported_by_init() {
    for round in 0..5 {
        refused_create(
            &format!("badtmpfs{round}"),
            |b| {
                b.insert(
                    "/mounts",
                    1,
                    json!({"destination": "/badtmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=bogus"]}),
                );
            },
            |_| {},
            &["/badtmp"],
        );
    }
}

/// An option berth does not know goes to the filesystem as data; one the kernel
/// refuses fails the create naming the mount and that option (among others it takes),
/// for a plain mount and for one made detached (recursive attributes). Before, the
/// error named only the mount and EINVAL.
#[test]
fn option_the_kernel_refuses_is_named() {
    for (round, extra) in [None, Some("rnosuid")].into_iter().enumerate() {
        let mut options = vec!["nosuid", "mode=755", "no-such-tmpfs-option", "size=1m"];
        options.extend(extra);
        refused_create(
            &format!("tmpfsopt{round}"),
            |b| {
                b.push(
                    "/mounts",
                    json!({"destination": "/opts", "type": "tmpfs", "source": "tmpfs",
                           "options": options}),
                );
            },
            |_| {},
            &["/opts: the kernel refuses option \"no-such-tmpfs-option\": invalid argument"],
        );
    }
}

#[test]
fn unknown_namespace_type() {
    refused_create(
        "badns",
        |b| {
            b.push("/linux/namespaces", json!({"type": "bogusns"}));
        },
        |_| {},
        &["bogusns"],
    );
}

#[test]
fn empty_args() {
    refused_create(
        "noargs",
        |b| {
            b.set("/process/args", json!([]));
        },
        |_| {},
        &["args"],
    );
}

#[test]
fn relative_cwd() {
    refused_create(
        "relcwd",
        |b| {
            b.set("/process/cwd", json!("relative/dir"));
        },
        |_| {},
        &["cwd"],
    );
}

#[test]
fn executable_not_found() {
    refused_create(
        "noexe",
        |b| {
            b.args(&["no-such-program-xyz"]);
        },
        |_| {},
        &["no-such-program-xyz"],
    );
}

#[test]
fn bad_container_ids() {
    let env = TestEnv::new("badid");
    for bad in ["", "a/b", "..", "."] {
        let bundle = env.bundle();
        bundle.write();
        let out = env.rt.run(&["create", "--bundle", bundle.path_str(), bad]);
        assert_error_names(&out, &["id"]);
        assert_no_leftovers(&env.rt, bad, &bundle);
        let entries: Vec<_> = fs::read_dir(&env.rt.root)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            entries.is_empty(),
            "id {bad:?} left {entries:?} in the state root"
        );
        assert!(
            !env.path().join("state.json").exists(),
            "id {bad:?} wrote state outside the root"
        );
    }
}

#[test]
fn unknown_signal_leaves_the_container_running() {
    let env = TestEnv::new("badsig");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let out = c.kill("SIGBOGUS");
    assert_error_names(&out, &["SIGBOGUS", "BOGUS"]);
    let out = c.kill("99999");
    assert_error_names(&out, &["99999"]);
    assert_eq!(c.state()["status"], "running");
}

#[test]
fn commands_on_a_missing_container() {
    let env = TestEnv::new("missing");
    let id = "no-such-container";
    for args in [
        vec!["state", id],
        vec!["kill", id, "KILL"],
        vec!["delete", id],
        vec!["start", id],
    ] {
        let out = env.rt.run(&args);
        assert_error_names(&out, &[id, "does not exist"]);
    }
}

#[test]
fn malformed_update_values_are_named_and_change_nothing() {
    let env = TestEnv::new("badupdate");
    let c = env.container(|b| {
        b.set("/linux/resources/memory", json!({"limit": 64u64 << 20}));
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    let limit = c.cgroup_dir("memory").join("memory.limit_in_bytes");
    let before = fs::read_to_string(&limit).expect("limit");
    let out = c.verb("update", &["--memory", "lots"], &[]);
    assert_error_names(&out, &["lots"]);
    let missing = env.path().join("no-such-resources.json");
    let missing = missing.to_str().expect("utf-8");
    let out = c.verb("update", &["--resources", missing], &[]);
    assert_error_names(&out, &["no-such-resources.json"]);
    assert_eq!(
        fs::read_to_string(&limit).expect("limit"),
        before,
        "a refused update changes nothing"
    );
    assert_eq!(c.state()["status"], "running");
}

/// config.json with bytes after its object: serde_json refuses it, and the parser that
/// only names fields must not accept it behind its back.
#[test]
fn trailing_garbage_after_config_json() {
    refused_create(
        "badtrail",
        |_| {},
        |b| {
            let path = b.path().join("config.json");
            let mut text = fs::read_to_string(&path).expect("config.json");
            text.push_str("\n}{ trailing garbage");
            fs::write(&path, text).expect("rewrite config.json");
        },
        &["trailing"],
    );
}

/// uid/gid 4294967295 is (uid_t)-1, "unchanged" to setresuid: accepted, the process
/// would run as root. runc refuses ids above 2^31-1; so does berth, in config.json and
/// in `exec --user`.
#[test]
fn ids_above_2_pow_31_are_refused() {
    for (pointer, field) in [
        ("/process/user/uid", "process.user.uid"),
        ("/process/user/gid", "process.user.gid"),
    ] {
        refused_create(
            "badid",
            |b| {
                b.set(pointer, json!(4_294_967_295u64)).sh("id -u; id -g");
            },
            |_| {},
            &[field],
        );
    }
    let env = TestEnv::new("badidexec");
    let c = env.container(|b| {
        b.args(&["sleep", "1000"]);
    });
    c.create_and_start();
    for user in ["4294967295", "0:4294967295", "2147483648:0"] {
        let out = c.verb("exec", &["--user", user], &["id", "-u"]);
        assert_error_names(&out, &["--user"]);
        assert!(!out.stdout.contains('0'), "nothing ran:\n{out}");
    }
    let out = c.verb(
        "exec",
        &["--user", "2147483647"],
        &["sh", "-c", "echo uid=$(id -u)"],
    );
    assert!(out.stdout.contains("uid=2147483647"), "{out}");
}

/// Hooks run with berth's own PATH and cwd: a relative path is refused up front.
#[test]
fn relative_hook_path_is_refused() {
    refused_create(
        "badhook",
        |b| {
            b.set("/hooks", json!({"prestart": [{"path": "true"}]}));
        },
        |_| {},
        &["hooks.prestart[0].path"],
    );
}

/// root.path leading through a symlink is refused (as runc does): the rootfs berth
/// binds and pivots into is the directory config.json names. Before the fix the link
/// was followed.
#[test]
fn symlinked_root_path_is_refused() {
    refused_create(
        "rootlink",
        |b| {
            let real = b.path().join("real-rootfs");
            fs::rename(b.rootfs(), &real).expect("rename rootfs");
            std::os::unix::fs::symlink("real-rootfs", b.rootfs()).expect("symlink");
        },
        |_| {},
        &["root.path"],
    );
}
