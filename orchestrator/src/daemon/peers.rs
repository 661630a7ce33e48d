//! Peer IO: SWIM datagrams on UDP, Raft frames on TCP links.

use std::cmp::Reverse;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use prost::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;

use super::conn::{
    peer_inbound_cap, Conn, PeerConn, SnapOut, WriteBuf, PEER_CONNECTING_MAX, PEER_UNVERIFIED_MAX,
    PEER_WBUF_MAX,
};
use super::link::{flush_link, link_timeout, read_link};
use super::{Daemon, TimerSlot, PEER_LISTEN};
use crate::api::http::{err, HttpError};
use crate::api::routes::KeyOp;
use crate::membership::{MembershipError, MAX_DATAGRAM};
use crate::net::frame::{self, Decoder, KIND_RAFT};
use crate::raft::snapfile;
use crate::tls::keyring::{fingerprint, parse_key};
use crate::tls::link::Wire;

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
        if self.accept_paused(PEER_LISTEN) {
            return;
        }
        loop {
            match self.peer_listener.accept() {
                Ok((stream, from)) => self.admit_peer(stream, from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.accept_failed(PEER_LISTEN, "peer port", &e);
                    break;
                }
            }
        }
    }

    /// Takes an accepted peer connection in, within the caps.
    fn admit_peer(&mut self, mut stream: TcpStream, from: SocketAddr) {
        let (inbound, unverified) = self.inbound_peer_counts();
        let cap = peer_inbound_cap();
        if inbound >= cap {
            self.warn_limited(format_args!(
                "refusing a peer connection from {from}: {cap} inbound peer links already"
            ));
            return;
        }
        if unverified >= PEER_UNVERIFIED_MAX {
            if let Some(oldest) = self.oldest_unverified_inbound() {
                self.drop_peer(oldest, "evicted: too many unauthenticated peer connections");
            }
        }
        let wire = match &self.security {
            Some(sec) => match Wire::server(&sec.peer.server) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(%from, "cannot start TLS on a peer link: {e}");
                    return;
                }
            },
            None => Wire::Plain,
        };
        let _ = stream.set_nodelay(true);
        let token = self.alloc_token();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%from, "cannot register peer link: {e}");
            return;
        }
        let now = Instant::now();
        self.conns.insert(
            token,
            Conn::Peer(PeerConn {
                stream,
                wire,
                addr: from,
                outbound: None,
                connected: true,
                verified: false,
                peer_id: None,
                last_from: 0,
                since: now,
                last_read: now,
                decoder: Decoder::new(&self.cfg.cluster_id),
                wbuf: WriteBuf::default(),
                snap_out: None,
                snap_in: None,
            }),
        );
    }

    /// (inbound peer links, those not yet verified)
    fn inbound_peer_counts(&self) -> (usize, usize) {
        let mut all = 0;
        let mut unverified = 0;
        for c in self.conns.values() {
            if let Conn::Peer(p) = c {
                if p.outbound.is_none() {
                    all += 1;
                    unverified += usize::from(!p.verified);
                }
            }
        }
        (all, unverified)
    }

    fn oldest_unverified_inbound(&self) -> Option<Token> {
        self.conns
            .iter()
            .filter_map(|(t, c)| match c {
                Conn::Peer(p) if p.outbound.is_none() && !p.verified => Some((p.since, *t)),
                _ => None,
            })
            .min()
            .map(|(_, t)| t)
    }

    pub(super) fn on_conn(&mut self, token: Token, readable: bool, writable: bool) {
        match self.conns.get(&token) {
            Some(Conn::Peer(_)) => self.on_peer(token, readable, writable),
            Some(Conn::Api(_)) => self.on_api(token, readable, writable),
            None => {}
        }
    }

    fn on_peer(&mut self, token: Token, readable: bool, writable: bool) {
        let my_id = self.id;
        let cluster_id = self.cfg.cluster_id.clone();
        let state_dir = self.cfg.state_dir();
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
        if failure.is_none() && p.connected {
            failure = flush_link(p, &cluster_id).err();
        }
        let mut msgs = Vec::new();
        let mut agent_frames = Vec::new();
        if failure.is_none() && readable && p.connected {
            failure = read_link(
                p,
                &cluster_id,
                my_id,
                &state_dir,
                &mut msgs,
                &mut agent_frames,
            )
            .err();
        }
        let more = p.wbuf.pending() > 0 || p.snap_out.is_some();
        if failure.is_none() && p.connected && more && !p.wire.is_handshaking() {
            // Messages queued during the handshake go out once it is done.
            failure = flush_link(p, &cluster_id).err();
        }
        if let Some(m) = msgs.last() {
            p.last_from = m.from;
        }
        for m in msgs {
            if let Err(e) = self.node.step(m) {
                tracing::debug!("raft step: {e}");
            }
        }
        for (peer, body) in agent_frames {
            self.on_agent_frame(peer, &body);
        }
        if let Some(why) = failure {
            self.drop_peer(token, &why);
        }
    }

    /// Drops links that did not connect or authenticate in time, inbound links that went
    /// silent, and links whose peer stopped reading.
    pub(super) fn reap_stalled_links(&mut self, now: Instant) {
        let stalled: Vec<(Token, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| match c {
                Conn::Peer(p) => link_timeout(p, now).map(|why| (*t, why)),
                _ => None,
            })
            .collect();
        for (t, why) in stalled {
            self.drop_peer(t, why);
        }
        self.resume_accepts(now);
        self.reap_api_clients(now);
    }

    fn drop_peer(&mut self, token: Token, why: &str) {
        let Some(Conn::Peer(mut p)) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut p.stream);
        let addr = p.addr;
        let who = match (p.outbound, p.peer_id) {
            (Some(id), _) | (None, Some(id)) => format!(" ({})", self.name_of(id)),
            _ => String::new(),
        };
        if why == "closed by peer" {
            tracing::debug!(%addr, "peer link closed");
        } else {
            self.metrics.bad_frames += u64::from(p.outbound.is_none());
            let dir = if p.outbound.is_some() { "to" } else { "from" };
            self.warn_limited(format_args!("dropped peer link {dir} {addr}{who}: {why}"));
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
        let snap_file = if is_snapshot {
            match snapfile::decode_ref(&m.get_snapshot().data) {
                Some(r) => {
                    let path = self.cfg.state_dir().join(&r.file);
                    match std::fs::File::open(&path) {
                        Ok(f) => Some(SnapOut {
                            file: f,
                            left: r.size,
                        }),
                        Err(e) => {
                            tracing::warn!(to, file = %path.display(), "cannot send a snapshot: {e}");
                            self.reports.push((to, Some(SnapshotStatus::Failure)));
                            return;
                        }
                    }
                }
                None => None,
            }
        } else {
            None
        };
        let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
            return;
        };
        if snap_file.is_some() && p.snap_out.is_some() {
            tracing::debug!(to, "a snapshot is still being sent on this link");
            self.reports.push((to, Some(SnapshotStatus::Failure)));
            return;
        }
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
        if snap_file.is_some() {
            p.snap_out = snap_file;
        }
        if is_snapshot {
            self.reports.push((to, Some(SnapshotStatus::Finish)));
        }
        // Written by flush_peers: every message of one Ready to a peer leaves in one TLS
        // write (one record and one syscall where they fit).
        if !self.unflushed.contains(&token) {
            self.unflushed.push(token);
        }
    }

    /// Writes what send_raft queued since the last call, one write per link.
    pub(super) fn flush_peers(&mut self) {
        let cluster_id = self.cfg.cluster_id.clone();
        for token in std::mem::take(&mut self.unflushed) {
            let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
                continue;
            };
            if !p.connected || p.wire.is_handshaking() {
                continue; // the link's writable event flushes it
            }
            if let Err(why) = flush_link(p, &cluster_id) {
                self.drop_peer(token, &why);
            }
        }
    }

    /// Queues an encoded frame (not Raft: no reports) on the link to `to`, opening it if
    /// needed; false if it cannot be queued.
    pub(super) fn queue_frame(&mut self, to: u64, data: &[u8]) -> bool {
        let token = match self.peer_out.get(&to) {
            Some(t) => *t,
            None => match self.connect_peer(to) {
                Some(t) => t,
                None => return false,
            },
        };
        let Some(Conn::Peer(p)) = self.conns.get_mut(&token) else {
            return false;
        };
        let cap = if p.connected {
            PEER_WBUF_MAX
        } else {
            PEER_CONNECTING_MAX
        };
        if p.wbuf.pending() + data.len() > cap {
            return false;
        }
        p.wbuf.push(data);
        let cluster_id = self.cfg.cluster_id.clone();
        if p.connected && !p.wire.is_handshaking() {
            if let Err(why) = flush_link(p, &cluster_id) {
                self.drop_peer(token, &why);
                return false;
            }
        }
        true
    }

    fn connect_peer(&mut self, to: u64) -> Option<Token> {
        if self
            .peer_retry
            .get(&to)
            .is_some_and(|t| Instant::now() < *t)
        {
            return None;
        }
        let (name, addr) = self.book.get(&to).cloned()?;
        let wire = match &self.security {
            Some(sec) => match Wire::client(&sec.peer.client, &name) {
                Ok(w) => w,
                Err(e) => {
                    self.warn_limited(format_args!("cannot start TLS to {name} at {addr}: {e}"));
                    self.peer_retry
                        .insert(to, Instant::now() + RECONNECT_BACKOFF);
                    return None;
                }
            },
            None => Wire::Plain,
        };
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
        let now = Instant::now();
        let verified = matches!(wire, Wire::Plain);
        self.conns.insert(
            token,
            Conn::Peer(PeerConn {
                stream,
                wire,
                addr,
                outbound: Some(to),
                connected: false,
                // We chose to dial it; with TLS it still has to prove its name.
                verified,
                peer_id: Some(to),
                last_from: 0,
                since: now,
                last_read: now,
                decoder: Decoder::new(&self.cfg.cluster_id),
                wbuf: WriteBuf::default(),
                snap_out: None,
                snap_in: None,
            }),
        );
        self.peer_out.insert(to, token);
        Some(token)
    }
}

