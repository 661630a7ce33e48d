//! Layer semantics end to end (issue 16): what `image run` and `image unpack` show for
//! images whose layers repeat, shadow or whiteout each other, and images whose files would
//! make bundle generation read something other than a small regular file.

use std::fs;

use berth_tests::images::layout::{busybox_layer, Compression, OciLayout, RawTar};
use berth_tests::images::{tree, ImageEnv};
use serde_json::json;

const APPLETS: &[&str] = &["sh", "cat", "ls", "echo", "id", "sleep", "true"];

/// Imports the layout at `dir` as `name`.
fn import(env: &ImageEnv, dir: &std::path::Path, name: &str) {
    env.import(dir, name).ok();
}

#[test]
fn an_image_listing_one_layer_twice_runs() {
    let env = ImageEnv::new();
    let dir = env.work().join("twice");
    let mut layout = OciLayout::new(&dir);
    let mut a = RawTar::new();
    a.dir("etc/", 0o755).file("etc/which", 0o644, b"a\n");
    let a = a.finish();
    let mut b = RawTar::new();
    b.dir("etc/", 0o755).file("etc/which", 0o644, b"b\n");
    layout.add_layer(&busybox_layer(APPLETS), Compression::Gzip);
    layout.add_layer(&a, Compression::Gzip);
    layout.add_layer(&b.finish(), Compression::Gzip);
    layout.add_layer(&a, Compression::Gzip);
    layout.tag("latest", json!({"Cmd": ["/bin/cat", "/etc/which"]}));
    import(&env, &dir, "twice:1");
    let out = env.image(&["run", "--rm", "twice:1"]).ok();
    assert_eq!(out.stdout, "a\n", "the top copy of layer a wins: {out}");
    let bundle = env.work().join("bundle");
    env.unpack("twice:1", &bundle);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/which")).expect("etc/which"),
        "a\n"
    );
    env.assert_nothing_left_running("after run --rm");
}

/// `umoci unpack` of the layout at `dir` (tag `latest`) into `work/umoci`: its rootfs.
fn umoci_rootfs(env: &ImageEnv, dir: &std::path::Path) -> std::path::PathBuf {
    berth_tests::require_program("umoci", "umoci");
    let bundle = env.work().join("umoci");
    let image = format!("{}:latest", dir.display());
    let mut cmd = std::process::Command::new("umoci");
    cmd.args(["unpack", "--image", &image, bundle.to_str().expect("utf-8")]);
    env.run(cmd).ok();
    bundle.join("rootfs")
}

/// berth's `image unpack` rootfs equals umoci's, file by file.
#[track_caller]
fn assert_unpacks_like_umoci(
    env: &ImageEnv,
    dir: &std::path::Path,
    name: &str,
) -> std::path::PathBuf {
    let bundle = env.work().join("berth");
    env.unpack(name, &bundle);
    let ours = bundle.join("rootfs");
    let theirs = umoci_rootfs(env, dir);
    let diff = tree::diff(&tree::snapshot(&theirs), &tree::snapshot(&ours));
    assert!(
        diff.is_empty(),
        "berth's unpack differs from umoci's:\n{}",
        diff.join("\n")
    );
    ours
}

/// A usrmerged base (`lib -> usr/lib`) and a later layer writing `lib/x.so` without a `lib/`
/// entry: the file lands in usr/lib, the link stays, in `image unpack` (as umoci) and in
/// `image run`'s overlay alike.
#[test]
fn a_later_layer_writes_through_the_base_layers_symlinks() {
    let env = ImageEnv::new();
    let dir = env.work().join("usrmerge");
    let mut layout = OciLayout::new(&dir);
    let mut base = RawTar::new();
    base.dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .file("usr/lib/base.so", 0o644, b"base\n")
        .symlink("lib", "usr/lib")
        .symlink("lib64", "/usr/lib");
    let mut top = RawTar::new();
    top.file("lib/x.so", 0o644, b"x\n")
        .file("lib64/y.so", 0o644, b"y\n")
        .file("lib/.wh.base.so", 0o644, b"");
    layout.add_layer(&busybox_layer(APPLETS), Compression::Gzip);
    layout.add_layer(&base.finish(), Compression::Gzip);
    layout.add_layer(&top.finish(), Compression::Gzip);
    layout.tag("latest", json!({"Cmd": ["/bin/ls", "/usr/lib"]}));
    import(&env, &dir, "usrmerge:1");
    let rootfs = assert_unpacks_like_umoci(&env, &dir, "usrmerge:1");
    assert_eq!(
        fs::read(rootfs.join("usr/lib/x.so")).expect("usr/lib/x.so"),
        b"x\n"
    );
    assert!(fs::symlink_metadata(rootfs.join("lib"))
        .expect("lib")
        .is_symlink());
    let out = env.image(&["run", "--rm", "usrmerge:1"]).ok();
    assert_eq!(out.stdout, "x.so\ny.so\n", "{out}");
    let out = env
        .image(&[
            "run",
            "--rm",
            "usrmerge:1",
            "/bin/cat",
            "/lib/x.so",
            "/lib64/y.so",
        ])
        .ok();
    assert_eq!(out.stdout, "x\ny\n", "{out}");
}

