//! A second container that can write this container's rootfs (a shared volume, or
//! the same image directory) races berth while it builds the container: played here
//! by a thread of the test swapping directory entries with renameat2(RENAME_EXCHANGE),
//! which replaces one name by another atomically, as fast as it can.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_tests::runtime::{parse_mountinfo, Bundle, Container, TestEnv};
use serde_json::json;

/// A thread running `step` in a loop until dropped.
struct Racer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Racer {
    fn start(step: impl Fn() + Send + 'static) -> Racer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                step();
            }
        });
        Racer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Swaps the names `a` and `b` (in one directory) atomically; errors are ignored
/// (the runtime may be creating one of them at that moment).
fn exchange(a: &Path, b: &Path) {
    let _ = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    );
}

/// The container's mounts, as its init sees them.
fn mounts_of(c: &Container) -> Vec<berth_tests::runtime::MountEntry> {
    let text = fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap_or_default();
    parse_mountinfo(&text)
}

/// CVE-2021-30465 family: a read-only bind must come out read-only even when its
/// mount point is swapped for a symlink to another mount (/dev/shm) while berth makes
/// it. Every mount of the volume in the container must be read-only after each of 300
/// creates. Before the fix (the remount looked the destination up again by path), the
/// remount hit /dev/shm and the volume stayed writable in about 3% of them (4 of 147).
#[test]
fn read_only_bind_stays_read_only_when_its_mount_point_is_swapped() {
    let env = TestEnv::new("sec-robind");
    let src = env.path().join("volume-src");
    fs::create_dir(&src).expect("mkdir volume source");
    let c = env.container(|b| {
        b.args(&["true"]);
        b.push(
            "/mounts",
            json!({"destination": "/vol", "type": "bind", "source": src,
                   "options": ["bind", "ro"]}),
        );
    });
    let rootfs = c.bundle.rootfs();
    fs::create_dir(rootfs.join("vol")).expect("mkdir vol");
    std::os::unix::fs::symlink("/dev/shm", rootfs.join("vol-swap")).expect("symlink");
    let (a, b) = (rootfs.join("vol"), rootfs.join("vol-swap"));
    let racer = Racer::start(move || exchange(&a, &b));
    const CREATES: usize = 300;
    let mut writable = Vec::new();
    let mut made = 0;
    for i in 0..CREATES {
        if !c.create().success() {
            continue;
        }
        made += 1;
        let src_root = src.to_string_lossy().into_owned();
        for m in mounts_of(&c) {
            if m.root == src_root && !m.options.iter().any(|o| o == "ro") {
                writable.push(format!("create {i}: {} at {}", m.root, m.mount_point));
            }
        }
        c.delete(true).ok();
    }
    drop(racer);
    assert!(made > 0, "no create succeeded under the race");
    assert!(
        writable.is_empty(),
        "the read-only volume came out writable ({} of {made} creates):\n{}",
        writable.len(),
        writable.join("\n")
    );
    c.assert_no_leftovers();
}

