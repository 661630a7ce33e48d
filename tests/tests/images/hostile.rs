//! Hostile layers: refused with the entry named, nothing outside touched, nothing stored.

use berth_tests::images::layout::{digest_of, Compression, OciLayout, RawTar};
use berth_tests::images::{ImageEnv, Sentinel};
use serde_json::json;

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

/// Imports `layers`, which must be accepted, and checks that `image unpack` put `inside`
/// (a path in the rootfs) there while the sentinel outside stayed as it was: parent symlinks
/// are followed inside the root, as containerd follows them.
fn assert_stays_inside(case: &str, layers: &[Vec<u8>], inside: &str, sentinel: &Sentinel) {
    let env = ImageEnv::new();
    let dir = env.work().join("hostile");
    let mut layout = OciLayout::new(&dir);
    for tar in layers {
        layout.add_layer(tar, Compression::Gzip);
    }
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    env.import(&dir, "hostile:1").ok();
    sentinel.assert_unchanged(case);
    let bundle = env.work().join("bundle");
    env.unpack("hostile:1", &bundle);
    sentinel.assert_unchanged(case);
    let p = bundle.join("rootfs").join(inside);
    assert!(
        std::fs::symlink_metadata(&p).is_ok(),
        "{case}: {} is not in the rootfs",
        p.display()
    );
}

#[test]
fn hostile_write_through_symlink_stays_inside_the_root() {
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
            let inside = format!("{}/{victim}", sentinel.dir_relative());
            assert_stays_inside(case, &[tar.finish()], &inside, &sentinel);
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
fn hostile_whiteout_through_symlink_stays_inside_the_root() {
    let sentinel = Sentinel::new();
    let absolute = sentinel.dir().display().to_string();
    let relative = format!("{}{}", climb(), sentinel.dir_relative());
    for target in [&absolute, &relative] {
        let mut same = RawTar::new();
        same.symlink("link", target)
            .file("link/.wh.sentinel", 0o644, b"")
            .file("kept", 0o644, b"k");
        assert_stays_inside(
            "whiteout through a symlink of the same layer",
            &[same.finish()],
            "kept",
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

/// A small zstd layer of 2 GiB of zeros is refused with the default limits, once the
/// decompressed bytes pass 1 GiB (the floor of the ratio bound), not after 32 GiB.
#[test]
fn compression_bomb_is_refused_by_default_at_the_ratio_bound() {
    use berth_tests::images::layout::{zero_file_layer_zstd, LayerDesc};
    let env = ImageEnv::new();
    let dir = env.work().join("bomb");
    let mut layout = OciLayout::new(&dir);
    let (blob, diff_id) = zero_file_layer_zstd(2 << 30);
    assert!(
        blob.len() < (1 << 20),
        "the fixture is not a bomb: {}",
        blob.len()
    );
    let (digest, size) = layout.blob(&blob);
    layout.add_layer_desc(LayerDesc {
        digest: digest.clone(),
        diff_id,
        size,
        media_type: Compression::Zstd.media_type().to_string(),
    });
    layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
    let out = env.import(&dir, "bomb:1").failed();
    assert!(
        out.stderr
            .contains(&format!("limit of {} bytes", 1u64 << 30)),
        "the default bound is 1 GiB for this layer: {out}"
    );
    assert!(
        out.stderr.contains(digest.trim_start_matches("sha256:")),
        "{out}"
    );
    env.assert_store_empty("default-limit bomb");
    // A larger ratio moves the bound to the absolute one: the ratio is what refused it.
    let path = dir.to_str().expect("utf-8");
    let out = env
        .image(&[
            "import",
            path,
            "--name",
            "bomb:1",
            "--max-layer-ratio",
            "100000",
            "--max-layer-size",
            "1500m",
        ])
        .failed();
    assert!(
        out.stderr
            .contains(&format!("limit of {} bytes", 1500u64 << 20)),
        "{out}"
    );
    env.assert_store_empty("default-limit bomb, larger ratio");
}

/// A docker-archive whose manifest.json names layer files outside the archive (absolute and
/// `../`) that exist on the host as valid layers with the right diff_id: reading them would
/// import host files. Each is refused naming the path and nothing is stored.
#[test]
fn docker_archive_naming_host_files_is_refused() {
    let host = tempfile::Builder::new()
        .prefix("bh")
        .tempdir_in("/tmp")
        .expect("host dir");
    let mut layer = RawTar::new();
    layer.file("secret", 0o600, b"a host secret\n");
    let layer = layer.finish();
    let host_layer = host.path().join("layer.tar");
    std::fs::write(&host_layer, &layer).expect("write host layer");
    let absolute = host_layer.display().to_string();
    let relative = format!("{}{}", climb(), absolute.trim_start_matches('/'));
    // The last archive is the control: the same layer inside the archive imports fine, so
    // the refusals above are about where the layer is, not about the archive's shape.
    for name in [absolute, relative, "layer.tar".to_string()] {
        let env = ImageEnv::new();
        let config = json!({
            "architecture": berth_tests::images::host_arch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
        });
        let manifest = json!([{
            "Config": "config.json",
            "RepoTags": ["leak:1"],
            "Layers": [name],
        }]);
        let mut archive = RawTar::new();
        archive
            .file(
                "config.json",
                0o644,
                &serde_json::to_vec(&config).expect("json"),
            )
            .file(
                "manifest.json",
                0o644,
                &serde_json::to_vec(&manifest).expect("json"),
            );
        if name == "layer.tar" {
            archive.file("layer.tar", 0o644, &layer);
        }
        let path = env.work().join("leak.tar");
        std::fs::write(&path, archive.finish()).expect("write archive");
        let out = env.import(&path, "leak:1");
        if name == "layer.tar" {
            out.ok();
            assert_eq!(
                env.find_in_store("secret").len(),
                1,
                "the control layer is stored"
            );
            continue;
        }
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "a docker-archive layer outside the archive ({name}) must be refused: {out}"
        );
        assert!(
            out.stderr.contains(&name),
            "the error does not name the layer path {name}: {out}"
        );
        env.assert_store_empty("docker-archive naming host files");
        assert!(
            env.find_in_store("secret").is_empty(),
            "the host file was stored"
        );
    }
}
