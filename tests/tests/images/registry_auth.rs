//! Pull and push against docker-registry set up as real deployments are: bearer tokens from
//! a token server (`auth: token:`, tokens signed by a key the test makes), mirrors from
//! registries.conf tried in order before the registry, TLS with client certificates
//! (mTLS) from certs.d, and blob downloads redirected to another host (a CDN).

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;

use berth_tests::images::fake_registry::{FakeRegistry, Reply};
use berth_tests::images::layout::{Compression, OciLayout, RawTar};
use berth_tests::images::registry::{make_client_certs, Access, Registry, Setup};
use berth_tests::images::token_server::{TokenRequest, TokenServer};
use berth_tests::images::ImageEnv;
use serde_json::json;

/// Stores a one-layer image holding `/hello` (saying `text`) in `env` as `name`.
fn import_hello(env: &ImageEnv, name: &str, text: &str) {
    let mut tar = RawTar::new();
    tar.file("hello", 0o644, text.as_bytes());
    let dir = env
        .work()
        .join(format!("layout-{}", name.replace(':', "-")));
    let mut layout = OciLayout::new(&dir);
    layout.add_layer(&tar.finish(), Compression::Gzip);
    layout.tag("t", json!({"Cmd": ["/hello"]}));
    env.import(&dir, name).ok();
}

/// `/hello` of the stored image `reference`.
fn hello_of(env: &ImageEnv, reference: &str) -> String {
    let bundle = env
        .work()
        .join(format!("b-{}", reference.replace([':', '/'], "-")));
    env.unpack(reference, &bundle);
    fs::read_to_string(bundle.join("rootfs/hello")).expect("hello")
}

fn login(env: &ImageEnv, registry: &str, user: &str, password: &str, authfile: &Path) -> bool {
    let authfile = authfile.to_str().expect("utf-8");
    env.image_with_stdin(
        &[
            "login",
            registry,
            "-u",
            user,
            "--password-stdin",
            "--insecure",
            "--authfile",
            authfile,
            "--registries-conf",
            "/nonexistent",
        ],
        &format!("{password}\n"),
    )
    .status
    .success()
}

#[test]
fn a_real_token_flow_scopes_and_caches_tokens_for_pull_push_and_mounts() {
    const PW: &str = "t0ken-flow-pw";
    let scratch = tempfile::tempdir().expect("token dir");
    let ts = TokenServer::start(scratch.path(), &[("alice", PW)]);
    let reg = Registry::start(Setup {
        token: Some(ts.registry_auth()),
        ..Setup::default()
    });
    let pusher = ImageEnv::new();
    let authfile = pusher.work().join("auth.json");
    let auth = authfile.to_str().expect("utf-8");

    // Login goes through the token server: a wrong password is refused there.
    assert!(!login(&pusher, &reg.addr, "alice", "wrong", &authfile));
    assert!(!authfile.exists());
    assert!(login(&pusher, &reg.addr, "alice", PW, &authfile));

    import_hello(&pusher, "app:1", "hello from the token flow\n");
    let app = format!("{}/team/app:1", reg.addr);
    let before = ts.requests().len();
    pusher
        .image(&[
            "push",
            "--insecure",
            "--quiet",
            "--authfile",
            auth,
            "app:1",
            &app,
        ])
        .ok();
    let push_tokens = &ts.requests()[before..];
    assert!(!push_tokens.is_empty());
    assert!(
        push_tokens
            .iter()
            .all(|t| t.user.as_deref() == Some("alice")
                && t.scopes == ["repository:team/app:pull,push"]),
        "{push_tokens:?}"
    );

    // Without credentials the token grants nothing: 401, nothing stored.
    let anon = ImageEnv::new();
    let out = anon
        .image(&[
            "pull",
            "--insecure",
            "--quiet",
            "--authfile",
            "/nonexistent",
            &app,
        ])
        .failed();
    assert!(out.stderr.contains("401"), "{out}");
    anon.assert_store_empty("anonymous pull of a private repository");

    // With them: one token for the whole pull (manifest, config, layer), cached per scope.
    let puller = ImageEnv::new();
    let before = ts.requests().len();
    puller
        .image(&["pull", "--insecure", "--quiet", "--authfile", auth, &app])
        .ok();
    assert_eq!(
        ts.requests()[before..],
        [TokenRequest {
            user: Some("alice".into()),
            scopes: vec!["repository:team/app:pull".into()]
        }]
    );
    assert_eq!(hello_of(&puller, &app), "hello from the token flow\n");

    // A mount needs pull on the source repository too: both scopes in one token request.
    let copy = format!("{}/team/copy:1", reg.addr);
    let before = (ts.requests().len(), reg.access().len());
    let out = puller
        .image(&["push", "--insecure", "--authfile", auth, &app, &copy])
        .ok();
    assert!(out.stderr.contains("mounted from team/app"), "{out}");
    assert!(
        ts.requests()[before.0..]
            .iter()
            .any(|t| t.scopes == ["repository:team/copy:pull,push", "repository:team/app:pull"]),
        "{:?}",
        &ts.requests()[before.0..]
    );
    // Config and layer mounted (after the 401s that asked for the token), none uploaded.
    let after = &reg.access()[before.1..];
    let mounts: Vec<&Access> = after
        .iter()
        .filter(|a| a.method == "POST" && a.path.contains("mount=") && a.status != 401)
        .collect();
    assert!(
        mounts.len() == 2 && mounts.iter().all(|a| a.status == 201),
        "{after:?}"
    );
    assert!(!after
        .iter()
        .any(|a| a.method == "PUT" && a.path.contains("/blobs/")));

    // Anonymous pulls of what the token server makes public work.
    let public = format!("{}/public/app:1", reg.addr);
    pusher
        .image(&[
            "push",
            "--insecure",
            "--quiet",
            "--authfile",
            auth,
            "app:1",
            &public,
        ])
        .ok();
    let before = ts.requests().len();
    anon.image(&[
        "pull",
        "--insecure",
        "--quiet",
        "--authfile",
        "/nonexistent",
        &public,
    ])
    .ok();
    assert_eq!(
        ts.requests()[before..],
        [TokenRequest {
            user: None,
            scopes: vec!["repository:public/app:pull".into()]
        }]
    );
    assert_eq!(hello_of(&anon, &public), "hello from the token flow\n");
}

