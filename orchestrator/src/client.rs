//! A small blocking HTTP/1.1 client for berthd (used by berthctl): on the unix socket, or
//! on a remote API port (`https://HOST:PORT`) with TLS 1.3 and a client certificate.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {err} (is berthd running? see --endpoint)")]
    Connect { path: PathBuf, err: std::io::Error },
    #[error(
        "berthd at {path} did not {what} within {secs} s (overloaded or stuck? see --timeout)"
    )]
    Timeout {
        path: PathBuf,
        what: &'static str,
        secs: u64,
    },
    #[error("talking to berthd: {0}")]
    Io(std::io::Error),
    #[error("malformed response from berthd: {0}")]
    Protocol(String),
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub struct Client {
    /// The socket path, or `https://HOST:PORT` (for messages).
    path: PathBuf,
    timeout: Duration,
    /// For a remote endpoint: HOST:PORT and the TLS configuration.
    remote: Option<(String, std::sync::Arc<rustls::ClientConfig>)>,
}

/// A byte stream to berthd: a unix socket or TLS over TCP.
enum Conn {
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl Conn {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    /// Reads to the end; a TLS peer that closes without close_notify after sending
    /// something is taken as done (the HTTP framing says whether the answer is whole).
    fn read_all(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        match self.read_to_end(buf) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// How long a request may take by default (writes wait at most 5 s for a quorum).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to a unix socket, giving up after `timeout` (a blocking connect would wait for
/// as long as the daemon's accept backlog stays full).
fn connect_unix(path: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let started = std::time::Instant::now();
    let addr = UnixAddr::new(path).map_err(|e| ClientError::Connect {
        path: path.to_path_buf(),
        err: e.into(),
    })?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| ClientError::Connect {
            path: path.to_path_buf(),
            err: e.into(),
        })?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            // The backlog is full: the daemon is busy; try again until the deadline.
            Err(nix::errno::Errno::EAGAIN) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(ClientError::Timeout {
                    path: path.to_path_buf(),
                    what: "accept the connection",
                    secs: timeout.as_secs(),
                })
            }
            Err(e) => {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    err: e.into(),
                })
            }
        }
    }
}

struct Head {
    status: u16,
    chunked: bool,
    length: Option<usize>,
    used: usize,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let mut chunked = false;
    let mut length = None;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok();
        }
    }
    Ok(Some(Head {
        status: resp.code.unwrap_or(0),
        chunked,
        length,
        used,
    }))
}

