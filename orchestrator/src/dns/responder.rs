//! The DNS responder (pure: bytes in, bytes out), authoritative for one zone (`berth.`):
//!
//! | name | A / AAAA | SRV |
//! |---|---|---|
//! | `<service>.service.berth.` (or `_<service>._tcp.service.berth.`) | every instance's address | one per instance: its port, target `<hex ip>.addr.berth.` (address in the additional section) |
//! | `<machine>.node.berth.` | the machine's address | - |
//! | `<hex ip>.addr.berth.` | that address (consul's convention) | - |
//!
//! Answers as a resolver expects: names outside the zone REFUSED (no recursion offered),
//! unknown names NXDOMAIN and known names without records of the type NOERROR with no
//! answer, both with the zone's SOA for negative caching; other opcodes NOTIMP; malformed
//! queries FORMERR. UDP answers fit in 512 bytes, or the client's EDNS size up to 1232:
//! what does not fit is left out (additional records first) and TC set. Records rotate
//! with the query ID, spreading clients over instances.
//!
//! Bounded work: a datagram is checked before the message crate parses it (at most 4 KiB,
//! one question whose name has no compression pointers, no answer or authority records, at
//! most one additional record and it an OPT with the root name), so every parse is of a
//! few hundred bytes and a handful of records; the crate itself refuses compression-pointer
//! loops (a test sends one). Responses hold at most [`MAX_ANSWERS`] answers (a service with
//! more instances answers with 64 of them, rotating, without TC, as consul limits its
//! answers; over TCP too), and fitting
//! them to the size limit takes at most log2(MAX_ANSWERS) + 2 encodings.

use std::net::IpAddr;

use simple_dns::rdata::{RData, A, AAAA, OPT, SOA, SRV};
use simple_dns::{
    Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, RCODE, TYPE,
};

use super::snapshot::{Endpoint, Snapshot};

/// Most records in one answer section.
pub const MAX_ANSWERS: usize = 64;
/// The largest UDP answer offered to EDNS clients (the DNS flag day 2020 value).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Queries bigger than this are not queries.
const MAX_QUERY: usize = 4096;

/// How the answer travels (sets the size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// The caller adds the two-byte length prefix.
    Tcp,
}

/// The zone and TTLs.
#[derive(Debug, Clone)]
pub struct Responder {
    /// The zone's labels, lowercase (`["berth"]`).
    zone: Vec<String>,
    pub ttl: u32,
}

impl Default for Responder {
    fn default() -> Self {
        Responder::new("berth", 5).unwrap_or(Responder {
            zone: vec!["berth".into()],
            ttl: 5,
        })
    }
}

enum Found {
    Refused,
    NxDomain,
    Records {
        answers: Vec<ResourceRecord<'static>>,
        additional: Vec<ResourceRecord<'static>>,
    },
}

