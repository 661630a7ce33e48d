//! End-to-end tests of `berth image`: import in three forms compared with umoci, a hostile
//! layer corpus, tampered blobs, a killed import, and layer garbage collection.
//!
//! Run as root after building the binary into the same target dir:
//! `cargo build -p berth --bins && cargo test -p berth-tests --test images`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::images::layout::{digest_of, Compression, LayerDesc, OciLayout, RawTar};
use berth_tests::images::{fixture, tree, ImageEnv, Sentinel};
use serde_json::{json, Value};

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

// ---------------------------------------------------------------------------------------
// Hostile layers: refused with the entry named, nothing outside touched, nothing stored.

/// `../` repeated enough to climb from any store directory to `/`.
fn climb() -> String {
    "../".repeat(16)
}

/// Imports an image made of `layers` (in order) and checks it is refused naming `entry`,
/// the sentinel is untouched and the store lists nothing.
fn assert_refused(case: &str, layers: &[Vec<u8>], entry: &str, sentinel: &Sentinel) {
    let env = ImageEnv::new();
    let dir = env.work().join("hostile");
    let mut layout = OciLayout::new(&dir);
    for tar in layers {
        layout.add_layer(tar, Compression::Gzip);
    }
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    let out = env.import(&dir, "hostile:1");
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{case}: the import should have been refused: {out}"
    );
    eprintln!("{case}: refused: {}", out.stderr.trim());
    assert!(
        out.stderr.contains(entry),
        "{case}: the error does not name the entry `{entry}`: {out}"
    );
    sentinel.assert_unchanged(case);
    env.assert_store_empty(case);
}

/// For an entry that is hostile only through a symlink made by a LOWER layer: berth unpacks
/// each layer into its own directory, where that symlink does not exist, so the import may
/// accept the layer (it is then a plain directory shadowing the symlink in the overlay).
/// Either way nothing outside may change: the import and then `image unpack` (which applies
/// all layers into one rootfs, where the symlink does exist) each either refuse naming
/// `entry`, or succeed leaving the sentinel untouched.
fn assert_never_escapes(case: &str, layers: &[Vec<u8>], entry: &str, sentinel: &Sentinel) {
    let env = ImageEnv::new();
    let dir = env.work().join("hostile");
    let mut layout = OciLayout::new(&dir);
    for tar in layers {
        layout.add_layer(tar, Compression::Gzip);
    }
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    let out = env.import(&dir, "hostile:1");
    sentinel.assert_unchanged(case);
    if !out.status.success() {
        assert!(
            out.stderr.contains(entry),
            "{case}: the error does not name `{entry}`: {out}"
        );
        env.assert_store_empty(case);
        return;
    }
    let bundle = env.work().join("bundle");
    let out = env.image(&["unpack", "hostile:1", bundle.to_str().expect("utf-8")]);
    eprintln!("{case}: import accepted; image unpack: {}", out.status);
    sentinel.assert_unchanged(case);
    if !out.status.success() {
        assert!(
            out.stderr.contains(entry),
            "{case}: the error does not name `{entry}`: {out}"
        );
    }
    env.image(&["rm", "hostile:1"]).ok();
    env.assert_store_empty(case);
    sentinel.assert_unchanged(case);
}

#[test]
fn hostile_dotdot_entry_is_refused() {
    let sentinel = Sentinel::new();
    for target in ["sentinel", "pwned"] {
        let name = format!("{}{}/{target}", climb(), sentinel.dir_relative());
        let mut tar = RawTar::new();
        tar.file(&name, 0o644, b"pwned\n");
        assert_refused("../ file", &[tar.finish()], &name, &sentinel);
    }
    let name = format!("{}{}/pwned-dir", climb(), sentinel.dir_relative());
    let mut tar = RawTar::new();
    tar.dir(&name, 0o755);
    assert_refused("../ dir", &[tar.finish()], &name, &sentinel);
}

#[test]
fn hostile_absolute_entry_is_refused() {
    let sentinel = Sentinel::new();
    for target in ["sentinel", "pwned"] {
        let name = format!("{}/{target}", sentinel.dir().display());
        let mut tar = RawTar::new();
        tar.file(&name, 0o644, b"pwned\n");
        assert_refused("absolute file", &[tar.finish()], &name, &sentinel);
    }
}

#[test]
fn hostile_write_through_symlink_is_refused() {
    let sentinel = Sentinel::new();
    let absolute = sentinel.dir().display().to_string();
    let relative = format!("{}{}", climb(), sentinel.dir_relative());
    for (case, target) in [
        ("absolute symlink", &absolute),
        ("relative symlink", &relative),
    ] {
        for victim in ["sentinel", "pwned"] {
            let name = format!("escape/{victim}");
            let mut tar = RawTar::new();
            tar.symlink("escape", target).file(&name, 0o644, b"pwned\n");
            assert_refused(case, &[tar.finish()], &name, &sentinel);
        }
    }
}

