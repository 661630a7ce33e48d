use super::*;

fn record(reference: &str, manifest: &[u8], layers: &[&[u8]]) -> ImageRecord {
    ImageRecord {
        reference: reference.into(),
        manifest: Digest::sha256_of(manifest),
        config: Digest::sha256_of(&[manifest, b"c"].concat()),
        layers: layers
            .iter()
            .map(|l| LayerRecord {
                digest: Digest::sha256_of(&[l, &b"z"[..]].concat()),
                diff_id: Digest::sha256_of(l),
                size: 1,
                media_type: String::new(),
            })
            .collect(),
        platform: "linux/amd64".into(),
        created: None,
        imported: 0,
    }
}

#[test]
fn finds_images_by_reference_digest_and_prefix() {
    let imgs = vec![
        record("busybox:latest", b"m1", &[b"a"]),
        record("alpine:3", b"m2", &[b"b"]),
    ];
    assert_eq!(match_images(&imgs, "busybox").len(), 1);
    assert_eq!(
        match_images(&imgs, "busybox:latest")[0].reference,
        "busybox:latest"
    );
    assert!(match_images(&imgs, "busybox:other").is_empty());
    let d = imgs[1].manifest.to_string();
    assert_eq!(
        match_images(&imgs, &format!("alpine@{d}"))[0].reference,
        "alpine:3"
    );
    assert!(match_images(&imgs, &format!("busybox@{d}")).is_empty());
    assert_eq!(match_images(&imgs, &d[7..19])[0].reference, "alpine:3");
    assert_eq!(match_images(&imgs, &d)[0].reference, "alpine:3");
}

#[test]
fn counts_shared_layers_and_snapshots() {
    let imgs = vec![
        record("a:1", b"m1", &[b"base", b"x"]),
        record("b:1", b"m2", &[b"base"]),
    ];
    let snaps = vec![SnapshotRecord {
        name: "c".into(),
        image: "a:1".into(),
        layers: vec![Digest::sha256_of(b"x")],
        kind: "overlay".into(),
        owner: None,
        remove_with_owner: false,
        runtime_root: None,
    }];
    let (_, layers) = reference_counts(&imgs, &snaps);
    assert_eq!(layers[&Digest::sha256_of(b"base")], 2);
    assert_eq!(layers[&Digest::sha256_of(b"x")], 2);
}

#[test]
fn rm_frees_only_unreferenced_layers_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lock = store.lock().unwrap();
    let a = record("a:1", b"m1", &[b"base", b"x"]);
    let b = record("b:1", b"m2", &[b"base"]);
    for r in [&a, &b] {
        for d in [&r.manifest, &r.config] {
            fs::create_dir_all(store.blob_path(d).parent().unwrap()).unwrap();
            fs::write(store.blob_path(d), b"").unwrap();
        }
        for l in &r.layers {
            fs::write(store.blob_path(&l.digest), b"").unwrap();
            fs::create_dir_all(store.layer_dir(&l.diff_id).join("sub")).unwrap();
        }
    }
    store.put_image(&lock, a.clone()).unwrap();
    store.put_image(&lock, b.clone()).unwrap();
    let (removed, freed) = store.remove_image(&lock, "a:1").unwrap();
    assert_eq!(removed.reference, "a:1");
    assert_eq!(freed.layers, vec![Digest::sha256_of(b"x")]);
    assert_eq!(freed.blobs.len(), 3);
    assert!(store.has_layer(&Digest::sha256_of(b"base")));
    assert!(!store.has_layer(&Digest::sha256_of(b"x")));
    assert!(matches!(
        store.find("a:1"),
        Err(StoreError::NotFound { .. })
    ));
    let (_, freed) = store.remove_image(&lock, "b:1").unwrap();
    assert_eq!(freed.layers, vec![Digest::sha256_of(b"base")]);
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn ingest_verifies_and_leaves_nothing_on_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let lock = store.lock().unwrap();
    let good = Digest::sha256_of(b"blob");
    assert_eq!(
        store
            .ingest_blob(&lock, Some(&good), Some(4), &b"blob"[..])
            .unwrap(),
        good
    );
    assert_eq!(store.read_blob(&good).unwrap(), b"blob");
    let bad = Digest::sha256_of(b"other");
    let err = store
        .ingest_blob(&lock, Some(&bad), Some(4), &b"blob"[..])
        .unwrap_err();
    assert!(err.to_string().contains(&bad.to_string()), "{err}");
    assert!(!store.has_blob(&bad));
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    let d = store.ingest_blob(&lock, None, None, &b"new"[..]).unwrap();
    assert_eq!(d, Digest::sha256_of(b"new"));
}