/// Cuts complete chunks off the front of `buf`; Ok(true) at the last (empty) chunk.
fn take_chunks(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, ClientError> {
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(false);
        };
        let size_text = String::from_utf8_lossy(&buf[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
        if buf.len() < eol + 2 + size + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
        buf.drain(..eol + 2 + size + 2);
        if size == 0 {
            return Ok(true);
        }
    }
}

fn api_error(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ClientError::Api { status, message }
}

impl Client {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
            remote: None,
        }
    }

    /// A unix socket path, or `https://HOST:PORT` with the client certificate, its key and
    /// the cluster CA (`berthd credentials add-client` makes them).
    pub fn from_endpoint(
        endpoint: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let Some(rest) = endpoint.strip_prefix("https://") else {
            if endpoint.contains("://") {
                return Err(ClientError::Protocol(format!(
                    "endpoint {endpoint:?}: only a socket path or https://HOST:PORT"
                )));
            }
            return Ok(Self::new(Path::new(endpoint)));
        };
        let hostport = rest.trim_end_matches('/').to_string();
        let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) else {
            return Err(ClientError::Protocol(format!(
                "endpoint {endpoint} needs --cert, --key and --ca (berthd credentials add-client)"
            )));
        };
        let m = crate::tls::config::Material {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let cfg = crate::tls::config::api_client_config(&m)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Self {
            path: PathBuf::from(endpoint),
            timeout: DEFAULT_TIMEOUT,
            remote: Some((hostport, cfg)),
        })
    }

    /// Opens the connection (unix or TLS) with the client's timeouts set.
    fn open(&self) -> Result<Conn, ClientError> {
        let Some((hostport, cfg)) = &self.remote else {
            let s = connect_unix(&self.path, self.timeout)?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_read_timeout(Some(self.timeout))?;
            return Ok(Conn::Unix(s));
        };
        use std::net::ToSocketAddrs;
        let connect_err = |err: std::io::Error| ClientError::Connect {
            path: self.path.clone(),
            err,
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
        let tcp = std::net::TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ClientError::Timeout {
                    path: self.path.clone(),
                    what: "accept the connection",
                    secs: self.timeout.as_secs(),
                }
            } else {
                connect_err(e)
            }
        })?;
        tcp.set_write_timeout(Some(self.timeout))?;
        tcp.set_read_timeout(Some(self.timeout))?;
        let _ = tcp.set_nodelay(true);
        // The server's certificate names its node; any node of the CA is accepted.
        let name = rustls::pki_types::ServerName::try_from("berthd")
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let conn = rustls::ClientConnection::new(cfg.clone(), name)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a refused certificate reads as such.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| self.timed_out(e, "complete the TLS handshake"))?;
        }
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Maps a read/write timeout to a clear error.
    fn timed_out(&self, e: std::io::Error, what: &'static str) -> ClientError {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            ClientError::Timeout {
                path: self.path.clone(),
                what,
                secs: self.timeout.as_secs(),
            }
        } else {
            ClientError::Io(e)
        }
    }

    fn send(&self, method: &str, target: &str, body: Option<&Value>) -> Result<Conn, ClientError> {
        let mut s = self.open()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: berthd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .and_then(|()| s.flush())
            .map_err(|e| self.timed_out(e, "take the request"))?;
        Ok(s)
    }

    /// One request; the JSON (or text) body on success.
    pub fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut s = self.send(method, target, body)?;
        let mut buf = Vec::new();
        s.read_all(&mut buf)
            .map_err(|e| self.timed_out(e, "answer"))?;
        let head = parse_head(&buf)?
            .ok_or_else(|| ClientError::Protocol("connection closed before the response".into()))?;
        let mut rest = buf[head.used..].to_vec();
        let body = if head.chunked {
            let mut out = Vec::new();
            take_chunks(&mut rest, &mut out)?;
            out
        } else {
            match head.length {
                Some(n) if n <= rest.len() => rest[..n].to_vec(),
                Some(n) => {
                    return Err(ClientError::Protocol(format!(
                        "body truncated: {} of {n} bytes",
                        rest.len()
                    )))
                }
                None => rest,
            }
        };
        if head.status >= 400 {
            return Err(api_error(head.status, &body));
        }
        Ok(body)
    }

    pub fn json(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let bytes = self.call(method, target, body)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams a chunked response, calling `on_line` for each complete line until it returns
    /// false or the stream ends.
    pub fn stream(
        &self,
        target: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let mut s = self.send("GET", target, None)?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 16 << 10];
        let head = loop {
            let n = s.read(&mut tmp).map_err(|e| self.timed_out(e, "answer"))?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "connection closed before the response".into(),
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
            if let Some(h) = parse_head(&buf)? {
                break h;
            }
        };
        buf.drain(..head.used);
        // Events may be rare: once the stream is open, wait for them without a limit
        // (a remote stream keeps its timeout: reconnect with --from-revision).
        if self.remote.is_none() {
            s.set_read_timeout(None)?;
        }
        if head.status >= 400 || !head.chunked {
            let mut rest = buf;
            s.read_all(&mut rest)?;
            let body = head
                .length
                .map_or(&rest[..], |n| &rest[..n.min(rest.len())]);
            if head.status >= 400 {
                return Err(api_error(head.status, body));
            }
            return Err(ClientError::Protocol("expected a chunked stream".into()));
        }
        let mut text = Vec::new();
        loop {
            let done = take_chunks(&mut buf, &mut text)?;
            while let Some(pos) = text.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = text.drain(..=pos).collect();
                if !on_line(String::from_utf8_lossy(&line).trim_end()) {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(ClientError::Protocol("stream ended unexpectedly".into()));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_reassembled() {
        let mut buf = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec();
        let mut out = Vec::new();
        assert!(take_chunks(&mut buf, &mut out).expect("valid"));
        assert_eq!(out, b"abcde");
        let mut partial = b"5\r\nab".to_vec();
        let mut out = Vec::new();
        assert!(!take_chunks(&mut partial, &mut out).expect("valid"));
        assert!(out.is_empty());
        assert!(take_chunks(&mut b"zz\r\n".to_vec(), &mut Vec::new()).is_err());
    }
}