#[test]
fn hostile_write_through_symlink_from_lower_layer_never_escapes() {
    let sentinel = Sentinel::new();
    let mut lower = RawTar::new();
    lower
        .dir("etc/", 0o755)
        .symlink("etc/escape", &sentinel.dir().display().to_string());
    let lower = lower.finish();
    for victim in ["sentinel", "pwned"] {
        let name = format!("etc/escape/{victim}");
        let mut upper = RawTar::new();
        upper.file(&name, 0o644, b"pwned\n");
        assert_never_escapes(
            "symlink in layer 1, write in layer 2",
            &[lower.clone(), upper.finish()],
            &name,
            &sentinel,
        );
    }
}

#[test]
fn hostile_hardlink_to_host_file_is_refused() {
    let sentinel = Sentinel::new();
    let absolute = format!("{}/sentinel", sentinel.dir().display());
    let relative = format!("{}{}/sentinel", climb(), sentinel.dir_relative());
    for (case, target) in [
        ("absolute hardlink", absolute),
        ("relative hardlink", relative),
    ] {
        let mut tar = RawTar::new();
        // If the link were made, the second entry would overwrite the host file through it.
        tar.hardlink("stolen", &target)
            .file("stolen", 0o644, b"pwned\n");
        assert_refused(case, &[tar.finish()], "stolen", &sentinel);
    }
    // A link target that is itself inside the layer, but only through a symlink to outside.
    let mut tar = RawTar::new();
    tar.symlink("escape", &sentinel.dir().display().to_string())
        .hardlink("stolen", "escape/sentinel")
        .file("stolen", 0o644, b"pwned\n");
    assert_refused(
        "hardlink through a symlink",
        &[tar.finish()],
        "stolen",
        &sentinel,
    );
}

#[test]
fn hostile_whiteout_through_symlink_is_refused() {
    let sentinel = Sentinel::new();
    let absolute = sentinel.dir().display().to_string();
    let relative = format!("{}{}", climb(), sentinel.dir_relative());
    for target in [&absolute, &relative] {
        let mut same = RawTar::new();
        same.symlink("link", target)
            .file("link/.wh.sentinel", 0o644, b"");
        assert_refused(
            "whiteout through a symlink of the same layer",
            &[same.finish()],
            "link/.wh.sentinel",
            &sentinel,
        );
    }
}

#[test]
fn hostile_whiteout_through_symlink_from_lower_layer_never_escapes() {
    let sentinel = Sentinel::new();
    let absolute = sentinel.dir().display().to_string();
    let relative = format!("{}{}", climb(), sentinel.dir_relative());
    for target in [&absolute, &relative] {
        for whiteout in ["link/.wh.sentinel", "link/.wh..wh..opq"] {
            let mut lower = RawTar::new();
            lower.symlink("link", target);
            let mut upper = RawTar::new();
            upper.file(whiteout, 0o644, b"");
            assert_never_escapes(
                "whiteout through a symlink of a lower layer",
                &[lower.finish(), upper.finish()],
                whiteout,
                &sentinel,
            );
        }
    }
}

#[test]
fn compression_bomb_is_refused_past_the_configured_limit() {
    // 64 MiB of zeros: a few tens of KiB compressed.
    let mut tar = RawTar::new();
    tar.file("bomb", 0o644, &vec![0u8; 64 << 20]);
    let tar = tar.finish();
    for compression in [Compression::Gzip, Compression::Zstd] {
        let case = format!("{compression:?} bomb");
        let env = ImageEnv::new();
        let dir = env.work().join("bomb");
        let mut layout = OciLayout::new(&dir);
        let layer = layout.add_layer(&tar, compression);
        layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
        assert!(layer.size < (1 << 20), "{case}: the fixture is not a bomb");
        let path = dir.to_str().expect("utf-8");

        let out = env.image(&[
            "import",
            path,
            "--name",
            "bomb:1",
            "--max-layer-size",
            "16m",
        ]);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "{case}: a layer inflating past --max-layer-size must be refused: {out}"
        );
        assert!(
            out.stderr
                .contains(layer.digest.trim_start_matches("sha256:")),
            "{case}: the error does not name the layer {}: {out}",
            layer.digest
        );
        env.assert_store_empty(&case);
        assert!(
            env.store_bytes() < 16 << 20,
            "{case}: the refused import left {} bytes in the store",
            env.store_bytes()
        );

        // The same layer under a limit it fits in is fine: the limit is what refused it.
        env.image(&[
            "import",
            path,
            "--name",
            "bomb:1",
            "--max-layer-size",
            "128m",
        ])
        .ok();
        assert_eq!(env.list().len(), 1, "{case}: imported under a larger limit");
    }
}

