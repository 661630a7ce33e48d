//! Partitions: a minority (nftables drops) and an isolated follower (link down) cannot
//! commit, the majority can, and healing leaves no divergence.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::cluster::Cluster;

use crate::{put_acked, wait_converged};

#[test]
fn minority_partition_cannot_commit_majority_can_and_healing_leaves_no_divergence() {
    let c = Cluster::start("partition", 3, 1);
    let old = c.wait_for_agreed_leader(&c.all());
    let mut acked = BTreeMap::new();
    for i in 0..10 {
        let (key, value) = (format!("/t/pre/{i}"), format!("p{i}"));
        put_acked(&c, i % 4, &key, &value);
        acked.insert(key, value);
    }
    c.wait_for_keys(&c.all(), "/t/", &acked);

    // The leader and the learner end up on the minority side.
    let minority = vec![old, 3];
    let majority: Vec<usize> = (0..3).filter(|&k| k != old).collect();
    c.partition(&[&minority, &majority]);

    let new = c.wait_for_agreed_leader(&majority);
    assert!(
        majority.contains(&new),
        "the new leader {new} is on the majority side"
    );

    // Writes on the minority side are never acknowledged.
    for &k in &minority {
        let key = format!("/t/minority/{}", c.node(k).name);
        let r = c
            .node(k)
            .put_with_timeout(&key, "lost", Duration::from_secs(5));
        assert!(
            r.is_err(),
            "{} acknowledged {key} without a quorum: {r:?}",
            c.node(k).name
        );
    }
    // The majority keeps committing.
    for i in 0..10 {
        let (key, value) = (format!("/t/major/{i}"), format!("m{i}"));
        put_acked(&c, majority[i % 2], &key, &value);
        acked.insert(key, value);
    }
    // No majority node ever saw a minority write.
    for &k in &majority {
        let keys = c
            .node(k)
            .range("/t/minority/")
            .expect("range on the majority");
        assert!(
            keys.is_empty(),
            "{} holds minority writes: {keys:?}",
            c.node(k).name
        );
    }

    c.heal();
    let all = c.all();
    c.wait_for_agreed_leader(&all);
    let state = wait_converged(&c, &all, "/t/");
    for (key, value) in &acked {
        let got = state.get(key).map(|s| s.value.as_str());
        assert_eq!(
            got,
            Some(value.as_str()),
            "acknowledged {key} after healing"
        );
    }
    // A new write after healing reaches every node, the old leader included.
    put_acked(&c, old, "/t/healed", "yes");
    acked.insert("/t/healed".into(), "yes".into());
    let state = wait_converged(&c, &all, "/t/");
    assert_eq!(state["/t/healed"].value, "yes");
}

#[test]
fn isolated_follower_cannot_commit_and_catches_up_after_reconnecting() {
    let c = Cluster::start("isolate", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    let follower = (0..3).find(|&k| k != leader).expect("three voters");
    let rest: Vec<usize> = (0..3).filter(|&k| k != follower).collect();

    c.isolate(follower);
    // Not acknowledged while cut off. (An unacknowledged write is indeterminate: the
    // bytes may sit in a TCP buffer and commit after reconnecting, as with etcd's
    // timeouts; what must never happen is an acknowledgement or a commit without quorum.)
    let r =
        c.node(follower)
            .put_with_timeout("/t/unacked/isolated", "lost", Duration::from_secs(5));
    assert!(
        r.is_err(),
        "an isolated follower acknowledged a write: {r:?}"
    );

    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let (key, value) = (format!("/t/k/{i:02}"), format!("v{i}"));
        put_acked(&c, rest[i % 2], &key, &value);
        acked.insert(key, value);
    }
    for &k in &rest {
        let unacked = c.node(k).range("/t/unacked/").expect("range");
        assert!(
            unacked.is_empty(),
            "{} committed the isolated node's write without it having a quorum: {unacked:?}",
            c.node(k).name
        );
    }
    let seen = c
        .node(follower)
        .range("/t/k/")
        .expect("local read on the isolated node");
    assert!(
        seen.is_empty(),
        "the isolated follower saw writes made while it was cut off: {seen:?}"
    );

    c.reconnect(follower);
    c.wait_for_keys(&c.all(), "/t/k/", &acked);
    wait_converged(&c, &c.all(), "/t/");
}
