//! Connection state owned by the event loop: peer links (framed Raft messages) and API clients
//! (HTTP), each with bounded read and write buffers.

use std::io::{self, Read, Write};

use mio::net::{TcpStream, UnixStream};

use crate::net::frame::Decoder;
use crate::tls::link::Wire;

/// Most bytes queued for one connected peer before messages to it are dropped (Raft resends);
/// a single larger frame (a snapshot) is still accepted into an empty buffer.
pub const PEER_WBUF_MAX: usize = 8 << 20;
/// Most bytes queued while a link is still connecting.
pub const PEER_CONNECTING_MAX: usize = 1 << 20;
/// A link not connected after this long is dropped (the peer is unreachable).
pub const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// A connected link whose queued bytes have not moved for this long is dropped and reopened
/// (after a partition heals, a fresh connection beats TCP's backed-off retransmissions).
pub const PEER_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most inbound peer links at once (peers open one link to each node they send to).
pub const PEER_INBOUND_MAX: usize = 256;
/// Most inbound peer links that have not yet proved who they are; a new one evicts the
/// oldest, so a flood of idle connections cannot keep real peers out for long.
pub const PEER_UNVERIFIED_MAX: usize = 32;
/// A link whose TLS handshake (or first valid frame) takes longer is dropped.
pub const PEER_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// An inbound link on which nothing arrives for this long is dropped (a live leader sends
/// heartbeats many times a second; followers answer on their own links).
pub const PEER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most API clients connected at once; more are refused.
pub const API_MAX_CONNS: usize = 1024;
/// A request head must be complete this long after its first byte (slowloris).
pub const API_HEAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// A whole request (head and body) must be complete this long after its first byte.
pub const API_REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// A keep-alive client that sends nothing for this long is closed.
pub const API_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// A client that reads none of its answer (or watch stream) for this long is closed.
pub const API_WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Most bytes queued for one API client (a watcher this far behind is disconnected).
pub const API_WBUF_MAX: usize = 8 << 20;
/// Most unparsed request bytes kept for one API client.
pub const API_RBUF_MAX: usize = crate::api::http::MAX_HEAD + crate::api::http::MAX_BODY + 4096;

/// Bytes waiting to be written, with the offset already written.
#[derive(Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    off: usize,
    /// When bytes last left (or the buffer last became non-empty).
    progress: Option<std::time::Instant>,
}

impl WriteBuf {
    pub fn pending(&self) -> usize {
        self.buf.len() - self.off
    }

    /// How long queued bytes have been waiting without any being written.
    pub fn stalled_for(&self, now: std::time::Instant) -> std::time::Duration {
        match self.progress {
            Some(t) if self.pending() > 0 => now.saturating_duration_since(t),
            _ => std::time::Duration::ZERO,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
            self.progress = Some(std::time::Instant::now());
        }
        self.buf.extend_from_slice(data);
    }

