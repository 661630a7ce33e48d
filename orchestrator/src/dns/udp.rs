//! The per-datagram glue the daemon's loop calls when its DNS UDP socket is readable:
//! receive one datagram, answer it from the snapshot, send the answer back. No socket
//! is created or registered here; the loop owns the socket (a `mio::net::UdpSocket`, or a
//! `std::net::UdpSocket` in tests and tools).

use std::io;
use std::net::SocketAddr;

use super::responder::{Responder, Transport};
use super::snapshot::Snapshot;

/// What a datagram socket offers; implemented for std's and mio's UDP sockets.
pub trait DatagramSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl DatagramSocket for std::net::UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::net::UdpSocket::recv_from(self, buf)
    }
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        std::net::UdpSocket::send_to(self, buf, to)
    }
}

impl DatagramSocket for mio::net::UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        mio::net::UdpSocket::recv_from(self, buf)
    }
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        mio::net::UdpSocket::send_to(self, buf, to)
    }
}

/// A receive buffer big enough for any query the responder accepts (bigger datagrams are
/// cut by the kernel and answered FORMERR).
pub const RECV_BUFFER: usize = 4096;

/// What happened to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Answered (or dropped as not a query).
    Done,
    /// Nothing to read: the socket is drained (`WouldBlock`).
    Drained,
}

/// Reads one datagram and answers it. Call it until it returns `Served::Drained` when the
/// socket is readable. A failed send (the client went away, a full buffer) drops that
/// answer, as a DNS server does; only receive errors other than `WouldBlock` are returned.
pub fn serve_one<S: DatagramSocket>(
    sock: &S,
    responder: &Responder,
    snapshot: &Snapshot,
    buf: &mut [u8],
) -> io::Result<Served> {
    let (n, peer) = match sock.recv_from(buf) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Served::Drained),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Served::Done),
        Err(e) => return Err(e),
    };
    if let Some(reply) = responder.answer(snapshot, &buf[..n], Transport::Udp) {
        if let Err(e) = sock.send_to(&reply, peer) {
            tracing::debug!(%peer, "DNS answer not sent: {e}");
        }
    }
    Ok(Served::Done)
}
