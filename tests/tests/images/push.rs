//! `berth image push` to a real registry (Debian's docker-registry on loopback): what it
//! pushes pulls back, with berth and with skopeo, as the tree `umoci unpack` makes; chunked
//! uploads, blobs the repository has, cross-repository mounts, and a push killed midway.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::images::layout::{incompressible, Compression, LayerDesc, OciLayout, RawTar};
use berth_tests::images::proxy::Proxy;
use berth_tests::images::registry::{Access, Registry};
use berth_tests::images::{fixture, run_tool, tree, ImageEnv};
use serde_json::json;

/// The manifest digest `image ls` shows for the only image of `env`.
fn stored_digest(env: &ImageEnv) -> String {
    let list = env.list();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0]["manifest"]
        .as_str()
        .expect("manifest digest")
        .to_string()
}

#[track_caller]
fn assert_same_tree(expected: &Path, actual: &Path, what: &str) {
    let diff = tree::diff(&tree::snapshot(expected), &tree::snapshot(actual));
    assert!(diff.is_empty(), "{what} differs:\n{}", diff.join("\n"));
}

/// `skopeo copy` of `reference` to an OCI layout, then `umoci unpack` of it into `bundle`;
/// returns the digest skopeo reports for the manifest.
fn skopeo_and_umoci(reference: &str, work: &Path, bundle: &Path) -> String {
    let layout = work.join(format!("skopeo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let src = format!("docker://{reference}");
    let dst = format!("oci:{}:t", layout.display());
    run_tool(
        "skopeo",
        &["copy", "--quiet", "--src-tls-verify=false", &src, &dst],
        work,
    );
    let out = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &src,
        ],
        work,
    );
    let image = format!("{}:t", layout.display());
    let bundle_s = bundle.to_str().expect("utf-8");
    run_tool("umoci", &["unpack", "--image", &image, bundle_s], work);
    out.stdout.trim().to_string()
}

fn count(access: &[Access], method: &str, prefix: &str) -> usize {
    access
        .iter()
        .filter(|a| a.method == method && a.path.starts_with(prefix))
        .count()
}

#[test]
fn push_round_trips_through_berth_and_skopeo_and_mounts_across_repositories() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();
    let digest = stored_digest(&env);
    let reg = Registry::start_plain();
    let umoci_rootfs = image.umoci_bundle.join("rootfs");

    // A store name that is not on a registry needs a destination.
    let out = env.image(&["push", "--insecure", "bb:1"]).failed();
    assert!(out.stderr.contains("names no registry"), "{out}");
    assert!(reg
        .access()
        .iter()
        .all(|a| a.method == "GET" && a.path == "/v2/"));

    // Monolithic: one PUT per blob (config and 4 layers), then the manifest.
    let dest = format!("{}/team/bb:1", reg.addr);
    let out = env.image(&["push", "--insecure", "bb:1", &dest]).ok();
    assert_eq!(out.stdout.trim(), format!("{dest} {digest}"), "{out}");
    assert!(out.stderr.contains("uploaded"), "progress lines: {out}");
    let access = reg.access();
    assert_eq!(
        count(&access, "PUT", "/v2/team/bb/blobs/uploads/"),
        5,
        "{access:#?}"
    );
    assert_eq!(count(&access, "PATCH", "/v2/team/bb/"), 0);
    assert!(access
        .iter()
        .any(|a| a.method == "PUT" && a.path == "/v2/team/bb/manifests/1" && a.status == 201));

    // Again: every blob is there (HEAD), nothing is uploaded.
    let before = reg.access().len();
    env.image(&["push", "--insecure", "--quiet", "bb:1", &dest])
        .ok();
    let again = &reg.access()[before..];
    assert_eq!(count(again, "HEAD", "/v2/team/bb/blobs/"), 5, "{again:#?}");
    assert_eq!(
        count(again, "POST", "/v2/team/bb/blobs/uploads/"),
        0,
        "{again:#?}"
    );

    // Chunked, to a repository nothing is known to share blobs with: PATCHes of 64 KiB.
    let chunked = format!("{}/team/chunked:2", reg.addr);
    env.image(&[
        "push",
        "--insecure",
        "--chunk-size",
        "64k",
        "bb:1",
        &chunked,
    ])
    .ok();
    let access = reg.access();
    let patches = count(&access, "PATCH", "/v2/team/chunked/blobs/uploads/");
    assert!(
        patches > 5,
        "expected several chunks per big layer: {patches}"
    );
    assert!(access
        .iter()
        .filter(|a| a.method == "PATCH")
        .all(|a| a.status == 202));

    // Both pull back as the same tree, with berth and with skopeo + umoci, same digest.
    for reference in [&dest, &chunked] {
        let fresh = ImageEnv::new();
        let out = fresh
            .image(&["pull", "--insecure", "--quiet", reference])
            .ok();
        assert!(out.stdout.contains(&digest), "{out}");
        let bundle = fresh.work().join("pulled");
        fresh.unpack(reference, &bundle);
        assert_same_tree(&umoci_rootfs, &bundle.join("rootfs"), "berth's pull");
        let umoci_bundle = fresh.work().join("umoci");
        let skopeo_digest = skopeo_and_umoci(reference, &fresh.work(), &umoci_bundle);
        assert_eq!(skopeo_digest, digest, "the registry holds another manifest");
        assert_same_tree(
            &umoci_rootfs,
            &umoci_bundle.join("rootfs"),
            "skopeo + umoci",
        );
    }

    // A store that pulled team/bb pushes to other/bb: the registry mounts every blob from
    // team/bb, nothing is uploaded.
    let fresh = ImageEnv::new();
    fresh.image(&["pull", "--insecure", "--quiet", &dest]).ok();
    let before = reg.access().len();
    let other = format!("{}/other/bb:1", reg.addr);
    let out = fresh.image(&["push", "--insecure", &dest, &other]).ok();
    assert!(out.stderr.contains("mounted from team/bb"), "{out}");
    let after = &reg.access()[before..];
    let mounts: Vec<&Access> = after
        .iter()
        .filter(|a| {
            a.method == "POST" && a.path.contains("mount=") && a.path.contains("from=team%2Fbb")
        })
        .collect();
    assert_eq!(mounts.len(), 5, "{after:#?}");
    assert!(mounts.iter().all(|a| a.status == 201), "{mounts:#?}");
    assert_eq!(count(after, "PUT", "/v2/other/bb/blobs/"), 0, "{after:#?}");
    assert_eq!(reg.tags("other/bb"), Some(vec!["1".to_string()]));
}