fn gets(access: &[Access], prefix: &str) -> Vec<(String, u16)> {
    access
        .iter()
        .filter(|a| a.method == "GET" && a.path.starts_with(prefix))
        .map(|a| (a.path.clone(), a.status))
        .collect()
}

#[test]
fn mirrors_are_tried_in_order_then_the_registry_and_never_pushed_to() {
    let origin = Registry::start_plain();
    let empty_mirror = Registry::start_plain();
    let full_mirror = Registry::start_plain();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let pusher = ImageEnv::new();
    import_hello(&pusher, "app:1", "from a mirror\n");
    import_hello(&pusher, "only:1", "from the registry\n");
    for (image, reg) in [
        ("app:1", &origin),
        ("app:1", &full_mirror),
        ("only:1", &origin),
    ] {
        let repo = image.split(':').next().expect("name");
        let dest = format!("{}/team/{repo}:1", reg.addr);
        pusher
            .image(&["push", "--insecure", "--quiet", image, &dest])
            .ok();
    }
    let conf = pusher.work().join("registries.conf");
    fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{dead}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            origin.addr, empty_mirror.addr, full_mirror.addr
        ),
    )
    .expect("registries.conf");
    let conf = conf.to_str().expect("utf-8");
    let env = ImageEnv::new();
    let marks = |r: &Registry| r.access().len();
    let (o0, e0, f0) = (marks(&origin), marks(&empty_mirror), marks(&full_mirror));

    // On the second mirror: the first (dead) and the empty one are passed over.
    let app = format!("{}/team/app:1", origin.addr);
    env.image(&["pull", "--quiet", "--registries-conf", conf, &app])
        .ok();
    assert_eq!(hello_of(&env, &app), "from a mirror\n");
    // The mirror that had the manifest serves the blobs too: the empty one was asked once.
    let empty_gets = gets(&empty_mirror.access()[e0..], "/v2/team/app/");
    assert_eq!(empty_gets.len(), 1, "{empty_gets:?}");
    assert_eq!(empty_gets[0].1, 404);
    let full_gets = gets(&full_mirror.access()[f0..], "/v2/team/app/");
    assert_eq!(
        full_gets.len(),
        3,
        "manifest, config and layer: {full_gets:?}"
    );
    assert!(full_gets.iter().all(|(_, s)| *s == 200), "{full_gets:?}");
    assert!(
        gets(&origin.access()[o0..], "/v2/").is_empty(),
        "the registry was asked although a mirror had the image"
    );

    // On no mirror: the registry itself serves it.
    let only = format!("{}/team/only:1", origin.addr);
    env.image(&["pull", "--quiet", "--registries-conf", conf, &only])
        .ok();
    assert_eq!(hello_of(&env, &only), "from the registry\n");
    let full_gets = gets(&full_mirror.access()[f0..], "/v2/team/only/");
    assert_eq!(full_gets.len(), 1, "{full_gets:?}");
    assert_eq!(full_gets[0].1, 404);
    let origin_gets = gets(&origin.access()[o0..], "/v2/team/only/");
    assert_eq!(origin_gets.len(), 3, "{origin_gets:?}");

    // A push goes to the registry only.
    let (e1, f1) = (marks(&empty_mirror), marks(&full_mirror));
    let pushed = format!("{}/team/pushed:1", origin.addr);
    env.image(&["push", "--quiet", "--registries-conf", conf, &app, &pushed])
        .ok();
    assert_eq!(origin.tags("team/pushed"), Some(vec!["1".to_string()]));
    assert_eq!((marks(&empty_mirror), marks(&full_mirror)), (e1, f1));
}

