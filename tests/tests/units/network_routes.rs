//! The cluster network's host-gw routes (flannel's design) as each node's kernel shows
//! them: every machine routes the others' subnets via their addresses, a departed machine's
//! route goes (also from a machine that was dead when it left: its restart removes what the
//! crash left), and the subnets stay as they were when the leader changes.

use super::network::in_node;
use super::*;

/// Node `k`'s host-gw routes (berthd's protocol) as "subnet via address" lines.
fn routes(c: &Cluster, k: usize) -> Vec<String> {
    let mut v: Vec<String> = in_node(c, k, &["ip", "-4", "route", "show", "proto", "152"])
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[1] == "via").then(|| format!("{} via {}", w[0], w[2]))
        })
        .collect();
    v.sort();
    v
}

/// Machine `m`'s subnet as node `k` reads it from the registry.
fn subnet(c: &Cluster, k: usize, m: &str) -> Result<String, String> {
    let v = c
        .node(k)
        .get_key(&format!("/network/subnets/{m}"))?
        .ok_or(format!("no subnet for {m}"))?;
    Ok(v["value"].as_str().unwrap_or_default().to_string())
}

/// The routes node `me` should have: every other node of `of`'s subnet via its address
/// (the allocations as `me` reads them).
fn expected(c: &Cluster, me: usize, of: &[usize]) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for &j in of.iter().filter(|&&j| j != me) {
        v.push(format!(
            "{} via {}",
            subnet(c, me, &format!("n{j}"))?,
            c.net.slot(j).ip
        ));
    }
    v.sort();
    Ok(v)
}

/// Waits until node `me`'s routes are exactly those to the subnets of `of` (but its own).
fn wait_routes(c: &Cluster, me: usize, of: &[usize], what: &str) {
    wait_until(what, UNIT_PATIENCE, || {
        let want = expected(c, me, of)?;
        let got = routes(c, me);
        (got == want)
            .then_some(())
            .ok_or(format!("n{me}: {got:?} != {want:?}"))
    });
}

fn wait_freed(c: &Cluster, via: usize, m: &str) {
    wait_until("the subnet to be freed", UNIT_PATIENCE, || {
        match c.node(via).get_key(&format!("/network/subnets/{m}"))? {
            None => Ok(()),
            Some(v) => Err(format!("still {v}")),
        }
    });
}

#[test]
fn every_machine_routes_the_others_subnets_until_they_leave() {
    let mut c = Cluster::with_agents();
    c.start_voters("units", 3);
    c.wait_for_agreed_leader(&c.all());
    let k = c.add_learner("units", 0);
    c.wait_for_member(k);
    // Each node routes every other node's subnet via that node's address, and not its own.
    let all = c.all();
    for me in c.all() {
        wait_routes(&c, me, &all, "the host-gw routes");
    }
    // The learner leaves the cluster: its subnet is freed and every route to it removed.
    c.kill_node(k);
    ctl(&c, 0, &["cluster", "remove-member", &format!("n{k}")]);
    let rest: Vec<usize> = (0..k).collect();
    wait_freed(&c, 0, &format!("n{k}"));
    for &me in &rest {
        wait_routes(&c, me, &rest, "the departed node's route to go");
    }
}

#[test]
fn a_restart_removes_routes_its_crash_left_and_a_new_leader_keeps_the_subnets() {
    let mut c = Cluster::with_agents();
    c.start_voters("units", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    let k = c.add_learner("units", leader);
    c.wait_for_member(k);
    let all = c.all();
    for me in c.all() {
        wait_routes(&c, me, &all, "the host-gw routes");
    }
    let subnets = |c: &Cluster, via: usize, of: &[usize]| -> Vec<String> {
        of.iter()
            .map(|j| subnet(c, via, &format!("n{j}")).expect("subnet"))
            .collect()
    };
    let voters: Vec<usize> = (0..k).collect();
    let before = subnets(&c, leader, &voters);

    // A follower dies (kill -9: its routes stay in its namespace), and while it is down
    // the learner is removed from the cluster.
    let down = voters
        .iter()
        .copied()
        .find(|&j| j != leader)
        .expect("a follower");
    c.kill_node(down);
    c.kill_node(k);
    ctl(&c, leader, &["cluster", "remove-member", &format!("n{k}")]);
    wait_freed(&c, leader, &format!("n{k}"));
    let departed = format!("via {}", c.net.slot(k).ip);
    let left = routes(&c, down);
    assert!(
        left.iter().any(|r| r.ends_with(&departed)),
        "the dead node still routes to the departed one: {left:?}"
    );
    // Its restart syncs its table with the registry: the stale route goes.
    c.restart(down);
    c.wait_for_member(down);
    wait_routes(&c, down, &voters, "the crash's stale route to go");
    assert!(
        !routes(&c, down).iter().any(|r| r.ends_with(&departed)),
        "{:?}",
        routes(&c, down)
    );

    // The leader dies: the new one keeps every subnet where it was (the old leader's too,
    // as it is still a member), and allocates a joining machine one that overlaps none.
    c.kill_node(leader);
    let alive: Vec<usize> = voters.iter().copied().filter(|&j| j != leader).collect();
    let new_leader = c.wait_for_agreed_leader(&alive);
    assert_ne!(new_leader, leader);
    let joined = c.add_learner("units", new_leader);
    let fresh = wait_until("the new machine's subnet", UNIT_PATIENCE, || {
        subnet(&c, new_leader, &format!("n{joined}"))
    });
    assert_eq!(subnets(&c, new_leader, &voters), before);
    assert!(!before.contains(&fresh), "{fresh} in {before:?}");
    let fresh: ipnet::Ipv4Net = fresh.parse().expect("subnet");
    for s in &before {
        let s: ipnet::Ipv4Net = s.parse().expect("subnet");
        assert!(
            !s.contains(&fresh.network()) && !fresh.contains(&s.network()),
            "{fresh} overlaps {s}"
        );
    }
    // The survivors route to the newcomer (and still to the dead leader's subnet).
    let now: Vec<usize> = voters.iter().copied().chain([joined]).collect();
    for &me in &alive {
        wait_routes(&c, me, &now, "routes to the new machine");
    }
}
