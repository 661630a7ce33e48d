//! Multi-node `berthd` tests: real daemons in their own network namespaces on a test
//! bridge, killed, restarted and partitioned; every assertion is on what the nodes report
//! through their API. Run as root after `cargo build -p berth-orchestrator --bins`.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::cluster::{wait_until, Cluster, KeyState, Role, PATIENCE};
use serde_json::json;

/// Puts `key=value` through node `k`, retrying until acknowledged (a retry may follow an
/// unacknowledged attempt that committed anyway, which is harmless: the value is the same).
fn put_acked(c: &Cluster, k: usize, key: &str, value: &str) -> u64 {
    wait_until(
        &format!("PUT {key} via {} acknowledged", c.node(k).name),
        PATIENCE,
        || c.node(k).put(key, value),
    )
}

/// Waits until every node in `among` reports exactly the same keys under `prefix` with the
/// same values and revisions, and returns that state.
fn wait_converged(c: &Cluster, among: &[usize], prefix: &str) -> BTreeMap<String, KeyState> {
    wait_until(
        &format!("nodes {among:?} to converge under {prefix}"),
        PATIENCE,
        || {
            let first = c.node(among[0]).range(prefix)?;
            for &k in &among[1..] {
                let other = c.node(k).range(prefix)?;
                if other != first {
                    return Err(format!(
                        "{} and {} differ: {first:?} vs {other:?}",
                        c.node(among[0]).name,
                        c.node(k).name
                    ));
                }
            }
            Ok(first)
        },
    )
}

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
    let intruder = c.add_node("cluster-b", Role::Learner { via: 0 });
    let learner = c.add_node("cluster-a", Role::Learner { via: 0 });
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
fn garbage_on_peer_ports_and_api_socket_is_dropped_and_the_daemon_keeps_serving() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, UdpSocket};

    let c = Cluster::start("garbage", 3, 0);
    let target = c.wait_for_agreed_leader(&c.all());
    let sender = (0..3).find(|&k| k != target).expect("three voters");
    let addr = SocketAddr::V4(c.node(target).addr);

    let frame = |cid: &str, kind: u8, body: &[u8]| -> Vec<u8> {
        let len = u32::try_from(2 + cid.len() + body.len()).expect("small frame");
        let cid_len = u8::try_from(cid.len()).expect("short cluster id");
        [
            &len.to_be_bytes()[..],
            &[kind, cid_len],
            cid.as_bytes(),
            body,
        ]
        .concat()
    };
    // A pseudo-random but reproducible byte pattern.
    let noise = |n: usize, seed: u32| -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect()
    };

    // From a neighbour's namespace: TCP garbage, huge and truncated length prefixes, and an
    // idle connection that never sends anything; UDP garbage of many sizes.
    let idle = c.net.in_netns(sender, || {
        let mut payloads = vec![
            noise(65_536, 1),
            vec![0xff; 16],
            [u32::MAX.to_be_bytes(), u32::MAX.to_be_bytes()].concat(),
            [64u32.to_be_bytes().to_vec(), noise(10, 2)].concat(),
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![0; 4],
            // Well-formed frames (len u32 BE | kind | cid_len | cid | body) carrying junk: a
            // Raft frame of this cluster with an undecodable body, another cluster's frame,
            // an unknown kind, and a header whose cluster-id length overruns the frame.
            frame("garbage", 1, &noise(300, 4)),
            frame("other-cluster", 1, &noise(50, 5)),
            frame("garbage", 200, &noise(50, 6)),
            [3u32.to_be_bytes().to_vec(), vec![1, 250, b'g']].concat(),
        ];
        payloads.push(noise(7, 3));
        for p in &payloads {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("connect to the peer port");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            // The daemon may close on us mid-write: that is the expected outcome.
            let _ = s.write_all(p);
            let mut sink = [0u8; 1024];
            let _ = s.read(&mut sink);
        }
        let udp = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for (i, size) in [0usize, 1, 3, 16, 100, 512, 1400, 8000, 65_000]
            .iter()
            .enumerate()
        {
            let seed = u32::try_from(i).expect("small") + 10;
            udp.send_to(&noise(*size, seed), addr)
                .expect("send udp garbage");
        }
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("idle connection")
    });

    // The API socket: non-HTTP bytes, malformed JSON, an unknown path, an absurd length.
    let socket = c.node(target).socket.clone();
    let raw = |bytes: &[u8]| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect api");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    for garbage in [
        noise(4096, 7),
        b"\r\n\r\n".to_vec(),
        b"PUT /v1/keys/x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{".to_vec(),
        [
            b"GET /".to_vec(),
            vec![b'a'; 200_000],
            b" HTTP/1.1\r\n\r\n".to_vec(),
        ]
        .concat(),
    ] {
        let answer = raw(&garbage);
        if !answer.is_empty() {
            let status: u16 = answer
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP answer to garbage: {answer:?}"));
            assert!((400..500).contains(&status), "garbage got {answer:?}");
        }
    }
    let node = c.node(target);
    let bad_json = node
        .call("PUT", "/v1/keys/t/bad", None)
        .expect("empty-body PUT answered");
    assert!((400..500).contains(&bad_json.status), "{}", bad_json.text());
    let body = std::os::unix::net::UnixStream::connect(&socket).map(|mut s| {
        let req = b"PUT /v1/keys/t/bad HTTP/1.1\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"value\":";
        s.write_all(req).expect("write");
        let mut out = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let body = body.expect("connect api");
    assert!(body.starts_with("HTTP/1.1 400"), "truncated JSON: {body:?}");
    assert!(
        body.contains("\"error\""),
        "error body names the problem: {body:?}"
    );
    let unknown = node.call("GET", "/v1/nonsense", None).expect("answered");
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(unknown.json()["error"].is_string(), "{}", unknown.text());

    // Still serving: it answers, keeps its place in the cluster and commits writes that
    // reach every node.
    assert_eq!(
        node.get_json("/v1/health").expect("health")["ok"],
        json!(true)
    );
    put_acked(&c, target, "/t/after-garbage", "fine");
    let mut want = BTreeMap::new();
    want.insert("/t/after-garbage".to_string(), "fine".to_string());
    c.wait_for_keys(&c.all(), "/t/", &want);
    wait_until(
        "every node to list the three machines alive",
        PATIENCE,
        || {
            for k in c.all() {
                let m = c.node(k).machines()?;
                if m.len() != 3 || m.values().any(|v| v["state"] != json!("alive")) {
                    return Err(format!("{} lists {m:?}", c.node(k).name));
                }
            }
            Ok(())
        },
    );
    drop(idle);
}

#[test]
fn harness_partitions_cut_and_heal_the_test_network() {
    use berth_tests::cluster::Net;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    let mut net = Net::create();
    for _ in 0..3 {
        net.add_slot();
    }
    let listeners: Vec<TcpListener> = (0..3)
        .map(|k| {
            let ip = net.slot(k).ip;
            net.in_netns(k, || TcpListener::bind((ip, 9000)).expect("bind in netns"))
        })
        .collect();
    let reach = |from: usize, to: usize| -> bool {
        let addr = SocketAddr::from((net.slot(to).ip, 9000));
        let ok = net.in_netns(from, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
        });
        if ok {
            // Drain the accepted connection so the backlog never fills.
            listeners[to].set_nonblocking(true).expect("nonblocking");
            while listeners[to].accept().is_ok() {}
        }
        ok
    };
    // Reachable pairs are polled (a loaded machine can be slow to ARP and accept); a pair
    // that must be cut off is asserted on one attempt.
    let expect = |a: usize, b: usize, reachable: bool, when: &str| {
        if reachable {
            wait_until(&format!("{a} -> {b} {when}"), PATIENCE, || {
                if reach(a, b) {
                    Ok(())
                } else {
                    Err("no connection".into())
                }
            });
        } else {
            assert!(!reach(a, b), "{a} -> {b} connected {when}");
        }
    };
    let pairs = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
    for (a, b) in pairs {
        expect(a, b, true, "before any partition");
    }
    net.link_down(0);
    for (a, b) in pairs {
        expect(a, b, a != 0 && b != 0, "with 0's link down");
    }
    net.link_up(0);
    for (a, b) in pairs {
        expect(a, b, true, "after 0's link is back up");
    }
    net.partition(&[&[0], &[1, 2]]);
    for (a, b) in pairs {
        expect(a, b, a != 0 && b != 0, "with 0 partitioned off");
    }
    net.heal();
    for (a, b) in pairs {
        expect(a, b, true, "after healing");
    }
}

