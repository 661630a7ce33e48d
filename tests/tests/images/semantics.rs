//! Layer semantics end to end (issue 16): what `image run` and `image unpack` show for
//! images whose layers repeat, shadow or whiteout each other, and images whose files would
//! make bundle generation read something other than a small regular file.

use std::fs;

use berth_tests::images::layout::{busybox_layer, Compression, OciLayout, RawTar};
use berth_tests::images::ImageEnv;
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
