//! Snapshots off the hot path: registry snapshots are files written by a thread, the log is
//! compacted behind them, and a follower that fell behind the compaction point catches up
//! from a snapshot streamed in chunks while writes continue.

use std::sync::atomic::{AtomicBool, Ordering};

use berth_tests::cluster::http::unix_request;
use berth_tests::cluster::{Cluster, CALL_TIMEOUT, PATIENCE};

use crate::{put_acked, wait_converged};

/// Snapshot files (and partial downloads) in node `k`'s state directory.
fn snapshot_files(c: &Cluster, k: usize) -> Vec<String> {
    let dir = c.node(k).data_dir.join("orchestrator");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap-"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_follower_behind_the_compaction_point_catches_up_from_a_streamed_snapshot_under_writes() {
    let mut c = Cluster::empty();
    c.extra_args = vec!["--snapshot-every".into(), "50".into()];
    c.start_voters("snaps", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    let follower = (0..3).find(|&k| k != leader).expect("a follower");
    // 4 KiB values: the snapshot is over a megabyte, several chunks on the wire.
    let big = "x".repeat(4096);
    for i in 0..150 {
        put_acked(&c, leader, &format!("/t/a/{i:04}"), &big);
    }
    c.kill(follower);
    for i in 0..300 {
        put_acked(&c, leader, &format!("/t/b/{i:04}"), &format!("{i}"));
    }
    let stop = AtomicBool::new(false);
    let socket = c.node(leader).socket.clone();
    std::thread::scope(|s| {
        // Writes through the leader's socket from a thread of its own (the harness is
        // busy restarting the follower meanwhile).
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = serde_json::json!({"value": "during"});
                let target = format!("/v1/keys/t/c/{n:05}");
                let r = unix_request(&socket, "PUT", &target, Some(&body), CALL_TIMEOUT);
                if r.is_ok_and(|r| r.ok()) {
                    n += 1;
                }
            }
            n
        });
        c.restart(follower);
        // Caught up while the writes go on: wait for a key written after the restart.
        berth_tests::cluster::wait_until("the restarted follower to catch up", PATIENCE, || {
            let leader_rev = c.node(leader).get_json("/v1/cluster")?["applied_index"]
                .as_u64()
                .unwrap_or_default();
            let f = c.node(follower).get_json("/v1/cluster")?["applied_index"]
                .as_u64()
                .unwrap_or_default();
            if f + 20 >= leader_rev && c.node(follower).get_key("/t/b/0299")?.is_some() {
                Ok(())
            } else {
                Err(format!("follower applied {f}, leader {leader_rev}"))
            }
        });
        stop.store(true, Ordering::Relaxed);
        let n = writer.join().expect("writer");
        assert!(n > 0, "writes continued during the catch-up");
    });
    let state = wait_converged(&c, &c.all(), "/t/");
    assert_eq!(
        state.keys().filter(|k| k.starts_with("/t/a/")).count(),
        150,
        "every big key on every node"
    );
    assert!(state.values().filter(|s| s.value == big).count() == 150);
    // Each node keeps one snapshot file once writes stop (a write in flight is a .tmp);
    // old ones and partial downloads are gone.
    berth_tests::cluster::wait_until("one snapshot file per node", PATIENCE, || {
        for k in c.all() {
            let files = snapshot_files(&c, k);
            if files.len() != 1 || !files[0].ends_with(".json") {
                return Err(format!("{}: {files:?}", c.node(k).name));
            }
        }
        Ok(())
    });
    let log = berth_tests::cluster::tail(&c.node(follower).log, 100_000);
    assert!(!log.contains("ERROR"), "follower log has errors:\n{log}");

    // A learner added now joins from the snapshot too.
    put_acked(&c, leader, "/t/last", "1");
    let k = c.add_learner("snaps", leader);
    c.wait_for_member(k);
    wait_converged(&c, &c.all(), "/t/");
}