    /// Writes as much as the socket takes. Ok(true) when everything is out.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while self.off < self.buf.len() {
            match w.write(&self.buf[self.off..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.off += n;
                    self.progress = Some(std::time::Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.off = 0;
        if self.buf.capacity() > (1 << 20) {
            self.buf.shrink_to(64 << 10);
        }
        Ok(true)
    }
}

/// A TCP link to or from a peer.
pub struct PeerConn {
    pub stream: TcpStream,
    /// TLS over the stream (or plain with `--insecure`).
    pub wire: Wire,
    /// The remote address (kept: `peer_addr()` fails once the socket is reset).
    pub addr: std::net::SocketAddr,
    /// For links we opened: the peer's Raft id. Inbound links only receive.
    pub outbound: Option<u64>,
    pub connected: bool,
    /// The peer proved who it is: its certificate was verified and names a node of this
    /// cluster (TLS), or it sent a valid frame (insecure). Until then the link counts
    /// against the unauthenticated cap and the handshake timeout.
    pub verified: bool,
    /// The Raft id the peer's certificate names; every message must come from it.
    pub peer_id: Option<u64>,
    /// Raft id of the sender of the last message received on this link (0: none yet).
    pub last_from: u64,
    /// When the link was opened (connect or accept).
    pub since: std::time::Instant,
    /// When bytes last arrived (inbound idle timeout).
    pub last_read: std::time::Instant,
    pub decoder: Decoder,
    pub wbuf: WriteBuf,
    /// A snapshot file being sent after its `MsgSnapshot`, pumped as the link drains.
    pub snap_out: Option<SnapOut>,
    /// A snapshot file being received: the `MsgSnapshot` waits until all of it is here.
    pub snap_in: Option<Box<SnapIn>>,
}

pub struct SnapOut {
    pub file: std::fs::File,
    pub left: u64,
}

pub struct SnapIn {
    pub msg: raft::eraftpb::Message,
    pub file: std::fs::File,
    pub part: std::path::PathBuf,
    pub name: String,
    pub size: u64,
    pub left: u64,
}

/// What an API connection is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiState {
    /// Ready to parse the next request.
    Idle,
    /// Waiting for a proposal to be applied.
    Waiting { req: u64 },
    /// Streaming watch events with `mod_revision >= from`.
    Watching { prefix: String, from: u64 },
    /// Streaming a unit's journal lines.
    Following { unit: String },
}

/// An API client's socket: the local unix socket or a remote TCP connection (with TLS).
pub enum ApiStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for ApiStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ApiStream::Unix(s) => s.read(buf),
            ApiStream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for ApiStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ApiStream::Unix(s) => s.write(buf),
            ApiStream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ApiStream::Unix(s) => s.flush(),
            ApiStream::Tcp(s) => s.flush(),
        }
    }
}

impl mio::event::Source for ApiStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            ApiStream::Unix(s) => s.register(registry, token, interests),
            ApiStream::Tcp(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            ApiStream::Unix(s) => s.reregister(registry, token, interests),
            ApiStream::Tcp(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            ApiStream::Unix(s) => s.deregister(registry),
            ApiStream::Tcp(s) => s.deregister(registry),
        }
    }
}

pub struct ApiConn {
    pub stream: ApiStream,
    /// TLS for remote clients; plain on the unix socket.
    pub wire: Wire,
    /// The client proved who it is (always, on the unix socket: only root can connect).
    pub verified: bool,
    /// The client's certificate has the read-only role: only GET is served.
    pub read_only: bool,
    /// When the connection was accepted (TLS handshake deadline).
    pub opened: std::time::Instant,
    /// When bytes last moved either way (idle timeout, eviction order).
    pub last_active: std::time::Instant,
    /// When the first byte of the request being received arrived (slowloris deadlines).
    pub request_started: Option<std::time::Instant>,
    pub rbuf: Vec<u8>,
    pub wbuf: WriteBuf,
    pub state: ApiState,
    /// Close once the write buffer drains.
    pub close_after_write: bool,
    /// The client shut its side.
    pub eof: bool,
    /// Keep-alive unless the current request asked to close.
    pub close_current: bool,
}

pub enum Conn {
    Peer(PeerConn),
    Api(ApiConn),
}

/// What to do with an API client whose time ran out (pure over its state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTimeout {
    /// Answer this status with a JSON error, then close.
    Answer(u16, &'static str),
    /// Close without a word (idle, or not reading).
    Close(&'static str),
}

/// Whether an API client overstayed: a request trickling in too slowly, an idle keep-alive
/// connection, or a client that does not read what it is sent.
pub fn api_timeout(c: &ApiConn, now: std::time::Instant) -> Option<ApiTimeout> {
    if !c.verified && now.saturating_duration_since(c.opened) > PEER_HANDSHAKE_TIMEOUT {
        return Some(ApiTimeout::Close("no TLS handshake in time"));
    }
    if c.wbuf.stalled_for(now) > API_WRITE_STALL {
        return Some(ApiTimeout::Close("not reading its answer"));
    }
    if c.state != ApiState::Idle || c.close_after_write {
        return None;
    }
    if let Some(t) = c.request_started {
        let age = now.saturating_duration_since(t);
        let head_done = c.rbuf.windows(4).any(|w| w == b"\r\n\r\n");
        if !head_done && age > API_HEAD_DEADLINE {
            return Some(ApiTimeout::Answer(
                408,
                "request head not received within 10 s",
            ));
        }
        if age > API_REQUEST_DEADLINE {
            return Some(ApiTimeout::Answer(408, "request not received within 30 s"));
        }
        return None;
    }
    if c.wbuf.pending() == 0 && now.saturating_duration_since(c.last_active) > API_IDLE_TIMEOUT {
        return Some(ApiTimeout::Close("idle"));
    }
    None
}

/// Which client to close to make room for a new one, as a sort key (smaller goes first):
/// idle keep-alive clients, longest idle first; then requests still trickling in, oldest
/// first. Clients being answered or watching are never evicted (watchers have their own cap).
pub fn api_eviction_key(c: &ApiConn) -> Option<(u8, std::time::Instant)> {
    if c.state != ApiState::Idle || c.wbuf.pending() > 0 || c.close_after_write {
        return None;
    }
    match c.request_started {
        None if c.rbuf.is_empty() => Some((0, c.last_active)),
        Some(t) => Some((1, t)),
        None => None,
    }
}

/// Most remote (TCP) API clients, and how many of them may still be in their handshake.
pub const REMOTE_API_MAX: usize = 256;
pub const REMOTE_API_UNVERIFIED_MAX: usize = 32;

/// Slots kept free of watchers, so requests (berthctl) always find room.
pub const API_RESERVE: usize = 64;

/// The API client cap for this process: [`API_MAX_CONNS`], or a quarter of the descriptor
/// limit if that is lower (the rest is for peers, the database and the reserve).
pub fn api_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    API_MAX_CONNS
        .min(usize::try_from(soft / 4).unwrap_or(usize::MAX))
        .max(8)
}

