//! Limits: connection floods on the API socket and the peer port, slow clients, an
//! oversized head and a low descriptor limit. The node must keep serving its peers and
//! berthctl throughout, and recover when the flood stops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use berth_tests::cluster::{tail, wait_until, Cluster, PATIENCE};

use crate::{put_acked, wait_converged};

/// Lets this test process hold a few thousand sockets.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).expect("setrlimit");
}

fn berthctl(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(berth_tests::workspace_bin("berthctl"))
        .arg("--endpoint")
        .arg(socket)
        .args(["--timeout", "10"])
        .args(args)
        .output()
        .expect("run berthctl")
}

fn ctl_ok(socket: &std::path::Path, args: &[&str]) {
    let out = berthctl(socket, args);
    assert!(
        out.status.success(),
        "berthctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `head` in one write and returns the status line of the answer.
fn status_of(socket: &std::path::Path, head: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect api");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let _ = s.write_all(head);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn api_floods_slow_clients_and_big_heads_leave_berthctl_and_peers_served() {
    raise_nofile();
    let c = Cluster::start("apiflood", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    let target = (0..3).find(|&k| k != leader).expect("a follower");
    let socket = c.node(target).socket.clone();

    // 1,100 idle connections: more than the 1,024 API clients allowed.
    let idle: Vec<UnixStream> = (0..1100)
        .map(|_| UnixStream::connect(&socket).expect("idle connection"))
        .collect();
    ctl_ok(&socket, &["kv", "put", "/t/ctl", "in-the-flood"]);
    ctl_ok(&socket, &["list-machines"]);

    // A slowloris client: one header byte a second; it gets a 408 and is closed.
    let slow = std::thread::spawn({
        let socket = socket.clone();
        move || {
            let mut s = UnixStream::connect(&socket).expect("slow client");
            s.set_read_timeout(Some(Duration::from_millis(900)))
                .expect("timeout");
            s.write_all(b"GET /v1/health HTTP/1.1\r\nX-Slow: ")
                .expect("write");
            let started = Instant::now();
            let mut out = Vec::new();
            while started.elapsed() < PATIENCE {
                if s.write_all(b"a").is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    });

    // A 20 KiB head in one piece is refused with 431 (16 KiB is the bound).
    let mut big = b"GET /v1/health HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(vec![b'a'; 20 << 10]);
    big.extend(b"\r\n\r\n");
    let status = status_of(&socket, &big);
    assert!(
        status.starts_with("HTTP/1.1 431"),
        "20 KiB head: {status:?}"
    );

    // Peers are served meanwhile: writes through the flooded node commit everywhere.
    for i in 0..20 {
        put_acked(&c, target, &format!("/t/f/{i:02}"), "x");
    }
    wait_converged(&c, &c.all(), "/t/");
    let answer = slow.join().expect("slow client thread");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slowloris got {answer:?}"
    );

    drop(idle);
    ctl_ok(&socket, &["kv", "get", "/t/ctl"]);
}

#[test]
fn peer_port_and_gossip_floods_are_capped_and_the_cluster_keeps_committing() {
    raise_nofile();
    let mut c = Cluster::start("peerflood", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    let term = |c: &Cluster, k: usize| {
        c.node(k).get_json("/v1/cluster").expect("cluster")["term"]
            .as_u64()
            .unwrap_or_default()
    };
    let before: Vec<u64> = c.all().iter().map(|&k| term(&c, k)).collect();
    let attacker = c.net.add_slot();
    let addr = SocketAddr::V4(c.node(leader).addr);
    // 600 idle connections to the leader's peer port (256 inbound links at most, 32 of
    // them unauthenticated) and 20,000 garbage datagrams.
    let held: Vec<TcpStream> = c.net.in_netns(attacker, || {
        let conns = (0..600)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
            .collect();
        let udp = UdpSocket::bind("0.0.0.0:0").expect("udp");
        for i in 0..20_000u32 {
            let _ = udp.send_to(&i.to_be_bytes().repeat(64), addr);
        }
        conns
    });
    for i in 0..30 {
        put_acked(&c, i % 3, &format!("/t/p/{i:02}"), "x");
    }
    wait_converged(&c, &c.all(), "/t/");
    ctl_ok(&c.node(leader).socket, &["list-machines"]);
    let after: Vec<u64> = c.all().iter().map(|&k| term(&c, k)).collect();
    assert_eq!(after, before, "the flood forced an election");
    let log = tail(&c.node(leader).log, 100_000);
    assert!(
        log.contains("too many unauthenticated peer connections")
            || log.contains("inbound peer links already"),
        "the leader's log says it capped the flood"
    );
    drop(held);
    // Recovered: a restarted follower opens fresh links to the flooded leader and catches up.
    let follower = (0..3).find(|&k| k != leader).expect("a follower");
    c.kill(follower);
    put_acked(&c, leader, "/t/p/while-down", "x");
    c.restart(follower);
    wait_converged(&c, &c.all(), "/t/");
}

#[test]
fn with_a_low_descriptor_limit_an_api_flood_leaves_peers_and_berthctl_served() {
    raise_nofile();
    let c = Cluster::start("fdlimit", 3, 0);
    let leader = c.wait_for_agreed_leader(&c.all());
    let target = (0..3).find(|&k| k != leader).expect("a follower");
    let pid = c.node(target).pid().expect("running").to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=128:128"])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = c.node(target).socket.clone();
    let flood: Vec<UnixStream> = (0..400)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    ctl_ok(&socket, &["list-machines"]);
    for i in 0..10 {
        put_acked(&c, target, &format!("/t/l/{i}"), "x");
    }
    wait_converged(&c, &c.all(), "/t/");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count();
    assert!(fds <= 128, "{fds} descriptors open under a limit of 128");
    drop(flood);
    wait_until("berthctl after the flood", PATIENCE, || {
        let out = berthctl(&socket, &["kv", "get", "/t/l/9"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
}
