//! Peer IO: SWIM datagrams on UDP, Raft frames on TCP links.

use std::cmp::Reverse;
use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use prost::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;

use super::conn::{
    read_all, Conn, PeerConn, WriteBuf, PEER_CONNECTING_MAX, PEER_CONNECT_TIMEOUT,
    PEER_STALL_TIMEOUT, PEER_WBUF_MAX,
};
use super::{Daemon, TimerSlot};
use crate::membership::{MembershipError, MAX_DATAGRAM};
use crate::net::frame::{self, Decoder, KIND_RAFT};

/// Wait this long before reconnecting to a peer whose link failed.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

impl Daemon {
    pub(super) fn on_udp(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        loop {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Err(e) = self.swim.handle_datagram(&buf[..n]) {
                        self.metrics.bad_datagrams += 1;
                        match e {
                            MembershipError::Foca(_) => {
                                tracing::debug!(%from, "swim datagram ignored: {e}")
                            }
                            _ => {
                                self.warn_limited(format_args!("dropped datagram from {from}: {e}"))
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("udp receive: {e}");
                    break;
                }
            }
        }
        self.flush_swim();
    }

    /// Sends what foca produced, schedules its timers, handles its notifications.
    pub(super) fn flush_swim(&mut self) {
        let fx = self.swim.take_effects();
        for (to, data) in fx.send {
            if let Err(e) = self.udp.send_to(&data, to) {
                tracing::debug!(%to, "udp send: {e}");
            }
        }
        let now = Instant::now();
        for (after, t) in fx.timers {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((now + after, self.timer_seq, TimerSlot(t))));
        }
        for n in fx.notifications {
            self.on_membership(n);
        }
    }