/// CVE-2024-45310 class: with /dev on the rootfs itself (no tmpfs), a second container
/// swaps each device node berth makes for a symlink to a host file. Over 150 creates
/// the host file's mode must not change. Before the fix, berth's chmod after mknod
/// followed the symlink and made the host file 0666 within the first few creates.
#[test]
fn device_nodes_swapped_for_symlinks_do_not_change_host_files() {
    let env = TestEnv::new("sec-devnode");
    let secret = env.path().join("host-secret");
    fs::write(&secret, "secret").expect("write secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    let c = env.container(|b| {
        b.args(&["true"]);
        let mounts = b.config["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    });
    let dev = c.bundle.rootfs().join("dev");
    let names = ["null", "zero", "full", "random", "urandom", "tty"];
    for n in names {
        std::os::unix::fs::symlink(&secret, dev.join(format!("swap-{n}"))).expect("symlink");
    }
    let dev2 = dev.clone();
    let racer = Racer::start(move || {
        for n in names {
            let node = dev2.join(n);
            if fs::symlink_metadata(&node).is_ok_and(|m| m.file_type().is_char_device()) {
                exchange(&node, &dev2.join(format!("swap-{n}")));
            }
        }
    });
    const CREATES: usize = 150;
    let mut changed = None;
    for i in 0..CREATES {
        // A fresh /dev for each create: only the swap symlinks, no nodes.
        for entry in fs::read_dir(&dev).expect("read dev").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_swap =
                name.starts_with("swap-") && fs::read_link(entry.path()).is_ok_and(|t| t == secret);
            if !is_swap {
                let _ = fs::remove_file(entry.path());
            }
        }
        for n in names {
            let link = dev.join(format!("swap-{n}"));
            if fs::read_link(&link).ok().as_deref() != Some(secret.as_path()) {
                let _ = fs::remove_file(&link);
                let _ = std::os::unix::fs::symlink(&secret, &link);
            }
        }
        if c.create().success() {
            c.delete(true).ok();
        }
        let mode = fs::metadata(&secret)
            .expect("stat secret")
            .permissions()
            .mode()
            & 0o7777;
        if mode != 0o600 {
            changed = Some((i, mode));
            break;
        }
    }
    drop(racer);
    assert_eq!(
        changed, None,
        "a host file's mode changed through a swapped device node (create, mode)"
    );
    c.assert_no_leftovers();
}

/// One line of the container's mountinfo, with the ids that tie a mount to the one
/// it sits on.
struct MountLine {
    id: u32,
    parent: u32,
    root: String,
    mount_point: String,
    fs_type: String,
    read_only: bool,
}

fn mount_tree(c: &Container) -> Vec<MountLine> {
    let text = fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                root: berth_tests::runtime::unescape_mountinfo(f.get(3)?),
                mount_point: berth_tests::runtime::unescape_mountinfo(f.get(4)?),
                fs_type: post.split(' ').next()?.to_string(),
                read_only: f.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// A fake /proc for the racer to swap in: a sysctl file holding "0" and files where
/// the masked paths are.
fn fake_proc(dir: &Path) -> PathBuf {
    let forward = dir.join("sys/net/ipv4/ip_forward");
    fs::create_dir_all(forward.parent().expect("parent")).expect("mkdir fake proc");
    fs::write(&forward, "0\n").expect("write fake sysctl");
    for f in ["kcore", "keys", "timer_list", "sysrq-trigger"] {
        fs::write(dir.join(f), "fake\n").expect("write fake file");
    }
    forward
}

/// CVE-2025-52881 class: a second container swaps the rootfs's /proc directory for a
/// fake tree while berth starts the container (150 creates). Whatever berth does must
/// happen to the procfs it mounted: the sysctl is set in the container's network
/// namespace, never written into the fake tree, and /proc/keys (masked) and /proc/sys
/// (read-only) are covered on that procfs; or the start is refused. Before the fix
/// (sysctls, masks and read-only binds by path after pivot_root) the fake tree got the
/// sysctl value or the real procfs went unmasked in most of them.
#[test]
fn procfs_swapped_during_start_is_never_used() {
    let env = TestEnv::new("sec-procswap");
    berth_tests::require_program("nsenter", "util-linux");
    assert!(
        Path::new("/proc/keys").exists(),
        "this test checks the mask over /proc/keys: it needs a kernel with CONFIG_KEYS"
    );
    let c = env.container(|b: &mut Bundle| {
        b.args(&["true"]);
        b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}));
    });
    let rootfs = c.bundle.rootfs();
    let fake = rootfs.join("fakeproc");
    fake_proc(&fake);
    let (a, b) = (rootfs.join("proc"), fake.clone());
    let racer = Racer::start(move || exchange(&a, &b));
    const CREATES: usize = 150;
    let mut wrong = Vec::new();
    let mut made = 0;
    for i in 0..CREATES {
        if !c.create().success() {
            continue;
        }
        made += 1;
        let pid = c.pid();
        // The fake tree, under whichever name it has now, was not written.
        for name in ["proc", "fakeproc"] {
            let f = rootfs.join(name).join("sys/net/ipv4/ip_forward");
            if fs::read_to_string(&f).is_ok_and(|t| t != "0\n") {
                wrong.push(format!("create {i}: the sysctl went into the fake tree"));
            }
        }
        let netns = format!("--net=/proc/{pid}/ns/net");
        let out = berth_tests::runtime::run_command(std::process::Command::new("nsenter").args([
            &netns,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ]));
        if out.stdout.trim() != "1" {
            wrong.push(format!("create {i}: the sysctl is not set: {out}"));
        }
        // By mount ids: the racer renames the mount points while we read the table.
        let mounts = mount_tree(&c);
        for p in mounts
            .iter()
            .filter(|m| m.fs_type == "proc" && m.root == "/")
        {
            let below = |name: &str| {
                mounts
                    .iter()
                    .find(|m| m.parent == p.id && m.mount_point.ends_with(&format!("/{name}")))
            };
            if below("keys").is_none() {
                wrong.push(format!(
                    "create {i}: keys of the procfs at {} is not masked",
                    p.mount_point
                ));
            }
            if !below("sys").is_some_and(|m| m.read_only) {
                wrong.push(format!(
                    "create {i}: sys of the procfs at {} is not read-only",
                    p.mount_point
                ));
            }
        }
        c.delete(true).ok();
    }
    drop(racer);
    assert!(made > 0, "no create succeeded under the race");
    assert!(
        wrong.is_empty(),
        "{} failures in {made} creates:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    c.assert_no_leftovers();
}

/// A rootfs whose /dev (no tmpfs over it) already holds a regular file named null: the
/// container would get that file as its /dev/null. berth refuses, naming the node.
/// Before the fix the existing entry was taken as it was.
#[test]
fn existing_entry_in_place_of_a_device_node_is_refused() {
    let env = TestEnv::new("sec-devfile");
    let c = env.container(|b| {
        b.args(&["true"]);
        let mounts = b.config["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    });
    fs::write(c.bundle.rootfs().join("dev/null"), "not a device").expect("write dev/null");
    let out = c.create();
    out.failed();
    assert!(
        out.stderr.contains("creating device /dev/null"),
        "the error names the node:\n{out}"
    );
    c.assert_no_leftovers();
}
