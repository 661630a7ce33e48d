//! Interrupted pulls: a pull SIGKILLed midway against docker-registry resumes with `Range`
//! and fetches only the rest; a connection that breaks is asked again from where it broke;
//! a registry that ignores `Range` restarts the blob; a partial file with wrong bytes is
//! caught by the digest and dropped. Layers unpack while they download, and a pull waiting
//! on the network blocks no other writer of the store, whose cleanups keep what the pull
//! relies on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::images::fake_registry::{FakeRegistry, Reply, Request};
use berth_tests::images::layout::{
    digest_of, incompressible, Compression, LayerDesc, OciLayout, RawTar,
};
use berth_tests::images::proxy::Proxy;
use berth_tests::images::registry::Registry;
use berth_tests::images::{host_arch, ImageEnv};
use serde_json::json;

use crate::push::big_image;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Waits for `cond`, failing with `what` after a minute.
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn partial_file(env: &ImageEnv, layer_digest: &str) -> PathBuf {
    env.store()
        .join("tmp/partial")
        .join(layer_digest.replace(':', "-"))
}

fn partials(env: &ImageEnv) -> Vec<PathBuf> {
    std::fs::read_dir(env.store().join("tmp/partial"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Pushes the big image with berth to `reg` as team/big:1.
fn push_big(reg: &Registry) -> (Vec<u8>, LayerDesc) {
    let env = ImageEnv::new();
    let (layout, data, layer) = big_image(&env.work());
    env.import(&layout, "big:1").ok();
    let dest = format!("{}/team/big:1", reg.addr);
    env.image(&["push", "--insecure", "--quiet", "big:1", &dest])
        .ok();
    (data, layer)
}

#[test]
fn a_pull_killed_midway_resumes_with_range_and_fetches_only_the_rest() {
    let reg = Registry::start_plain();
    let (data, layer) = push_big(&reg);
    let proxy = Proxy::start(&reg.addr);
    proxy.stall_after(None, Some(4 << 20));
    let env = ImageEnv::new();
    let via_proxy = format!("{}/team/big:1", proxy.addr);
    let mut child = env
        .image_command(&["pull", "--insecure", "--quiet", &via_proxy])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pull");
    let partial = partial_file(&env, &layer.digest);
    wait_for("the download to stall", || proxy.stalled());
    wait_for("the partial file", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 1 << 20)
    });
    // The layer unpacks while it downloads: its first file is there before the blob ends.
    wait_for("the first file to be unpacked", || {
        !env.find_in_store("first").is_empty()
    });
    child.kill().expect("SIGKILL the pull");
    child.wait().expect("reap");
    env.assert_store_empty("after the killed pull");
    let have = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(have > 0 && have < layer.size, "partial of {have} bytes");
    let heads = proxy.heads();
    assert!(
        heads
            .iter()
            .any(|h| h.path.ends_with(&layer.digest) && h.range.is_none()),
        "{heads:?}"
    );

    // The proxy goes, closing the killed pull's connection, so the registry logs that
    // request now and not amid the next pull's.
    drop(proxy);
    wait_for("the killed pull's request in the access log", || {
        reg.access()
            .iter()
            .any(|a| a.method == "GET" && a.path.ends_with(&layer.digest))
    });
    // Again, straight to the registry: it sends the rest of the blob only, as a 206.
    let before = reg.access().len();
    let direct = format!("{}/team/big:1", reg.addr);
    env.image(&["pull", "--insecure", "--quiet", &direct]).ok();
    let gets: Vec<_> = reg.access()[before..]
        .iter()
        .filter(|a| a.method == "GET" && a.path.ends_with(&layer.digest))
        .cloned()
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].status, 206, "{gets:?}");
    assert_eq!(
        gets[0].bytes,
        layer.size - have,
        "the registry sent more than the rest"
    );
    let bundle = env.work().join("b");
    env.unpack(&direct, &bundle);
    assert!(std::fs::read(bundle.join("rootfs/big")).expect("big") == data);
    assert!(partials(&env).is_empty(), "{:?}", partials(&env));
}

/// A one-layer image for the fake registry: (manifest, config, layer) and their digests.
struct Small {
    manifest: Vec<u8>,
    config: Vec<u8>,
    cd: String,
    layer: Vec<u8>,
    ld: String,
    data: Vec<u8>,
}

fn small() -> Small {
    let data = incompressible(256 << 10, 11);
    let mut t = RawTar::new();
    t.file("data", 0o644, &data);
    let layer = t.finish();
    let ld = digest_of(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    }))
    .expect("config");
    let cd = digest_of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .expect("manifest");
    Small {
        manifest,
        config,
        cd,
        layer,
        ld,
        data,
    }
}