impl Responder {
    /// A responder for `zone` (`berth`, `cluster.example`), records living `ttl` seconds.
    pub fn new(zone: &str, ttl: u32) -> Result<Self, String> {
        let labels: Vec<String> = zone
            .trim_end_matches('.')
            .split('.')
            .map(str::to_ascii_lowercase)
            .collect();
        if labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) {
            return Err(format!("DNS zone {zone:?} is not a domain name"));
        }
        Ok(Responder { zone: labels, ttl })
    }

    /// The answer to one query, or `None` when nothing should be sent (not a query, or too
    /// short to carry an ID).
    pub fn answer(
        &self,
        snapshot: &Snapshot,
        query: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        let opcode = (query[2] >> 3) & 0x0f;
        if opcode != 0 {
            return Some(header_only(id, RCODE::NotImplemented));
        }
        if precheck(query).is_err() {
            return Some(header_only(id, RCODE::FormatError));
        }
        let Ok(parsed) = Packet::parse(query) else {
            return Some(header_only(id, RCODE::FormatError));
        };
        let Some(question) = parsed.questions.first() else {
            return Some(header_only(id, RCODE::FormatError));
        };
        let limit = match transport {
            Transport::Tcp => 65535,
            Transport::Udp => parsed.opt().map_or(512, |o| {
                usize::from(o.udp_packet_size.clamp(512, EDNS_UDP_SIZE))
            }),
        };
        let mut reply = Packet::new_reply(id);
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        if parsed.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        if parsed.opt().is_some() {
            *reply.opt_mut() = Some(OPT {
                opt_codes: vec![],
                udp_packet_size: EDNS_UDP_SIZE,
                version: 0,
            });
        }
        reply.questions.push(question.clone());
        let found = match question.qclass {
            QCLASS::CLASS(CLASS::IN) | QCLASS::ANY => self.lookup(snapshot, question, id),
            _ => Found::Refused,
        };
        match found {
            Found::Refused => {
                *reply.rcode_mut() = RCODE::Refused;
                reply.remove_flags(PacketFlag::AUTHORITATIVE_ANSWER);
                encode(&reply)
            }
            Found::NxDomain => {
                *reply.rcode_mut() = RCODE::NameError;
                reply.name_servers.push(self.soa(snapshot));
                encode(&reply)
            }
            Found::Records {
                answers,
                additional,
            } => {
                if answers.is_empty() {
                    reply.name_servers.push(self.soa(snapshot));
                }
                fit(reply, answers, additional, limit)
            }
        }
    }

    fn lookup(&self, snap: &Snapshot, q: &Question, id: u16) -> Found {
        let labels: Vec<String> = q
            .qname
            .get_labels()
            .iter()
            .map(|l| String::from_utf8_lossy(l.as_ref()).to_ascii_lowercase())
            .collect();
        let Some(rest) = labels.strip_suffix(self.zone.as_slice()) else {
            return Found::Refused;
        };
        let qtype = q.qtype;
        let empty = || Found::Records {
            answers: vec![],
            additional: vec![],
        };
        match rest.split_last() {
            None => {
                let answers = if matches!(qtype, QTYPE::TYPE(TYPE::SOA) | QTYPE::ANY) {
                    vec![self.soa(snap)]
                } else {
                    vec![]
                };
                Found::Records {
                    answers,
                    additional: vec![],
                }
            }
            Some((kind, [])) if kind == "service" || kind == "node" || kind == "addr" => empty(),
            Some((kind, name)) if kind == "service" => match snap.service(&service_name(name)) {
                Some(eps) => self.service_records(&q.qname, qtype, eps, id),
                None => Found::NxDomain,
            },
            Some((kind, name)) if kind == "node" => match snap.machine(&name.join(".")) {
                Some(ip) => self.address_records(&q.qname, qtype, &[ip]),
                None => Found::NxDomain,
            },
            Some((kind, [hex])) if kind == "addr" => match parse_hex_ip(hex) {
                Some(ip) => self.address_records(&q.qname, qtype, &[ip]),
                None => Found::NxDomain,
            },
            _ => Found::NxDomain,
        }
    }

    fn service_records(&self, qname: &Name, qtype: QTYPE, eps: &[Endpoint], id: u16) -> Found {
        let mut eps: Vec<&Endpoint> = eps.iter().collect();
        if !eps.is_empty() {
            let n = eps.len();
            eps.rotate_left(usize::from(id) % n);
        }
        eps.truncate(MAX_ANSWERS);
        match qtype {
            QTYPE::TYPE(TYPE::SRV) => {
                let mut answers = Vec::new();
                let mut additional = Vec::new();
                for ep in eps {
                    let Ok(target) = Name::new(&self.addr_name(ep.ip)).map(Name::into_owned) else {
                        continue;
                    };
                    let srv = SRV {
                        priority: 1,
                        weight: 1,
                        port: ep.port,
                        target: target.clone(),
                    };
                    answers.push(ResourceRecord::new(
                        qname.clone().into_owned(),
                        CLASS::IN,
                        self.ttl,
                        RData::SRV(srv),
                    ));
                    additional.push(self.address_rr(target, ep.ip));
                }
                Found::Records {
                    answers,
                    additional,
                }
            }
            _ => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for ep in eps {
                    if !ips.contains(&ep.ip) {
                        ips.push(ep.ip);
                    }
                }
                self.address_records(qname, qtype, &ips)
            }
        }
    }

    fn address_records(&self, qname: &Name, qtype: QTYPE, ips: &[IpAddr]) -> Found {
        let want = |ip: &IpAddr| match qtype {
            QTYPE::TYPE(TYPE::A) => ip.is_ipv4(),
            QTYPE::TYPE(TYPE::AAAA) => ip.is_ipv6(),
            QTYPE::ANY => true,
            _ => false,
        };
        let answers = ips
            .iter()
            .filter(|ip| want(ip))
            .map(|ip| self.address_rr(qname.clone().into_owned(), *ip))
            .collect();
        Found::Records {
            answers,
            additional: vec![],
        }
    }

    fn address_rr(&self, name: Name<'static>, ip: IpAddr) -> ResourceRecord<'static> {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A {
                address: u32::from(v4),
            }),
            IpAddr::V6(v6) => RData::AAAA(AAAA {
                address: u128::from(v6),
            }),
        };
        ResourceRecord::new(name, CLASS::IN, self.ttl, rdata)
    }

    fn addr_name(&self, ip: IpAddr) -> String {
        let hex = match ip {
            IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
            IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
        };
        format!("{hex}.addr.{}", self.zone.join("."))
    }

    fn soa(&self, snap: &Snapshot) -> ResourceRecord<'static> {
        let zone = self.zone.join(".");
        let name = |s: String| {
            Name::new(&s)
                .map(Name::into_owned)
                .unwrap_or_else(|_| Name::new_unchecked("").into_owned())
        };
        let soa = SOA {
            mname: name(format!("ns.{zone}")),
            rname: name(format!("hostmaster.{zone}")),
            serial: snap.serial,
            refresh: 3600,
            retry: 600,
            expire: 86400,
            minimum: self.ttl,
        };
        ResourceRecord::new(name(zone), CLASS::IN, self.ttl, RData::SOA(soa))
    }
}

