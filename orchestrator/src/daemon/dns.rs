//! DNS in the loop (`dns::Responder` answering from the local replica): one UDP socket
//! (datagrams answered as they are read, at most [`UDP_BUDGET`] per turn so a flood cannot
//! starve the loop) and a TCP listener for the answers a UDP reply had to truncate (at most
//! [`MAX_TCP`] connections, each closed after [`TCP_IDLE`] without a query, with bounded
//! buffers). The snapshot of services and machines is rebuilt when `/services/` or
//! `/machines/` change, before the next answer.
//!
//! A service instance is answered with its cluster-network address and container port when
//! it has one (a unit's container on a CNI network: reachable from every machine and
//! container), else with its registered address and port.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry as Poll, Token};

use super::Daemon;
use crate::api::routes::Service;
use crate::dns::{self, answer_frame, split_frame, Endpoint, Responder, Served, Snapshot};
use crate::keyspace::{self, MachineRecord};
use crate::registry::{Event, Registry};

pub(super) const DNS_UDP: Token = Token(6);
pub(super) const DNS_TCP: Token = Token(7);
/// TCP clients get tokens from here on (below the agent's).
pub(super) const DNS_CONN_BASE: usize = 1 << 39;
const DNS_CONN_END: usize = DNS_CONN_BASE + (1 << 32);
/// Datagrams answered per loop turn before others get their turn.
const UDP_BUDGET: usize = 256;
const MAX_TCP: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A query is at most 64 KiB plus its length prefix.
const MAX_TCP_READ: usize = 2 + 65_535;
/// Answers queued for a client that does not read them.
const MAX_TCP_WRITE: usize = 1 << 20;

struct TcpClient {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last: Instant,
    /// No more queries will be read (EOF or garbage): close once the answers are out.
    closing: bool,
}

pub(super) struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    clients: HashMap<Token, TcpClient>,
    next: usize,
    responder: Responder,
    snapshot: Snapshot,
    stale: bool,
    /// Datagrams may be waiting (the budget ran out).
    pending: bool,
    buf: Vec<u8>,
}

