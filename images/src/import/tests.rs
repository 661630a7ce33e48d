use std::fs;
use std::path::PathBuf;

use super::*;
use crate::progress::Quiet;
use crate::testutil::*;

fn opts(name: Option<&str>) -> ImportOptions {
    ImportOptions {
        name: name.map(|n| n.parse().unwrap()),
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        },
        ..Default::default()
    }
}

fn count(dir: PathBuf) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn import_shares_layers_and_rm_frees_unreferenced_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let base = layer_tar(&[("etc/", ""), ("etc/os", "base")]);
    let top = layer_tar(&[("app", "v1"), ("etc/.wh.os", "")]);
    oci_layout(&tmp.path().join("a"), &[base.clone(), top.clone()], "1");
    oci_layout(&tmp.path().join("b"), std::slice::from_ref(&base), "1");
    let a = import(&store, &tmp.path().join("a"), &opts(None), &Quiet).unwrap();
    assert_eq!(a.reference, "a:1");
    let b = import(&store, &tmp.path().join("b"), &opts(Some("bee:2")), &Quiet).unwrap();
    assert_eq!(b.reference, "bee:2");
    let base_id = crate::digest::Digest::sha256_of(&base);
    assert_eq!(count(store.root().join("layers/sha256")), 2);
    assert_eq!(
        fs::read(store.layer_dir(&base_id).join("etc/os")).unwrap(),
        b"base"
    );
    let top_dir = store.layer_dir(&crate::digest::Digest::sha256_of(&top));
    assert_eq!(fs::read(top_dir.join("app")).unwrap(), b"v1");
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(top_dir.join("etc/os"))
            .unwrap()
            .file_type()
            .is_char_device());
    }
    assert_eq!(store.images().unwrap().len(), 2);
    let (_, freed) = store.remove_image(&store.lock().unwrap(), "a:1").unwrap();
    assert_eq!(freed.layers, vec![crate::digest::Digest::sha256_of(&top)]);
    assert!(store.has_layer(&base_id));
    store.remove_image(&store.lock().unwrap(), "bee:2").unwrap();
    assert_eq!(count(store.root().join("layers/sha256")), 0);
    assert_eq!(count(store.root().join("blobs/sha256")), 0);
}

#[test]
fn imports_oci_and_docker_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let l = layer_tar(&[("bin/", ""), ("bin/x", "x")]);
    oci_layout(&tmp.path().join("lay"), std::slice::from_ref(&l), "latest");
    tar_dir(&tmp.path().join("lay"), &tmp.path().join("busy-box.tar"));
    let r = import(
        &store,
        &tmp.path().join("busy-box.tar"),
        &opts(None),
        &Quiet,
    )
    .unwrap();
    assert_eq!(r.reference, "busy-box:latest");
    docker_archive(
        &tmp.path().join("d.tar"),
        std::slice::from_ref(&l),
        "library/busybox:1.36",
    );
    let r = import(&store, &tmp.path().join("d.tar"), &opts(None), &Quiet).unwrap();
    assert_eq!(r.reference, "library/busybox:1.36");
    assert_eq!(r.layers[0].media_type, crate::manifest::OCI_LAYER_TAR);
    // Both share the one unpacked layer.
    assert_eq!(count(store.root().join("layers/sha256")), 1);
    let (m, cfg) = load_manifest(&store, &r.manifest).unwrap();
    assert_eq!(m.layers.len(), 1);
    assert_eq!(cfg.rootfs.diff_ids[0], crate::digest::Digest::sha256_of(&l));
}

#[test]
fn a_corrupt_layer_is_named_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let l1 = layer_tar(&[("a", "1")]);
    let l2 = layer_tar(&[("b", "2")]);
    oci_layout(&tmp.path().join("img"), &[l1, l2.clone()], "latest");
    let blob = tmp
        .path()
        .join("img/blobs/sha256")
        .join(Digest::sha256_of(&gzip(&l2)).hex());
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 10] ^= 0x55;
    fs::write(&blob, &data).unwrap();
    let err = import(&store, &tmp.path().join("img"), &opts(None), &Quiet).unwrap_err();
    assert!(
        err.to_string()
            .contains(&Digest::sha256_of(&gzip(&l2)).to_string()),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());
    assert_eq!(count(store.root().join("layers/sha256")), 0);
    assert_eq!(count(store.root().join("blobs/sha256")), 0);
    assert_eq!(count(store.root().join("tmp")), 0);
}

