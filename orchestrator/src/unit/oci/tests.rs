//! Translations compared as JSON.

use serde_json::{json, Value};

use berth_images::bundle::{parse_group, parse_passwd, UserDb};
use berth_images::manifest::ImageConfig;

use super::*;
use crate::unit::{parse_unit_on, MachineContext};

const HOST: HostLimits = HostLimits {
    memory_bytes: 8 << 30,
    pids_max: 4_194_304,
};

fn machine() -> MachineContext {
    MachineContext {
        machine_id: "n1".into(),
        hostname: "host1".into(),
    }
}

fn users() -> UserDb {
    UserDb {
        users: parse_passwd("root:x:0:0:root:/root:/bin/sh\ncore:x:500:500::/home/core:/bin/sh\napp:x:1000:1000::/srv/app:/bin/sh\n"),
        groups: parse_group("root:x:0:\ncore:x:500:\napp:x:1000:\ndocker:x:233:core\n"),
    }
}

fn image() -> ImageConfig {
    serde_json::from_value(json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/usr/bin:/bin", "A=image"], "WorkingDir": "/app", "User": "app"},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .expect("image config")
}

fn translate(
    name: &str,
    text: &str,
    root: Root<'_>,
    env_files: &[String],
    netns: Option<&str>,
) -> Result<Value, OciError> {
    let unit = parse_unit_on(name, text, &machine()).unwrap_or_else(|e| panic!("{e}"));
    let ctx = OciContext {
        hostname: "web-1",
        netns_path: netns,
        resolv_conf: netns.map(|_| "/run/berth/units/x/resolv.conf"),
        host: HOST,
        env_files,
    };
    runtime_config(&unit, root, &ctx)
}

fn hash_of(text: &str) -> String {
    crate::unit::parse_unit("a.service", text)
        .expect("parses")
        .hash
}

fn default_mounts(extra: &[Value]) -> Value {
    let mut m = berth_images::bundle::base_mounts();
    m.push(berth_images::bundle::sysfs_mount());
    m.extend(extra.iter().cloned());
    Value::Array(m)
}

#[test]
fn fleet_era_unit_runs_on_the_read_only_host_root() {
    let text = "[Service]\nExecStart=/bin/sh -c \"echo ${GREETING} $$HOME from %H\" $ARGS ${MISSING}x $NOPE end\nUser=core\nEnvironment=GREETING=hi ARGS=\"-a  -b\"\nEnvironmentFile=-/etc/environment\nWorkingDirectory=/var/lib/side\nMemoryMax=50%\nCPUQuota=25%\nTasksMax=100\n";
    let files = ["ARGS=-x\nCOREOS_PUBLIC_IPV4=10.0.0.1\n".to_string()];
    let got = translate(
        "side.service",
        text,
        Root::Host { users: &users() },
        &files,
        None,
    )
    .expect("translates");
    let want = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 500, "gid": 500, "additionalGids": [233]},
            // The file's ARGS wins over Environment=; $ARGS alone splits, ${X} does not.
            "args": ["/bin/sh", "-c", "echo hi $HOME from host1", "-x", "x", "end"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/home/core", "USER=core", "LOGNAME=core", "GREETING=hi",
                "ARGS=-x", "COREOS_PUBLIC_IPV4=10.0.0.1"
            ],
            "cwd": "/var/lib/side",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024}],
            "noNewPrivileges": false
        },
        "root": {"path": "/", "readonly": true},
        "hostname": "web-1",
        "mounts": default_mounts(&[json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["rw", "nosuid", "nodev", "mode=1777"]})]),
        "annotations": {"org.berth.unit": "side.service", "org.berth.unit.hash": hash_of(text)},
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 4u64 << 30},
                "cpu": {"quota": 25_000, "period": 100_000},
                "pids": {"limit": 100}
            },
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": berth_images::bundle::MASKED_PATHS,
            "readonlyPaths": berth_images::bundle::READONLY_PATHS
        }
    });
    assert_eq!(got, want);
}