// ---------------------------------------------------------------------------------------
// Tampered blobs.

/// A small valid layer: one directory and one file.
fn small_layer(file: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = RawTar::new();
    tar.dir("data/", 0o755)
        .file(&format!("data/{file}"), 0o644, content);
    tar.finish()
}

#[test]
fn tampered_layer_blob_is_refused_naming_it() {
    let env = ImageEnv::new();
    let dir = env.work().join("tampered-layer");
    let mut layout = OciLayout::new(&dir);
    let good = layout.add_layer(&small_layer("a", b"original content\n"), Compression::Gzip);
    let bad = layout.add_layer(&small_layer("b", b"original content\n"), Compression::None);
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    // Same size, still a valid tar: only the digest can tell.
    let path = layout.blob_path(&bad.digest);
    let mut bytes = fs::read(&path).expect("read layer blob");
    let at = find(&bytes, b"original").expect("file content inside the tar");
    bytes[at] = b'O';
    fs::write(&path, &bytes).expect("tamper layer blob");

    let out = env.import(&dir, "tampered:1").failed();
    assert!(
        out.stderr
            .contains(bad.digest.trim_start_matches("sha256:")),
        "the error does not name the tampered blob {}: {out}",
        bad.digest
    );
    assert!(
        !out.stderr
            .contains(good.digest.trim_start_matches("sha256:")),
        "the error blames the intact blob {}: {out}",
        good.digest
    );
    env.assert_store_empty("tampered layer");
}

#[test]
fn tampered_config_blob_is_refused_naming_it() {
    let env = ImageEnv::new();
    let dir = env.work().join("tampered-config");
    let mut layout = OciLayout::new(&dir);
    layout.add_layer(&small_layer("a", b"content\n"), Compression::Gzip);
    let manifest = layout.tag("latest", json!({"Cmd": ["/bin/true"], "Env": ["A=1"]}));
    let config = layout.config_digest(&manifest);
    let path = layout.blob_path(&config);
    let text = fs::read_to_string(&path).expect("read config");
    fs::write(&path, text.replace("A=1", "A=2")).expect("tamper config");

    let out = env.import(&dir, "tampered:1").failed();
    assert!(
        out.stderr.contains(config.trim_start_matches("sha256:")),
        "the error does not name the tampered config blob {config}: {out}"
    );
    env.assert_store_empty("tampered config");
}

#[test]
fn wrong_diff_id_is_refused_naming_the_layer() {
    let env = ImageEnv::new();
    let dir = env.work().join("wrong-diff-id");
    let mut layout = OciLayout::new(&dir);
    let real = small_layer("a", b"content\n");
    let other = small_layer("a", b"other content\n");
    let (digest, size) = layout.blob(&Compression::Gzip.compress(&real));
    // The blob's digest is right, but the config claims the uncompressed layer is another one.
    layout.add_layer_desc(LayerDesc {
        digest: digest.clone(),
        diff_id: digest_of(&other),
        size,
        media_type: Compression::Gzip.media_type().to_string(),
    });
    layout.tag("latest", json!({"Cmd": ["/bin/true"]}));

    let out = env.import(&dir, "wrongdiff:1").failed();
    let named = [digest_of(&other), digest_of(&real), digest]
        .iter()
        .any(|d| out.stderr.contains(d.trim_start_matches("sha256:")));
    assert!(
        named,
        "the diff_id mismatch error names no digest of that layer: {out}"
    );
    env.assert_store_empty("wrong diff_id");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Crash safety: an import killed with SIGKILL midway, then repeated.

/// Number and size of the files in the big layer (zeros, so the fixture is quick to make).
const BIG_FILES: usize = 48;
const BIG_FILE_SIZE: u64 = 16 << 20;

/// A layout with one uncompressed layer of [`BIG_FILES`] files, made with GNU tar.
fn big_image(env: &ImageEnv) -> PathBuf {
    let stage = env.work().join("big-stage");
    fs::create_dir_all(stage.join("big")).expect("mkdir big stage");
    fs::write(stage.join("big/README"), "a big layer\n").expect("write README");
    for i in 0..BIG_FILES {
        let file = fs::File::create(stage.join(format!("big/zeros-{i:03}"))).expect("create");
        file.set_len(BIG_FILE_SIZE).expect("size big file");
    }
    let tar_path = env.work().join("big.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&stage)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"]);
    tar.arg(&tar_path).arg("big");
    env.run(tar).ok();
    fs::remove_dir_all(&stage).expect("remove big stage");

    let mut sum = Command::new("sha256sum");
    sum.arg(&tar_path);
    let out = env.run(sum).ok();
    let hex = out
        .stdout
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let digest = format!("sha256:{hex}");
    let dir = env.work().join("big-layout");
    let mut layout = OciLayout::new(&dir);
    let size = fs::metadata(&tar_path).expect("stat big tar").len();
    fs::rename(&tar_path, layout.blob_path(&digest)).expect("move big blob into place");
    layout.add_layer_desc(LayerDesc {
        digest: digest.clone(),
        diff_id: digest,
        size,
        media_type: Compression::None.media_type().to_string(),
    });
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    dir
}

