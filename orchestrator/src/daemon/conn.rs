//! Connection state owned by the event loop: peer links (framed Raft messages) and API clients
//! (HTTP), each with bounded read and write buffers.

use std::io::{self, Read, Write};

use mio::net::{TcpStream, UnixStream};

use crate::net::frame::Decoder;

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
/// Most API clients connected at once; more are refused.
pub const API_MAX_CONNS: usize = 1024;
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

/// Reads until WouldBlock, handing each chunk to `sink`. Returns Ok(true) at end of stream.
pub fn read_all(r: &mut impl Read, mut sink: impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
    let mut tmp = [0u8; 16 << 10];
    loop {
        match r.read(&mut tmp) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if !sink(&tmp[..n]) {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A TCP link to or from a peer.
pub struct PeerConn {
    pub stream: TcpStream,
    /// The remote address (kept: `peer_addr()` fails once the socket is reset).
    pub addr: std::net::SocketAddr,
    /// For links we opened: the peer's Raft id. Inbound links only receive.
    pub outbound: Option<u64>,
    pub connected: bool,
    /// Raft id of the sender of the last message received on this link (0: none yet).
    pub last_from: u64,
    /// When the connect started (outbound links).
    pub since: std::time::Instant,
    pub decoder: Decoder,
    pub wbuf: WriteBuf,
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
}

pub struct ApiConn {
    pub stream: UnixStream,
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