/// The inbound peer link cap: [`PEER_INBOUND_MAX`] or a quarter of the descriptor limit.
pub fn peer_inbound_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    PEER_INBOUND_MAX
        .min(usize::try_from(soft / 4).unwrap_or(usize::MAX))
        .max(8)
}

/// How long a listener rests after accept(2) failed for lack of descriptors or memory.
pub const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// At most one log line per this long about refused accepts.
pub const ACCEPT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// True for accept(2) errors that mean "no resources right now" (retry later).
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept back-off per listener, and the one rate-limited log line about it.
#[derive(Default)]
pub struct AcceptGate {
    paused: std::collections::HashMap<mio::Token, std::time::Instant>,
    last_log: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptGate {
    /// True while `listener` rests.
    pub fn paused(&self, listener: mio::Token, now: std::time::Instant) -> bool {
        self.paused.get(&listener).is_some_and(|t| now < *t)
    }

    /// Records a failed accept; returns the line to log, if one is due.
    pub fn failed(
        &mut self,
        listener: mio::Token,
        what: &str,
        e: &io::Error,
        open_conns: usize,
        now: std::time::Instant,
    ) -> Option<String> {
        if is_exhaustion(e) {
            self.paused.insert(listener, now + ACCEPT_BACKOFF);
        }
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last_log = Some(now);
        let more = std::mem::take(&mut self.suppressed);
        Some(format!(
            "accept on {what}: {e} ({open_conns} connections open; retrying every {} ms{})",
            ACCEPT_BACKOFF.as_millis(),
            if more > 0 {
                format!("; {more} more such failures since the last message")
            } else {
                String::new()
            }
        ))
    }

    /// Listeners whose rest is over (to accept from again: their readiness edge is gone).
    pub fn due(&mut self, now: std::time::Instant) -> Vec<mio::Token> {
        let due: Vec<mio::Token> = self
            .paused
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(l, _)| *l)
            .collect();
        for l in &due {
            self.paused.remove(l);
        }
        due
    }
}

impl super::Daemon {
    pub(super) fn accept_paused(&self, listener: mio::Token) -> bool {
        self.accept_gate.paused(listener, std::time::Instant::now())
    }

    pub(super) fn accept_failed(&mut self, listener: mio::Token, what: &str, e: &io::Error) {
        let open = self.conns.len();
        if let Some(line) =
            self.accept_gate
                .failed(listener, what, e, open, std::time::Instant::now())
        {
            tracing::warn!("{line}");
        }
    }