#[test]
fn import_killed_midway_then_repeated_succeeds() {
    berth_tests::require_program("sha256sum", "coreutils");
    let env = ImageEnv::new();
    let image = big_image(&env);
    let empty_store = env.store_bytes();

    let mut child = env
        .image_command(&["import", image.to_str().expect("utf-8"), "--name", "big:1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start berth image import");
    // Wait until the import has written a good part of the data, then kill it.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().expect("poll import") {
            panic!(
                "the import finished ({status}) before it could be killed midway; \
                 the big layer must be made bigger"
            );
        }
        if env.store_bytes() >= empty_store + (64 << 20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import wrote nothing to the store in 300 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL the import");
    child.wait().expect("reap the import");
    env.assert_store_empty("after the killed import");

    env.import(&image, "big:1").ok();
    let listed = env.list();
    assert_eq!(
        listed.len(),
        1,
        "one image after the repeated import: {listed:?}"
    );

    let bundle = env.work().join("bundle");
    env.unpack("big:1", &bundle);
    let rootfs = bundle.join("rootfs/big");
    let zeros = tree::hash_file_of_zeros(BIG_FILE_SIZE);
    for i in 0..BIG_FILES {
        let file = rootfs.join(format!("zeros-{i:03}"));
        let meta = fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(meta.len(), BIG_FILE_SIZE, "{}", file.display());
        if i % 16 == 0 {
            assert_eq!(tree::hash_file(&file), zeros, "{} content", file.display());
        }
    }
    assert_eq!(
        fs::read_to_string(rootfs.join("README")).expect("README"),
        "a big layer\n"
    );
    fs::remove_dir_all(&bundle).expect("remove bundle");

    // Nothing of the killed import may linger once the image is removed.
    env.image(&["rm", "big:1"]).ok();
    env.assert_store_empty("after rm");
    let left = env.store_bytes();
    assert!(
        left < empty_store + (1 << 20),
        "the store still holds {left} bytes after removing its only image \
         (leftovers of the killed import?)"
    );
}

// ---------------------------------------------------------------------------------------
// Layer sharing and garbage collection.

/// A layer with one uniquely named 1 MiB file (random, so nothing compresses it away).
fn marker_layer(marker: &str) -> Vec<u8> {
    let mut content = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ marker.len() as u64;
    for b in content.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut tar = RawTar::new();
    tar.dir("markers/", 0o755)
        .file(&format!("markers/{marker}"), 0o644, &content);
    tar.finish()
}

#[test]
fn image_rm_frees_unreferenced_layers_and_keeps_shared_ones() {
    let env = ImageEnv::new();
    let tag = std::process::id();
    let shared = format!("shared-{tag}");
    let only_a = format!("only-a-{tag}");
    let only_b = format!("only-b-{tag}");
    let dir = env.work().join("two-images");
    let mut layout = OciLayout::new(&dir);
    let shared_layer = marker_layer(&shared);
    layout.add_layer(&shared_layer, Compression::Gzip);
    layout.add_layer(&marker_layer(&only_a), Compression::Gzip);
    layout.tag("a", json!({"Cmd": ["/bin/sh"]}));
    layout.add_layer(&shared_layer, Compression::Gzip);
    layout.add_layer(&marker_layer(&only_b), Compression::Zstd);
    layout.tag("b", json!({"Cmd": ["/bin/sh"]}));
    let empty_store = env.store_bytes();

    // One layout per image (copies sharing the blobs), so no tag selection syntax is needed.
    let dir_a = env.work().join("only-a");
    let dir_b = env.work().join("only-b");
    copy_layout_with_tag(&dir, &dir_a, "a");
    copy_layout_with_tag(&dir, &dir_b, "b");
    env.import(&dir_a, "a:1").ok();
    env.import(&dir_b, "b:1").ok();

    let count = |name: &str| env.find_in_store(name).len();
    assert_eq!(
        count(&shared),
        1,
        "the shared layer is unpacked exactly once"
    );
    assert_eq!(count(&only_a), 1, "a's own layer is unpacked once");
    assert_eq!(count(&only_b), 1, "b's own layer is unpacked once");

    env.image(&["rm", "a:1"]).ok();
    let names: Vec<String> = env.list().iter().map(|v| v.to_string()).collect();
    assert!(
        names.len() == 1 && names[0].contains("b:1"),
        "after rm a:1 only b:1 is listed: {names:?}"
    );
    assert_eq!(count(&only_a), 0, "a's own layer is freed by rm a:1");
    assert_eq!(count(&shared), 1, "the layer b still uses is kept");
    assert_eq!(count(&only_b), 1, "b's own layer is kept");

    // b still unpacks whole from what is left.
    let bundle = env.work().join("bundle-b");
    env.unpack("b:1", &bundle);
    for marker in [&shared, &only_b] {
        let file = bundle.join("rootfs/markers").join(marker);
        assert_eq!(
            fs::metadata(&file).map(|m| m.len()).ok(),
            Some(1 << 20),
            "{marker}"
        );
    }
    assert!(!bundle.join("rootfs/markers").join(&only_a).exists());
    fs::remove_dir_all(&bundle).expect("remove bundle");

    env.image(&["rm", "b:1"]).ok();
    env.assert_store_empty("after removing both images");
    assert_eq!(count(&shared) + count(&only_b), 0, "all layers freed");
    let left = env.store_bytes();
    assert!(
        left < empty_store + (256 << 10),
        "the store still holds {left} bytes with no image in it"
    );
}

/// Copies the layout at `from` to `to` keeping only the manifest tagged `tag` in index.json.
fn copy_layout_with_tag(from: &Path, to: &Path, tag: &str) {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(from).arg(to);
    let status = cp.status().expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
    let index_path = to.join("index.json");
    let mut index: Value =
        serde_json::from_slice(&fs::read(&index_path).expect("index.json")).expect("index JSON");
    let manifests = index["manifests"].as_array().expect("manifests").clone();
    index["manifests"] = Value::Array(
        manifests
            .into_iter()
            .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .collect(),
    );
    fs::write(&index_path, serde_json::to_vec(&index).expect("serialize")).expect("write index");
}
// ---------------------------------------------------------------------------------------
// Running containers straight from an image (needs the runtime's `berth run`).

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
    let host = interfaces(&fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev"));
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "host",
            "bb:1",
            "/bin/cat",
            "/proc/net/dev",
        ])
        .ok();
    assert_eq!(interfaces(&out.stdout), host, "{out}");
}

