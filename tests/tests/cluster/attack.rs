//! A host that is not a member attacks the cluster: forged Raft frames (append, vote,
//! heartbeat, snapshot) over plain TCP, over TLS with another CA's certificate, with an
//! expired certificate, and with a member's certificate claiming to be another node; forged
//! SWIM datagrams in clear and sealed with a wrong key. Nothing may change: no term change,
//! no divergence (every replica compared key by key), and the logs say why each was refused.
//! The same forged heartbeat moves (or crashes) a node of an `--insecure` cluster, which
//! shows the frames are real attacks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_orchestrator::config::node_id;
use berth_orchestrator::membership::{Ident, Swim};
use berth_orchestrator::net::frame::{self, KIND_RAFT};
use berth_orchestrator::raft::Proposal;
use berth_orchestrator::registry::{Command, Registry};
use berth_orchestrator::tls::config::{client_config, Material};
use berth_orchestrator::tls::KeyRing;
use berth_tests::cluster::{tail, wait_until, Cluster, PATIENCE};
use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};
use serde_json::json;

use crate::{put_acked, wait_converged};

/// Term, commit index and leader as node `k` reports them.
fn raft_state(c: &Cluster, k: usize) -> (u64, String) {
    let v = c.node(k).get_json("/v1/cluster").expect("cluster state");
    (
        v["term"].as_u64().unwrap_or_default(),
        v["leader"].as_str().unwrap_or_default().to_string(),
    )
}

/// The four forged Raft messages to node `to`, pretending to come from `leader` (or, for
/// the vote, from a node that does not exist), all 100 terms ahead.
fn forged_frames(
    cluster_id: &str,
    leader: &str,
    to: &str,
    term: u64,
    commit: u64,
) -> Vec<(&'static str, Vec<u8>)> {
    let (from, to) = (node_id(leader), node_id(to));
    let base = |t: MessageType| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term + 100;
        m
    };
    let evil = Proposal {
        origin: 0,
        req: 0,
        cmd: Command::Put {
            key: "/t/forged".into(),
            value: "evil".into(),
            lease: 0,
            prev_revision: None,
        },
    };
    let mut append = base(MessageType::MsgAppend);
    append.index = commit;
    append.log_term = term;
    append.commit = commit + 1;
    append.entries = vec![Entry {
        term: term + 100,
        index: commit + 1,
        data: serde_json::to_vec(&evil).expect("encode proposal"),
        ..Entry::default()
    }];
    let mut vote = base(MessageType::MsgRequestVote);
    vote.from = node_id("n9");
    vote.log_term = term + 100;
    vote.index = commit + 1000;
    let mut heartbeat = base(MessageType::MsgHeartbeat);
    heartbeat.commit = commit + 1000;
    let mut snapshot = base(MessageType::MsgSnapshot);
    let mut reg = Registry::default();
    reg.apply(&evil.cmd);
    let mut snap = Snapshot {
        data: serde_json::to_vec(&reg).expect("encode registry"),
        ..Snapshot::default()
    };
    snap.mut_metadata().index = commit + 1000;
    snap.mut_metadata().term = term + 100;
    snap.mut_metadata()
        .set_conf_state(ConfState::from((vec![from], Vec::<u64>::new())));
    snapshot.set_snapshot(snap);
    [
        ("append", append),
        ("vote", vote),
        ("heartbeat", heartbeat),
        ("snapshot", snapshot),
    ]
    .into_iter()
    .map(|(name, m)| {
        (
            name,
            frame::encode(cluster_id, KIND_RAFT, &m.encode_to_vec()),
        )
    })
    .collect()
}

