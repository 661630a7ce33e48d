//! Leadership: one agreed leader, failover after kill -9, full restart from disk, and
//! configuration changes that move the quorum.

use std::collections::BTreeMap;

use berth_tests::cluster::{wait_until, Cluster, PATIENCE};
use serde_json::json;

use crate::{call_ok, put_acked, wait_converged};

#[test]
fn exactly_one_leader_and_every_node_agrees_on_it() {
    let c = Cluster::start("agree", 3, 1);
    let all = c.all();
    wait_until(
        "one leader, reported identically by every node",
        PATIENCE,
        || {
            let leader = c.agreed_leader(&all)?;
            let mut terms = Vec::new();
            for &k in &all {
                let node = c.node(k);
                let cluster = node.get_json("/v1/cluster")?;
                if cluster["leader"] != json!(leader) {
                    return Err(format!(
                        "{} /v1/cluster leader is {}",
                        node.name, cluster["leader"]
                    ));
                }
                terms.push(cluster["term"].as_u64().unwrap_or_default());
                let members = cluster["members"].as_array().cloned().unwrap_or_default();
                let roles: BTreeMap<String, String> = members
                    .iter()
                    .map(|m| {
                        (
                            m["name"].as_str().unwrap_or_default().to_string(),
                            m["role"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                let expected: BTreeMap<String, String> = [
                    ("n0", "voter"),
                    ("n1", "voter"),
                    ("n2", "voter"),
                    ("n3", "learner"),
                ]
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect();
                if roles != expected {
                    return Err(format!("{} members: {roles:?}", node.name));
                }
                let machines = node.machines()?;
                let leaders: Vec<&String> = machines
                    .iter()
                    .filter(|(_, m)| m["leader"] == json!(true))
                    .map(|(n, _)| n)
                    .collect();
                if leaders != vec![&leader] {
                    return Err(format!(
                        "{} marks {leaders:?} as leader in /v1/machines",
                        node.name
                    ));
                }
                if machines.len() != 4 || machines.values().any(|m| m["state"] != json!("alive")) {
                    return Err(format!("{} machines: {machines:?}", node.name));
                }
            }
            if terms.windows(2).any(|w| w[0] != w[1]) {
                return Err(format!("terms differ: {terms:?}"));
            }
            // The leader is one of the voters, never the learner.
            if leader == "n3" {
                return Err("the learner is reported as leader".into());
            }
            Ok(())
        },
    );
}

#[test]
fn killed_leader_is_replaced_writes_continue_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::start("failover", 3, 1);
    let old = c.wait_for_agreed_leader(&c.all());
    let mut acked = BTreeMap::new();
    for i in 0..40 {
        let (key, value) = (format!("/t/before/{i:03}"), format!("v{i}"));
        put_acked(&c, i % 4, &key, &value);
        acked.insert(key, value);
    }

    c.kill(old);
    let survivors = c.running();
    let new = c.wait_for_agreed_leader(&survivors);
    assert_ne!(new, old, "a killed node cannot still be the leader");

    for i in 0..40 {
        let (key, value) = (format!("/t/after/{i:03}"), format!("w{i}"));
        put_acked(&c, survivors[i % survivors.len()], &key, &value);
        acked.insert(key, value);
    }
    c.wait_for_keys(&survivors, "/t/", &acked);

    // The old leader comes back from its data dir as a follower and catches up.
    c.restart(old);
    c.wait_for_keys(&c.all(), "/t/", &acked);
    let state = wait_converged(&c, &c.all(), "/t/");
    assert_eq!(state.len(), acked.len());
    for (key, value) in &acked {
        assert_eq!(&state[key].value, value, "{key}");
    }
}

#[test]
fn full_cluster_restart_recovers_every_key_from_disk() {
    let mut c = Cluster::start("restart", 3, 1);
    c.wait_for_agreed_leader(&c.all());
    for i in 0..30 {
        put_acked(&c, i % 4, &format!("/t/k{i:02}"), &format!("v{i}"));
    }
    // Overwrites and deletes give keys distinct versions and revisions.
    for i in 0..10 {
        put_acked(&c, 0, &format!("/t/k{i:02}"), &format!("second{i}"));
    }
    for i in 20..25 {
        call_ok(&c, 1, "DELETE", &format!("/v1/keys/t/k{i:02}"), None);
    }
    let before = wait_converged(&c, &c.all(), "/t/");
    assert_eq!(before.len(), 25);

    for k in c.all() {
        c.kill(k);
    }
    for k in c.all() {
        c.restart(k);
    }
    c.wait_for_agreed_leader(&c.all());
    let after = wait_converged(&c, &c.all(), "/t/");
    assert_eq!(
        after, before,
        "every key, value and revision survives a full restart"
    );

    let max_rev = before
        .values()
        .map(|s| s.mod_revision)
        .max()
        .unwrap_or_default();
    let rev = put_acked(&c, 2, "/t/after-restart", "x");
    assert!(
        rev > max_rev,
        "revision {rev} after restart must exceed {max_rev}"
    );
}

#[test]
fn promoted_learner_counts_in_the_quorum_and_a_demoted_voter_does_not() {
    let mut c = Cluster::start("promote", 3, 1);
    c.wait_for_agreed_leader(&c.all());
    // The role `name` has on every node, if they all agree.
    let role_everywhere = |name: &str| -> Result<String, String> {
        let mut roles = Vec::new();
        for k in c.all() {
            let v = c.node(k).get_json("/v1/cluster")?;
            let role = v["members"]
                .as_array()
                .and_then(|l| l.iter().find(|m| m["name"] == json!(name)).cloned())
                .map(|m| m["role"].as_str().unwrap_or_default().to_string());
            roles.push(role.unwrap_or_default());
        }
        if roles.windows(2).all(|w| w[0] == w[1]) {
            Ok(roles[0].clone())
        } else {
            Err(format!("{name} has roles {roles:?}"))
        }
    };
    // Conf changes answer 409 while another is in progress, and a retry of one that was
    // applied answers 409 too: so request until every node reports the outcome.
    wait_until(
        "n3 promoted to voter on every node",
        PATIENCE,
        || match role_everywhere("n3")?.as_str() {
            "voter" => Ok(()),
            other => {
                let body = json!({"name": "n3"});
                let _ = c.node(0).call("POST", "/v1/cluster/voters", Some(&body));
                Err(format!("n3 is {other:?}"))
            }
        },
    );
    // Demote an original voter that is not the leader (the leader cannot be demoted).
    let leader = c.wait_for_agreed_leader(&c.all());
    let originals: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
    let (demoted, other) = (originals[0], originals[1]);
    let demoted_name = c.node(demoted).name.clone();
    let target = format!("/v1/cluster/voters/{demoted_name}");
    wait_until(
        "the demoted voter is a learner on every node",
        PATIENCE,
        || match role_everywhere(&demoted_name)?.as_str() {
            "learner" => Ok(()),
            other => {
                let _ = c.node(3).call("DELETE", &target, None);
                Err(format!("{demoted_name} is {other:?}"))
            }
        },
    );
    assert_eq!(role_everywhere("n3").as_deref(), Ok("voter"));

    // Two of the three original voters die (one already demoted). The survivors, n3 and an
    // original voter, are a quorum of the new configuration only if n3 really votes and the
    // demoted node really does not: writes still commit and reach both survivors.
    c.kill(demoted);
    c.kill(other);
    let survivors = c.running();
    c.wait_for_agreed_leader(&survivors);
    put_acked(&c, 3, "/t/quorum", "n3-votes");
    let mut want = BTreeMap::new();
    want.insert("/t/quorum".to_string(), "n3-votes".to_string());
    c.wait_for_keys(&survivors, "/t/", &want);
}