#[test]
fn watch_on_a_learner_sees_every_put_once_in_order_across_a_leader_change() {
    use berth_tests::cluster::http::LineStream;
    use std::os::unix::net::UnixStream;

    let mut c = Cluster::start("watch", 3, 1);
    let old = c.wait_for_agreed_leader(&c.all());
    let learner_socket = c.node(3).socket.clone();
    let open = |from: Option<u64>| {
        let s = UnixStream::connect(&learner_socket).expect("connect learner api");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let target = match from {
            Some(r) => format!("/v1/watch?prefix=/t/w/&from_revision={r}"),
            None => "/v1/watch?prefix=/t/w/".to_string(),
        };
        let w = LineStream::open(s, "GET", &target, None).expect("open watch");
        assert_eq!(w.status, 200, "watch status");
        w
    };
    let mut live = open(None);
    let mut first_rev = None;
    for i in 0..20 {
        let rev = put_acked(&c, i % 4, &format!("/t/w/{i:02}"), &format!("a{i}"));
        first_rev.get_or_insert(rev);
    }
    c.kill(old);
    let survivors = c.running();
    c.wait_for_agreed_leader(&survivors);
    for i in 0..20 {
        put_acked(
            &c,
            survivors[i % survivors.len()],
            &format!("/t/w/{i:02}"),
            &format!("b{i}"),
        );
    }
    // Acknowledged means applied on the node that took the write; wait for the learner too.
    let state = wait_converged(&c, &survivors, "/t/w/");
    let total: u64 = state.values().map(|s| s.version).sum();
    assert!(total >= 40, "at least 40 puts committed: {state:?}");

    let read = |w: &mut LineStream<UnixStream>| -> Vec<(String, String, u64)> {
        let mut events = Vec::new();
        while (events.len() as u64) < total {
            let line = w
                .next_line()
                .expect("watch stream")
                .expect("watch stream ended");
            let v: serde_json::Value = serde_json::from_str(&line).expect("event is JSON");
            assert_eq!(v["type"], json!("put"), "{line}");
            events.push((
                v["key"].as_str().unwrap_or_default().to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
                v["mod_revision"].as_u64().unwrap_or_default(),
            ));
        }
        events
    };
    let check = |events: &[(String, String, u64)]| {
        assert!(
            events.windows(2).all(|w| w[0].2 < w[1].2),
            "revisions strictly increase (no duplicate, no reordering): {events:?}"
        );
        for (key, s) in &state {
            let mine: Vec<_> = events.iter().filter(|e| &e.0 == key).collect();
            assert_eq!(
                mine.len() as u64,
                s.version,
                "one event per put of {key}: {mine:?}"
            );
            let last = mine.last().expect("at least one event");
            assert_eq!((&last.1, last.2), (&s.value, s.mod_revision), "{key}");
        }
    };
    let events = read(&mut live);
    check(&events);
    // Replaying from the first revision gives the very same history.
    let mut replay = open(first_rev);
    assert_eq!(
        read(&mut replay),
        events,
        "replay from revision {first_rev:?}"
    );
}

