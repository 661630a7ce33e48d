//! A unit's life on one cluster: submit, placement by constraints, running (seen from
//! inside), registration, listing from every node, journal, restart on failure, stop, bad
//! unit files.

use super::*;
use berth_tests::cluster::http::unix_request;

/// The web unit: serves /www on 8080, where it first writes what it sees from inside.
const WEB: &str = "[Unit]
Description=web test service

[Container]
Image=web:1
Exec=sh -c 'hostname > /www/host; cat /proc/self/cgroup > /www/cgroup; echo started on $(hostname); exec httpd -f -p 8080 -h /www'
PublishPort=8080:8080

[Service]
Restart=always
# httpd as the pid namespace's init ignores SIGTERM: SIGKILL after 1 s.
TimeoutStopSec=1s

[X-Fleet]
MachineMetadata=slot=1
";

#[test]
fn a_unit_runs_where_its_constraints_say_and_is_published_everywhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let file = unit_file(tmp.path(), "web.service", WEB);
    // Started from a node that is not the target (slot=1 is n1).
    let out = ctl(&c, 2, &["start", file.to_str().expect("utf-8")]);
    assert!(out.contains("launched on n1"), "{out}");

    // Every node lists it on n1, active and running.
    for k in c.all() {
        wait_until(
            "list-units to show web on n1",
            UNIT_PATIENCE,
            || match running_on(&c, k, "web.service")? {
                m if m == "n1" => Ok(()),
                m => Err(format!("{} says n1 expected, got {m}", c.node(k).name)),
            },
        );
    }
    let table = ctl(&c, 0, &["list-units"]);
    let ip1 = c.net.slot(1).ip.to_string();
    assert!(
        table.lines().any(|l| l.starts_with("web.service")
            && l.contains(&format!("n1/{ip1}"))
            && l.contains("active")
            && l.contains("running")),
        "{table}"
    );

    // From inside: an HTTP answer from n1's address, asked from n0's namespace.
    let body = wait_until("the web unit to answer", UNIT_PATIENCE, || {
        http_get(&c, 0, &format!("http://{ip1}:8080/index.html"))
    });
    assert_eq!(body, "hello from a berth unit\n");
    let host = http_get(&c, 2, &format!("http://{ip1}:8080/host")).expect("/host");
    assert_eq!(host.trim(), "n1", "the container's hostname");
    let cgroup = http_get(&c, 2, &format!("http://{ip1}:8080/cgroup")).expect("/cgroup");
    assert!(
        cgroup.contains(&format!("{}/web.service-", c.cgroup_parent("n1"))),
        "the container's cgroup: {cgroup}"
    );
    // The kernel agrees: processes in n1's cgroup of the unit, none elsewhere.
    assert_eq!(nodes_running(&c, "web.service"), vec![1]);

    // Registered on every node at n1's address, and its output in the journal from n2.
    wait_service(&c, &c.all(), "web", Some("n1"), 8080);
    let journal = wait_until(
        "the journal to show the unit's output",
        UNIT_PATIENCE,
        || {
            let out = c.berthctl(2, &["journal", "web.service"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && text.contains("started on n1") {
                Ok(text)
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            }
        },
    );
    assert!(journal.contains("started on n1"), "{journal}");

    // Stopped: the registration vanishes everywhere, nothing runs, state says loaded.
    let out = ctl(&c, 0, &["stop", "web.service"]);
    assert!(out.contains("stopped"), "{out}");
    wait_service(&c, &c.all(), "web", None, 8080);
    wait_until(
        "web's processes to be gone",
        UNIT_PATIENCE,
        || match nodes_running(&c, "web.service").as_slice() {
            [] => Ok(()),
            on => Err(format!("still on {on:?}")),
        },
    );
    assert!(http_get(&c, 0, &format!("http://{ip1}:8080/index.html")).is_err());
    let files = ctl(&c, 1, &["list-unit-files"]);
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("web.service") && l.contains("loaded")),
        "{files}"
    );

    // Destroyed: gone from every node's listing; its state too.
    ctl(&c, 0, &["destroy", "web.service"]);
    for k in c.all() {
        wait_until("web to vanish from list-units", UNIT_PATIENCE, || {
            let states = c.node(k).unit_states()?;
            if states.iter().any(|s| s["unit"] == "web.service") {
                return Err(format!("{}: {states:?}", c.node(k).name));
            }
            Ok(())
        });
    }
}