#[test]
fn fleet_era_root_gets_every_capability_and_literal_dollars_with_colon() {
    let got = translate(
        "a.service",
        "[Service]\nExecStart=:/bin/echo $HOME ${HOME}\n",
        Root::Host { users: &users() },
        &[],
        None,
    )
    .expect("translates");
    assert_eq!(
        got["process"]["args"],
        json!(["/bin/echo", "$HOME", "${HOME}"])
    );
    assert_eq!(got["process"]["user"], json!({"uid": 0, "gid": 0}));
    assert_eq!(
        got["process"]["env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root"
        ])
    );
    let caps = got["process"]["capabilities"]["bounding"]
        .as_array()
        .expect("caps");
    assert!(
        caps.len() >= 38 && caps.contains(&json!("CAP_SYS_ADMIN")),
        "{caps:?}"
    );
    assert_eq!(got["process"]["cwd"], "/");
}

#[test]
fn container_unit_every_key() {
    let text = "[Service]\nMemoryMax=256M\nTasksMax=10%\n[Container]\nImage=registry.example/web:1\nExec=--port 80 --host %H\nEnvironmentFile=/etc/web.env\nEnvironment=B=unit A=unit\nUser=root\nWorkingDir=/srv\nVolume=/data:/var/lib/data:ro,bind,rslave,nosuid\nReadOnly=yes\nDropCapability=CAP_KILL\nAddCapability=net_admin\nNetwork=none\nPublishPort=8080:80\n";
    let files = ["A=file\nB=\"file\"\nC=file\n".to_string()];
    let got = translate(
        "web@1.service",
        text,
        Root::Image {
            config: &image(),
            users: &users(),
        },
        &files,
        None,
    )
    .expect("translates");
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]);
    let tmpfs = |d: &str, mode: &str| json!({"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["rw", "nosuid", "nodev", format!("mode={mode}")]});
    let want = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/entry", "--port", "80", "--host", "host1"],
            // Image env, then the file (podman format: quotes kept), then Environment=.
            "env": ["PATH=/usr/bin:/bin", "C=file", "B=unit", "A=unit", "HOME=/root"],
            "cwd": "/srv",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "web-1",
        "mounts": default_mounts(&[
            tmpfs("/tmp", "1777"), tmpfs("/var/tmp", "1777"), tmpfs("/run", "755"),
            json!({"destination": "/var/lib/data", "type": "bind", "source": "/data", "options": ["bind", "ro", "rslave", "nosuid"]})
        ]),
        "annotations": {
            "org.opencontainers.image.os": "linux",
            "org.opencontainers.image.architecture": "amd64",
            "org.berth.unit": "web@1.service",
            "org.berth.unit.hash": crate::unit::parse_unit("web@1.service", text).expect("p").hash
        },
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 256u64 << 20},
                "pids": {"limit": 419_430}
            },
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": berth_images::bundle::MASKED_PATHS,
            "readonlyPaths": berth_images::bundle::READONLY_PATHS
        }
    });
    assert_eq!(got, want);
}