/// An image of one layer (uncompressed tar): a small file `first`, then `big`, 12 MB of
/// incompressible data. Returns the layout, `big`'s data and the layer.
pub fn big_image(work: &Path) -> (std::path::PathBuf, Vec<u8>, LayerDesc) {
    let data = incompressible(12 << 20, 7);
    let mut tar = RawTar::new();
    tar.file("first", 0o644, b"first\n");
    tar.file("big", 0o644, &data);
    let dir = work.join("big-layout");
    let mut layout = OciLayout::new(&dir);
    let layer = layout.add_layer(&tar.finish(), Compression::None);
    layout.tag("big", json!({"Cmd": ["/first"]}));
    (dir, data, layer)
}

#[test]
fn a_push_killed_midway_tags_nothing_and_the_next_push_completes() {
    let env = ImageEnv::new();
    let (layout, data, _) = big_image(&env.work());
    env.import(&layout, "big:1").ok();
    let reg = Registry::start_plain();
    let proxy = Proxy::start(&reg.addr);
    // Each connection stalls after 2 MiB towards the registry: inside the layer's upload.
    proxy.stall_after(Some(2 << 20), None);
    let dest = format!("{}/team/big:1", proxy.addr);
    let mut child = env
        .image_command(&["push", "--insecure", "--quiet", "big:1", &dest])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start push");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.stalled() {
        assert!(
            Instant::now() < deadline,
            "the push never reached 2 MiB of upload"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the push ended before it was stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL the push");
    child.wait().expect("reap");
    assert!(
        proxy
            .heads()
            .iter()
            .any(|h| h.method == "PUT" && h.path.contains("/blobs/uploads/")),
        "the push was not killed inside a blob upload: {:?}",
        proxy.heads()
    );
    assert!(
        !reg.tags("team/big")
            .unwrap_or_default()
            .contains(&"1".to_string()),
        "a killed push left a tag"
    );
    assert_eq!(count(&reg.access(), "PUT", "/v2/team/big/manifests/"), 0);

    proxy.release();
    env.image(&["push", "--insecure", "--quiet", "big:1", &dest])
        .ok();
    assert_eq!(reg.tags("team/big"), Some(vec!["1".to_string()]));
    let fresh = ImageEnv::new();
    let direct = format!("{}/team/big:1", reg.addr);
    fresh
        .image(&["pull", "--insecure", "--quiet", &direct])
        .ok();
    let bundle = fresh.work().join("b");
    fresh.unpack(&direct, &bundle);
    assert!(
        std::fs::read(bundle.join("rootfs/big")).expect("big") == data,
        "the pushed layer's file differs"
    );
}