#[test]
fn client_certificates_from_certs_d_open_a_registry_that_requires_them() {
    let env = ImageEnv::new();
    let certs = env.work().join("certs.d");
    let (client_ca, cert, key) = make_client_certs(&env.work().join("client"));
    let reg = Registry::start(Setup {
        tls_certs_dir: Some(certs.clone()),
        client_ca: Some(client_ca),
        ..Setup::default()
    });
    let certs_s = certs.to_str().expect("utf-8");
    let no_conf = ["--registries-conf", "/nonexistent", "--cert-dir", certs_s];
    import_hello(&env, "app:1", "over mTLS\n");
    let app = format!("{}/team/app:1", reg.addr);

    // The server's CA alone: the registry wants a certificate.
    let push = |env: &ImageEnv| {
        env.image(&[&["push", "--quiet"][..], &no_conf, &["app:1", &app]].concat())
    };
    let out = push(&env).failed();
    assert!(out.stderr.contains(&reg.addr), "{out}");

    let host_dir = certs.join(&reg.addr);
    fs::copy(&cert, host_dir.join("client.cert")).expect("client cert");
    fs::copy(&key, host_dir.join("client.key")).expect("client key");
    push(&env).ok();
    let fresh = ImageEnv::new();
    fresh
        .image(&[&["pull", "--quiet"][..], &no_conf, &[&app]].concat())
        .ok();
    assert_eq!(hello_of(&fresh, &app), "over mTLS\n");

    // A certificate from another CA is refused.
    let (_, other_cert, other_key) = make_client_certs(&env.work().join("other"));
    fs::copy(&other_cert, host_dir.join("client.cert")).expect("other cert");
    fs::copy(&other_key, host_dir.join("client.key")).expect("other key");
    let other = ImageEnv::new();
    let out = other
        .image(&[&["pull", "--quiet"][..], &no_conf, &[&app]].concat())
        .failed();
    assert!(out.stderr.contains(&reg.addr), "{out}");
    other.assert_store_empty("a refused client certificate");
}

/// A registry that sends blob downloads to another host, as Docker Hub sends them to its
/// CDN: the pull follows the redirect, and that host never sees the registry's credentials.
#[test]
fn a_blob_redirected_to_another_host_is_fetched_without_the_credentials() {
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let b = crate::pull_hostile::blobs(None);
    // (path, Authorization header) of each request the other host got.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let cdn_seen: Seen = Arc::default();
    let (seen, layer) = (cdn_seen.clone(), b.layer.clone());
    let cdn = FakeRegistry::start_with(move |req| {
        let auth = req.header("authorization").map(String::from);
        seen.lock().expect("seen").push((req.path.clone(), auth));
        Reply::Ok("application/octet-stream".into(), layer.clone())
    });
    let creds = base64::engine::general_purpose::STANDARD.encode("alice:cdn-test-pw");
    let basic = format!("Basic {creds}");
    let to_cdn = format!("http://{}/cdn/{}?sig=signed", cdn.addr, b.layer_digest);
    let reg = FakeRegistry::start_with(move |req| {
        if req.header("authorization") != Some(basic.as_str()) {
            let challenge = ("WWW-Authenticate".into(), "Basic realm=\"test\"".into());
            return Reply::Status(401, vec![challenge]);
        }
        let p = req.path.as_str();
        if p == "/v2/" {
            Reply::Ok("application/json".into(), b"{}".to_vec())
        } else if p.starts_with("/v2/test/x/manifests/") {
            Reply::Ok(OCI_MANIFEST.into(), b.manifest.clone())
        } else if p == format!("/v2/test/x/blobs/{}", b.config_digest) {
            Reply::Ok("application/octet-stream".into(), b.config.clone())
        } else if p == format!("/v2/test/x/blobs/{}", b.layer_digest) {
            Reply::Status(307, vec![("Location".into(), to_cdn.clone())])
        } else {
            Reply::Status(404, vec![])
        }
    });
    let env = ImageEnv::new();
    let authfile = env.work().join("auth.json");
    fs::write(
        &authfile,
        json!({"auths": {reg.addr.clone(): {"auth": creds}}}).to_string(),
    )
    .expect("auth.json");
    let image = format!("{}/test/x:1", reg.addr);
    let auth = authfile.to_str().expect("utf-8");
    env.image(&["pull", "--insecure", "--quiet", "--authfile", auth, &image])
        .ok();
    assert_eq!(hello_of(&env, &image), "hello\n");
    let seen = cdn_seen.lock().expect("seen").clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|(path, _)| path.contains("?sig=signed")),
        "the layer did not come from the redirect: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, auth)| auth.is_none()),
        "the credentials went to the other host: {seen:?}"
    );
}
