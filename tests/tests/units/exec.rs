//! `berthctl exec UNIT -- CMD...` from any node: the command runs in the unit's container
//! on the machine that runs it (what it prints shows the container's files and hostname),
//! stdout, stderr and the exit status come back, output is bounded, a timeout kills it.

use super::*;

const X: &str = "[Container]
Image=web:1
Exec=sh -c 'echo x-inside > /www/who; exec httpd -f -p 80 -h /www'

[Service]
TimeoutStopSec=1s

[X-Fleet]
MachineMetadata=slot=1
";

fn exec(c: &Cluster, k: usize, args: &[&str]) -> std::process::Output {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    c.berthctl(k, &all)
}

#[test]
fn exec_runs_in_the_units_container_wherever_it_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let f = unit_file(tmp.path(), "x.service", X);
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    wait_until("x to run on n1", UNIT_PATIENCE, || {
        match running_on(&c, 0, "x.service")?.as_str() {
            "n1" => Ok(()),
            m => Err(format!("on {m}")),
        }
    });
    let script = "hostname; cat /www/who; echo oops >&2; exit 3";
    // From a node that does not run it (relayed over the peer link), and from n1 itself.
    for k in [2, 1] {
        let out = exec(&c, k, &["x.service", "--", "sh", "-c", script]);
        assert_eq!(out.status.code(), Some(3), "from n{k}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "n1\nx-inside\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    }

    // Output is bounded: 256 KiB of each stream comes back, and berthctl says it was cut.
    let out = exec(
        &c,
        0,
        &["x.service", "--", "cat", "/bin/busybox", "/bin/busybox"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.len(), 256 << 10);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("output cut at 256 KiB"),
        "{out:?}"
    );

    // A timeout ends the command (nothing of it stays in the container) with an error.
    let out = exec(
        &c,
        2,
        &["x.service", "--exec-timeout", "1", "--", "sleep", "77"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out after 1 s"),
        "{out:?}"
    );
    let procs = exec(
        &c,
        0,
        &[
            "x.service",
            "--",
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done",
        ],
    );
    let listed = String::from_utf8_lossy(&procs.stdout).replace('\0', " ");
    assert!(listed.contains("httpd"), "{listed}");
    assert!(!listed.contains("sleep 77"), "{listed}");

    // A unit that runs nowhere, and one that does not exist.
    let out = exec(&c, 0, &["nope.service", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope.service not found"),
        "{out:?}"
    );
    ctl(&c, 0, &["stop", "x.service"]);
    wait_until("x to stop", UNIT_PATIENCE, || {
        let out = exec(&c, 0, &["x.service", "--", "true"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && err.contains("not running") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
}
