//! Running containers straight from an image (through the runtime's `berth run`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::images::layout::{busybox_layer, Compression, OciLayout, RawTar};
use berth_tests::images::{fixture, tree, wait_with_timeout, ImageEnv};

/// Interface names in /proc/net/dev output.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

#[test]
fn image_run_prints_what_the_image_and_flags_say() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    // The image's own Cmd.
    let out = env.image(&["run", "--rm", "--net", "none", "bb:1"]).ok();
    assert_eq!(out.stdout.trim_end(), fixture::CMD_OUTPUT, "{out}");

    // The image's Env, WorkingDir and User (a name resolved through its /etc/passwd).
    let script = "cat /etc/os-release; echo \"FOO=$FOO\"; pwd; id -u; id -g";
    let out = env
        .image(&[
            "run", "--rm", "--net", "none", "bb:1", "/bin/sh", "-c", script,
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "{}FOO=bar from the image\n/home/app\n1000\n1001\n",
            fixture::OS_RELEASE
        ),
        "{out}"
    );

    // Flags override them.
    let script = "echo \"$FOO $NEW\"; pwd; id -u; id -g";
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "-e",
            "FOO=overridden",
            "-e",
            "NEW=1",
            "-w",
            "/tmp",
            "--user",
            "0:0",
            "bb:1",
            "/bin/sh",
            "-c",
            script,
        ])
        .ok();
    assert_eq!(out.stdout, "overridden 1\n/tmp\n0\n0\n", "{out}");

    // The container's exit code is berth's.
    let out = env.image(&[
        "run", "--rm", "--net", "none", "bb:1", "/bin/sh", "-c", "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out}");

    // --net none: only loopback; --net host: the host's interfaces.
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "bb:1",
            "/bin/cat",
            "/proc/net/dev",
        ])
        .ok();
    assert_eq!(interfaces(&out.stdout), vec!["lo".to_string()], "{out}");
    // --net host: the container is in the host's network namespace (compared by the
    // namespace's identity, not by interface lists, which other tests may change).
    let host_ns = fs::read_link("/proc/self/ns/net").expect("host /proc/self/ns/net");
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "host",
            "bb:1",
            "/bin/ls",
            "-l",
            "/proc/self/ns/net",
        ])
        .ok();
    assert!(
        out.stdout.trim_end().ends_with(&*host_ns.to_string_lossy()),
        "expected the host's {} in: {out}",
        host_ns.display()
    );
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "bb:1",
            "/bin/ls",
            "-l",
            "/proc/self/ns/net",
        ])
        .ok();
    assert!(
        !out.stdout.trim_end().ends_with(&*host_ns.to_string_lossy()),
        "--net none must not share the host's {}: {out}",
        host_ns.display()
    );

    // Every run above was --rm: no container, no snapshot mount remains.
    env.assert_nothing_left_running("after --rm runs");
}

#[test]
fn image_run_containers_do_not_see_each_others_writes() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    // Container ids are cgroup names too: unique per test process.
    let writer = format!("writer-{}", std::process::id());
    let reader = format!("reader-{}", std::process::id());
    // The first container writes, changes and deletes; it is kept (no --rm).
    let write = "echo one > /tmp/mine && echo changed > /etc/os-release && rm /etc/added \
                 && rm -r /srv/www && cat /tmp/mine /etc/os-release";
    let out = env
        .image(&[
            "run", "--name", &writer, "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
            write,
        ])
        .ok();
    assert_eq!(out.stdout, "one\nchanged\n", "{out}");

    // The second one, from the same image while the first still exists, sees none of it.
    let look = "test -e /tmp/mine && echo mine-present || echo mine-absent; cat /etc/os-release; \
                cat /etc/added; cat /srv/www/new.html";
    let out = env
        .image(&[
            "run", "--name", &reader, "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
            look,
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "mine-absent\n{}added in layer 2\nadded in layer 4\n",
            fixture::OS_RELEASE
        ),
        "{out}"
    );

    // And the image itself is unchanged: it still unpacks exactly like umoci's unpack.
    let bundle = env.work().join("after-runs");
    env.unpack("bb:1", &bundle);
    let differences = tree::diff(
        &tree::snapshot(&image.umoci_bundle.join("rootfs")),
        &tree::snapshot(&bundle.join("rootfs")),
    );
    assert!(
        differences.is_empty(),
        "the image changed:\n{}",
        differences.join("\n")
    );
}
/// Kills and reaps a child process when dropped (the test may panic while it runs).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The memory limit file of the cgroup named in a /proc/PID/cgroup text (v1 or v2).
fn memory_limit_file(proc_cgroup: &str) -> PathBuf {
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.limit_in_bytes");
        }
        if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Path::new("/sys/fs/cgroup").join(path).join("memory.max");
        }
    }
    panic!("no memory cgroup in the container's /proc/self/cgroup:\n{proc_cgroup}");
}