#[test]
fn a_wrong_diff_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let l = layer_tar(&[("a", "1")]);
    let archive = tmp.path().join("d.tar");
    // The docker-archive's config claims another diff_id.
    docker_archive(&archive, std::slice::from_ref(&l), "x:1");
    let mut bad = layer_tar(&[("a", "2")]);
    bad.truncate(l.len());
    let archive2 = tmp.path().join("e.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&archive2).unwrap());
        let mut src = tar::Archive::new(fs::File::open(&archive).unwrap());
        for e in src.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let path = e.path().unwrap().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            if path.ends_with("layer.tar") {
                data = bad.clone();
            }
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }
    let err = import(&store, &archive2, &opts(None), &Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("diff_id"), "{err}");
    assert!(store.images().unwrap().is_empty());
    assert_eq!(count(store.root().join("layers/sha256")), 0);
}

#[test]
fn leftovers_of_a_killed_import_are_cleaned_and_invisible() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    // What an import killed mid-layer leaves: a half-written temp layer.
    fs::create_dir_all(store.root().join("tmp/layer-dead/fs/etc")).unwrap();
    fs::write(store.root().join("tmp/blob-dead"), b"partial").unwrap();
    assert!(store.images().unwrap().is_empty());
    oci_layout(
        &tmp.path().join("img"),
        &[layer_tar(&[("etc/", ""), ("etc/x", "1")])],
        "latest",
    );
    import(&store, &tmp.path().join("img"), &opts(None), &Quiet).unwrap();
    assert_eq!(count(store.root().join("tmp")), 0);
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn concurrent_imports_are_serialized_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    for i in 0..4 {
        oci_layout(
            &tmp.path().join(format!("i{i}")),
            &[
                layer_tar(&[("shared", "s")]),
                layer_tar(&[("own", &i.to_string())]),
            ],
            "latest",
        );
    }
    std::thread::scope(|s| {
        for i in 0..4 {
            let store = store.clone();
            let p = tmp.path().join(format!("i{i}"));
            s.spawn(move || import(&store, &p, &opts(None), &Quiet).unwrap());
        }
    });
    assert_eq!(store.images().unwrap().len(), 4);
    assert_eq!(count(store.root().join("layers/sha256")), 5);
}

#[test]
fn flatten_merges_layers_with_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let l1 = layer_tar(&[
        ("etc/", ""),
        ("etc/a", "1"),
        ("etc/b", "2"),
        ("var/", ""),
        ("var/x", "x"),
    ]);
    let l2 = layer_tar(&[
        ("etc/.wh.a", ""),
        ("var/.wh..wh..opq", ""),
        ("var/", ""),
        ("var/y", "y"),
    ]);
    oci_layout(&tmp.path().join("img"), &[l1, l2], "latest");
    let r = import(&store, &tmp.path().join("img"), &opts(None), &Quiet).unwrap();
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    flatten(&store, &r, &root).unwrap();
    assert!(!root.join("etc/a").exists());
    assert_eq!(fs::read(root.join("etc/b")).unwrap(), b"2");
    assert!(!root.join("var/x").exists());
    assert!(root.join("var/y").exists());
}

#[test]
fn names_from_paths() {
    assert_eq!(
        name_from_path(std::path::Path::new("/x/Busy_Box.tar")).as_deref(),
        Some("busy-box")
    );
    assert_eq!(
        choose_reference(None, Some("latest"), std::path::Path::new("/t/app"))
            .unwrap()
            .to_string(),
        "app:latest"
    );
    assert_eq!(
        choose_reference(
            None,
            Some("docker.io/library/busybox:1"),
            std::path::Path::new("/t/app")
        )
        .unwrap()
        .to_string(),
        "docker.io/library/busybox:1"
    );
    assert!(matches!(
        choose_reference(None, None, std::path::Path::new("/t/app")),
        Err(ImportError::NoName { .. })
    ));
}

