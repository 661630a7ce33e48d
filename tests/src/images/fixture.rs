//! The multi-layer busybox image, built with the real tools (`umoci`, `skopeo`, GNU `tar`).
//!
//! Layers:
//! 1. (umoci repack) /bin/busybox from busybox-static with applet symlinks, a hard link, a
//!    setuid file, a fifo, a char device, a sticky /tmp, a home owned by 1000:1000, a file
//!    with a file capability and one with a user xattr, files later deleted or replaced.
//! 2. (umoci repack) deletes /etc/deleteme (a whiteout), adds /etc/added, changes a mode.
//! 3. (GNU tar, umoci raw add-layer) replaces /data/old with an opaque dir holding only `b`;
//!    the entries come in the order GNU tar reads the directory.
//! 4. (tar crate, umoci raw add-layer) replaces /srv/www with an opaque dir whose marker
//!    comes before the dir's own entry, and whose parent /srv has no entry in the layer.
//!
//! The image config sets Env, Cmd, WorkingDir, User (a name from /etc/passwd), a label and
//! an exposed port.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::layout::RawTar;
use super::run_tool;

/// The tag of the fixture inside its layout.
pub const TAG: &str = "bb";
/// The busybox applets linked in /bin.
pub const APPLETS: &[&str] = &[
    "sh",
    "echo",
    "cat",
    "ls",
    "id",
    "pwd",
    "env",
    "true",
    "false",
    "sleep",
    "test",
    "mkdir",
    "touch",
    "rm",
    "printf",
    "stat",
    "sync",
    "find",
    "sha256sum",
    "xargs",
];
/// The content of /etc/os-release in the image.
pub const OS_RELEASE: &str = "NAME=\"Berth busybox fixture\"\nID=berth-fixture\n";
/// What the image's Cmd prints.
pub const CMD_OUTPUT: &str = "hello from the image cmd";

/// The fixture in its three forms plus umoci's own unpack of it.
pub struct BusyboxImage {
    /// OCI image layout directory (tag [`TAG`]).
    pub layout: PathBuf,
    /// `skopeo copy oci:... oci-archive:...`
    pub oci_archive: PathBuf,
    /// `skopeo copy oci:... docker-archive:...`
    pub docker_archive: PathBuf,
    /// `umoci unpack` of the layout: `config.json` and `rootfs/`.
    pub umoci_bundle: PathBuf,
}

