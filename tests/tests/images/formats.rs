//! Source formats beyond the basics: multi-platform indexes, layers without end-of-archive
//! blocks.

use std::fs;

use berth_tests::images::layout::{Compression, OciLayout, RawTar};
use berth_tests::images::{host_arch, ImageEnv};
use serde_json::{json, Value};

/// A one-layer image for `arch` whose /platform file names it; returns its index entry.
fn platform_image(layout: &mut OciLayout, arch: &str) -> Value {
    let mut tar = RawTar::new();
    tar.file("platform", 0o644, format!("{arch}\n").as_bytes());
    layout.add_layer(&tar.finish(), Compression::Gzip);
    let (digest, size) = layout.manifest(arch, json!({"Cmd": ["/bin/sh"]}));
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": size,
        "platform": {"architecture": arch, "os": "linux"},
    })
}

/// A layout whose index.json points (tag `multi`) to an image index of `arches`.
fn multi_platform_layout(env: &ImageEnv, arches: &[&str]) -> std::path::PathBuf {
    let dir = env.work().join("multi");
    let mut layout = OciLayout::new(&dir);
    let entries: Vec<Value> = arches
        .iter()
        .map(|a| platform_image(&mut layout, a))
        .collect();
    let image_index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let (digest, size) = layout.blob(&serde_json::to_vec(&image_index).expect("serialize"));
    layout.write_index(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    }));
    dir
}

#[test]
fn multi_platform_index_resolves_to_the_host_platform() {
    let env = ImageEnv::new();
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    // The host's image sits between two others, so picking the first or last is wrong.
    let dir = multi_platform_layout(&env, &[other, host_arch(), "s390x"]);
    env.import(&dir, "multi:1").ok();
    let bundle = env.work().join("bundle");
    env.unpack("multi:1", &bundle);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/platform")).expect("read /platform"),
        format!("{}\n", host_arch()),
        "the image for the host's platform was not the one imported"
    );
}

#[test]
fn multi_platform_index_without_the_host_lists_what_it_has() {
    let env = ImageEnv::new();
    let others: Vec<&str> = ["arm64", "s390x", "ppc64le", "amd64"]
        .into_iter()
        .filter(|a| *a != host_arch())
        .take(2)
        .collect();
    let dir = multi_platform_layout(&env, &others);
    let out = env.import(&dir, "multi:1").failed();
    for arch in &others {
        assert!(
            out.stderr.contains(&format!("linux/{arch}")),
            "the error should list the platform linux/{arch}: {out}"
        );
    }
    env.assert_store_empty("no platform for the host");
}

#[test]
fn layer_without_end_of_archive_blocks_is_accepted() {
    let env = ImageEnv::new();
    let mut tar = RawTar::new();
    tar.dir("etc/", 0o755).file(
        "etc/last-entry",
        0o644,
        b"the archive ends right after me\n",
    );
    let mut bytes = tar.finish();
    // The tar crate ends an archive with exactly two zero blocks: cut them off.
    assert!(bytes.len() > 1024 && bytes[bytes.len() - 1024..].iter().all(|b| *b == 0));
    bytes.truncate(bytes.len() - 1024);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let env_dir = env.work().join(format!("{compression:?}"));
        let mut layout = OciLayout::new(&env_dir);
        layout.add_layer(&bytes, compression);
        layout.tag("latest", json!({"Cmd": ["/bin/sh"]}));
        let name = format!("noeof-{compression:?}:1").to_lowercase();
        env.import(&env_dir, &name).ok();
        let bundle = env.work().join(format!("bundle-{compression:?}"));
        env.unpack(&name, &bundle);
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs/etc/last-entry")).expect("last entry"),
            "the archive ends right after me\n",
            "{compression:?}"
        );
    }
}
