//! Membership and the registry published to every node: services, leases, and a node
//! of another cluster that must never be listed.

use std::collections::BTreeMap;

use berth_tests::cluster::{wait_until, Cluster, PATIENCE};
use serde_json::json;

use crate::{call_ok, put_acked};

#[test]
fn registered_services_are_visible_on_every_node_including_learners() {
    let c = Cluster::start("services", 3, 2);
    let leader = c.wait_for_agreed_leader(&c.all());
    let register = |k: usize, ip: &str, port: u16| {
        let body = json!({"name": "web", "ip": ip, "port": port, "meta": {"zone": "z1"}});
        wait_until("service registration acknowledged", PATIENCE, || {
            match c.node(k).call("POST", "/v1/services", Some(&body)) {
                Ok(r) if r.ok() => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        });
    };
    register(4, "10.1.0.4", 8080);
    register(leader, "10.1.0.9", 9090);

    let mut want = [
        ("n4".to_string(), "10.1.0.4".to_string(), 8080u16),
        (c.node(leader).name.clone(), "10.1.0.9".to_string(), 9090),
    ];
    want.sort();
    for k in c.all() {
        wait_until(
            &format!("web visible on {}", c.node(k).name),
            PATIENCE,
            || {
                let list = c.node(k).service("web")?;
                let mut got: Vec<(String, String, u64)> = list
                    .iter()
                    .map(|s| {
                        (
                            s["machine"].as_str().unwrap_or_default().to_string(),
                            s["ip"].as_str().unwrap_or_default().to_string(),
                            s["port"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect();
                got.sort();
                let expect: Vec<(String, String, u64)> = want
                    .iter()
                    .map(|(m, ip, p)| (m.clone(), ip.clone(), u64::from(*p)))
                    .collect();
                if got != expect {
                    return Err(format!("{} lists {got:?}", c.node(k).name));
                }
                if list
                    .iter()
                    .any(|s| s["name"] != json!("web") || s["meta"]["zone"] != json!("z1"))
                {
                    return Err(format!("{} lists {list:?}", c.node(k).name));
                }
                let all = c.node(k).get_json("/v1/services")?;
                let n = all["services"]["web"].as_array().map_or(0, Vec::len);
                if n != 2 {
                    return Err(format!("{} /v1/services: {all}", c.node(k).name));
                }
                Ok(())
            },
        );
    }
}

#[test]
fn killed_nodes_services_vanish_from_every_node() {
    let mut c = Cluster::start("vanish", 3, 1);
    let leader = c.wait_for_agreed_leader(&c.all());
    let follower = (0..3).find(|&k| k != leader).expect("three voters");
    for (k, port) in [(3, 7001), (follower, 7002), (leader, 7003)] {
        let body = json!({"name": "api", "ip": c.node(k).addr.ip().to_string(), "port": port});
        wait_until("registration acknowledged", PATIENCE, || {
            match c.node(k).call("POST", "/v1/services", Some(&body)) {
                Ok(r) if r.ok() => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        });
    }
    let machines_of = |c: &Cluster, k: usize| -> Result<Vec<String>, String> {
        let mut m: Vec<String> = c
            .node(k)
            .service("api")?
            .iter()
            .map(|s| s["machine"].as_str().unwrap_or_default().to_string())
            .collect();
        m.sort();
        Ok(m)
    };
    let mut everyone: Vec<String> = [3, follower, leader]
        .iter()
        .map(|&k| c.node(k).name.clone())
        .collect();
    everyone.sort();
    for k in c.all() {
        wait_until("api registered everywhere", PATIENCE, || {
            let m = machines_of(&c, k)?;
            if m == everyone {
                Ok(())
            } else {
                Err(format!("{} lists {m:?}", c.node(k).name))
            }
        });
    }

    // kill -9 the learner and a follower voter: their services must go, the leader's stays.
    c.kill(3);
    c.kill(follower);
    let survivors = c.running();
    let dead = [c.node(3).name.clone(), c.node(follower).name.clone()];
    for &k in &survivors {
        wait_until(
            "killed nodes' services gone and nodes dead",
            PATIENCE,
            || {
                let m = machines_of(&c, k)?;
                if m != vec![c.node(leader).name.clone()] {
                    return Err(format!("{} still lists {m:?}", c.node(k).name));
                }
                let machines = c.node(k).machines()?;
                for name in &dead {
                    if machines
                        .get(name)
                        .is_some_and(|m| m["state"] == json!("alive"))
                    {
                        return Err(format!("{} still sees {name} alive", c.node(k).name));
                    }
                }
                Ok(())
            },
        );
    }
}

#[test]
fn node_with_another_cluster_id_cannot_join_and_is_never_listed() {
    let mut c = Cluster::start("cluster-a", 3, 0);
    // The intruder (n3) and a legitimate learner (n4) join through the same member.
    let intruder = c.add_learner("cluster-b", 0);
    let learner = c.add_learner("cluster-a", 0);
    c.wait_for_member(learner);
    put_acked(&c, 0, "/t/a-only", "secret");
    wait_until("the learner receives the registry", PATIENCE, || {
        match c.node(learner).get_key("/t/a-only")? {
            Some(_) => Ok(()),
            None => Err("not yet".into()),
        }
    });

    let intruder_name = c.node(intruder).name.clone();
    for k in [0, 1, 2, learner] {
        let machines = c.node(k).machines().expect("machines");
        assert!(
            !machines.contains_key(&intruder_name),
            "{} lists the intruder: {machines:?}",
            c.node(k).name
        );
        let cluster = c.node(k).get_json("/v1/cluster").expect("cluster");
        let members = cluster["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members.iter().all(|m| m["name"] != json!(intruder_name)),
            "{} has the intruder as a member: {cluster}",
            c.node(k).name
        );
    }
    // The intruder learned nothing of cluster A.
    let theirs = c.node(intruder).machines().expect("intruder machines");
    assert!(
        theirs.keys().all(|n| n == &intruder_name),
        "the intruder lists cluster A's machines: {theirs:?}"
    );
    let leaked = c.node(intruder).get_key("/t/a-only");
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "cluster A's key reached the intruder: {leaked:?}"
    );
}

#[test]
fn keys_vanish_with_their_lease_on_every_node() {
    let c = Cluster::start("leases", 3, 1);
    c.wait_for_agreed_leader(&c.all());
    let lease = |k: usize| -> u64 {
        let v = call_ok(&c, k, "POST", "/v1/leases", Some(&json!({"ttl": 3})));
        v["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("lease grant: {v}"))
    };
    let expiring = lease(3);
    let revoked = lease(1);
    call_ok(
        &c,
        3,
        "PUT",
        "/v1/keys/t/expiring",
        Some(&json!({"value": "e", "lease": expiring})),
    );
    call_ok(
        &c,
        0,
        "PUT",
        "/v1/keys/t/revoked",
        Some(&json!({"value": "r", "lease": revoked})),
    );
    put_acked(&c, 2, "/t/plain", "p");

    // While kept alive, both leased keys are on every node with their lease.
    wait_until("leased keys on every node", PATIENCE, || {
        for id in [expiring, revoked] {
            c.node(0)
                .call("POST", &format!("/v1/leases/{id}/keepalive"), None)
                .map_err(|e| e.to_string())?;
        }
        for k in c.all() {
            let state = c.node(k).range("/t/")?;
            if state.len() != 3 {
                return Err(format!("{} has {state:?}", c.node(k).name));
            }
            for (key, id) in [("t/expiring", expiring), ("t/revoked", revoked)] {
                let kv = c.node(k).get_key(key)?.ok_or(format!("{key} missing"))?;
                if kv["lease"] != json!(id) {
                    return Err(format!("{} {key}: {kv}", c.node(k).name));
                }
            }
        }
        Ok(())
    });

    // One lease is revoked, the other left to expire: both keys go from every node, the
    // key without a lease stays.
    call_ok(&c, 2, "DELETE", &format!("/v1/leases/{revoked}"), None);
    let mut want = BTreeMap::new();
    want.insert("/t/plain".to_string(), "p".to_string());
    c.wait_for_keys(&c.all(), "/t/", &want);
    let r = c
        .node(1)
        .call("POST", &format!("/v1/leases/{expiring}/keepalive"), None)
        .expect("answered");
    assert_eq!(
        r.status,
        404,
        "an expired lease cannot be kept alive: {}",
        r.text()
    );
}