#[test]
fn image_run_containers_do_not_see_each_others_writes() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    // The first container writes, changes and deletes; it is kept (no --rm).
    let write = "echo one > /tmp/mine && echo changed > /etc/os-release && rm /etc/added \
                 && rm -r /srv/www && cat /tmp/mine /etc/os-release";
    let out = env
        .image(&[
            "run", "--name", "writer", "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
            write,
        ])
        .ok();
    assert_eq!(out.stdout, "one\nchanged\n", "{out}");

    // The second one, from the same image while the first still exists, sees none of it.
    let look = "test -e /tmp/mine && echo mine-present || echo mine-absent; cat /etc/os-release; \
                cat /etc/added; cat /srv/www/new.html";
    let out = env
        .image(&[
            "run", "--name", "reader", "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
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

#[test]
fn concurrent_imports_of_one_image_share_its_layers() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    let names = ["c1:1", "c2:1", "c3:1", "c4:1"];
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            let mut cmd = env.image_command(&[
                "import",
                image.layout.to_str().expect("utf-8"),
                "--name",
                name,
            ]);
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("start an import")
        })
        .collect();
    for (name, child) in names.iter().zip(children) {
        let out = child.wait_with_output().expect("wait for an import");
        assert!(
            out.status.success(),
            "concurrent import of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(env.list().len(), names.len(), "every import is listed");
    // Files that exist in exactly one layer each: every layer is stored once.
    for unique in ["busybox-hardlink", "added", "new.html"] {
        assert_eq!(
            env.find_in_store(unique).len(),
            1,
            "`{unique}` should be stored once, in its layer's directory"
        );
    }
    let bundle = env.work().join("bundle");
    env.unpack("c4:1", &bundle);
    let differences = tree::diff(
        &tree::snapshot(&image.umoci_bundle.join("rootfs")),
        &tree::snapshot(&bundle.join("rootfs")),
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