/// The first byte of a `Range: bytes=N-` header.
fn range_start(req: &Request) -> Option<usize> {
    req.header("range")?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// A fake registry serving `s`; `layer(request, n)` answers the n-th (from 0) layer request.
fn serve(
    s: Small,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    layer: impl Fn(&Request, usize, &[u8]) -> Reply + Send + Sync + 'static,
) -> FakeRegistry {
    let n = AtomicUsize::new(0);
    FakeRegistry::start_with(move |req| {
        if req.path.starts_with("/v2/t/x/manifests/") {
            Reply::Ok(OCI_MANIFEST.into(), s.manifest.clone())
        } else if req.path.ends_with(&s.cd) {
            Reply::Ok("x".into(), s.config.clone())
        } else if req.path.ends_with(&s.ld) {
            seen.lock()
                .expect("lock")
                .push(req.header("range").map(String::from));
            layer(req, n.fetch_add(1, Ordering::SeqCst), &s.layer)
        } else {
            Reply::Ok("application/json".into(), b"{}".to_vec())
        }
    })
}

fn cut_half(layer: &[u8]) -> Reply {
    Reply::Cut {
        len: layer.len() as u64,
        body: layer[..layer.len() / 2].to_vec(),
    }
}

fn ranged(req: &Request, layer: &[u8]) -> Reply {
    match range_start(req) {
        Some(from) => Reply::Full {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {from}-{}/{}", layer.len() - 1, layer.len()),
            )],
            body: layer[from..].to_vec(),
        },
        None => Reply::Ok("x".into(), layer.to_vec()),
    }
}

