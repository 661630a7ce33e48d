use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use simple_dns::rdata::{RData, OPT};
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

use super::*;

fn snapshot() -> Snapshot {
    let mut s = Snapshot::new(77);
    let ep = |ip: &str, port, machine: &str, instance: &str| Endpoint {
        ip: ip.parse().unwrap(),
        port,
        machine: machine.into(),
        instance: instance.into(),
    };
    s.add_endpoint("web", ep("10.88.1.5", 80, "n1", "a"));
    s.add_endpoint("web", ep("10.88.2.7", 8080, "n2", "b"));
    s.add_endpoint("Db", ep("fd00::5", 5432, "n1", "c"));
    for i in 0..200u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a58_0000 + i));
        s.add_endpoint("big", ep(&ip.to_string(), 9000, "n3", &format!("i{i}")));
    }
    s.add_machine("n1", "192.168.5.1".parse().unwrap());
    s
}

fn query(id: u16, name: &str, qtype: TYPE, edns: Option<u16>) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    if let Some(size) = edns {
        *p.opt_mut() = Some(OPT {
            opt_codes: vec![],
            udp_packet_size: size,
            version: 0,
        });
    }
    p.build_bytes_vec().unwrap()
}

fn ask(bytes: &[u8], t: Transport) -> Vec<u8> {
    Responder::default()
        .answer(&snapshot(), bytes, t)
        .expect("an answer")
}

