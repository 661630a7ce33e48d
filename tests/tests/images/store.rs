//! The store: tampered blobs, an import killed midway, layer sharing and garbage collection,
//! concurrent imports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::images::layout::{digest_of, Compression, LayerDesc, OciLayout, RawTar};
use berth_tests::images::{fixture, tree, ImageEnv};
use serde_json::{json, Value};

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
