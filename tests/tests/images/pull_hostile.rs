//! Hostile registries: every lie or stall gives a clear error naming what failed, and the
//! store lists nothing and holds no stray data afterwards.

use berth_tests::images::fake_registry::{FakeRegistry, Reply};
use berth_tests::images::layout::{digest_of, Compression, RawTar};
use berth_tests::images::{host_arch, ImageEnv};
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image's blobs: (manifest, config, layer) bytes and their digests.
pub(crate) struct Blobs {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer: Vec<u8>,
    pub layer_digest: String,
}

pub(crate) fn blobs(layer_size_claim: Option<u64>) -> Blobs {
    let mut tar = RawTar::new();
    tar.file("hello", 0o644, b"hello\n");
    let tar = tar.finish();
    let layer = Compression::Gzip.compress(&tar);
    let layer_digest = digest_of(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]},
    }))
    .expect("config");
    let config_digest = digest_of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size_claim.unwrap_or(layer.len() as u64)}],
    }))
    .expect("manifest");
    Blobs {
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

/// Serves `b` with `layer` answering the layer blob and `manifest` the manifest.
fn serve(
    b: Blobs,
    layer: impl Fn() -> Reply + Send + Sync + 'static,
    manifest: Option<Reply>,
) -> FakeRegistry {
    let manifest = std::sync::Mutex::new(manifest);
    FakeRegistry::start(move |path| {
        if path == "/v2/" {
            return Reply::Ok("application/json".into(), b"{}".to_vec());
        }
        if path.starts_with("/v2/test/x/manifests/") {
            if let Some(r) = manifest.lock().expect("lock").take() {
                return r;
            }
            return Reply::Ok(OCI_MANIFEST.into(), b.manifest.clone());
        }
        if path == format!("/v2/test/x/blobs/{}", b.config_digest) {
            return Reply::Ok("application/octet-stream".into(), b.config.clone());
        }
        if path == format!("/v2/test/x/blobs/{}", b.layer_digest) {
            return layer();
        }
        Reply::Status(404, vec![])
    })
}

/// Pulls from `reg`, which must fail saying `says`, leaving the store empty.
#[track_caller]
fn refused(case: &str, reg: &FakeRegistry, says: &[&str]) -> String {
    let env = ImageEnv::new();
    let empty = env.store_bytes();
    let reference = format!("{}/test/x:1", reg.addr);
    let out = env
        .image(&["pull", "--insecure", "--quiet", &reference])
        .failed();
    for s in says {
        assert!(
            out.stderr.contains(s),
            "{case}: the error does not say `{s}`: {out}"
        );
    }
    assert!(
        out.stderr.contains(&reg.addr),
        "{case}: the registry is not named: {out}"
    );
    env.assert_store_empty(case);
    assert!(
        env.store_bytes() <= empty + (64 << 10),
        "{case}: the store kept {} bytes",
        env.store_bytes() - empty
    );
    out.stderr
}

#[test]
fn hostile_registries_are_refused_and_leave_nothing() {
    let b = blobs(None);
    let ld = b.layer_digest.clone();
    let other = Compression::Gzip.compress(b"not the layer");
    let reg = serve(
        b,
        move || Reply::Ok("application/octet-stream".into(), other.clone()),
        None,
    );
    refused(
        "a blob whose digest does not match",
        &reg,
        &[ld.trim_start_matches("sha256:")],
    );

    let b = blobs(Some(10));
    let layer = b.layer.clone();
    let reg = serve(b, move || Reply::Ok("x".into(), layer.clone()), None);
    refused("a manifest that lies about a size", &reg, &["size"]);

    let b = blobs(None);
    let reg = serve(b, || Reply::Endless, None);
    refused("an endless body", &reg, &["size"]);

    let b = blobs(None);
    let layer = b.layer.clone();
    let reg = serve(
        b,
        move || Reply::Cut {
            len: layer.len() as u64,
            body: layer[..layer.len() / 2].to_vec(),
        },
        None,
    );
    refused("a connection cut mid-layer", &reg, &["blob"]);

    let b = blobs(None);
    let ld = b.layer_digest.clone();
    let reg = serve(
        b,
        move || {
            Reply::Status(
                307,
                vec![("Location".into(), format!("/v2/test/x/blobs/{ld}"))],
            )
        },
        None,
    );
    refused("a redirect loop", &reg, &["redirect"]);

    let b = blobs(None);
    let reg = serve(
        b,
        || Reply::Status(500, vec![]),
        Some(Reply::Ok(OCI_MANIFEST.into(), vec![b' '; 10 << 20])),
    );
    refused("a manifest of 10 MB", &reg, &["larger than"]);

    let b = blobs(None);
    let reg = serve(
        b,
        || Reply::Status(500, vec![]),
        Some(Reply::Ok(
            "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            br#"{"schemaVersion": 1, "name": "test/x", "tag": "1", "fsLayers": []}"#.to_vec(),
        )),
    );
    refused("a schema 1 manifest", &reg, &["schema 1"]);

    // An error body with terminal escapes (a title change, clearing the screen) and a
    // bidirectional override: shown escaped, never as the bytes themselves.
    let b = blobs(None);
    let reg = serve(
        b,
        || Reply::Full {
            status: 403,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: "denied \x1b]0;pwned\x07\x1b[2J \u{202e}txt.exe"
                .as_bytes()
                .to_vec(),
        },
        None,
    );
    let out = refused(
        "an error body with control characters",
        &reg,
        &["403", "denied"],
    );
    assert!(
        !out.contains(['\x1b', '\x07', '\u{202e}']),
        "control characters reached the terminal: {out:?}"
    );
    assert!(
        out.contains("\\x1b]0;pwned\\x07") && out.contains("\\u{202e}"),
        "the error does not show the escapes: {out:?}"
    );

    let me = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let me2 = me.clone();
    let reg = FakeRegistry::start(move |path| {
        if path.starts_with("/token") {
            return Reply::Ok(
                "application/json".into(),
                br#"{"token":"t0k3n-s3cr3t"}"#.to_vec(),
            );
        }
        let realm = format!(
            "http://{}/token",
            me2.get().map_or("127.0.0.1:1", String::as_str)
        );
        Reply::Status(
            401,
            vec![(
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"{realm}\",service=\"fake\""),
            )],
        )
    });
    me.set(reg.addr.clone()).expect("set once");
    let env = ImageEnv::new();
    let out = env
        .image(&[
            "pull",
            "--insecure",
            "--quiet",
            &format!("{}/test/x:1", reg.addr),
        ])
        .failed();
    assert!(
        out.stderr.contains("401") && out.stderr.contains(&reg.addr),
        "a 401 loop: {out}"
    );
    assert!(
        !out.stderr.contains("t0k3n"),
        "a token reached the error: {out}"
    );
    env.assert_store_empty("a 401 loop");

    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "a".repeat(64)), "size": 1,
                       "platform": {"architecture": "s390x", "os": "linux"}}],
    }))
    .expect("index");
    let b = blobs(None);
    let reg = serve(
        b,
        || Reply::Status(500, vec![]),
        Some(Reply::Ok(
            "application/vnd.oci.image.index.v1+json".into(),
            index,
        )),
    );
    let env = ImageEnv::new();
    let out = env
        .image(&[
            "pull",
            "--insecure",
            "--quiet",
            &format!("{}/test/x:1", reg.addr),
        ])
        .failed();
    assert!(
        out.stderr.contains("s390x"),
        "the platforms of the index are not listed: {out}"
    );
    env.assert_store_empty("no matching platform");
}