/// Builds the image under `work` (which must exist). Needs root, umoci, skopeo, tar and
/// busybox-static.
pub fn build(work: &Path, scratch: &Path) -> BusyboxImage {
    crate::require_program("umoci", "umoci");
    crate::require_program("skopeo", "skopeo");
    crate::require_program("tar", "tar");
    crate::require_program("setcap", "libcap2-bin");
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is required: install it with `apt-get install -y busybox-static`"
    );

    let layout = work.join("layout");
    let image = format!("{}:{TAG}", layout.display());
    let bundle = work.join("build-bundle");
    let bundle_s = bundle.to_str().expect("utf-8 path").to_string();
    let rootfs = bundle.join("rootfs");
    let umoci = |args: &[&str]| run_tool("umoci", args, scratch);

    umoci(&["init", "--layout", layout.to_str().expect("utf-8 path")]);
    umoci(&["new", "--image", &image]);

    // Layer 1.
    umoci(&["unpack", "--image", &image, &bundle_s]);
    for dir in [
        "bin",
        "etc",
        "data/old/sub",
        "srv/www",
        "home/app",
        "tmp",
        "root",
    ] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in fixture");
    }
    chmod(&rootfs.join("tmp"), 0o1777);
    chmod(&rootfs.join("root"), 0o700);
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .expect("applet symlink");
    }
    fs::hard_link(
        rootfs.join("bin/busybox"),
        rootfs.join("bin/busybox-hardlink"),
    )
    .expect("hard link");
    write(&rootfs.join("bin/setuid-file"), "setuid\n", 0o4755);
    write(&rootfs.join("bin/setgid-file"), "setgid\n", 0o2711);
    write(&rootfs.join("etc/os-release"), OS_RELEASE, 0o644);
    write(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        0o644,
    );
    write(&rootfs.join("etc/group"), "root:x:0:\napp:x:1001:\n", 0o644);
    write(&rootfs.join("etc/deleteme"), "deleted in layer 2\n", 0o644);
    write(&rootfs.join("etc/mode-changes"), "mode changes\n", 0o644);
    write(&rootfs.join("data/old/a"), "replaced by layer 3\n", 0o644);
    write(
        &rootfs.join("data/old/sub/c"),
        "replaced by layer 3\n",
        0o600,
    );
    write(
        &rootfs.join("srv/www/index.html"),
        "replaced by layer 4\n",
        0o644,
    );
    write(&rootfs.join("home/app/.profile"), "# app\n", 0o644);
    chown(&rootfs.join("home/app"), 1000, 1001);
    chown(&rootfs.join("home/app/.profile"), 1000, 1001);
    nix::unistd::mkfifo(
        &rootfs.join("tmp/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    nix::sys::stat::mknod(
        &rootfs.join("etc/null-device"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    write(&rootfs.join("bin/capability-file"), "cap_net_raw\n", 0o755);
    run_tool(
        "setcap",
        &[
            "cap_net_raw+ep",
            rootfs.join("bin/capability-file").to_str().expect("utf-8"),
        ],
        scratch,
    );
    write(&rootfs.join("etc/xattr-file"), "has a user xattr\n", 0o644);
    set_user_xattr(
        &rootfs.join("etc/xattr-file"),
        "user.berth.fixture",
        b"layer 1",
    );
    umoci(&["repack", "--image", &image, &bundle_s]);
    fs::remove_dir_all(&bundle).expect("remove build bundle");

    // Layer 2: a whiteout and a mode change.
    umoci(&["unpack", "--image", &image, &bundle_s]);
    fs::remove_file(rootfs.join("etc/deleteme")).expect("rm deleteme");
    write(&rootfs.join("etc/added"), "added in layer 2\n", 0o640);
    chmod(&rootfs.join("etc/mode-changes"), 0o600);
    umoci(&["repack", "--image", &image, &bundle_s]);
    fs::remove_dir_all(&bundle).expect("remove build bundle");

    // Layer 3: an opaque dir written by GNU tar.
    let stage = work.join("layer3");
    fs::create_dir_all(stage.join("data/old")).expect("mkdir stage");
    write(&stage.join("data/old/.wh..wh..opq"), "", 0o644);
    write(&stage.join("data/old/b"), "added in layer 3\n", 0o644);
    chmod(&stage.join("data"), 0o755);
    chmod(&stage.join("data/old"), 0o755);
    let layer3 = work.join("layer3.tar");
    run_tool(
        "tar",
        &[
            "-C",
            stage.to_str().expect("utf-8 path"),
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
            layer3.to_str().expect("utf-8 path"),
            "data",
        ],
        scratch,
    );
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        layer3.to_str().expect("utf-8 path"),
    ]);

    // Layer 4: opaque marker before its dir's entry, parent without an entry.
    let mut tar = RawTar::new();
    tar.file("srv/www/.wh..wh..opq", 0o644, b"")
        .dir("srv/www/", 0o750)
        .file("srv/www/new.html", 0o644, b"added in layer 4\n");
    let layer4 = work.join("layer4.tar");
    fs::write(&layer4, tar.finish()).expect("write layer 4");
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        layer4.to_str().expect("utf-8 path"),
    ]);

    umoci(&[
        "config",
        "--image",
        &image,
        "--config.env",
        "FOO=bar from the image",
        "--config.cmd",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        &format!("echo {CMD_OUTPUT}"),
        "--config.workingdir",
        "/home/app",
        "--config.user",
        "app",
        "--config.label",
        "com.example.fixture=busybox",
        "--config.exposedports",
        "8080/tcp",
    ]);

    let umoci_bundle = work.join("umoci-bundle");
    umoci(&[
        "unpack",
        "--image",
        &image,
        umoci_bundle.to_str().expect("utf-8 path"),
    ]);

    let oci_archive = work.join("image.oci.tar");
    let docker_archive = work.join("image.docker.tar");
    let src = format!("oci:{}:{TAG}", layout.display());
    run_tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &src,
            &format!("oci-archive:{}", oci_archive.display()),
        ],
        scratch,
    );
    run_tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &src,
            &format!("docker-archive:{}:bb:latest", docker_archive.display()),
        ],
        scratch,
    );

    BusyboxImage {
        layout,
        oci_archive,
        docker_archive,
        umoci_bundle,
    }
}

fn set_user_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let c_name = CString::new(name).expect("name without NUL");
    // SAFETY: both strings are NUL-terminated; value is a readable buffer of the length passed.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {} (the test dir's filesystem must take user xattrs)",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).expect("write fixture file");
    chmod(path, mode);
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture file");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown fixture file");
}
