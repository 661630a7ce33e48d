//! A unit's image comes from a registry: the node the leader chose pulls it (once, even for
//! two units that need it), the others do not, and a missing image is the unit's error.

use super::*;

#[test]
fn the_node_that_runs_a_unit_pulls_its_image_once_and_a_missing_one_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = web_image(tmp.path());
    let mut c = Cluster::with_agents();
    let conf = c.dir().join("registries.conf");
    c.extra_args = vec!["--registries-conf".into(), conf.display().to_string()];
    c.start_voters("pull", 3);
    c.wait_for_agreed_leader(&c.all());
    let reg = c.start_registry();
    assert_eq!(c.insecure_registries_conf(&reg), conf);
    reg.push(&layout, "web", "team/web:1");
    let image = format!("{}/team/web:1", reg.addr);
    let unit = |port: u16| {
        format!(
            "[Container]\nImage={image}\nExec=httpd -f -p {port} -h /www\nPublishPort={port}:{port}\n\n[Service]\nTimeoutStopSec=1s\n\n[X-Fleet]\nMachineID=n1\n"
        )
    };
    let a = unit_file(tmp.path(), "pa.service", &unit(8181));
    let b = unit_file(tmp.path(), "pb.service", &unit(8182));
    let out = ctl(
        &c,
        0,
        &[
            "start",
            a.to_str().expect("utf-8"),
            b.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.matches("launched on n1").count(), 2, "{out}");
    let ip = c.net.slot(1).ip;
    for port in [8181, 8182] {
        let page = wait_until("the pulled image to serve", UNIT_PATIENCE, || {
            http_get(&c, 2, &format!("http://{ip}:{port}/index.html"))
        });
        assert_eq!(page, "hello from a berth unit\n");
    }
    // One manifest fetch and one layer fetch for both units; only n1 pulled.
    let manifest_gets = reg.requests_containing("GET /v2/team/web/manifests/");
    assert_eq!(
        manifest_gets, 1,
        "the manifest was fetched once for both units"
    );
    let layer_gets = reg.requests_containing("GET /v2/team/web/blobs/sha256:");
    assert!(
        (1..=2).contains(&layer_gets),
        "the config and layer blobs were fetched once: {layer_gets} blob GETs"
    );
    for k in [0, 2] {
        let store = c.dir().join(c.node(k).name.clone()).join("images");
        let listed = Command::new(berth_tests::workspace_bin("berth"))
            .args(["image", "--store"])
            .arg(&store)
            .args(["ls", "--format", "json"])
            .output()
            .expect("berth image ls");
        let text = String::from_utf8_lossy(&listed.stdout);
        assert!(!text.contains("team/web"), "n{k} pulled too: {text}");
    }

    // An image the registry does not have: the unit's error says so.
    let missing = unit_file(
        tmp.path(),
        "pm.service",
        &format!(
            "[Container]\nImage={}/team/nothing:1\nExec=true\n",
            reg.addr
        ),
    );
    let out = c.berthctl(
        0,
        &[
            "start",
            "--block-timeout",
            "30",
            missing.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pulling") && err.contains("team/nothing"),
        "the unit's error names the pull: {err}"
    );
}