#[test]
fn container_defaults_come_from_the_image() {
    let got = translate(
        "web.service",
        "[Container]\nImage=web\n",
        Root::Image {
            config: &image(),
            users: &users(),
        },
        &[],
        Some("/run/netns/x"),
    )
    .expect("translates");
    assert_eq!(got["process"]["args"], json!(["/entry", "serve"]));
    assert_eq!(got["process"]["user"], json!({"uid": 1000, "gid": 1000}));
    assert_eq!(got["process"]["cwd"], "/app");
    assert_eq!(
        got["process"]["capabilities"]["bounding"],
        json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    );
    assert_eq!(got["root"], json!({"path": "rootfs", "readonly": false}));
    // No Network=: the cluster network, whose namespace the caller made, and its resolver.
    assert_eq!(
        got["linux"]["namespaces"][1],
        json!({"type": "network", "path": "/run/netns/x"})
    );
    assert_eq!(
        got["mounts"].as_array().expect("mounts").last(),
        Some(&json!({"destination": "/etc/resolv.conf", "type": "bind",
                     "source": "/run/berth/units/x/resolv.conf",
                     "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}))
    );
    let host = translate(
        "web.service",
        "[Container]\nImage=web\nNetwork=host\n",
        Root::Image {
            config: &image(),
            users: &users(),
        },
        &[],
        Some("/run/netns/x"),
    )
    .expect("translates");
    assert_eq!(
        host["linux"]["namespaces"].as_array().map(Vec::len),
        Some(4)
    );
    assert!(
        !host["mounts"].to_string().contains("resolv.conf"),
        "the host's network keeps the image's resolver"
    );
    let all = translate(
        "web.service",
        "[Container]\nImage=web\nDropCapability=all\nAddCapability=all\n",
        Root::Image {
            config: &image(),
            users: &users(),
        },
        &[],
        Some("/run/netns/x"),
    )
    .expect("translates");
    assert!(
        all["process"]["capabilities"]["permitted"]
            .as_array()
            .expect("caps")
            .len()
            >= 38
    );
    let none = translate(
        "web.service",
        "[Container]\nImage=web\nDropCapability=all\n",
        Root::Image {
            config: &image(),
            users: &users(),
        },
        &[],
        Some("/run/netns/x"),
    )
    .expect("translates");
    assert_eq!(none["process"]["capabilities"]["effective"], json!([]));
}

#[test]
fn translation_errors() {
    let img = image();
    let u = users();
    let e = translate(
        "web.service",
        "[Container]\nImage=web\nNetwork=cluster\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &[],
        None,
    )
    .expect_err("no netns");
    assert_eq!(
        e.to_string(),
        "web.service: Network=cluster needs a network namespace path from the caller"
    );
    let e = translate(
        "web.service",
        "[Container]\nImage=web\nUser=root\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &[],
        None,
    )
    .expect_err("the default network needs a netns too");
    assert_eq!(
        e.to_string(),
        "web.service: Network=berth needs a network namespace path from the caller"
    );
    let e = translate(
        "web.service",
        "[Container]\nImage=web\nUser=nobody\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &[],
        None,
    )
    .expect_err("user");
    assert_eq!(
        e.to_string(),
        "web.service: user `nobody` not found in the image's /etc/passwd"
    );
    let e = translate(
        "web.service",
        "[Container]\nImage=web\nEnvironmentFile=/e\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &["A=1\nBARE\n".into()],
        None,
    )
    .expect_err("env file");
    assert!(
        e.to_string()
            .starts_with("web.service: EnvironmentFile /e:2: \"BARE\" has no '='"),
        "{e}"
    );
    let e = translate(
        "web.service",
        "[Container]\nImage=web\nEnvironmentFile=/e\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &[],
        None,
    )
    .expect_err("count");
    assert_eq!(
        e.to_string(),
        "web.service: the unit names 1 EnvironmentFile(s), 0 contents given"
    );
    let e = translate(
        "web.service",
        "[Container]\nImage=web\n",
        Root::Host { users: &u },
        &[],
        None,
    )
    .expect_err("root");
    assert_eq!(
        e.to_string(),
        "web.service: a [Container] unit runs from its image, not the host's root"
    );
    let e = translate(
        "a.service",
        "[Service]\nExecStart=/bin/true\n",
        Root::Image {
            config: &img,
            users: &u,
        },
        &[],
        None,
    )
    .expect_err("root");
    assert_eq!(
        e.to_string(),
        "a.service: a unit without [Container] runs on the host's root, not an image"
    );
    let e = translate(
        "a.service",
        "[Service]\nExecStart=/bin/true\nEnvironmentFile=/etc/x\n",
        Root::Host { users: &u },
        &["X=\"open\n".into()],
        None,
    )
    .expect_err("systemd env file");
    assert_eq!(
        e.to_string(),
        "a.service: EnvironmentFile /etc/x:1: unbalanced quote \""
    );
}

#[test]
fn variable_substitution_edges() {
    let env = vec!["A=one two".to_string(), "E=".to_string()];
    let words: Vec<String> = [
        "$A",
        "x$A",
        "${A}",
        "$$",
        "$$A",
        "${E}y",
        "$E",
        "${not valid}",
        "cost$",
        "$1",
        "${A",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        host::substitute(&words, &env),
        [
            "one",
            "two",
            "x$A",
            "one two",
            "$",
            "$A",
            "y",
            "${not valid}",
            "cost$",
            "$1",
            "${A"
        ]
    );
}