#[test]
fn berthctl_lists_machines_and_reads_and_writes_keys() {
    let c = Cluster::start("ctl", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    let ctl = berth_tests::workspace_bin("berthctl");
    let run = |k: usize, args: &[&str]| {
        std::process::Command::new(&ctl)
            .arg("--endpoint")
            .arg(&c.node(k).socket)
            .args(args)
            .output()
            .expect("run berthctl")
    };
    let leader_name = c.node(leader).name.clone();
    wait_until(
        "berthctl list-machines: 3 machines, one leader",
        PATIENCE,
        || {
            let out = run(0, &["--format", "json", "list-machines"]);
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
            let list = v.as_array().cloned().unwrap_or_default();
            let leaders: Vec<_> = list.iter().filter(|m| m["leader"] == json!(true)).collect();
            if list.len() == 3 && leaders.len() == 1 && leaders[0]["name"] == json!(leader_name) {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        },
    );

    let table = run(1, &["list-machines"]);
    let text = String::from_utf8_lossy(&table.stdout);
    for k in 0..3 {
        assert!(
            text.contains(&c.node(k).addr.ip().to_string()),
            "table lists n{k}: {text}"
        );
    }

    let put = run(1, &["kv", "put", "/t/ctl", "hello"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    wait_until("berthctl kv get on n2 shows the value", PATIENCE, || {
        let got = run(2, &["--format", "json", "kv", "get", "/t/ctl"]);
        let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap_or_default();
        if v["value"] == json!("hello") {
            Ok(())
        } else {
            Err(format!("{v} {}", String::from_utf8_lossy(&got.stderr)))
        }
    });
    let missing = run(2, &["kv", "get", "/t/missing"]);
    assert_eq!(missing.status.code(), Some(1), "missing key exits 1");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err:?}");
}

/// A JSON call on node `k` retried until it answers 2xx (409 "change in progress" and 503
/// are transient while the cluster settles).
fn call_ok(
    c: &Cluster,
    k: usize,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    wait_until(
        &format!("{method} {target} on {}", c.node(k).name),
        PATIENCE,
        || match c.node(k).call(method, target, body) {
            Ok(r) if r.ok() => Ok(r.json()),
            Ok(r) => Err(format!("{} {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        },
    )
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