/// Whiteouts and opaque directories in the orders the OCI layer rules allow, compared with
/// umoci and checked in `image run`.
#[test]
fn whiteouts_and_opaque_dirs_follow_the_layer_rules_like_umoci() {
    let env = ImageEnv::new();
    let dir = env.work().join("rules");
    let mut layout = OciLayout::new(&dir);
    let mut base = RawTar::new();
    base.dir("d/", 0o755)
        .file("d/old", 0o644, b"old\n")
        .dir("o/", 0o755)
        .file("o/old", 0o644, b"old\n")
        .dir("p/", 0o755)
        .file("p/old", 0o644, b"old\n")
        .file("gone", 0o644, b"gone\n");
    let mut top = RawTar::new();
    top.file(".wh.d", 0o644, b"")
        .dir("d/", 0o755)
        .file("d/new", 0o644, b"new\n")
        .file("o/.wh..wh..opq", 0o644, b"")
        .file("o/new", 0o644, b"new\n")
        .dir("p/", 0o755)
        .file("p/new", 0o644, b"new\n")
        .file("p/.wh..wh..opq", 0o644, b"")
        .file(".wh.gone", 0o644, b"");
    layout.add_layer(&busybox_layer(APPLETS), Compression::Gzip);
    layout.add_layer(&base.finish(), Compression::Gzip);
    layout.add_layer(&top.finish(), Compression::Gzip);
    layout.tag("latest", json!({"Cmd": ["/bin/ls", "/d", "/o", "/p"]}));
    import(&env, &dir, "rules:1");
    let rootfs = assert_unpacks_like_umoci(&env, &dir, "rules:1");
    assert!(!rootfs.join("d/old").exists() && !rootfs.join("gone").exists());
    let out = env.image(&["run", "--rm", "rules:1"]).ok();
    assert_eq!(out.stdout, "/d:\nnew\n\n/o:\nnew\n\n/p:\nnew\n", "{out}");
}

/// An opaque marker at a layer's root hides every layer below it.
#[test]
fn an_opaque_marker_at_the_root_hides_the_layers_below() {
    let env = ImageEnv::new();
    let dir = env.work().join("rootopq");
    let mut layout = OciLayout::new(&dir);
    let mut old = RawTar::new();
    old.file("old", 0o644, b"old\n");
    let mut top = RawTar::new();
    top.file(".wh..wh..opq", 0o644, b"")
        .file("new", 0o644, b"new\n");
    layout.add_layer(&old.finish(), Compression::Gzip);
    layout.add_layer(&busybox_layer(APPLETS), Compression::Gzip);
    layout.add_layer(&top.finish(), Compression::Gzip);
    layout.tag("latest", json!({"Cmd": ["/bin/ls", "/"]}));
    import(&env, &dir, "rootopq:1");
    let bundle = env.work().join("bundle");
    env.unpack("rootopq:1", &bundle);
    let mut names: Vec<String> = fs::read_dir(bundle.join("rootfs"))
        .expect("rootfs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["new"], "image unpack");
    // No /bin left to run: the mount itself shows the same.
    let out = env.image(&["run", "--rm", "rootopq:1"]).failed();
    assert!(out.stderr.contains("/bin/ls"), "{out}");
}