fn check_data(env: &ImageEnv, reference: &str, data: &[u8]) {
    let bundle = env.work().join(format!("b{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bundle);
    env.unpack(reference, &bundle);
    assert!(std::fs::read(bundle.join("rootfs/data")).expect("data") == data);
}

#[test]
fn a_broken_download_is_asked_again_from_where_it_broke() {
    let s = small();
    let (data, half) = (s.data.clone(), s.layer.len() / 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reg = serve(s, seen.clone(), |req, n, layer| match n {
        0 => cut_half(layer),
        _ => ranged(req, layer),
    });
    let env = ImageEnv::new();
    let reference = format!("{}/t/x:1", reg.addr);
    env.image(&["pull", "--insecure", "--quiet", &reference])
        .ok();
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![None, Some(format!("bytes={half}-"))]
    );
    check_data(&env, &reference, &data);
}

#[test]
fn a_registry_ignoring_range_restarts_the_blob() {
    let s = small();
    let (data, half) = (s.data.clone(), s.layer.len() / 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Three cuts (the request and its two retries), then the whole blob, Range or not.
    let reg = serve(s, seen.clone(), |_, n, layer| match n {
        0..=2 => cut_half(layer),
        _ => Reply::Ok("x".into(), layer.to_vec()),
    });
    let env = ImageEnv::new();
    let reference = format!("{}/t/x:1", reg.addr);
    let out = env
        .image(&["pull", "--insecure", "--quiet", &reference])
        .failed();
    assert!(out.stderr.contains("at byte"), "{out}");
    env.assert_store_empty("after the broken pull");
    assert_eq!(partials(&env).len(), 1, "the partial download was not kept");
    env.image(&["pull", "--insecure", "--quiet", &reference])
        .ok();
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3], Some(format!("bytes={half}-")), "{seen:?}");
    check_data(&env, &reference, &data);
    assert!(partials(&env).is_empty());
}

#[test]
fn a_partial_file_with_wrong_bytes_fails_the_digest_and_is_dropped() {
    let s = small();
    let (data, ld, half) = (s.data.clone(), s.ld.clone(), s.layer.len() / 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reg = serve(s, seen.clone(), |req, n, layer| match n {
        0..=2 => cut_half(layer),
        _ => ranged(req, layer),
    });
    let env = ImageEnv::new();
    let reference = format!("{}/t/x:1", reg.addr);
    env.image(&["pull", "--insecure", "--quiet", &reference])
        .failed();
    let partial = partial_file(&env, &ld);
    assert_eq!(
        std::fs::metadata(&partial).expect("partial").len(),
        half as u64
    );
    std::fs::write(&partial, vec![b'x'; half]).expect("spoil the partial file");
    let out = env
        .image(&["pull", "--insecure", "--quiet", &reference])
        .failed();
    assert!(
        out.stderr.contains("digest mismatch")
            && out.stderr.contains(ld.trim_start_matches("sha256:")),
        "{out}"
    );
    assert!(!partial.exists(), "a partial file proven wrong was kept");
    env.assert_store_empty("after the wrong partial");
    env.image(&["pull", "--insecure", "--quiet", &reference])
        .ok();
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.last(),
        Some(&None),
        "a fresh download asks for no range: {seen:?}"
    );
    check_data(&env, &reference, &data);
}

/// Stores an image of the one layer `tar` as `name` in `env` (within a minute).
fn import_layout(env: &ImageEnv, dir: &Path, tar: &[u8], name: &str) {
    let mut layout = OciLayout::new(dir);
    layout.add_layer(tar, Compression::Gzip);
    layout.tag("t", json!({}));
    let dir = dir.to_str().expect("utf-8");
    env.image_within(&["import", dir, "--name", name], Duration::from_secs(60))
        .ok();
}

#[test]
fn a_pull_waiting_on_the_network_blocks_no_writer_and_keeps_what_it_relies_on() {
    let reg = Registry::start_plain();
    let mut base = RawTar::new();
    base.file("etc/base", 0o644, b"base layer\n");
    let base = base.finish();
    let data = incompressible(8 << 20, 5);
    let mut top = RawTar::new();
    top.file("big", 0o644, &data);
    let top = top.finish();
    // The image to pull: the base layer, then a big one. Pushed by berth.
    let pusher = ImageEnv::new();
    let dir = pusher.work().join("two");
    let mut layout = OciLayout::new(&dir);
    layout.add_layer(&base, Compression::Gzip);
    layout.add_layer(&top, Compression::None);
    layout.tag("t", json!({}));
    pusher.import(&dir, "two:1").ok();
    let reference = format!("{}/team/two:1", reg.addr);
    pusher
        .image(&["push", "--insecure", "--quiet", "two:1", &reference])
        .ok();

    // The puller's store already has the base layer, from another image.
    let env = ImageEnv::new();
    import_layout(&env, &env.work().join("base"), &base, "base:1");
    let proxy = Proxy::start(&reg.addr);
    proxy.stall_after(None, Some(2 << 20));
    let via_proxy = format!("{}/team/two:1", proxy.addr);
    let mut child = env
        .image_command(&["pull", "--insecure", "--quiet", &via_proxy])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pull");
    wait_for("the download to stall", || proxy.stalled());

    // Other writers go on: an import, and an rm whose cleanup would free the base layer
    // if the pull had not pinned it.
    let mut other = RawTar::new();
    other.file("other", 0o644, b"other\n");
    import_layout(&env, &env.work().join("other"), &other.finish(), "other:1");
    env.image_within(&["rm", "base:1"], Duration::from_secs(60))
        .ok();
    env.image_within(&["rm", "other:1"], Duration::from_secs(60))
        .ok();
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the pull ended while stalled"
    );

    proxy.release();
    let status = child.wait().expect("wait for the pull");
    assert!(
        status.success(),
        "the pull failed after the others' cleanups"
    );
    let bundle = env.work().join("b");
    env.unpack(&via_proxy, &bundle);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/base")).expect("the base layer's file"),
        b"base layer\n"
    );
    assert!(std::fs::read(bundle.join("rootfs/big")).expect("big") == data);
}

#[test]
fn a_second_pull_of_a_blob_being_downloaded_does_not_wait_for_the_first() {
    let reg = Registry::start_plain();
    let (data, layer) = push_big(&reg);
    let proxy = Proxy::start(&reg.addr);
    proxy.stall_after(None, Some(2 << 20));
    let env = ImageEnv::new();
    let via_proxy = format!("{}/team/big:1", proxy.addr);
    let mut first = env
        .image_command(&["pull", "--insecure", "--quiet", &via_proxy])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pull");
    wait_for("the download to stall", || proxy.stalled());
    wait_for("the partial file", || {
        partial_file(&env, &layer.digest).exists()
    });
    // The first pull holds the partial file: the second downloads on its own and commits.
    let direct = format!("{}/team/big:1", reg.addr);
    env.image_within(
        &["pull", "--insecure", "--quiet", &direct],
        Duration::from_secs(120),
    )
    .ok();
    proxy.release();
    assert!(
        first.wait().expect("wait").success(),
        "the first pull failed"
    );
    assert_eq!(env.list().len(), 2, "{:?}", env.list());
    for r in [&direct, &via_proxy] {
        let bundle = env.work().join(r.replace([':', '/'], "_"));
        env.unpack(r, &bundle);
        assert!(std::fs::read(bundle.join("rootfs/big")).expect("big") == data);
    }
    assert!(partials(&env).is_empty(), "{:?}", partials(&env));
}
