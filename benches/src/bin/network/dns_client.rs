//! A DNS client for the benches: sequential A queries over UDP (simple-dns), each answer
//! checked, timed in microseconds.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use simple_dns::{Name, Packet, Question, CLASS, QCLASS, QTYPE, TYPE};

fn query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut p = Packet::new_query(id);
    p.questions.push(Question::new(
        Name::new(name)?,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    Ok(p.build_bytes_vec()?)
}

/// `n` sequential A lookups of `name` after `warmup` (microseconds each), each checked to
/// carry `answers` records.
pub fn lookups(
    server: SocketAddr,
    name: &str,
    answers: usize,
    warmup: usize,
    n: usize,
) -> Result<Vec<f64>> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(server)
        .with_context(|| format!("connect to {server}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1500];
    let mut out = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let q = query(i as u16, name)?;
        let t = Instant::now();
        sock.send(&q)?;
        let len = sock
            .recv(&mut buf)
            .with_context(|| format!("no DNS answer from {server} within 2 s"))?;
        let took = t.elapsed();
        let p = Packet::parse(&buf[..len])?;
        if p.id() != i as u16 || p.answers.len() != answers {
            bail!(
                "unexpected DNS answer for {name}: id {} with {} answers (want {answers})",
                p.id(),
                p.answers.len()
            );
        }
        if i >= warmup {
            out.push(took.as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}
