//! A TCP proxy in front of a test registry: it records the HTTP request heads that pass
//! through (method, path, `Range`), and can stall every connection after some bytes in
//! either direction, so that a test can kill a pull or a push midway at a known point. One
//! pair of threads per connection; stopped on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request head seen going to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

struct Shared {
    upstream: String,
    /// Bytes a connection may carry towards the registry / the client before it stalls.
    limit_up: AtomicU64,
    limit_down: AtomicU64,
    /// Whether some connection is stalled at its limit now.
    stalled: AtomicBool,
    heads: Mutex<Vec<Head>>,
    stop: AtomicBool,
}

/// A running proxy.
pub struct Proxy {
    /// `127.0.0.1:PORT` to give clients instead of the registry's address.
    pub addr: String,
    shared: Arc<Shared>,
}

/// Parses request heads out of the client-to-registry byte stream (bodies skipped by
/// Content-Length; a chunked body ends the parsing).
#[derive(Default)]
struct HeadParser {
    buf: Vec<u8>,
    body_left: u64,
    lost: bool,
}

impl HeadParser {
    fn feed(&mut self, mut data: &[u8], out: &Mutex<Vec<Head>>) {
        while !data.is_empty() && !self.lost {
            if self.body_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.buf.push(data[0]);
            data = &data[1..];
            if self.buf.ends_with(b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                self.parse(&head, out);
            }
        }
    }

    fn parse(&mut self, head: &str, out: &Mutex<Vec<Head>>) {
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let mut range = None;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => self.body_left = v.parse().unwrap_or(0),
                "transfer-encoding" => self.lost = true,
                "range" => range = Some(v.to_string()),
                _ => {}
            }
        }
        out.lock().expect("heads lock").push(Head {
            method,
            path,
            range,
        });
    }
}

/// Copies `from` to `to`, at most `limit` bytes in all before waiting for the limit to
/// rise; request heads go to `parser` when given.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    limit: &AtomicU64,
    mut parser: Option<HeadParser>,
) {
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(p) = parser.as_mut() {
            p.feed(&buf[..n], &shared.heads);
        }
        let mut off = 0;
        while off < n {
            let room = limit.load(Ordering::SeqCst).saturating_sub(sent);
            if room == 0 {
                if shared.stop.load(Ordering::SeqCst) {
                    // Closes the connection for both pumps (they hold clones).
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                shared.stalled.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let m = (n - off).min(usize::try_from(room).unwrap_or(usize::MAX));
            if to.write_all(&buf[off..off + m]).is_err() {
                return;
            }
            off += m;
            sent += m as u64;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`), forwarding everything.
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("proxy addr").to_string();
        l.set_nonblocking(true).expect("nonblocking proxy listener");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            limit_up: AtomicU64::new(u64::MAX),
            limit_down: AtomicU64::new(u64::MAX),
            stalled: AtomicBool::new(false),
            heads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&s.upstream) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (a, b) = (s.clone(), s.clone());
                std::thread::spawn(move || {
                    pump(client, server, &a, &a.limit_up, Some(HeadParser::default()))
                });
                std::thread::spawn(move || pump(s2, c2, &b, &b.limit_down, None));
            }
        });
        Proxy { addr, shared }
    }

    /// From now on, each new or open connection stalls once it carried `up` bytes to the
    /// registry or `down` bytes to the client (counted from its start).
    pub fn stall_after(&self, up: Option<u64>, down: Option<u64>) {
        self.shared
            .limit_up
            .store(up.unwrap_or(u64::MAX), Ordering::SeqCst);
        self.shared
            .limit_down
            .store(down.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Whether a connection has reached its limit and waits.
    pub fn stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Lifts the limits: stalled connections go on.
    pub fn release(&self) {
        self.stall_after(None, None);
        self.shared.stalled.store(false, Ordering::SeqCst);
    }

    /// The request heads seen so far.
    pub fn heads(&self) -> Vec<Head> {
        self.shared.heads.lock().expect("heads lock").clone()
    }
}

/// Dropping the proxy closes the connections it holds stalled.
impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}