#[test]
fn implicit_parent_dirs_inherit_lower_layer_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, mode, data) in [
        ("tmp/", 0o1777, ""),
        ("tmp/x", 0o644, "x"),
        ("tmp/y", 0o644, "y"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    let l1 = b.into_inner().unwrap();
    // umoci writes whiteout-only layers like this: no entry for `tmp/`.
    let l2 = layer_tar(&[("tmp/.wh.x", "")]);
    oci_layout(&tmp.path().join("img"), &[l1, l2.clone()], "latest");
    let r = import(&store, &tmp.path().join("img"), &opts(None), &Quiet).unwrap();
    let upper_tmp = store.layer_dir(&Digest::sha256_of(&l2)).join("tmp");
    let m = fs::metadata(&upper_tmp).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), 1_600_000_000);
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    flatten(&store, &r, &root).unwrap();
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert!(!root.join("tmp/x").exists());
    assert!(root.join("tmp/y").exists());
}

/// An image whose layer blob does not hash to the diff_id its config claims
/// is refused even when the store already holds a layer with that diff_id
/// (issue 16: the check used to be skipped then, and the image ran with the
/// other image's files).
#[test]
fn a_wrong_diff_id_is_refused_even_when_the_store_has_that_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let honest = layer_tar(&[("who", "honest")]);
    oci_layout(&tmp.path().join("a"), std::slice::from_ref(&honest), "1");
    import(&store, &tmp.path().join("a"), &opts(None), &Quiet).unwrap();
    // Image b: its blob holds other bytes but its config claims honest's diff_id.
    let liar = layer_tar(&[("who", "liar!!")]);
    let dir = tmp.path().join("b");
    oci_layout(&dir, std::slice::from_ref(&liar), "1");
    let (m, cfg_digest) = {
        let idx: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let md: Digest = idx["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(md.hex())).unwrap())
                .unwrap();
        let cd: Digest = m["config"]["digest"].as_str().unwrap().parse().unwrap();
        (m, cd)
    };
    let cfg = config_json(&[Digest::sha256_of(&honest)], "amd64");
    let new_cd = Digest::sha256_of(&cfg);
    fs::write(dir.join("blobs/sha256").join(new_cd.hex()), &cfg).unwrap();
    let mut m = m;
    m["config"]["digest"] = serde_json::json!(new_cd);
    m["config"]["size"] = serde_json::json!(cfg.len());
    let mb = serde_json::to_vec(&m).unwrap();
    let md = Digest::sha256_of(&mb);
    fs::write(dir.join("blobs/sha256").join(md.hex()), &mb).unwrap();
    let _ = cfg_digest;
    write_index(
        &dir,
        &[crate::manifest::Descriptor {
            media_type: crate::manifest::OCI_MANIFEST.into(),
            digest: md,
            size: mb.len() as u64,
            platform: None,
            annotations: [(
                crate::manifest::ANNOTATION_REF_NAME.to_string(),
                "1".to_string(),
            )]
            .into(),
        }],
    );
    let err = import(&store, &dir, &opts(None), &Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("diff_id"), "{err}");
    assert_eq!(store.images().unwrap().len(), 1, "only image a is stored");
    let layer = store.layer_dir(&Digest::sha256_of(&honest));
    assert_eq!(fs::read(layer.join("who")).unwrap(), b"honest");
}

/// The same layer listed twice in one image is stored once and flattens.
#[test]
fn an_image_listing_one_layer_twice_imports_and_flattens() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let a = layer_tar(&[("etc/", ""), ("etc/a", "1")]);
    let b = layer_tar(&[("etc/", ""), ("etc/.wh.a", ""), ("etc/b", "2")]);
    oci_layout(
        &tmp.path().join("img"),
        &[a.clone(), b, a.clone()],
        "latest",
    );
    let r = import(&store, &tmp.path().join("img"), &opts(None), &Quiet).unwrap();
    assert_eq!(r.layers.len(), 3);
    assert_eq!(count(store.root().join("layers/sha256")), 2);
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    flatten(&store, &r, &root).unwrap();
    assert_eq!(fs::read(root.join("etc/a")).unwrap(), b"1");
    assert_eq!(fs::read(root.join("etc/b")).unwrap(), b"2");
}
