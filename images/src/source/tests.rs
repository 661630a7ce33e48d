use std::fs;

use super::*;
use crate::testutil::*;

fn host_amd64() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    }
}

#[test]
fn resolves_oci_layout_dir_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("img");
    let l1 = layer_tar(&[("etc/", ""), ("etc/hello", "hi")]);
    let desc = oci_layout(&layout, std::slice::from_ref(&l1), "v1");
    let s = Source::open(&layout).unwrap();
    assert_eq!(s.kind(), Kind::OciLayout);
    let r = s.resolve(None, &host_amd64()).unwrap();
    assert_eq!(r.manifest.as_ref().unwrap().0, desc.digest);
    assert_eq!(r.source_name.as_deref(), Some("v1"));
    assert_eq!(r.layers[0].diff_id, crate::digest::Digest::sha256_of(&l1));
    let archive = tmp.path().join("img.tar");
    tar_dir(&layout, &archive);
    let s = Source::open(&archive).unwrap();
    assert_eq!(s.kind(), Kind::OciArchive);
    let r2 = s.resolve(None, &host_amd64()).unwrap();
    assert_eq!(r2.manifest.unwrap().0, desc.digest);
    let (mut rd, size) = s.open_file(&r2.layers[0].path).unwrap();
    let mut buf = Vec::new();
    rd.read_to_end(&mut buf).unwrap();
    assert_eq!(buf.len() as u64, size);
}

#[test]
fn resolves_docker_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("d.tar");
    let l1 = layer_tar(&[("a", "1")]);
    let l2 = layer_tar(&[("b", "2")]);
    docker_archive(&archive, &[l1.clone(), l2], "busybox:latest");
    let s = Source::open(&archive).unwrap();
    assert_eq!(s.kind(), Kind::DockerArchive);
    let r = s.resolve(None, &host_amd64()).unwrap();
    assert!(r.manifest.is_none());
    assert_eq!(r.source_name.as_deref(), Some("busybox:latest"));
    assert_eq!(r.layers.len(), 2);
    assert_eq!(r.layers[0].size, l1.len() as u64);
}

#[test]
fn multi_platform_index_picks_host_or_lists_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    fs::create_dir_all(&dir).unwrap();
    let mut amd = add_image(&dir, &[layer_tar(&[("amd", "x")])], "amd64");
    amd.platform = Some(host_amd64());
    let mut s390 = add_image(&dir, &[layer_tar(&[("s390", "x")])], "s390x");
    s390.platform = Some(Platform {
        os: "linux".into(),
        architecture: "s390x".into(),
        variant: None,
    });
    // A nested index, as skopeo writes multi-arch images.
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [amd, s390]
    }))
    .unwrap();
    let d = crate::digest::Digest::sha256_of(&idx);
    fs::write(dir.join("blobs/sha256").join(d.hex()), &idx).unwrap();
    let mut top = Descriptor {
        media_type: manifest::OCI_INDEX.into(),
        digest: d,
        size: idx.len() as u64,
        platform: None,
        annotations: Default::default(),
    };
    top.annotations
        .insert(ANNOTATION_REF_NAME.into(), "multi".into());
    write_index(&dir, &[top]);
    let s = Source::open(&dir).unwrap();
    let r = s.resolve(None, &host_amd64()).unwrap();
    assert_eq!(r.manifest.unwrap().0, amd.digest);
    let arm = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
    };
    let err = s.resolve(None, &arm).unwrap_err().to_string();
    assert!(err.contains("linux/amd64, linux/s390x"), "{err}");
}

#[test]
fn corrupt_blob_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("img");
    let desc = oci_layout(&layout, &[layer_tar(&[("a", "1")])], "latest");
    let m = fs::read(layout.join("blobs/sha256").join(desc.digest.hex())).unwrap();
    let mut bad = m.clone();
    bad[10] ^= 1;
    fs::write(layout.join("blobs/sha256").join(desc.digest.hex()), &bad).unwrap();
    let err = Source::open(&layout)
        .unwrap()
        .resolve(None, &host_amd64())
        .unwrap_err();
    assert!(err.to_string().contains(&desc.digest.to_string()), "{err}");
}

#[test]
fn not_an_image_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Source::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("oci-layout"), "{err}");
    let f = tmp.path().join("x.tar");
    let mut b = tar::Builder::new(fs::File::create(&f).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_path("hello").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    let err = Source::open(&f).unwrap_err().to_string();
    assert!(err.contains("neither"), "{err}");
}

#[test]
fn several_images_need_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("two");
    fs::create_dir_all(&dir).unwrap();
    let mut a = add_image(&dir, &[layer_tar(&[("a", "1")])], "amd64");
    a.annotations
        .insert(ANNOTATION_REF_NAME.into(), "one".into());
    let mut b = add_image(&dir, &[layer_tar(&[("b", "2")])], "amd64");
    b.annotations
        .insert(ANNOTATION_REF_NAME.into(), "two".into());
    write_index(&dir, &[a, b.clone()]);
    let s = Source::open(&dir).unwrap();
    let err = s.resolve(None, &host_amd64()).unwrap_err().to_string();
    assert!(err.contains("one, two"), "{err}");
    let want: Reference = "x:two".parse().unwrap();
    assert_eq!(
        s.resolve(Some(&want), &host_amd64())
            .unwrap()
            .manifest
            .unwrap()
            .0,
        b.digest
    );
}
