//! The DNS responder behind a real UDP socket, queried by `dig` (bind9-dnsutils) as a
//! resolver would. No root needed: the server listens on 127.0.0.1.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_orchestrator::dns::{serve_one, Endpoint, Responder, Snapshot, RECV_BUFFER};

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(snapshot: Snapshot) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let port = sock.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let responder = Responder::default();
            let mut buf = vec![0u8; RECV_BUFFER];
            while !flag.load(Ordering::Relaxed) {
                if let Err(e) = serve_one(&sock, &responder, &snapshot, &mut buf) {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn dig(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+norec", "+tries=1", "+time=5"])
            .args(args)
            .output()
            .expect("dig missing: install bind9-dnsutils (scripts/install-deps)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::new(3);
    let ep = |ip: &str, port| Endpoint {
        ip: ip.parse().expect("an address"),
        port,
        machine: "n1".into(),
        instance: format!("{ip}:{port}"),
    };
    s.add_endpoint("web", ep("10.88.1.5", 80));
    s.add_endpoint("web", ep("10.88.2.7", 8080));
    s.add_endpoint("v6", ep("fd00::5", 443));
    for i in 0..100 {
        s.add_endpoint("big", ep(&format!("10.88.3.{i}"), 9000));
    }
    s.add_machine("n1", "192.168.5.1".parse().expect("an address"));
    s
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn dig_gets_a_srv_nxdomain_refused_and_truncation() {
    assert!(
        Command::new("dig").arg("-v").output().is_ok(),
        "dig missing: install bind9-dnsutils (scripts/install-deps)"
    );
    let server = Server::start(snapshot());

    assert_eq!(
        sorted_lines(&server.dig(&["+short", "web.service.berth", "A"])),
        ["10.88.1.5", "10.88.2.7"]
    );
    assert_eq!(
        sorted_lines(&server.dig(&["+short", "web.service.berth", "SRV"])),
        [
            "1 1 80 0a580105.addr.berth.",
            "1 1 8080 0a580207.addr.berth."
        ]
    );
    assert_eq!(
        sorted_lines(&server.dig(&["+short", "_web._tcp.service.berth", "SRV"])).len(),
        2
    );
    assert_eq!(
        server.dig(&["+short", "0a580207.addr.berth", "A"]).trim(),
        "10.88.2.7"
    );
    assert_eq!(
        server.dig(&["+short", "v6.service.berth", "AAAA"]).trim(),
        "fd00::5"
    );
    assert_eq!(
        server.dig(&["+short", "N1.node.berth", "A"]).trim(),
        "192.168.5.1"
    );

    let full = server.dig(&["web.service.berth", "SRV"]);
    assert!(
        full.contains("status: NOERROR") && full.contains("flags: qr aa;"),
        "{full}"
    );
    assert!(
        full.contains("ADDITIONAL: 3"),
        "two addresses plus OPT: {full}"
    );

    let nx = server.dig(&["nope.service.berth", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );
    assert!(
        nx.contains("ns.berth. hostmaster.berth. 3 3600 600 86400 5"),
        "SOA: {nx}"
    );
    let nodata = server.dig(&["web.service.berth", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    let refused = server.dig(&["example.com", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");

    // 100 instances do not fit in 512 bytes: TC set, as many as fit returned
    let tc = server.dig(&["+ignore", "+noedns", "big.service.berth", "A"]);
    assert!(tc.contains("flags: qr aa tc;"), "{tc}");
    // EDNS lets more in: up to 1232 bytes (64 A records, the per-answer cap, fit)
    let edns = server.dig(&["+ignore", "+bufsize=4096", "big.service.berth", "A"]);
    assert!(edns.contains("udp: 1232"), "{edns}");
    let answered = |s: &str| s.lines().filter(|l| l.contains("\tA\t10.88.3.")).count();
    assert!(
        answered(&edns) > answered(&tc) && answered(&tc) > 0,
        "{tc}\n{edns}"
    );
    // 64 SRV records with their addresses do not fit in 1232 bytes
    let srv = server.dig(&["+ignore", "+bufsize=4096", "big.service.berth", "SRV"]);
    assert!(srv.contains("flags: qr aa tc;"), "{srv}");
}

#[test]
fn garbage_datagrams_do_not_stop_the_server() {
    let server = Server::start(snapshot());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff",
        &[0x41; 3000][..],
    ] {
        client.send_to(junk, ("127.0.0.1", server.port)).unwrap();
    }
    assert_eq!(
        server.dig(&["+short", "n1.node.berth"]).trim(),
        "192.168.5.1"
    );
}

/// A resolver that got TC retries over TCP: dig +tcp against a plain blocking TCP server
/// built on the framing helpers.
#[test]
fn dig_over_tcp_gets_the_whole_answer() {
    use berth_orchestrator::dns::{answer_frame, split_frame};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let responder = Responder::default();
        let snap = snapshot();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some((msg, used)) = split_frame(&buf) {
                let reply = answer_frame(&responder, &snap, msg).unwrap();
                conn.write_all(&reply).unwrap();
                buf.drain(..used);
                continue;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+tcp",
            "+norec",
            "+tries=1",
            "+time=5",
        ])
        .args(["big.service.berth", "SRV"])
        .output()
        .expect("dig missing: install bind9-dnsutils (scripts/install-deps)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("flags: qr aa;") && text.contains("ANSWER: 64,"),
        "{text}"
    );
    server.join().unwrap();
}
