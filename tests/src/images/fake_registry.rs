//! A hostile registry: a small HTTP/1.1 server on loopback that answers the distribution
//! API with whatever a test scripts (wrong digests, lying sizes, endless or cut bodies,
//! redirect and 401 loops). One thread per connection; stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One request as the fake registry saw it.
pub struct Request {
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer to one request.
pub enum Reply {
    /// Any status with headers and a body (Content-Length added).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// 200 with a content type and body.
    Ok(String, Vec<u8>),
    /// Any status with extra headers and an empty body.
    Status(u16, Vec<(String, String)>),
    /// 200 claiming `len` bytes, sending `body` (shorter) and closing.
    Cut { len: u64, body: Vec<u8> },
    /// 200 without a length, sending zeros until the client goes away.
    Endless,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running fake registry.
pub struct FakeRegistry {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

fn serve(mut s: TcpStream, handler: &Handler) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(clone) = s.try_clone() else { return };
    let mut r = BufReader::new(clone);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("GET").to_string();
        let path = words.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let req = Request {
            method,
            path,
            headers,
        };
        let ok = match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                s.write_all(head.as_bytes())
                    .and_then(|()| s.write_all(&body))
                    .is_ok()
            }
            Reply::Ok(ctype, body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes())
                    .and_then(|()| s.write_all(&body))
                    .is_ok()
            }
            Reply::Status(code, headers) => {
                let mut head = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n");
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                s.write_all(head.as_bytes()).is_ok()
            }
            Reply::Cut { len, body } => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let _ = s
                    .write_all(head.as_bytes())
                    .and_then(|()| s.write_all(&body));
                return;
            }
            Reply::Endless => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let chunk = vec![0u8; 64 << 10];
                // Bounded: at most 4 GiB, and only while the client reads.
                for _ in 0..(1 << 16) {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

impl FakeRegistry {
    /// Starts a fake registry answering by path (with query).
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        Self::start_with(move |req: &Request| handler(&req.path))
    }

    /// Starts a fake registry answering by the whole request.
    pub fn start_with(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        let addr = l.local_addr().expect("addr").to_string();
        l.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let h = handler.clone();
                        std::thread::spawn(move || serve(s, h.as_ref()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRegistry { addr, stop }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