fn ips(p: &Packet) -> Vec<String> {
    p.answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some(std::net::Ipv4Addr::from(a.address).to_string()),
            RData::AAAA(a) => Some(std::net::Ipv6Addr::from(a.address).to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_records_of_a_service() {
    let bytes = ask(
        &query(7, "web.service.berth", TYPE::A, None),
        Transport::Udp,
    );
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(p.id(), 7);
    assert!(p.has_flags(
        PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_DESIRED
    ));
    assert!(!p.has_flags(PacketFlag::RECURSION_AVAILABLE));
    assert_eq!(p.rcode(), RCODE::NoError);
    assert_eq!(p.questions[0].qname.to_string(), "web.service.berth");
    let mut got = ips(&p);
    got.sort();
    assert_eq!(got, ["10.88.1.5", "10.88.2.7"]);
    assert!(p.answers.iter().all(|rr| rr.ttl == 5));
}

#[test]
fn names_are_case_insensitive_and_the_query_case_is_kept() {
    let bytes = ask(
        &query(1, "WEB.Service.BERTH", TYPE::A, None),
        Transport::Udp,
    );
    let p = Packet::parse(&bytes).unwrap();
    assert_eq!(ips(&p).len(), 2);
    assert_eq!(p.answers[0].name.to_string(), "WEB.Service.BERTH");
    let p3 = ask(
        &query(1, "db.service.berth", TYPE::AAAA, None),
        Transport::Udp,
    );
    assert_eq!(ips(&Packet::parse(&p3).unwrap()), ["fd00::5"]);
}

#[test]
fn srv_records_carry_ports_and_resolvable_targets() {
    for name in ["web.service.berth", "_web._tcp.service.berth"] {
        let bytes = ask(&query(2, name, TYPE::SRV, None), Transport::Udp);
        let p = Packet::parse(&bytes).unwrap();
        let mut srv: Vec<(u16, String)> = p
            .answers
            .iter()
            .filter_map(|rr| match &rr.rdata {
                RData::SRV(s) => Some((s.port, s.target.to_string())),
                _ => None,
            })
            .collect();
        srv.sort();
        assert_eq!(
            srv,
            [
                (80, "0a580105.addr.berth".to_string()),
                (8080, "0a580207.addr.berth".to_string())
            ],
            "{name}"
        );
        // the additional section resolves the targets
        let extra: Vec<(String, String)> = p
            .additional_records
            .iter()
            .filter_map(|rr| match &rr.rdata {
                RData::A(a) => Some((
                    rr.name.to_string(),
                    std::net::Ipv4Addr::from(a.address).to_string(),
                )),
                _ => None,
            })
            .collect();
        assert!(
            extra.contains(&("0a580105.addr.berth".into(), "10.88.1.5".into())),
            "{extra:?}"
        );
    }
    // and so does a query for a target
    let p = ask(
        &query(3, "0a580207.addr.berth", TYPE::A, None),
        Transport::Udp,
    );
    assert_eq!(ips(&Packet::parse(&p).unwrap()), ["10.88.2.7"]);
}

#[test]
fn machines_under_node() {
    let p = ask(&query(4, "n1.node.berth.", TYPE::A, None), Transport::Udp);
    assert_eq!(ips(&Packet::parse(&p).unwrap()), ["192.168.5.1"]);
}

fn rcode_and_authority(bytes: &[u8]) -> (RCODE, usize, usize) {
    let p = Packet::parse(bytes).unwrap();
    (p.rcode(), p.answers.len(), p.name_servers.len())
}

#[test]
fn nxdomain_nodata_and_refused_as_a_resolver_expects() {
    // unknown service / machine / junk under the zone: NXDOMAIN with the SOA
    for name in [
        "nope.service.berth",
        "nope.node.berth",
        "x.y.berth",
        "zz.addr.berth",
    ] {
        let b = ask(&query(5, name, TYPE::A, None), Transport::Udp);
        assert_eq!(rcode_and_authority(&b), (RCODE::NameError, 0, 1), "{name}");
        let p = Packet::parse(&b).unwrap();
        assert!(p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(
            matches!(&p.name_servers[0].rdata, RData::SOA(s) if s.serial == 77 && s.minimum == 5)
        );
    }
    // a name that exists without records of the type: NOERROR, no answer, SOA
    for (name, t) in [
        ("web.service.berth", TYPE::AAAA),
        ("web.service.berth", TYPE::MX),
        ("service.berth", TYPE::A),
    ] {
        let b = ask(&query(6, name, t, None), Transport::Udp);
        assert_eq!(rcode_and_authority(&b), (RCODE::NoError, 0, 1), "{name}");
    }
    // the apex's SOA
    let b = ask(&query(6, "berth", TYPE::SOA, None), Transport::Udp);
    assert_eq!(rcode_and_authority(&b).0, RCODE::NoError);
    assert_eq!(Packet::parse(&b).unwrap().answers.len(), 1);
    // outside the zone: REFUSED, not authoritative, no recursion available
    for name in ["example.com", "berth.example.com", "service.berth.evil"] {
        let b = ask(&query(8, name, TYPE::A, None), Transport::Udp);
        let p = Packet::parse(&b).unwrap();
        assert_eq!(p.rcode(), RCODE::Refused, "{name}");
        assert!(!p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(p.answers.is_empty());
    }
}

#[test]
fn not_queries_are_dropped_and_bad_queries_get_formerr_or_notimp() {
    let r = Responder::default();
    let s = snapshot();
    assert_eq!(r.answer(&s, &[], Transport::Udp), None);
    assert_eq!(r.answer(&s, &[1, 2, 3], Transport::Udp), None);
    let mut resp = query(9, "web.service.berth", TYPE::A, None);
    resp[2] |= 0x80; // QR: a response, never answered (no loops between servers)
    assert_eq!(r.answer(&s, &resp, Transport::Udp), None);

    let mut notify = query(9, "web.service.berth", TYPE::A, None);
    notify[2] |= 4 << 3;
    assert_eq!(
        Packet::parse(&ask(&notify, Transport::Udp))
            .unwrap()
            .rcode(),
        RCODE::NotImplemented
    );

    let mut two = Packet::new_query(10);
    for n in ["a.service.berth", "b.service.berth"] {
        two.questions.push(Question::new(
            Name::new_unchecked(n),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
    }
    let formerr = |bytes: &[u8]| {
        let answer = ask(bytes, Transport::Udp);
        let p = Packet::parse(&answer).unwrap();
        assert_eq!(p.rcode(), RCODE::FormatError, "{bytes:?}");
        assert_eq!(p.id(), u16::from_be_bytes([bytes[0], bytes[1]]));
    };
    formerr(&two.build_bytes_vec().unwrap());
    // a question name that is a compression pointer to itself (a parse loop), and one
    // pointing past the end
    let mut lp = vec![0, 11, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    lp.extend([0xc0, 12, 0, 1, 0, 1]);
    formerr(&lp);
    let mut trunc = query(12, "web.service.berth", TYPE::A, None);
    trunc.truncate(20);
    formerr(&trunc);
    // header-only garbage with counts that promise thousands of records
    formerr(&[0, 13, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    // an additional record that is not OPT
    let mut extra = query(14, "web.service.berth", TYPE::A, None);
    extra[11] = 1;
    extra.extend([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    formerr(&extra);
}

#[test]
fn big_answers_are_truncated_for_udp_and_whole_over_tcp() {
    let udp = ask(
        &query(15, "big.service.berth", TYPE::A, None),
        Transport::Udp,
    );
    assert!(udp.len() <= 512, "{}", udp.len());
    let p = Packet::parse(&udp).unwrap();
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert!(!p.answers.is_empty() && p.answers.len() < MAX_ANSWERS);

    let edns = ask(
        &query(15, "big.service.berth", TYPE::SRV, Some(4096)),
        Transport::Udp,
    );
    assert!(edns.len() <= usize::from(EDNS_UDP_SIZE), "{}", edns.len());
    let p = Packet::parse(&edns).unwrap();
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert_eq!(p.opt().map(|o| o.udp_packet_size), Some(EDNS_UDP_SIZE));
    assert!(
        p.additional_records.is_empty(),
        "additional records go first"
    );

    let tcp = ask(
        &query(15, "big.service.berth", TYPE::SRV, None),
        Transport::Tcp,
    );
    let p = Packet::parse(&tcp).unwrap();
    assert!(!p.has_flags(PacketFlag::TRUNCATION));
    assert_eq!(p.answers.len(), MAX_ANSWERS);
    assert_eq!(p.additional_records.len(), MAX_ANSWERS);

    // small answers are not truncated
    let small = ask(
        &query(15, "web.service.berth", TYPE::SRV, None),
        Transport::Udp,
    );
    let small = Packet::parse(&small).unwrap();
    assert!(!small.has_flags(PacketFlag::TRUNCATION));
}

#[test]
fn answers_rotate_with_the_query_id() {
    let first = |id| {
        ips(&Packet::parse(&ask(
            &query(id, "web.service.berth", TYPE::A, None),
            Transport::Udp,
        ))
        .unwrap())[0]
            .clone()
    };
    assert_ne!(first(0), first(1));
    assert_eq!(first(0), first(2));
}

#[test]
fn zone_names_are_checked() {
    assert!(Responder::new("cluster.example.", 5).is_ok());
    assert!(Responder::new("bad..zone", 5).is_err());
    assert!(Responder::new("sp ace", 5).is_err());
    let r = Responder::new("Cluster.Example", 5).unwrap();
    let b = r
        .answer(
            &snapshot(),
            &query(1, "web.service.cluster.example", TYPE::A, None),
            Transport::Udp,
        )
        .unwrap();
    assert_eq!(ips(&Packet::parse(&b).unwrap()).len(), 2);
}

/// Random datagrams and mutated queries: never a panic, an answer is always a response
/// with the query's ID that fits the UDP limit.
#[test]
fn fuzz_random_and_mutated_datagrams() {
    let r = Responder::default();
    let s = snapshot();
    let seeds = [
        query(1, "web.service.berth", TYPE::A, None),
        query(2, "_web._tcp.service.berth", TYPE::SRV, Some(1400)),
        query(3, "big.service.berth", TYPE::SRV, Some(65535)),
        query(4, "n1.node.berth", TYPE::AAAA, None),
    ];
    let mut rng = StdRng::seed_from_u64(14);
    let mut answered = 0;
    for round in 0..40_000 {
        let datagram: Vec<u8> = if round % 2 == 0 {
            let len = rng.gen_range(0..700);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut d = seeds[round % seeds.len()].clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..d.len());
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            if rng.gen_bool(0.1) {
                d.truncate(rng.gen_range(0..d.len()));
            }
            d
        };
        if let Some(reply) = r.answer(&s, &datagram, Transport::Udp) {
            answered += 1;
            assert!(
                reply.len() <= usize::from(EDNS_UDP_SIZE),
                "round {round}: {} bytes",
                reply.len()
            );
            assert_eq!(reply[..2], datagram[..2], "round {round}: id");
            assert!(reply[2] & 0x80 != 0, "round {round}: QR");
            Packet::parse(&reply)
                .unwrap_or_else(|e| panic!("round {round}: our answer does not parse: {e}"));
        }
    }
    assert!(answered > 10_000, "{answered}");
}