#[test]
fn restart_on_failure_restarts_a_failing_program_and_bad_units_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let flaky = unit_file(
        tmp.path(),
        "flaky.service",
        "[Container]\nImage=web:1\nExec=sh -c 'echo run; sleep 0.2; exit 3'\n\n[Service]\nRestart=on-failure\nRestartSec=100ms\n",
    );
    let out = c.berthctl(0, &["start", "--no-block", flaky.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    let restarts = wait_until("flaky to be restarted three times", UNIT_PATIENCE, || {
        let u = c.node(1).unit("flaky.service")?;
        let st = u["states"]
            .as_array()
            .and_then(|s| s.first())
            .cloned()
            .ok_or("no state yet")?;
        let n = st["restarts"].as_u64().unwrap_or(0);
        if n >= 3 && st["exit_code"] == 3 {
            Ok(n)
        } else {
            Err(format!("{st}"))
        }
    });
    assert!(restarts >= 3);
    let journal = ctl(&c, 1, &["journal", "-n", "50", "flaky.service"]);
    assert!(
        journal.matches(" run").count() >= 3,
        "each run's output is in the journal: {journal}"
    );
    assert!(journal.contains("exited with status 3"), "{journal}");

    // Bad unit files: refused with file, line and key; nothing stored.
    let bad = unit_file(
        tmp.path(),
        "bad.service",
        "[Container]\nImage=web:1\nPublishPort=80:abc\n",
    );
    let out = c.berthctl(2, &["submit", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.service") && err.contains(":3") && err.contains("PublishPort"),
        "{err}"
    );
    let global_bad = unit_file(
        tmp.path(),
        "g.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\nMachineID=n1\n",
    );
    let out = c.berthctl(2, &["submit", global_bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Global"),
        "{out:?}"
    );
    // A unit that would close a cycle of Replaces with one already submitted.
    let ra = unit_file(
        tmp.path(),
        "ra.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nReplaces=rb.service\n",
    );
    let rb = unit_file(
        tmp.path(),
        "rb.service",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nReplaces=ra.service\n",
    );
    ctl(&c, 0, &["submit", ra.to_str().expect("utf-8")]);
    let out = c.berthctl(1, &["submit", rb.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Replaces") && err.contains("ra.service"),
        "{err}"
    );
    // Identical submits at once through every node (what a client retrying a submit whose
    // answer a leader change lost looks like): every one is answered 200 and exactly one
    // created the unit (a submit that lost the race to an identical one had a 409).
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let body = serde_json::json!({
                        "name": "twice.service",
                        "text": "[Service]\nExecStart=/bin/true\n",
                    });
                    let r = unix_request(
                        &c.node(i % 3).socket,
                        "POST",
                        "/v1/units",
                        Some(&body),
                        Duration::from_secs(10),
                    )
                    .expect("POST /v1/units");
                    (r.status, r.json())
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|h| h.join().expect("submit thread"))
            .collect()
    });
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let created = answers
        .iter()
        .filter(|(_, b)| b["unchanged"] != true)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    let files = ctl(&c, 0, &["list-unit-files"]);
    assert!(
        !files.contains("bad.service")
            && !files.contains("g.service")
            && !files.contains("rb.service"),
        "{files}"
    );
}

#[test]
fn unplaceable_units_say_why_and_global_units_run_on_every_eligible_machine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = cluster_with_web(tmp.path());
    let mars = unit_file(
        tmp.path(),
        "mars.service",
        "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nMachineMetadata=region=mars\n",
    );
    let out = c.berthctl(
        0,
        &[
            "start",
            "--block-timeout",
            "10",
            mars.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("region=mars"), "{err}");
    let status = ctl(&c, 1, &["status", "mars.service"]);
    assert!(status.contains("region=mars"), "{status}");

    // A global fleet-era unit (host rootfs, [Service] only) on every machine.
    let global = unit_file(
        tmp.path(),
        "everywhere.service",
        "[Service]\nExecStart=/bin/sh -c 'touch /etc/berth-ro-probe || echo host is read-only; echo on %H; exec sleep 1000'\nTimeoutStopSec=1s\n\n[X-Fleet]\nGlobal=true\n",
    );
    ctl(&c, 0, &["start", global.to_str().expect("utf-8")]);
    wait_until("the global unit on every machine", UNIT_PATIENCE, || {
        let on = nodes_running(&c, "everywhere.service");
        if on == c.all() {
            Ok(())
        } else {
            Err(format!("runs on {on:?}"))
        }
    });
    // A machine that joins later runs it too.
    let k = c.add_learner("units", 0);
    wait_until("the global unit on the new machine", UNIT_PATIENCE, || {
        if nodes_running(&c, "everywhere.service").contains(&k) {
            Ok(())
        } else {
            Err(format!("not on n{k}"))
        }
    });
    // Its journal there, read through n0; the host's root was read-only to it.
    let machine = format!("n{k}");
    let j = wait_until(
        "the new machine's journal through n0",
        UNIT_PATIENCE,
        || {
            let j = ctl(
                &c,
                0,
                &["journal", "--machine", &machine, "everywhere.service"],
            );
            if j.contains(&format!("on {machine}")) {
                Ok(j)
            } else {
                Err(j)
            }
        },
    );
    assert!(j.contains("host is read-only"), "{j}");
    assert!(!Path::new("/etc/berth-ro-probe").exists());
    // On the host, the bundles' binds of / are read-only all the way down (every mount of
    // the tree), so nothing can write or delete host files through them.
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let binds: Vec<(&str, &str)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((*f.get(4)?, *f.get(5)?))
        })
        .filter(|(point, _)| {
            point.starts_with(c.dir().to_str().unwrap_or("?")) && point.contains("/bundle/rootfs")
        })
        .collect();
    assert!(
        binds.len() > 4,
        "the host root binds and their submounts: {binds:?}"
    );
    for (point, opts) in &binds {
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{point} is mounted {opts}"
        );
    }
}