#[test]
fn image_run_memory_flag_limits_the_container_cgroup() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    let name = format!("mem-{}", std::process::id());
    let out_path = env.work().join("memory.out");
    let err_path = env.work().join("memory.err");
    let script = "cat /proc/self/cgroup; echo ready; sleep 300";
    let mut cmd = env.image_command(&[
        "run", "--rm", "--name", &name, "--net", "none", "--memory", "64m", "bb:1", "/bin/sh",
        "-c", script,
    ]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"));
    let mut child = ChildGuard(cmd.spawn().expect("start berth image run"));

    // Wait until the container has said where it is, while it keeps running.
    let deadline = Instant::now() + Duration::from_secs(120);
    let output = loop {
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("ready\n") {
            break text;
        }
        if let Some(status) = child.0.try_wait().expect("poll image run") {
            panic!(
                "image run exited ({status}) before the container was ready:\n{text}\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the container never got ready:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let limit_file = memory_limit_file(&output);
    let limit =
        fs::read_to_string(&limit_file).unwrap_or_else(|e| panic!("{}: {e}", limit_file.display()));

    // BERTH_IMAGE_RUNTIME (e.g. runc) replaces berth's own runtime when set.
    let runtime = std::env::var_os("BERTH_IMAGE_RUNTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.berth.clone());
    let mut kill = Command::new(runtime);
    kill.arg("--root")
        .arg(env.root())
        .args(["kill", &name, "KILL"]);
    env.run(kill).ok();
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(120))
        .expect("image run did not return after its container was killed");
    assert!(
        !status.success(),
        "a killed container's exit code is an error: {status}"
    );
    assert_eq!(
        limit.trim(),
        (64u64 << 20).to_string(),
        "{}",
        limit_file.display()
    );
}

/// One path as a container sees it, parsed from `stat -c '%n|%f|%u|%g|%s|%N'`.
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    target: Option<String>,
}

fn parse_seen(listing: &str) -> std::collections::BTreeMap<String, Seen> {
    let mut out = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(f.len(), 6, "unexpected stat line `{line}`");
        let raw = u32::from_str_radix(f[1], 16).expect("hex mode");
        let kind = match raw & libc::S_IFMT {
            libc::S_IFDIR => "dir",
            libc::S_IFREG => "file",
            libc::S_IFLNK => "symlink",
            libc::S_IFCHR => "char",
            libc::S_IFBLK => "block",
            libc::S_IFIFO => "fifo",
            _ => "socket",
        };
        let target = f[5]
            .split_once(" -> ")
            .map(|(_, t)| t.trim_matches('\'').to_string());
        let seen = Seen {
            kind,
            mode: raw & 0o7777,
            uid: f[2].parse().expect("uid"),
            gid: f[3].parse().expect("gid"),
            size: f[4].parse().expect("size"),
            target,
        };
        out.insert(f[0].trim_start_matches('/').to_string(), seen);
    }
    out
}

#[test]
fn image_run_rootfs_is_the_image_as_umoci_unpacks_it() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.docker_archive, "bb:1").ok();

    // What the container sees through its overlay snapshot: whiteouts and opaque dirs must
    // be applied by overlayfs exactly as umoci applied them when flattening.
    let list = "find / -xdev -exec stat -c '%n|%f|%u|%g|%s|%N' {} +";
    let out = env
        .image(&[
            "run", "--rm", "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c", list,
        ])
        .ok();
    let seen = parse_seen(&out.stdout);
    let hashes = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "--user",
            "0:0",
            "bb:1",
            "/bin/sh",
            "-c",
            "find / -xdev -type f -exec sha256sum {} +",
        ])
        .ok();
    let hashes: std::collections::BTreeMap<String, String> = hashes
        .stdout
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.trim_start_matches('/').to_string(), h.to_string()))
        .collect();

    let expected = tree::snapshot(&image.umoci_bundle.join("rootfs"));
    let mut differences = Vec::new();
    for (path, want) in &expected.nodes {
        let key = path.to_string_lossy().to_string();
        let Some(got) = seen.get(&key) else {
            differences.push(format!("missing in the container: /{key}"));
            continue;
        };
        let mut what = Vec::new();
        if got.kind != want.kind {
            what.push(format!("kind {} != {}", got.kind, want.kind));
        }
        if want.kind != "symlink" && got.mode != want.mode {
            what.push(format!("mode {:o} != {:o}", got.mode, want.mode));
        }
        if (got.uid, got.gid) != (want.uid, want.gid) {
            what.push(format!(
                "owner {}:{} != {}:{}",
                got.uid, got.gid, want.uid, want.gid
            ));
        }
        if want.size.is_some_and(|s| s != got.size) {
            what.push(format!("size {} != {:?}", got.size, want.size));
        }
        let want_target = want
            .target
            .as_ref()
            .map(|t| t.to_string_lossy().to_string());
        if want_target.is_some() && got.target != want_target {
            what.push(format!("target {:?} != {want_target:?}", got.target));
        }
        if want.sha256.is_some() && hashes.get(&key) != want.sha256.as_ref() {
            what.push(format!(
                "sha256 {:?} != {:?}",
                hashes.get(&key),
                want.sha256
            ));
        }
        if !what.is_empty() {
            differences.push(format!("/{key}: {}", what.join(", ")));
        }
    }
    // Nothing deleted by a whiteout or hidden by an opaque dir may show through.
    for path in seen.keys() {
        let hidden = [
            "etc/deleteme",
            "data/old/a",
            "data/old/sub",
            "srv/www/index.html",
        ];
        if hidden
            .iter()
            .any(|h| path == h || path.starts_with(&format!("{h}/")))
            || path.contains(".wh.")
        {
            differences.push(format!(
                "visible although deleted by a later layer: /{path}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the container's rootfs differs from umoci's unpack:\n{}",
        differences.join("\n")
    );
}

/// An image of 127 layers, as the largest real images have (mount(2)'s page of options held
/// about 40 store layers): `image run` mounts it, and the container sees every layer's own
/// file and the top layer's version of the file that all of them write.
#[test]
fn image_run_mounts_an_image_of_127_layers() {
    let env = ImageEnv::new();
    let dir = env.work().join("layers127");
    let mut layout = OciLayout::new(&dir);
    layout.add_layer(
        &busybox_layer(&["sh", "cat", "ls", "wc"]),
        Compression::Gzip,
    );
    for i in 1..127 {
        let mut t = RawTar::new();
        let n = format!("{i}\n");
        t.dir("layers/", 0o755)
            .file(&format!("layers/{i:03}"), 0o644, n.as_bytes())
            .file("top", 0o644, n.as_bytes());
        layout.add_layer(&t.finish(), Compression::Gzip);
    }
    layout.tag("t", serde_json::json!({}));
    env.import(&dir, "many:1").ok();
    let script = "ls /layers | wc -l; cat /top /layers/001 /layers/126";
    let out = env
        .image(&[
            "run", "--rm", "--net", "none", "many:1", "/bin/sh", "-c", script,
        ])
        .ok();
    assert_eq!(out.stdout, "126\n126\n1\n126\n", "{out}");
}