/// Sends `bytes` over plain TCP and reads until the peer closes (or a short timeout).
fn send_plain(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// Sends `bytes` inside a TLS session made with `m` to the node named `server`.
fn send_tls(addr: SocketAddr, server: &str, m: &Material, bytes: &[u8]) {
    let cfg = client_config(m).expect("attacker TLS config");
    let name = rustls::pki_types::ServerName::try_from(server.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(Arc::clone(&cfg), name).expect("client conn");
    let Ok(sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let _ = tls.write_all(bytes);
    let _ = tls.flush();
    let mut sink = [0u8; 4096];
    while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
}

fn material(dir: &Path, ca: &Path) -> Material {
    Material {
        ca: ca.to_path_buf(),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    }
}

/// SWIM datagrams a node named n9 at `me` would send to join through `to`.
fn forged_gossip(
    cluster_id: &str,
    me: SocketAddr,
    to: SocketAddr,
    ring: Option<KeyRing>,
) -> Vec<Vec<u8>> {
    let ident = Ident {
        addr: me,
        name: "n9".into(),
        meta: BTreeMap::new(),
        boot: 1,
    };
    let mut swim = Swim::new(ident, cluster_id, 9, ring);
    swim.announce(to).expect("announce");
    swim.take_effects()
        .send
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

#[test]
fn forged_raft_frames_and_gossip_from_a_non_member_change_nothing() {
    let mut c = Cluster::empty();
    c.log_filter = Some("info,berth_orchestrator=debug".into());
    c.start_voters("attack", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    for i in 0..20 {
        put_acked(&c, i % 3, &format!("/t/k{i:02}"), &format!("v{i}"));
    }
    let before = wait_converged(&c, &c.all(), "/");
    let states: Vec<(u64, String)> = c.all().iter().map(|&k| raft_state(&c, k)).collect();
    let (term, _) = states[0].clone();
    let leader_name = c.node(leader).name.clone();

    // Credentials the attacker holds: another CA's certificate named like the leader, an
    // expired one from the real CA, and (a stolen) member certificate of n2.
    let ca = c.credentials("attack").join("ca/ca.pem");
    let foreign = c.foreign_credentials("attack", &leader_name);
    let expired =
        c.issue_node_credentials("attack", "n7", &["--days", "1", "--backdate-days", "3"]);
    let member = (0..3).find(|&k| k != leader).expect("a follower");
    let member_creds = c
        .credentials("attack")
        .join("nodes")
        .join(&c.node(member).name);

    let attacker = c.net.add_slot();
    let attacker_ip = c.net.slot(attacker).ip;
    for target in c.all() {
        let commit = c.node(target).get_json("/v1/cluster").expect("cluster")["commit_index"]
            .as_u64()
            .unwrap_or_default();
        let to_name = c.node(target).name.clone();
        let addr = SocketAddr::V4(c.node(target).addr);
        let frames = forged_frames("attack", &leader_name, &to_name, term, commit);
        c.net.in_netns(attacker, || {
            for (_, f) in &frames {
                send_plain(addr, f);
                send_tls(addr, &to_name, &material(&foreign, &ca), f);
                send_tls(addr, &to_name, &material(&expired, &ca), f);
                if target != member {
                    // A member's real certificate, but messages claiming the leader's name.
                    send_tls(addr, &to_name, &material(&member_creds, &ca), f);
                }
            }
            let me = SocketAddr::from((attacker_ip, 7380));
            let udp = UdpSocket::bind(me).expect("bind attacker udp");
            let mut datagrams = forged_gossip("attack", me, addr, None);
            datagrams.extend(forged_gossip("attack", me, addr, Some(KeyRing::generate())));
            for d in datagrams {
                udp.send_to(&d, addr).expect("send forged datagram");
            }
        });
    }

    // Nothing moved: same terms and leader everywhere, no n9, every replica key by key.
    std::thread::sleep(Duration::from_secs(2));
    for &k in &c.all() {
        assert_eq!(
            raft_state(&c, k),
            states[k],
            "{} changed term or leader",
            c.node(k).name
        );
        let machines = c.node(k).machines().expect("machines");
        assert!(
            !machines.contains_key("n9"),
            "{} lists n9: {machines:?}",
            c.node(k).name
        );
        assert!(
            !machines.contains_key("n7"),
            "{} lists n7: {machines:?}",
            c.node(k).name
        );
    }
    let after = wait_converged(&c, &c.all(), "/");
    let keys = |m: &BTreeMap<String, berth_tests::cluster::KeyState>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| k.starts_with("/t/"))
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect()
    };
    assert_eq!(keys(&after), keys(&before), "registry changed");
    assert!(!after.contains_key("/t/forged"));
    // The cluster still commits, and the logs say why the forgeries were refused.
    put_acked(&c, leader, "/t/after", "ok");
    for k in c.all() {
        let log = tail(&c.node(k).log, 100_000);
        for why in [
            "TLS handshake refused",
            "invalid peer certificate",
            "certificate expired",
            "claims to be from",
            "dropped datagram",
        ] {
            if why == "claims to be from" && k == member {
                continue;
            }
            assert!(log.contains(why), "{} log lacks {why:?}", c.node(k).name);
        }
    }
}

#[test]
fn the_same_forged_heartbeat_moves_an_insecure_cluster() {
    let mut c = Cluster::empty();
    c.insecure = true;
    c.start_voters("weak", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    let (term, _) = raft_state(&c, leader);
    let target = (0..3).find(|&k| k != leader).expect("a follower");
    let frames = forged_frames("weak", &c.node(leader).name, &c.node(target).name, term, 1);
    let forged = frames
        .iter()
        .find(|(n, _)| *n == "heartbeat")
        .expect("heartbeat")
        .1
        .clone();
    let attacker = c.net.add_slot();
    let addr = SocketAddr::V4(c.node(target).addr);
    c.net.in_netns(attacker, || send_plain(addr, &forged));
    // Either the term jumps or raft-rs panics on the commit index beyond its log (the
    // follower dies): both show the frame reached raft-rs.
    wait_until(
        "the forged heartbeat to move or kill the follower",
        PATIENCE,
        || match c.node(target).get_json("/v1/cluster") {
            Ok(v) if v["term"].as_u64().unwrap_or_default() > term => Ok(()),
            Ok(v) => Err(format!("term still {}", v["term"])),
            Err(e) if e.contains("Connection refused") => Ok(()),
            Err(e) => Err(e),
        },
    );
}

#[test]
fn node_with_another_ca_or_an_expired_certificate_cannot_join() {
    let mut c = Cluster::empty();
    // Refusals past the first in a second are logged at debug level.
    c.log_filter = Some("info,berth_orchestrator=debug".into());
    c.start_voters("gate", 3);
    let leader = c.wait_for_agreed_leader(&c.all());
    put_acked(&c, leader, "/t/members-only", "x");
    let foreign = c.foreign_credentials("gate", "n3");
    let outsider = c.add_learner_with_credentials("gate", 0, &foreign);
    let expired = c.issue_node_credentials("gate", "n4", &["--days", "1", "--backdate-days", "3"]);
    let stale = c.add_learner_with_credentials("gate", 0, &expired);
    // A legitimate learner added after them joins: the gate does not block others.
    let good = c.add_learner("gate", 0);
    let insiders = [0, 1, 2, good];
    let good_name = c.node(good).name.clone();
    wait_until(
        "every insider lists the good learner as a member",
        PATIENCE,
        || {
            for &j in &insiders {
                let v = c.node(j).get_json("/v1/cluster")?;
                let listed = v["members"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|m| m["name"] == json!(good_name)));
                if !listed {
                    return Err(format!("{} lacks {good_name}: {v}", c.node(j).name));
                }
            }
            Ok(())
        },
    );
    wait_until("the good learner has the data", PATIENCE, || {
        c.node(good)
            .get_key("/t/members-only")?
            .map(|_| ())
            .ok_or("not yet".into())
    });
    std::thread::sleep(Duration::from_secs(2));
    for k in [outsider, stale] {
        let name = c.node(k).name.clone();
        assert_eq!(
            c.node(k).get_key("/t/members-only"),
            Ok(None),
            "{name} got data"
        );
        for &j in &insiders {
            let v = c.node(j).get_json("/v1/cluster").expect("cluster");
            let members = v["members"].as_array().cloned().unwrap_or_default();
            assert!(
                members.iter().all(|m| m["name"] != json!(name)),
                "{} has {name} as a Raft member: {v}",
                c.node(j).name
            );
        }
    }
    // The outsider (another CA, so another gossip key) is not even listed.
    for &j in &insiders {
        let m = c.node(j).machines().expect("machines");
        assert!(
            !m.contains_key("n3"),
            "{} lists the outsider: {m:?}",
            c.node(j).name
        );
    }
    let leader_log = tail(&c.node(leader).log, 100_000);
    assert!(
        leader_log.contains("invalid peer certificate"),
        "the leader's log says why: {leader_log}"
    );
}

#[test]
fn gossip_key_rotation_under_traffic_loses_no_membership() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Cluster::start("rotate", 3, 1);
    c.wait_for_agreed_leader(&c.all());
    let new_key = c.berthd_tool(&["credentials", "keygen"]).trim().to_string();
    let old_fp = c.node(0).get_json("/v1/gossip/keys").expect("keys")["keys"][0].clone();
    let stop = AtomicBool::new(false);
    let mut worst: Vec<String> = Vec::new();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                put_acked(&c, (n % 4) as usize, &format!("/t/r/{n:05}"), "x");
                n += 1;
            }
            n
        });
        let watcher = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for k in c.all() {
                    if let Ok(m) = c.node(k).machines() {
                        for (name, v) in m {
                            if v["state"] != json!("alive") {
                                seen.push(format!("{} saw {name} {}", c.node(k).name, v["state"]));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        for op in ["install", "use", "remove"] {
            let key = if op == "remove" {
                None
            } else {
                Some(new_key.clone())
            };
            for k in c.all() {
                // Through berthctl: the new key as an argument, the old one (named by the
                // ring file the harness made) on stdin.
                let out = match &key {
                    Some(key) => gossip_ctl(&c, k, &[op, key], None),
                    None => {
                        let ring =
                            std::fs::read_to_string(c.dir().join("creds-rotate/ca/gossip.keys"))
                                .expect("read the original ring");
                        gossip_ctl(&c, k, &[op, "-"], Some(ring.trim()))
                    }
                };
                assert!(
                    out.status.success(),
                    "{op} on {}: {}",
                    c.node(k).name,
                    out_text(&out)
                );
                std::thread::sleep(Duration::from_millis(700));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("writer");
        assert!(
            writes > 10,
            "writes kept flowing during the rotation: {writes}"
        );
        worst = watcher.join().expect("watcher");
    });
    assert!(
        worst.is_empty(),
        "membership wavered during rotation: {worst:?}"
    );
    for k in c.all() {
        let v = c.node(k).get_json("/v1/gossip/keys").expect("keys");
        let keys = v["keys"].as_array().cloned().unwrap_or_default();
        let listed = gossip_ctl(&c, k, &["keys"], None);
        let table = out_text(&listed);
        assert!(
            listed.status.success()
                && keys
                    .iter()
                    .all(|fp| table.contains(fp.as_str().unwrap_or("?"))),
            "berthctl gossip keys on {} lists the ring {v}: {table}",
            c.node(k).name
        );
        assert!(
            !table.contains(&new_key),
            "berthctl gossip keys shows a key, not only fingerprints: {table}"
        );
        assert_eq!(keys.len(), 1, "{}: {v}", c.node(k).name);
        assert_ne!(
            keys[0],
            old_fp,
            "{} still seals with the old key",
            c.node(k).name
        );
    }
    wait_converged(&c, &c.all(), "/t/r/");
}

/// Runs `berthctl --endpoint <node k> gossip ARGS`, with `stdin` fed in when given.
fn gossip_ctl(c: &Cluster, k: usize, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(berth_tests::workspace_bin("berthctl"));
    cmd.arg("--endpoint")
        .arg(&c.node(k).socket)
        .arg("gossip")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = stdin.map(|text| format!("{text}\n")).unwrap_or_default();
    berth_tests::output_with_input(&mut cmd, input.as_bytes()).expect("run berthctl")
}

fn out_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
