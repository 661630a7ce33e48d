//! DNS over TCP framing (RFC 1035 4.2.2, RFC 7766): each message is preceded by its length
//! as two bytes. Pure helpers for the daemon's TCP connections, which resolvers open after
//! a truncated (TC) UDP answer; the loop owns the sockets, buffers and limits.

use super::responder::{Responder, Transport};
use super::snapshot::Snapshot;

/// The first complete message at the start of `buf`, and how many bytes it takes with its
/// prefix; `None` until it is all there.
pub fn split_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    let msg = buf.get(2..2 + len)?;
    Some((msg, 2 + len))
}

/// The framed answer to one framed-off query (`None`: send nothing; for a garbage message
/// the daemon should then close the connection).
pub fn answer_frame(responder: &Responder, snapshot: &Snapshot, query: &[u8]) -> Option<Vec<u8>> {
    let reply = responder.answer(snapshot, query, Transport::Tcp)?;
    let len = u16::try_from(reply.len()).ok()?;
    let mut out = Vec::with_capacity(reply.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&reply);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Endpoint;

    #[test]
    fn frames_split_and_answers_are_framed() {
        assert_eq!(split_frame(&[]), None);
        assert_eq!(split_frame(&[0]), None);
        assert_eq!(split_frame(&[0, 3, 1, 2]), None);
        assert_eq!(
            split_frame(&[0, 3, 1, 2, 3, 9]),
            Some((&[1u8, 2, 3][..], 5))
        );
        assert_eq!(split_frame(&[0, 0]), Some((&[][..], 2)));

        let mut snap = Snapshot::new(1);
        for i in 0..100u8 {
            snap.add_endpoint(
                "big",
                Endpoint {
                    ip: std::net::IpAddr::from([10, 88, 0, i]),
                    port: 80,
                    machine: "n".into(),
                    instance: i.to_string(),
                },
            );
        }
        let mut q = simple_dns::Packet::new_query(9);
        q.questions.push(simple_dns::Question::new(
            simple_dns::Name::new_unchecked("big.service.berth"),
            simple_dns::QTYPE::TYPE(simple_dns::TYPE::SRV),
            simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
            false,
        ));
        let q = q.build_bytes_vec().unwrap();
        let framed = answer_frame(&Responder::default(), &snap, &q).unwrap();
        let (msg, used) = split_frame(&framed).unwrap();
        assert_eq!(used, framed.len());
        assert!(msg.len() > 1232, "TCP answers are not cut to the UDP size");
        let p = simple_dns::Packet::parse(msg).unwrap();
        assert!(!p.has_flags(simple_dns::PacketFlag::TRUNCATION));
        assert_eq!(p.answers.len(), crate::dns::MAX_ANSWERS);
        assert_eq!(answer_frame(&Responder::default(), &snap, &[1, 2]), None);
    }
}