/// `_web._tcp` (RFC 2782 form) names the service `web`; otherwise the labels are the name.
fn service_name(labels: &[String]) -> String {
    match labels {
        [svc, proto] if svc.starts_with('_') && (proto == "_tcp" || proto == "_udp") => {
            svc[1..].to_string()
        }
        _ => labels.join("."),
    }
}

fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::from(std::net::Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::from(std::net::Ipv6Addr::from(v))),
        _ => None,
    }
}

/// The shape checks that keep the parser's work small (see the module doc).
fn precheck(q: &[u8]) -> Result<(), ()> {
    if q.len() > MAX_QUERY {
        return Err(());
    }
    let count = |i: usize| u16::from_be_bytes([q[i], q[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return Err(());
    }
    let mut pos = 12;
    let mut name_len = 0;
    loop {
        let len = usize::from(*q.get(pos).ok_or(())?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return Err(());
        }
        name_len += len + 1;
        if name_len > 255 {
            return Err(());
        }
        pos += len;
    }
    pos += 4; // qtype, qclass
    if pos > q.len() {
        return Err(());
    }
    if count(10) == 1 {
        // OPT: root name, type 41
        if q.get(pos) != Some(&0) || q.get(pos + 1..pos + 3) != Some(&[0, 41][..]) {
            return Err(());
        }
    }
    Ok(())
}

fn header_only(id: u16, rcode: RCODE) -> Vec<u8> {
    let mut p = Packet::new_reply(id);
    *p.rcode_mut() = rcode;
    encode(&p).unwrap_or_default()
}

fn encode(p: &Packet) -> Option<Vec<u8>> {
    p.build_bytes_vec_compressed().ok()
}

/// The largest answer that fits in `limit`: all of it, else without the additional
/// section and with as many answers as fit (found by bisection), TC set.
fn fit<'a>(
    mut reply: Packet<'a>,
    answers: Vec<ResourceRecord<'a>>,
    additional: Vec<ResourceRecord<'a>>,
    limit: usize,
) -> Option<Vec<u8>> {
    reply.answers = answers.clone();
    reply.additional_records = additional;
    let full = encode(&reply)?;
    if full.len() <= limit {
        return Some(full);
    }
    reply.additional_records.clear();
    reply.set_flags(PacketFlag::TRUNCATION);
    let (mut lo, mut hi) = (0usize, answers.len());
    let mut best = None;
    while lo <= hi {
        let mid = (lo + hi) / 2;
        reply.answers = answers[..mid].to_vec();
        let bytes = encode(&reply)?;
        if bytes.len() <= limit {
            best = Some(bytes);
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    best
}

#[cfg(test)]
#[path = "responder_tests.rs"]
mod tests;