    /// Accepts again on listeners that rested after running out of descriptors.
    pub(super) fn resume_accepts(&mut self, now: std::time::Instant) {
        for listener in self.accept_gate.due(now) {
            match listener {
                super::PEER_LISTEN => self.accept_peers(),
                super::API_LISTEN => self.accept_api(),
                super::REMOTE_API_LISTEN => self.accept_remote_api(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn client(t0: Instant) -> ApiConn {
        let (a, _b) = UnixStream::pair().expect("socket pair");
        ApiConn {
            stream: ApiStream::Unix(a),
            wire: Wire::Plain,
            verified: true,
            read_only: false,
            opened: t0,
            last_active: t0,
            request_started: None,
            rbuf: Vec::new(),
            wbuf: WriteBuf::default(),
            state: ApiState::Idle,
            close_after_write: false,
            eof: false,
            close_current: false,
        }
    }

    #[test]
    fn slow_requests_idle_clients_and_non_readers_time_out() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut unverified = client(t0);
        unverified.verified = false;
        assert_eq!(api_timeout(&unverified, s(2)), None);
        assert_eq!(
            api_timeout(&unverified, s(4)),
            Some(ApiTimeout::Close("no TLS handshake in time"))
        );
        let mut c = client(t0);
        assert_eq!(api_timeout(&c, s(59)), None);
        assert_eq!(api_timeout(&c, s(61)), Some(ApiTimeout::Close("idle")));
        // one header byte now and then: 408 once the head deadline passes
        c.rbuf = b"GET /v1/health HTTP/1.1\r\nX: a".to_vec();
        c.request_started = Some(t0);
        assert_eq!(api_timeout(&c, s(9)), None);
        assert!(matches!(
            api_timeout(&c, s(11)),
            Some(ApiTimeout::Answer(408, _))
        ));
        // a complete head with a trickling body has until the request deadline
        c.rbuf = b"PUT /v1/keys/a HTTP/1.1\r\nContent-Length: 100\r\n\r\n{".to_vec();
        assert_eq!(api_timeout(&c, s(29)), None);
        assert!(matches!(
            api_timeout(&c, s(31)),
            Some(ApiTimeout::Answer(408, _))
        ));
        // a watcher is never idle, but one that stops reading is closed
        let mut w = client(t0);
        w.state = ApiState::Watching {
            prefix: "/".into(),
            from: 1,
        };
        assert_eq!(api_timeout(&w, s(3600)), None);
        w.wbuf.push(b"event");
        let stalled = Instant::now() + API_WRITE_STALL + Duration::from_secs(1);
        assert!(matches!(
            api_timeout(&w, stalled),
            Some(ApiTimeout::Close(_))
        ));
        // eviction order: idle first (longest idle first), then trickling requests; never
        // a watcher or a client waiting for its answer
        let idle_old = client(t0);
        let idle_new = client(s(5));
        assert!(api_eviction_key(&idle_old) < api_eviction_key(&idle_new));
        assert!(api_eviction_key(&idle_new) < api_eviction_key(&c));
        let w = client(t0);
        let mut w = w;
        w.state = ApiState::Watching {
            prefix: "/".into(),
            from: 1,
        };
        assert_eq!(api_eviction_key(&w), None);
        let mut waiting = client(t0);
        waiting.state = ApiState::Waiting { req: 1 };
        assert_eq!(api_eviction_key(&waiting), None);
    }

    #[test]
    fn exhausted_accepts_back_off_and_log_one_line_per_period() {
        let mut g = AcceptGate::default();
        let l = mio::Token(1);
        let t0 = Instant::now();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let first = g
            .failed(l, "peer port", &emfile, 7, t0)
            .expect("first is logged");
        assert!(
            first.contains("peer port") && first.contains("7 connections"),
            "{first}"
        );
        assert!(g.paused(l, t0));
        for i in 1..100 {
            assert!(g
                .failed(l, "peer port", &emfile, 7, t0 + Duration::from_millis(i))
                .is_none());
        }
        assert!(g.due(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(g.due(t0 + Duration::from_secs(1)), vec![l]);
        assert!(!g.paused(l, t0 + Duration::from_secs(1)));
        let later = g
            .failed(
                l,
                "peer port",
                &emfile,
                7,
                t0 + ACCEPT_LOG_EVERY + Duration::from_secs(1),
            )
            .expect("logged again after the period");
        assert!(later.contains("99 more"), "{later}");
        // other errors are logged but do not pause
        let mut g = AcceptGate::default();
        let other = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(g.failed(l, "x", &other, 0, t0).is_some());
        assert!(!g.paused(l, t0));
    }
}
