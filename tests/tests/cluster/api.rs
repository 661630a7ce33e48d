//! The client and peer surfaces: garbage on every port, watch streams across a leader
//! change, and berthctl.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::cluster::{wait_until, Cluster, PATIENCE};
use serde_json::json;

use crate::{put_acked, wait_converged};

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

    // A reader that stops early (`| grep -q`, `| head -1`) is not an error:
    // berthctl must end quietly, not panic on EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let closed = std::process::Command::new(&ctl)
        .arg("--endpoint")
        .arg(&c.node(1).socket)
        .arg("list-machines")
        .stdout(writer)
        .output()
        .expect("run berthctl");
    let err = String::from_utf8_lossy(&closed.stderr);
    assert!(
        closed.status.success() && err.is_empty(),
        "list-machines into a closed pipe: {:?} {err}",
        closed.status
    );

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
