//! Units when machines fail: a dead node's unit moves and its registration follows; berthd
//! alone dead, or a node cut off, never leaves the unit running in two places; a restarted
//! berthd re-adopts its running container instead of starting another.

use super::*;

/// A unit that may run anywhere and restarts on failure.
const SLEEPER: &str = "[Container]
Image=web:1
Exec=sh -c 'echo up on $(hostname); exec httpd -f -p 8080 -h /www'
PublishPort=8080:8080

[Service]
Restart=on-failure
RestartSec=100ms
TimeoutStopSec=1s
";

/// Starts SLEEPER as `name` from node 0; returns the index of the node running it.
fn start_sleeper(c: &Cluster, dir: &Path, name: &str) -> usize {
    let f = unit_file(dir, name, SLEEPER);
    ctl(c, 0, &["start", f.to_str().expect("utf-8")]);
    let m = wait_until("the unit to run", UNIT_PATIENCE, || running_on(c, 0, name));
    c.index_of(&m)
}

#[test]
fn a_dead_nodes_unit_moves_and_its_registration_follows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = cluster_with_web(tmp.path());
    let k = start_sleeper(&c, tmp.path(), "mover.service");
    let name = c.node(k).name.clone();
    wait_service(&c, &c.all(), "mover", Some(&name), 8080);
    c.kill_node(k);
    let others: Vec<usize> = c.all().into_iter().filter(|&j| j != k).collect();
    let t0 = Instant::now();
    let to = wait_until("the unit to run on another node", UNIT_PATIENCE, || {
        let m = running_on(&c, others[0], "mover.service")?;
        if m == name {
            Err(format!("still listed on {m}"))
        } else {
            Ok(m)
        }
    });
    let moved_in = t0.elapsed();
    wait_service(&c, &others, "mover", Some(&to), 8080);
    let ip = c.net.slot(c.index_of(&to)).ip;
    let body = wait_until("the moved unit to answer", UNIT_PATIENCE, || {
        http_get(&c, others[0], &format!("http://{ip}:8080/index.html"))
    });
    assert_eq!(body, "hello from a berth unit\n");
    eprintln!("moved from {name} to {to} in {moved_in:?}");
}

#[test]
fn berthd_alone_killed_the_unit_moves_and_never_runs_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = cluster_with_web(tmp.path());
    let k = start_sleeper(&c, tmp.path(), "lonely.service");
    // Only berthd dies: its container lives on until the watchdog stops it.
    c.kill(k);
    let seen = never_twice(&c, "lonely.service", Duration::from_secs(8));
    let on = nodes_running(&c, "lonely.service");
    assert_eq!(on.len(), 1, "runs on {on:?} after the move");
    assert_ne!(on[0], k, "the unit moved off the node whose berthd died");
    assert!(
        seen.contains_key(&k),
        "it ran on the old node for a while: {seen:?}"
    );
    assert!(
        unit_pids_on(&c, k, "lonely.service").is_empty(),
        "the old node's container was stopped"
    );
}

#[test]
fn a_partitioned_nodes_unit_never_runs_in_two_places() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let k = start_sleeper(&c, tmp.path(), "split.service");
    let others: Vec<usize> = c.all().into_iter().filter(|&j| j != k).collect();
    c.partition(&[&[k], &others]);
    // Both sides are checked through their cgroups every 50 ms while the unit moves.
    let seen = never_twice(&c, "split.service", Duration::from_secs(8));
    let on = nodes_running(&c, "split.service");
    assert_eq!(on.len(), 1, "{on:?}");
    assert!(
        others.contains(&on[0]),
        "moved to the majority side: {on:?}, {seen:?}"
    );
    c.heal();
    // After healing it stays where the majority put it, still once.
    never_twice(&c, "split.service", Duration::from_secs(3));
    assert_eq!(nodes_running(&c, "split.service"), on);
}

#[test]
fn a_restarted_berthd_readopts_its_running_container() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = cluster_with_web(tmp.path());
    let k = start_sleeper(&c, tmp.path(), "kept.service");
    let before = unit_pids_on(&c, k, "kept.service");
    assert!(!before.is_empty());
    c.kill(k);
    c.restart(k);
    // Same processes, no second container anywhere, and still listed as running here.
    let seen = never_twice(&c, "kept.service", Duration::from_secs(4));
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![k],
        "{seen:?}"
    );
    assert_eq!(unit_pids_on(&c, k, "kept.service"), before);
    let name = c.node(k).name.clone();
    assert_eq!(
        wait_until("the unit listed on its node", UNIT_PATIENCE, || running_on(
            &c,
            0,
            "kept.service"
        )),
        name
    );
    // Still supervised: its program killed from outside, it is restarted (on-failure).
    for p in &before {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_until("the re-adopted unit to be restarted", UNIT_PATIENCE, || {
        let now = unit_pids_on(&c, k, "kept.service");
        if !now.is_empty() && now != before {
            Ok(())
        } else {
            Err(format!("pids {now:?}"))
        }
    });
    assert_eq!(nodes_running(&c, "kept.service"), vec![k]);
}
