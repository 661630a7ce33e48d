//! Running containers straight from an image (through the runtime's `berth run`).

use std::fs;

use berth_tests::images::{fixture, tree, ImageEnv};

/// Interface names in /proc/net/dev output.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

#[test]
fn image_run_prints_what_the_image_and_flags_say() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    // The image's own Cmd.
    let out = env.image(&["run", "--rm", "--net", "none", "bb:1"]).ok();
    assert_eq!(out.stdout.trim_end(), fixture::CMD_OUTPUT, "{out}");

    // The image's Env, WorkingDir and User (a name resolved through its /etc/passwd).
    let script = "cat /etc/os-release; echo \"FOO=$FOO\"; pwd; id -u; id -g";
    let out = env
        .image(&[
            "run", "--rm", "--net", "none", "bb:1", "/bin/sh", "-c", script,
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "{}FOO=bar from the image\n/home/app\n1000\n1001\n",
            fixture::OS_RELEASE
        ),
        "{out}"
    );

    // Flags override them.
    let script = "echo \"$FOO $NEW\"; pwd; id -u; id -g";
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "-e",
            "FOO=overridden",
            "-e",
            "NEW=1",
            "-w",
            "/tmp",
            "--user",
            "0:0",
            "bb:1",
            "/bin/sh",
            "-c",
            script,
        ])
        .ok();
    assert_eq!(out.stdout, "overridden 1\n/tmp\n0\n0\n", "{out}");

    // The container's exit code is berth's.
    let out = env.image(&[
        "run", "--rm", "--net", "none", "bb:1", "/bin/sh", "-c", "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out}");

    // --net none: only loopback; --net host: the host's interfaces.
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "none",
            "bb:1",
            "/bin/cat",
            "/proc/net/dev",
        ])
        .ok();
    assert_eq!(interfaces(&out.stdout), vec!["lo".to_string()], "{out}");
    let host = interfaces(&fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev"));
    let out = env
        .image(&[
            "run",
            "--rm",
            "--net",
            "host",
            "bb:1",
            "/bin/cat",
            "/proc/net/dev",
        ])
        .ok();
    assert_eq!(interfaces(&out.stdout), host, "{out}");
}

#[test]
fn image_run_containers_do_not_see_each_others_writes() {
    let env = ImageEnv::new();
    let image = fixture::build(&env.work(), &env.work());
    env.import(&image.layout, "bb:1").ok();

    // The first container writes, changes and deletes; it is kept (no --rm).
    let write = "echo one > /tmp/mine && echo changed > /etc/os-release && rm /etc/added \
                 && rm -r /srv/www && cat /tmp/mine /etc/os-release";
    let out = env
        .image(&[
            "run", "--name", "writer", "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
            write,
        ])
        .ok();
    assert_eq!(out.stdout, "one\nchanged\n", "{out}");

    // The second one, from the same image while the first still exists, sees none of it.
    let look = "test -e /tmp/mine && echo mine-present || echo mine-absent; cat /etc/os-release; \
                cat /etc/added; cat /srv/www/new.html";
    let out = env
        .image(&[
            "run", "--name", "reader", "--net", "none", "--user", "0:0", "bb:1", "/bin/sh", "-c",
            look,
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "mine-absent\n{}added in layer 2\nadded in layer 4\n",
            fixture::OS_RELEASE
        ),
        "{out}"
    );

    // And the image itself is unchanged: it still unpacks exactly like umoci's unpack.
    let bundle = env.work().join("after-runs");
    env.unpack("bb:1", &bundle);
    let differences = tree::diff(
        &tree::snapshot(&image.umoci_bundle.join("rootfs")),
        &tree::snapshot(&bundle.join("rootfs")),
    );
    assert!(
        differences.is_empty(),
        "the image changed:\n{}",
        differences.join("\n")
    );
}
