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