#[test]
fn template_instances_started_together_spread_over_the_machines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let tpl = unit_file(
        tmp.path(),
        "echo@.service",
        "[Service]\nExecStart=/bin/sh -c 'echo instance %i on %H; exec sleep 1000'\n\n[X-Fleet]\nConflicts=echo@*.service\n",
    );
    ctl(&c, 0, &["submit", tpl.to_str().expect("utf-8")]);
    // One request for all three (one registry transaction), each made from the template.
    let out = ctl(
        &c,
        1,
        &[
            "start",
            "echo@1.service",
            "echo@2.service",
            "echo@3.service",
        ],
    );
    assert_eq!(out.matches("launched on").count(), 3, "{out}");
    let mut machines: Vec<String> = (1..=3)
        .map(|i| running_on(&c, 2, &format!("echo@{i}.service")).expect("running"))
        .collect();
    machines.sort();
    assert_eq!(
        machines,
        vec!["n0", "n1", "n2"],
        "Conflicts keeps them apart"
    );
    for i in 1..=3 {
        let name = format!("echo@{i}.service");
        let k = c.index_of(&running_on(&c, 0, &name).expect("running"));
        assert_eq!(nodes_running(&c, &name), vec![k]);
        let j = wait_until("the instance's journal", UNIT_PATIENCE, || {
            let j = ctl(&c, 0, &["journal", &name]);
            if j.contains(&format!("instance {i} on n{k}")) {
                Ok(j)
            } else {
                Err(j)
            }
        });
        assert!(j.contains("instance"), "{j}");
    }
    // A fourth instance has nowhere to go: every machine runs a conflicting one.
    let out = c.berthctl(0, &["start", "--block-timeout", "10", "echo@4.service"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Conflicts")
            || String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{out:?}"
    );
}

#[test]
fn a_unit_with_a_health_check_is_registered_only_while_it_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    // Healthy from 2 s after the start until 6 s after it; httpd serves all along.
    let f = unit_file(
        tmp.path(),
        "checked.service",
        "[Container]\nImage=web:1\nExec=sh -c '(sleep 2; echo > /tmp/ok; sleep 4; rm /tmp/ok) & exec httpd -f -p 8090 -h /www'\nPublishPort=8090:8090\nHealthCmd=test -f /tmp/ok\nHealthInterval=200ms\n\n[Service]\nTimeoutStopSec=1s\n",
    );
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    let host = running_on(&c, 0, "checked.service").expect("running");
    let ip = c.net.slot(c.index_of(&host)).ip;
    // Running and answering, but not registered while its check fails.
    wait_until("httpd to answer", UNIT_PATIENCE, || {
        http_get(&c, 0, &format!("http://{ip}:8090/index.html"))
    });
    assert!(
        c.node(1).service("checked").expect("lookup").is_empty(),
        "registered before its health check passed"
    );
    wait_service(&c, &c.all(), "checked", Some(&host), 8090);
    // The check fails again: the registration goes, the unit keeps running.
    wait_service(&c, &c.all(), "checked", None, 8090);
    assert_eq!(running_on(&c, 2, "checked.service").expect("running"), host);
    assert!(http_get(&c, 0, &format!("http://{ip}:8090/index.html")).is_ok());
}
