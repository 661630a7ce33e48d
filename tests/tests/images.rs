//! End-to-end tests of `berth image`: import in three forms compared with umoci (here), a
//! hostile layer corpus (hostile.rs), tampered blobs, a killed import, concurrent imports and
//! layer garbage collection (store.rs), and containers run straight from images (run.rs).
//!
//! Run as root after building the binary into the same target dir:
//! `cargo build -p berth --bins && cargo test -p berth-tests --test images`.

use std::fs;
use std::path::{Path, PathBuf};

use berth_tests::images::{fixture, tree, ImageEnv};
use serde_json::{json, Value};

#[path = "images/cleanup.rs"]
mod cleanup;
#[path = "images/corpus.rs"]
mod corpus;
#[path = "images/formats.rs"]
mod formats;
#[path = "images/hostile.rs"]
mod hostile;
#[path = "images/net.rs"]
mod net;
#[path = "images/pull.rs"]
mod pull;
#[path = "images/pull_hostile.rs"]
mod pull_hostile;
#[path = "images/pull_resume.rs"]
mod pull_resume;
#[path = "images/push.rs"]
mod push;
#[path = "images/registry_auth.rs"]
mod registry_auth;
#[path = "images/run.rs"]
mod run;
#[path = "images/semantics.rs"]
mod semantics;
#[path = "images/store.rs"]
mod store;

// ---------------------------------------------------------------------------------------
// Import of real-tool images, compared file by file with `umoci unpack`.

/// Imports one form of the busybox fixture, unpacks it with berth and compares rootfs and
/// config.json with umoci's unpack of the same image.
fn import_and_compare_with_umoci(form: fn(&fixture::BusyboxImage) -> PathBuf) {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    let expected = tree::snapshot(&image.umoci_bundle.join("rootfs"));
    assert_fixture_exercises_layers(&expected);

    env.import(&form(&image), "bb:1").ok();
    let listed = env.list();
    assert!(
        listed.len() == 1 && listed[0].to_string().contains("bb:1"),
        "image ls should list bb:1 only: {listed:?}"
    );
    let out = env.image(&["inspect", "bb:1"]).ok();
    let inspected: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("image inspect is not JSON ({e}): {out}"));
    assert_eq!(
        inspected.pointer("/config/rootfs/diff_ids"),
        Some(&layout_diff_ids(&image.layout)),
        "image inspect shows other layers than the image has: {out}"
    );
    let bundle = env.work().join("berth-bundle");
    env.unpack("bb:1", &bundle);

    let actual = tree::snapshot(&bundle.join("rootfs"));
    let differences = tree::diff(&expected, &actual);
    assert!(
        differences.is_empty(),
        "berth's rootfs differs from umoci's ({} differences):\n{}",
        differences.len(),
        differences.join("\n")
    );
    compare_configs(
        &image.umoci_bundle.join("config.json"),
        &bundle.join("config.json"),
    );
}

/// The diff_ids in the config of the (only) image of an OCI layout.
fn layout_diff_ids(layout: &Path) -> Value {
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let blob = |d: &Value| {
        let d = d.as_str().expect("digest string");
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read(layout.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    let config = read(blob(&manifest["config"]["digest"]));
    let diff_ids = config["rootfs"]["diff_ids"].clone();
    assert_eq!(
        diff_ids.as_array().map(Vec::len),
        Some(4),
        "the fixture has 4 layers"
    );
    diff_ids
}

/// Guards the fixture itself: umoci's unpack shows the whiteout and both opaque dirs applied,
/// so a comparison with it really tests them.
fn assert_fixture_exercises_layers(umoci: &tree::Tree) {
    let has = |p: &str| umoci.nodes.contains_key(Path::new(p));
    assert!(
        !has("etc/deleteme"),
        "fixture: layer 2 whiteout not applied"
    );
    assert!(has("etc/added"), "fixture: layer 2 missing");
    assert!(has("data/old/b") && !has("data/old/a") && !has("data/old/sub"));
    assert!(has("srv/www/new.html") && !has("srv/www/index.html"));
    assert!(!has("data/old/.wh..wh..opq") && !has("srv/www/.wh..wh..opq"));
    assert_eq!(umoci.nodes[Path::new("bin/setuid-file")].mode, 0o4755);
    assert_eq!(umoci.nodes[Path::new("etc/null-device")].kind, "char");
    assert_eq!(umoci.hardlinks.len(), 1, "fixture: busybox hard link");
    let xattrs = |p: &str| {
        umoci.nodes[Path::new(p)]
            .xattrs
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(xattrs("bin/capability-file"), ["security.capability"]);
    assert_eq!(xattrs("etc/xattr-file"), ["user.berth.fixture"]);
}

/// The parts of config.json that come from the image config must match umoci's.
fn compare_configs(umoci: &Path, berth: &Path) {
    let read = |p: &Path| -> Value {
        let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (want, got) = (read(umoci), read(berth));
    for pointer in [
        "/process/args",
        "/process/cwd",
        "/process/user/uid",
        "/process/user/gid",
        "/root/path",
    ] {
        assert_eq!(
            got.pointer(pointer),
            want.pointer(pointer),
            "config.json {pointer}: berth {:?}, umoci {:?}",
            got.pointer(pointer),
            want.pointer(pointer)
        );
    }
    let env: Vec<&str> = got["process"]["env"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        env.contains(&"FOO=bar from the image"),
        "config.json env lacks the image's FOO: {env:?}"
    );
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "config.json env has no PATH: {env:?}"
    );
    assert_eq!(
        got.pointer("/annotations/com.example.fixture"),
        Some(&json!("busybox")),
        "the image label is not an annotation: {:?}",
        got.get("annotations")
    );
}

#[test]
fn oci_layout_unpacks_like_umoci() {
    import_and_compare_with_umoci(|i| i.layout.clone());
}

#[test]
fn oci_archive_unpacks_like_umoci() {
    import_and_compare_with_umoci(|i| i.oci_archive.clone());
}

#[test]
fn docker_archive_unpacks_like_umoci() {
    import_and_compare_with_umoci(|i| i.docker_archive.clone());
}
