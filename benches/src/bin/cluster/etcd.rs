//! The etcd side of the cluster bench: 3 etcd 3.4 members in their own network
//! namespaces, driven through the v3 JSON gateway over keep-alive HTTP/1.1 from a thread
//! inside a client namespace on the same bridge.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use berth_tests::cluster::http::{read_response, write_request, LineStream};
use berth_tests::cluster::{wait_until, Net};
use serde_json::{json, Value};

use super::{
    attempt_timeout, bulk_run, bulk_value, burn_cpus, collect, disk_mib, ms, rss_mib, Figures, Opts,
};

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A keep-alive HTTP/1.1 connection to one etcd member's JSON gateway.
struct EtcdConn {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl EtcdConn {
    fn new(addr: SocketAddr) -> EtcdConn {
        EtcdConn { addr, conn: None }
    }

    fn post(&mut self, path: &str, body: &Value, timeout: Duration) -> Result<Value> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, timeout)?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().context("connected above")?;
        conn.get_ref().set_read_timeout(Some(timeout))?;
        let bytes = body.to_string().into_bytes();
        let res = write_request(conn.get_mut(), "POST", path, Some(&bytes), true)
            .map_err(anyhow::Error::from)
            .and_then(|()| read_response(conn, "POST", path).map_err(anyhow::Error::from));
        match res {
            Ok(r) if r.ok() => Ok(r.json()),
            Ok(r) => {
                self.conn = None;
                bail!("{path}: {} {}", r.status, r.text())
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn put(&mut self, key: &str, value: &str, timeout: Duration) -> Result<()> {
        self.post(
            "/v3/kv/put",
            &json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
            timeout,
        )?;
        Ok(())
    }

    /// (member id, leader id, raft term).
    fn status(&mut self) -> Result<(String, String, u64)> {
        let v = self.post("/v3/maintenance/status", &json!({}), Duration::from_secs(2))?;
        let term = v["raftTerm"]
            .as_str()
            .or(v["header"]["raft_term"].as_str())
            .unwrap_or("0");
        Ok((
            v["header"]["member_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["leader"].as_str().unwrap_or_default().to_string(),
            term.parse().unwrap_or(0),
        ))
    }
}

struct Etcd {
    net: Net,
    _dir: tempfile::TempDir,
    args: Vec<Vec<String>>,
    children: Vec<Option<Child>>,
    client_slot: usize,
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl (apt-get install -y openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A CA and one certificate per member (its IP as subject alternative name, server and
/// client use) for etcd's peer TLS.
fn peer_certs(dir: &std::path::Path, ips: &[std::net::Ipv4Addr]) -> Result<()> {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=etcd-bench-ca",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    )?;
    for (k, ip) in ips.iter().enumerate() {
        let key = format!("m{k}.key");
        let csr = format!("m{k}.csr");
        let pem = format!("m{k}.pem");
        let ext = format!("m{k}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )?;
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ],
        )?;
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={ip}"),
                "-out",
                &csr,
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        )?;
    }
    Ok(())
}

impl Etcd {
    fn start(tuned: bool, peer_tls: bool) -> Result<Etcd> {
        let mut net = Net::create();
        let dir = tempfile::tempdir()?;
        let slots: Vec<usize> = (0..3).map(|_| net.add_slot()).collect();
        let client_slot = net.add_slot();
        let scheme = if peer_tls { "https" } else { "http" };
        if peer_tls {
            let ips: Vec<std::net::Ipv4Addr> = slots.iter().map(|&k| net.slot(k).ip).collect();
            peer_certs(dir.path(), &ips)?;
        }
        let initial: Vec<String> = slots
            .iter()
            .map(|&k| format!("e{k}={scheme}://{}:2380", net.slot(k).ip))
            .collect();
        let mut e = Etcd {
            net,
            _dir: dir,
            args: Vec::new(),
            children: Vec::new(),
            client_slot,
        };
        for &k in &slots {
            let ip = e.net.slot(k).ip;
            let mut a: Vec<String> = vec![
                "--name".into(),
                format!("e{k}"),
                "--data-dir".into(),
                e._dir.path().join(format!("e{k}")).display().to_string(),
                "--listen-peer-urls".into(),
                format!("{scheme}://{ip}:2380"),
                "--initial-advertise-peer-urls".into(),
                format!("{scheme}://{ip}:2380"),
                "--listen-client-urls".into(),
                format!("http://{ip}:2379"),
                "--advertise-client-urls".into(),
                format!("http://{ip}:2379"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "bench".into(),
                "--log-level".into(),
                "error".into(),
            ];
            if peer_tls {
                let d = e._dir.path();
                a.extend([
                    "--peer-client-cert-auth".into(),
                    "--peer-trusted-ca-file".into(),
                    d.join("ca.pem").display().to_string(),
                    "--peer-cert-file".into(),
                    d.join(format!("m{k}.pem")).display().to_string(),
                    "--peer-key-file".into(),
                    d.join(format!("m{k}.key")).display().to_string(),
                ]);
            }
            if tuned {
                a.extend([
                    "--heartbeat-interval".into(),
                    "50".into(),
                    "--election-timeout".into(),
                    "250".into(),
                ]);
            }
            e.args.push(a);
            e.children.push(None);
            e.spawn(k)?;
        }
        Ok(e)
    }

    fn spawn(&mut self, k: usize) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.slot(k).netns, "etcd"])
            .args(&self.args[k])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start etcd")?;
        self.children[k] = Some(child);
        Ok(())
    }

    fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.children[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self, k: usize) -> SocketAddr {
        SocketAddr::from((self.net.slot(k).ip, 2379))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for k in 0..self.children.len() {
            self.kill(k);
        }
    }
}

/// Finds the leader: (index, statuses' max term).
fn etcd_leader(conns: &mut [EtcdConn], alive: &[usize]) -> Result<usize> {
    let mut ids = BTreeMap::new();
    let mut leader = None;
    for &k in alive {
        let (id, l, _) = conns[k].status()?;
        ids.insert(id, k);
        leader = Some(l);
    }
    let l = leader.context("no members")?;
    ids.get(&l)
        .copied()
        .with_context(|| format!("leader {l} not among {ids:?}"))
}

pub fn bench_etcd(o: &Opts, tuned: bool, peer_tls: bool) -> Result<Figures> {
    let mut f = Figures::default();
    let mut e = Etcd::start(tuned, peer_tls)?;
    let client = e.client_slot;
    let path = format!("/var/run/netns/{}", e.net.slot(client).netns);
    // Everything that opens TCP sockets runs on a thread inside the client namespace.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Figures> {
            berth_tests::cluster::net::enter_netns(&path);
            let mut conns: Vec<EtcdConn> = (0..3).map(|k| EtcdConn::new(e.addr(k))).collect();
            let leader = wait_until("etcd leader", Duration::from_secs(60), || {
                etcd_leader(&mut conns, &[0, 1, 2]).map_err(|x| x.to_string())
            });
            let followers: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
            let (tx, rx) = mpsc::channel();
            for &k in &followers {
                let stream = TcpStream::connect(e.addr(k))?;
                let body = json!({"create_request": {"key": b64(b"/bench/w/"), "range_end": b64(b"/bench/w0")}}).to_string();
                let mut ls = LineStream::open(stream, "POST", "/v3/watch", Some(body.as_bytes()))?;
                let tx = tx.clone();
                std::thread::spawn(move || {
                    while let Ok(Some(line)) = ls.next_line() {
                        let now = Instant::now();
                        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        for ev in v["result"]["events"].as_array().cloned().unwrap_or_default() {
                            let val = ev["kv"]["value"].as_str().unwrap_or_default().to_string();
                            if tx.send((k, val, now)).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..o.samples {
                let val = format!("{i:06}");
                let t0 = Instant::now();
                conns[leader].put(&format!("/bench/w/{val}"), &val, Duration::from_secs(5))?;
                for at in collect(&rx, &followers, &b64(val.as_bytes()))?.values() {
                    f.watch.push(ms(at.duration_since(t0)));
                }
            }
            // The leader first (cost rows name it apart from the followers).
            let pids: Vec<u32> = std::iter::once(leader)
                .chain(followers.iter().copied())
                .filter_map(|k| e.children[k].as_ref().map(|c| c.id()))
                .collect();
            bulk_run(&mut f, o, &pids, Vec::new(), |i| {
                conns[leader].put(&format!("/bench/seq/{i:08}"), &bulk_value(i), Duration::from_secs(5))
            })?;
            std::thread::sleep(Duration::from_secs(2));
            f.disk_mib = (0..3).map(|k| disk_mib(&e._dir.path().join(format!("e{k}")))).collect();
            f.rss_mib = e.children.iter().flatten().filter_map(|c| rss_mib(c.id())).collect();

            let terms = |conns: &mut [EtcdConn]| -> Vec<u64> {
                (0..3).map(|k| conns[k].status().map_or(0, |s| s.2)).collect()
            };
            let before = terms(&mut conns);
            burn_cpus(o.load_secs);
            let after = terms(&mut conns);
            f.spurious = Some(after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).max().unwrap_or(0));

            for t in 0..o.trials {
                let leader = wait_until("etcd leader", Duration::from_secs(60), || {
                    etcd_leader(&mut conns, &[0, 1, 2]).map_err(|x| x.to_string())
                });
                let writer = (0..3).find(|&k| k != leader).context("three members")?;
                conns[writer].put("/bench/fo/warm", "x", Duration::from_secs(5))?;
                let t0 = Instant::now();
                e.kill(leader);
                loop {
                    if conns[writer].put("/bench/fo/after", &t.to_string(), attempt_timeout(t0)).is_ok() {
                        break;
                    }
                    if t0.elapsed() > Duration::from_secs(60) {
                        bail!("etcd: no successful put within 60 s of killing the leader");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                f.failover.push(ms(t0.elapsed()));
                e.spawn(leader)?;
                conns[leader] = EtcdConn::new(e.addr(leader));
                wait_until("restarted etcd member serves", Duration::from_secs(60), || {
                    conns[leader].status().map_err(|x| x.to_string())
                });
                eprintln!("etcd (tuned: {tuned}) trial {}/{}: failover {:.1} ms", t + 1, o.trials, f.failover[t]);
            }
            Ok(std::mem::take(&mut f))
        })
        .join()
        .map_err(|_| anyhow!("etcd bench thread panicked"))?
    })
}