/// A pull killed with SIGKILL while one layer is still downloading, run again, completes
/// and fetches only what it did not have.
#[test]
fn a_pull_killed_midway_resumes_with_only_what_is_missing() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let layer = |name: &str| {
        let mut t = RawTar::new();
        t.file(name, 0o644, name.as_bytes());
        let tar = t.finish();
        (Compression::Gzip.compress(&tar), digest_of(&tar))
    };
    let (a, a_diff) = layer("a");
    let (b, b_diff) = layer("b");
    let (ad, bd) = (digest_of(&a), digest_of(&b));
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [a_diff, b_diff]},
    }))
    .expect("config");
    let cd = digest_of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ad, "size": a.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": bd, "size": b.len()},
        ],
    }))
    .expect("manifest");
    let stall = Arc::new(AtomicBool::new(true));
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (stall2, hits2) = (stall.clone(), hits.clone());
    let a_path = format!("/v2/test/x/blobs/{ad}");
    let reg = FakeRegistry::start(move |path| {
        *hits2
            .lock()
            .expect("lock")
            .entry(path.to_string())
            .or_default() += 1;
        let blob = |d: &str| path == format!("/v2/test/x/blobs/{d}");
        if path.starts_with("/v2/test/x/manifests/") {
            Reply::Ok(OCI_MANIFEST.into(), manifest.clone())
        } else if blob(&cd) {
            Reply::Ok("x".into(), config.clone())
        } else if blob(&ad) {
            Reply::Ok("x".into(), a.clone())
        } else if blob(&bd) {
            let until = Instant::now() + Duration::from_secs(60);
            while stall2.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            Reply::Ok("x".into(), b.clone())
        } else {
            Reply::Ok("application/json".into(), b"{}".to_vec())
        }
    });
    let env = ImageEnv::new();
    let reference = format!("{}/test/x:1", reg.addr);
    let mut child = env
        .image_command(&["pull", "--insecure", "--quiet", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pull");
    let a_blob = env
        .store()
        .join("blobs/sha256")
        .join(a_path.rsplit(':').next().expect("hex"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a_blob.exists() {
        assert!(Instant::now() < deadline, "layer a never reached the store");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL the pull");
    child.wait().expect("reap");
    env.assert_store_empty("after the killed pull");
    stall.store(false, Ordering::SeqCst);
    env.image(&["pull", "--insecure", "--quiet", &reference])
        .ok();
    let hits = hits.lock().expect("lock");
    assert_eq!(
        hits.get(&a_path),
        Some(&1),
        "layer a fetched again: {hits:?}"
    );
    let bundle = env.work().join("b");
    env.unpack(&reference, &bundle);
    assert_eq!(std::fs::read(bundle.join("rootfs/b")).expect("b"), b"b");
    assert_eq!(std::fs::read(bundle.join("rootfs/a")).expect("a"), b"a");
}

/// The library seam the orchestrator's agent calls: `registry::ensure` from a worker
/// thread pulls a missing image once, reports progress, and returns the stored image
/// without a request when it is already there.
#[test]
fn ensure_pulls_once_from_a_worker_thread_and_reports_progress() {
    use berth_images::progress::Progress;
    use berth_images::registry::{ensure, PullOptions};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);
    impl Progress for Record {
        fn start(&self, id: &str, what: &str, _: u64) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("start {id} {what}"));
        }
        fn advance(&self, _: &str, _: u64) {}
        fn finish(&self, id: &str, what: &str) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("finish {id} {what}"));
        }
    }
    let b = blobs(None);
    let requests = Arc::new(Mutex::new(0usize));
    let (config, cd, layer, ld, manifest) = (
        b.config,
        b.config_digest,
        b.layer,
        b.layer_digest,
        b.manifest,
    );
    let r2 = requests.clone();
    let reg = FakeRegistry::start(move |path| {
        *r2.lock().expect("lock") += 1;
        if path.starts_with("/v2/test/x/manifests/") {
            Reply::Ok(OCI_MANIFEST.into(), manifest.clone())
        } else if path.ends_with(&cd) {
            Reply::Ok("x".into(), config.clone())
        } else if path.ends_with(&ld) {
            Reply::Ok("x".into(), layer.clone())
        } else {
            Reply::Ok("application/json".into(), b"{}".to_vec())
        }
    });
    let env = ImageEnv::new();
    let store = berth_images::store::Store::open(&env.store()).expect("store");
    let mut opts = PullOptions::default();
    opts.registry.insecure = true;
    opts.registry.auth_files = Vec::new();
    let reference = format!("{}/test/x:1", reg.addr);
    let progress = Record::default();
    let rec = std::thread::scope(|s| {
        s.spawn(|| ensure(&store, &reference, &opts, &progress))
            .join()
            .expect("worker thread")
    })
    .expect("ensure pulls");
    assert_eq!(rec.reference, reference);
    let events = progress.0.lock().expect("lock").clone();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("finish") && e.ends_with("downloaded")),
        "{events:?}"
    );
    let after_pull = *requests.lock().expect("lock");
    let again = ensure(&store, &reference, &opts, &progress).expect("ensure again");
    assert_eq!(again.manifest, rec.manifest);
    assert_eq!(
        *requests.lock().expect("lock"),
        after_pull,
        "ensure asked the registry again"
    );
}
