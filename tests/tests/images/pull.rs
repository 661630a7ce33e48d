//! `berth image pull` from a real registry (Debian's docker-registry on loopback).

use std::fs;

use berth_tests::images::registry::Registry;
use berth_tests::images::{fixture, tree, ImageEnv};

#[test]
fn pull_from_a_plain_http_registry_unpacks_like_umoci_and_runs() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    let reg = Registry::start_plain();
    reg.push_layout(&image.layout, fixture::TAG, "test/bb:1", &env.work());
    let reference = format!("{}/test/bb:1", reg.addr);

    // Not listed as insecure: no plain HTTP, and the error names the registry.
    let out = env
        .image(&["pull", "--registries-conf", "/nonexistent", &reference])
        .failed();
    assert!(out.stderr.contains(&reg.addr), "{out}");
    env.assert_store_empty("refused plain HTTP");

    // Listed as insecure in a registries.conf.
    let conf = env.work().join("registries.conf");
    fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.addr
        ),
    )
    .expect("write registries.conf");
    let conf = conf.to_str().expect("utf-8");
    let out = env
        .image(&["pull", "--registries-conf", conf, &reference])
        .ok();
    assert!(out.stdout.starts_with(&reference), "{out}");
    assert!(
        out.stderr.contains("downloaded"),
        "plain progress lines off a terminal: {out}"
    );

    let bundle = env.work().join("pulled");
    env.unpack(&reference, &bundle);
    let diff = tree::diff(
        &tree::snapshot(&image.umoci_bundle.join("rootfs")),
        &tree::snapshot(&bundle.join("rootfs")),
    );
    assert!(
        diff.is_empty(),
        "pulled rootfs differs from umoci's:\n{}",
        diff.join("\n")
    );
    let out = env.image(&["run", "--rm", &reference]).ok();
    assert_eq!(out.stdout.trim_end(), fixture::CMD_OUTPUT, "{out}");

    // Pulling again fetches nothing (--insecure flag form, --quiet: no output).
    let out = env
        .image(&[
            "pull",
            "--insecure",
            "--quiet",
            "--registries-conf",
            "/nonexistent",
            &reference,
        ])
        .ok();
    assert!(out.stderr.is_empty(), "{out}");

    // A tag the registry does not have: HTTP 404 named, store unchanged.
    let before = env.list().len();
    let missing = format!("{}/test/bb:nope", reg.addr);
    let out = env.image(&["pull", "--insecure", &missing]).failed();
    assert!(
        out.stderr.contains("404") && out.stderr.contains("test/bb"),
        "{out}"
    );
    assert_eq!(env.list().len(), before);
}

#[test]
fn pull_over_tls_with_a_generated_ca_and_basic_auth_after_login() {
    use berth_tests::images::registry::Setup;
    const PASSWORD: &str = "s3cret-pw-9f1";
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    let certs = env.work().join("certs.d");
    let reg = Registry::start(Setup {
        tls_certs_dir: Some(certs.clone()),
        basic: Some(("alice".into(), PASSWORD.into())),
        ..Setup::default()
    });
    reg.push_layout_as(
        &image.layout,
        fixture::TAG,
        "team/bb:1",
        &env.work(),
        Some(&format!("alice:{PASSWORD}")),
    );
    let reference = format!("{}/team/bb:1", reg.addr);
    let certs = certs.to_str().expect("utf-8").to_string();
    let authfile = env.work().join("auth.json");
    let authfile = authfile.to_str().expect("utf-8").to_string();
    let no_conf = ["--registries-conf", "/nonexistent"];

    // The test CA is not among the system roots: refused, naming the registry.
    let out = env
        .image(
            &[
                &["pull", "--quiet", "--authfile", &authfile][..],
                &no_conf,
                &[&reference],
            ]
            .concat(),
        )
        .failed();
    assert!(out.stderr.contains(&reg.addr), "{out}");
    // With the CA from certs.d but no credentials: the registry wants a login.
    let pull = |extra: &[&str]| {
        let mut args = vec![
            "pull",
            "--quiet",
            "--cert-dir",
            &certs,
            "--authfile",
            &authfile,
        ];
        args.extend_from_slice(&no_conf);
        args.extend_from_slice(extra);
        args.push(&reference);
        env.image(&args)
    };
    let out = pull(&[]).failed();
    assert!(out.stderr.contains("login"), "{out}");
    env.assert_store_empty("before login");

    // Login checks the password (from stdin only) before storing it.
    let login = |password: &str| {
        env.image_with_stdin(
            &[
                "login",
                &reg.addr,
                "--username",
                "alice",
                "--password-stdin",
                "--cert-dir",
                &certs,
                "--authfile",
                &authfile,
                "--registries-conf",
                "/nonexistent",
            ],
            &format!("{password}\n"),
        )
    };
    let bad = login("wrong-password");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{bad:?}"
    );
    assert!(
        !std::path::Path::new(&authfile).exists(),
        "a refused login stored something"
    );
    let good = login(PASSWORD);
    assert!(good.status.success(), "{good:?}");
    let mode = fs::metadata(&authfile).expect("auth file").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let out = pull(&[]).ok();
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD));
    let out = env.image(&["run", "--rm", &reference]).ok();
    assert_eq!(out.stdout.trim_end(), fixture::CMD_OUTPUT, "{out}");

    let out = env
        .image(&["logout", &reg.addr, "--authfile", &authfile])
        .ok();
    assert!(out.stdout.contains("Removed"), "{out}");
    assert!(!fs::read_to_string(&authfile)
        .expect("auth file")
        .contains(&reg.addr));
}