    pub(super) fn accept_peers(&mut self) {
        loop {
            match self.peer_listener.accept() {
                Ok((mut stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    let token = self.alloc_token();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        tracing::warn!(%from, "cannot register peer link: {e}");
                        continue;
                    }
                    self.conns.insert(
                        token,
                        Conn::Peer(PeerConn {
                            stream,
                            addr: from,
                            outbound: None,
                            connected: true,
                            last_from: 0,
                            since: Instant::now(),
                            decoder: Decoder::new(&self.cfg.cluster_id),
                            wbuf: WriteBuf::default(),
                        }),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accept on peer port: {e}");
                    break;
                }
            }
        }
    }

    pub(super) fn on_conn(&mut self, token: Token, readable: bool, writable: bool) {
        match self.conns.get(&token) {
            Some(Conn::Peer(_)) => self.on_peer(token, readable, writable),
            Some(Conn::Api(_)) => self.on_api(token, readable, writable),
            None => {}
        }
    }

    fn on_peer(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
            return;
        };
        let mut failure: Option<String> = None;
        if writable && !p.connected {
            match p.stream.take_error() {
                Ok(Some(e)) | Err(e) => failure = Some(format!("connect: {e}")),
                Ok(None) => match p.stream.peer_addr() {
                    Ok(_) => p.connected = true,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => failure = Some(format!("connect: {e}")),
                },
            }
        }
        if failure.is_none() && p.connected && p.wbuf.pending() > 0 {
            if let Err(e) = p.wbuf.flush(&mut p.stream) {
                failure = Some(format!("write: {e}"));
            }
        }
        let mut msgs = Vec::new();
        if failure.is_none() && readable && p.connected {
            let dec = &mut p.decoder;
            match read_all(&mut p.stream, |chunk| {
                dec.push(chunk);
                true
            }) {
                Ok(eof) => {
                    loop {
                        match dec.next_frame() {
                            Ok(Some((KIND_RAFT, body))) => match Message::decode(body.as_slice()) {
                                Ok(m) => msgs.push(m),
                                Err(e) => {
                                    failure = Some(format!("undecodable raft message: {e}"));
                                    break;
                                }
                            },
                            Ok(Some((kind, _))) => {
                                failure = Some(format!("unexpected frame kind {kind}"));
                                break;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    if eof && failure.is_none() {
                        failure = Some(match dec.finish() {
                            Ok(()) => "closed by peer".to_string(),
                            Err(e) => e.to_string(),
                        });
                    }
                }
                Err(e) => failure = Some(format!("read: {e}")),
            }
        }
        if let Some(m) = msgs.last() {
            p.last_from = m.from;
        }
        for m in msgs {
            if let Err(e) = self.node.step(m) {
                tracing::debug!("raft step: {e}");
            }
        }
        if let Some(why) = failure {
            self.drop_peer(token, &why);
        }
    }

    /// Drops outbound links that did not connect in time (a partitioned or dead peer).
    pub(super) fn reap_stalled_links(&mut self, now: Instant) {
        let stalled: Vec<Token> = self
            .conns
            .iter()
            .filter_map(|(t, c)| match c {
                Conn::Peer(p)
                    if (!p.connected && now.duration_since(p.since) > PEER_CONNECT_TIMEOUT)
                        || p.wbuf.stalled_for(now) > PEER_STALL_TIMEOUT =>
                {
                    Some(*t)
                }
                _ => None,
            })
            .collect();
        for t in stalled {
            self.drop_peer(t, "connect timed out or peer not reading");
        }
    }

    fn drop_peer(&mut self, token: Token, why: &str) {
        let Some(Conn::Peer(mut p)) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut p.stream);
        let addr = p.addr;
        if why == "closed by peer" {
            tracing::debug!(%addr, "peer link closed");
        } else {
            self.metrics.bad_frames += u64::from(p.outbound.is_none());
            self.warn_limited(format_args!("dropped peer link {addr}: {why}"));
        }
        let peer = p.outbound.unwrap_or(p.last_from);
        if peer != 0 && peer == self.node.leader_id() && !self.node.is_leader() {
            tracing::info!(leader = peer, "link to the leader lost");
            self.leader_links_lost.push(peer);
        }
        if let Some(id) = p.outbound {
            self.peer_out.remove(&id);
            self.peer_retry
                .insert(id, Instant::now() + RECONNECT_BACKOFF);
            self.reports.push((id, None));
        }
    }

    /// Queues a Raft message on the link to its destination (opening it if needed).
    pub(super) fn send_raft(&mut self, m: Message) {
        let to = m.to;
        let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        let token = match self.peer_out.get(&to) {
            Some(t) => *t,
            None => match self.connect_peer(to) {
                Some(t) => t,
                None => {
                    self.reports.push((to, None));
                    if is_snapshot {
                        self.reports.push((to, Some(SnapshotStatus::Failure)));
                    }
                    return;
                }
            },
        };
        let data = frame::encode(&self.cfg.cluster_id, KIND_RAFT, &m.encode_to_vec());
        let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
            return;
        };
        let cap = if p.connected {
            PEER_WBUF_MAX
        } else {
            PEER_CONNECTING_MAX
        };
        if p.wbuf.pending() > 0 && p.wbuf.pending() + data.len() > cap {
            tracing::debug!(to, "peer link backlog full, dropping a raft message");
            self.reports.push((to, None));
            if is_snapshot {
                self.reports.push((to, Some(SnapshotStatus::Failure)));
            }
            return;
        }
        p.wbuf.push(&data);
        let mut failed = None;
        if p.connected {
            if let Err(e) = p.wbuf.flush(&mut p.stream) {
                failed = Some(format!("write: {e}"));
            }
        }
        if is_snapshot {
            self.reports.push((to, Some(SnapshotStatus::Finish)));
        }
        if let Some(why) = failed {
            self.drop_peer(token, &why);
        }
    }

    fn connect_peer(&mut self, to: u64) -> Option<Token> {
        if self
            .peer_retry
            .get(&to)
            .is_some_and(|t| Instant::now() < *t)
        {
            return None;
        }
        let addr = self.book.get(&to).map(|(_, a)| *a)?;
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, "connect: {e}");
                self.peer_retry
                    .insert(to, Instant::now() + RECONNECT_BACKOFF);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let token = self.alloc_token();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%addr, "cannot register peer link: {e}");
            return None;
        }
        self.metrics.peer_connects += 1;
        self.conns.insert(
            token,
            Conn::Peer(PeerConn {
                stream,
                addr,
                outbound: Some(to),
                connected: false,
                last_from: 0,
                since: Instant::now(),
                decoder: Decoder::new(&self.cfg.cluster_id),
                wbuf: WriteBuf::default(),
            }),
        );
        self.peer_out.insert(to, token);
        Some(token)
    }
}
