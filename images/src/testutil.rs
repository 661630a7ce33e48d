//! Builds small images (OCI layout dirs, oci-archives, docker-archives) for
//! unit tests, with the `tar` crate.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::digest::Digest;
use crate::manifest;

/// A layer: (name, contents) files, directories end in '/', plus raw extras.
pub fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn put_blob(dir: &Path, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(d.hex()), data).unwrap();
    d
}

pub fn config_json(diff_ids: &[Digest], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Writes an image's blobs into a layout dir; returns the manifest descriptor.
pub fn add_image(dir: &Path, layers: &[Vec<u8>], arch: &str) -> manifest::Descriptor {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(Digest::sha256_of(tar));
        let gz = gzip(tar);
        let d = put_blob(dir, &gz);
        descs.push(json!({"mediaType": manifest::OCI_LAYER_GZIP, "digest": d, "size": gz.len()}));
    }
    let cfg = config_json(&diff_ids, arch);
    let cd = put_blob(dir, &cfg);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": manifest::OCI_CONFIG, "digest": cd, "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put_blob(dir, &m);
    manifest::Descriptor {
        media_type: manifest::OCI_MANIFEST.into(),
        digest: md,
        size: m.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// Writes index.json and oci-layout.
pub fn write_index(dir: &Path, manifests: &[manifest::Descriptor]) {
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let idx = json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// An OCI layout with one image tagged `tag`.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], tag: &str) -> manifest::Descriptor {
    fs::create_dir_all(dir).unwrap();
    let mut d = add_image(dir, layers, "amd64");
    d.annotations
        .insert(manifest::ANNOTATION_REF_NAME.into(), tag.into());
    write_index(dir, std::slice::from_ref(&d));
    d
}

/// Tars a directory (an oci-archive from a layout).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// A docker-archive with one image.
pub fn docker_archive(out: &Path, layers: &[Vec<u8>], tag: &str) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
    let cfg = config_json(&diff_ids, "amd64");
    let cd = Digest::sha256_of(&cfg);
    let cfg_name = format!("{}.json", cd.hex());
    add(&cfg_name, &cfg);
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("{i}/layer.tar");
        add(&n, l);
        names.push(n);
    }
    let m = json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&m).unwrap());
    b.into_inner().unwrap();
}