impl Daemon {
    /// `GET /v1/gossip/keys`: fingerprints, the primary (sealing) key first.
    pub(super) fn gossip_keys_json(&self) -> serde_json::Value {
        match self.swim.ring() {
            Some(ring) => serde_json::json!({"sealed": true, "keys": ring.fingerprints()}),
            None => serde_json::json!({"sealed": false, "keys": []}),
        }
    }

    /// `POST /v1/gossip/keys`: changes this node's ring and persists it (0600, atomic)
    /// before answering, so a restart keeps the rotation.
    pub(super) fn gossip_key_op(
        &mut self,
        op: KeyOp,
        key_text: &str,
    ) -> Result<serde_json::Value, HttpError> {
        let key = parse_key(key_text).map_err(|e| err(400, e.to_string()))?;
        let path = match &self.security {
            Some(sec) => sec.ring_path.clone(),
            None => return Err(err(409, "gossip is not sealed on this node (--insecure)")),
        };
        let Some(ring) = self.swim.ring_mut() else {
            return Err(err(409, "gossip is not sealed on this node (--insecure)"));
        };
        let mut next = ring.clone();
        match op {
            KeyOp::Install => next.install(key),
            KeyOp::Use => next.use_key(&key),
            KeyOp::Remove => next.remove(&key),
        }
        .map_err(|e| err(409, e.to_string()))?;
        crate::private_files::replace_secret(&path, next.to_text().as_bytes())
            .map_err(|e| err(500, e.to_string()))?;
        *ring = next;
        let keys = ring.fingerprints();
        tracing::info!(?op, key = %fingerprint(&key), ?keys, "gossip key ring changed");
        Ok(serde_json::json!({"sealed": true, "keys": keys}))
    }

    /// True once a link this node opened to `id` completed its TLS handshake with a valid
    /// node certificate naming `id` (always for --insecure); otherwise opens such a link and
    /// says false. The leader adds a SWIM member to Raft only after this: gossip keys alone
    /// (an expired or revoked certificate) do not make a member.
    pub(super) fn peer_proven(&mut self, id: u64) -> bool {
        if self.security.is_none() {
            return true;
        }
        let token = match self.peer_out.get(&id) {
            Some(t) => *t,
            None => match self.connect_peer(id) {
                Some(t) => t,
                None => return false,
            },
        };
        matches!(self.conns.get(&token), Some(Conn::Peer(p)) if p.verified)
    }
}