/// Whether `t` is one of the DNS server's tokens.
pub(super) fn is_dns_token(t: Token) -> bool {
    t == DNS_UDP || t == DNS_TCP || (DNS_CONN_BASE..DNS_CONN_END).contains(&t.0)
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` and registers both with the loop.
    pub(super) fn bind(addr: SocketAddr, poll: &Poll) -> std::io::Result<DnsServer> {
        let mut udp = UdpSocket::bind(addr)?;
        let mut tcp = TcpListener::bind(addr)?;
        poll.register(&mut udp, DNS_UDP, Interest::READABLE)?;
        poll.register(&mut tcp, DNS_TCP, Interest::READABLE)?;
        Ok(DnsServer {
            udp,
            tcp,
            clients: HashMap::new(),
            next: DNS_CONN_BASE,
            responder: Responder::default(),
            snapshot: Snapshot::default(),
            stale: true,
            pending: false,
            buf: vec![0; dns::RECV_BUFFER],
        })
    }

    fn refresh(&mut self, reg: &Registry) {
        if std::mem::take(&mut self.stale) {
            self.snapshot = snapshot_of(reg);
        }
    }

    fn serve_udp(&mut self) {
        self.pending = false;
        for _ in 0..UDP_BUDGET {
            match dns::serve_one(&self.udp, &self.responder, &self.snapshot, &mut self.buf) {
                Ok(Served::Done) => {}
                Ok(Served::Drained) => return,
                Err(e) => {
                    tracing::debug!("DNS receive: {e}");
                    return;
                }
            }
        }
        self.pending = true;
    }

    fn accept(&mut self, poll: &Poll) {
        loop {
            let (mut stream, _) = match self.tcp.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("DNS accept: {e}");
                    return;
                }
            };
            if self.clients.len() >= MAX_TCP || self.next >= DNS_CONN_END {
                continue; // dropped: closed at once
            }
            let token = Token(self.next);
            self.next += 1;
            if poll
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                token,
                TcpClient {
                    stream,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    last: Instant::now(),
                    closing: false,
                },
            );
        }
    }

    fn client(&mut self, token: Token, poll: &Poll) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        c.read(&self.responder, &self.snapshot);
        let done = c.write();
        let interest = if c.wbuf.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if done {
            if let Some(mut c) = self.clients.remove(&token) {
                let _ = poll.deregister(&mut c.stream);
            }
        } else {
            let _ = poll.reregister(&mut c.stream, token, interest);
        }
    }

    fn expire(&mut self, now: Instant, poll: &Poll) {
        let idle: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last) >= TCP_IDLE)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            if let Some(mut c) = self.clients.remove(&t) {
                let _ = poll.deregister(&mut c.stream);
            }
        }
    }
}

impl TcpClient {
    /// Reads what is there and answers every complete query.
    fn read(&mut self, responder: &Responder, snapshot: &Snapshot) {
        let mut chunk = [0u8; 4096];
        while !self.closing && self.wbuf.len() < MAX_TCP_WRITE {
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closing = true,
                Ok(n) => {
                    self.last = Instant::now();
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    self.answer(responder, snapshot);
                    if self.rbuf.len() >= MAX_TCP_READ {
                        self.closing = true; // a "query" this big is not one
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closing = true;
                    self.wbuf.clear();
                }
            }
        }
    }

    fn answer(&mut self, responder: &Responder, snapshot: &Snapshot) {
        while let Some((query, used)) = split_frame(&self.rbuf) {
            match answer_frame(responder, snapshot, query) {
                Some(a) => self.wbuf.extend_from_slice(&a),
                None => {
                    self.closing = true;
                    self.rbuf.clear();
                    return;
                }
            }
            self.rbuf.drain(..used);
        }
    }

    /// Writes what it can; true when the connection should be closed now.
    fn write(&mut self) -> bool {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        self.closing
    }
}

/// The services and machines of the replica as the responder answers them (pure).
pub(super) fn snapshot_of(reg: &Registry) -> Snapshot {
    let mut snap = Snapshot::new(reg.revision() as u32);
    for kv in reg.range(keyspace::SERVICES) {
        let Ok(s) = serde_json::from_str::<Service>(&kv.value) else {
            continue;
        };
        let cluster = s
            .container_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .zip(s.container_port);
        let (ip, port) = match cluster {
            Some(c) => c,
            None => match s.ip.parse() {
                Ok(ip) => (ip, s.port),
                Err(_) => continue,
            },
        };
        snap.add_endpoint(
            &s.name,
            Endpoint {
                ip,
                port,
                machine: s.machine.clone(),
                instance: s.instance.clone(),
            },
        );
    }
    for kv in reg.range(keyspace::MACHINES) {
        if let Some(m) = keyspace::decode::<MachineRecord>(&kv.value) {
            snap.add_machine(&m.name, m.addr.ip());
        }
    }
    snap
}

impl Daemon {
    /// Binds DNS as configured: a given address that cannot be bound stops the start; the
    /// default one is logged and DNS stays off.
    pub(super) fn bind_dns(
        cfg: &crate::network::NetworkConfig,
        poll: &Poll,
    ) -> Result<Option<DnsServer>, super::DaemonError> {
        use crate::network::config::DnsListen;
        match cfg.dns {
            DnsListen::Off => Ok(None),
            DnsListen::Given(addr) => {
                DnsServer::bind(addr, poll)
                    .map(Some)
                    .map_err(|err| super::DaemonError::Bind {
                        what: "DNS (--dns-listen)",
                        addr: addr.to_string(),
                        err,
                    })
            }
            DnsListen::Default(addr) => match DnsServer::bind(addr, poll) {
                Ok(s) => {
                    tracing::info!(%addr, "DNS for service.berth.");
                    Ok(Some(s))
                }
                Err(e) => {
                    tracing::warn!(%addr, "DNS is off: cannot bind its default address ({e}); set --dns-listen");
                    Ok(None)
                }
            },
        }
    }

    pub(super) fn note_dns_events(&mut self, events: &[Event]) {
        let Some(d) = self.dns.as_mut() else {
            return;
        };
        if events
            .iter()
            .any(|e| e.key.starts_with(keyspace::SERVICES) || e.key.starts_with(keyspace::MACHINES))
        {
            d.stale = true;
        }
    }

    pub(super) fn mark_dns_stale(&mut self) {
        if let Some(d) = self.dns.as_mut() {
            d.stale = true;
        }
    }

    /// A DNS socket is ready.
    pub(super) fn on_dns(&mut self, token: Token) {
        let Some(d) = self.dns.as_mut() else {
            return;
        };
        d.refresh(self.node.registry());
        let poll = self.poll.registry();
        match token {
            DNS_UDP => d.serve_udp(),
            DNS_TCP => d.accept(poll),
            t => d.client(t, poll),
        }
    }

    /// Datagrams left over from a turn whose budget ran out; idle TCP clients.
    pub(super) fn dns_turn(&mut self, now: Option<Instant>) {
        let Some(d) = self.dns.as_mut() else {
            return;
        };
        if d.pending {
            d.refresh(self.node.registry());
            d.serve_udp();
        }
        if let Some(now) = now {
            d.expire(now, self.poll.registry());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;

    #[test]
    fn services_are_answered_at_their_cluster_address_when_they_have_one() {
        let mut reg = Registry::default();
        let svc = |instance: &str, ip: &str, port: u16, cluster: Option<(&str, u16)>| Service {
            name: "web".into(),
            machine: "n1".into(),
            instance: instance.into(),
            ip: ip.into(),
            port,
            meta: Default::default(),
            container_ip: cluster.map(|c| c.0.to_string()),
            container_port: cluster.map(|c| c.1),
        };
        for (k, s) in [
            ("a", svc("a", "192.0.2.1", 8080, Some(("10.88.1.5", 80)))),
            ("b", svc("b", "192.0.2.2", 9090, None)),
            ("c", svc("c", "not an ip", 1, None)),
        ] {
            reg.apply(&Command::Put {
                key: format!("/services/web/n1/{k}"),
                value: serde_json::to_string(&s).expect("json"),
                lease: 0,
                prev_revision: None,
            });
        }
        let snap = snapshot_of(&reg);
        let eps = snap.service("web").expect("web");
        let got: Vec<(String, u16)> = eps.iter().map(|e| (e.ip.to_string(), e.port)).collect();
        assert_eq!(
            got,
            [
                ("10.88.1.5".to_string(), 80),
                ("192.0.2.2".to_string(), 9090)
            ]
        );
    }
}
