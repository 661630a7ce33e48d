//! SWIM scenario tests over a simulated network with a fake clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use super::*;

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7380))
}

struct Net {
    nodes: BTreeMap<SocketAddr, Swim>,
    dead: BTreeSet<SocketAddr>,
    /// Cut off from everyone (both directions) while set.
    isolated: BTreeSet<SocketAddr>,
    /// Drop one datagram in `drop_every` (0: none), and delay each by up to `max_delay` ms.
    drop_every: u64,
    max_delay: u64,
    sent: u64,
    /// (due ms, seq, node, timer)
    timers: BinaryHeap<Reverse<(u64, u64, SocketAddr, TimerBox)>>,
    packets: Vec<(u64, SocketAddr, Vec<u8>)>,
    now: u64,
    seq: u64,
    /// (observer, down member name, when)
    downs: Vec<(SocketAddr, String, u64)>,
}

/// Orders timers by due time and insertion only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimerBox(Timer<Ident>);
impl PartialOrd for TimerBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerBox {
    fn cmp(&self, _other: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Net {
    /// Nodes 1-3 of cluster c1, 2 and 3 joined through 1, after 3 s of gossip.
    fn three_joined() -> Self {
        let mut net = Net::new();
        for i in 1..=3 {
            net.add(i, "c1");
        }
        net.announce(2, 1);
        net.announce(3, 1);
        net.advance(3000);
        net
    }

    fn new() -> Self {
        Self {
            nodes: BTreeMap::new(),
            dead: BTreeSet::new(),
            isolated: BTreeSet::new(),
            drop_every: 0,
            max_delay: 0,
            sent: 0,
            timers: BinaryHeap::new(),
            packets: Vec::new(),
            now: 0,
            seq: 0,
            downs: Vec::new(),
        }
    }

    fn add(&mut self, i: u16, cluster: &str) {
        self.add_with(i, cluster, None);
    }

    fn add_with(&mut self, i: u16, cluster: &str, ring: Option<KeyRing>) {
        let ident = Ident {
            addr: addr(i),
            name: format!("n{i}"),
            meta: BTreeMap::from([("rack".to_string(), format!("r{i}"))]),
            boot: 1,
        };
        self.nodes
            .insert(addr(i), Swim::new(ident, cluster, u64::from(i), ring));
    }

    fn collect(&mut self, at: SocketAddr) {
        let fx = self.nodes.get_mut(&at).expect("node").take_effects();
        for (to, data) in fx.send {
            self.sent += 1;
            if self.isolated.contains(&at) || self.isolated.contains(&to) {
                continue;
            }
            if self.drop_every > 0 && self.sent % self.drop_every == 0 {
                continue;
            }
            // deterministic pseudo-random delay
            let delay = if self.max_delay > 0 {
                (self.sent.wrapping_mul(2_654_435_761) >> 7) % (self.max_delay + 1)
            } else {
                0
            };
            self.packets.push((self.now + 1 + delay, to, data));
        }
        for (after, t) in fx.timers {
            self.seq += 1;
            let due = self.now + after.as_millis() as u64;
            self.timers.push(Reverse((due, self.seq, at, TimerBox(t))));
        }
        for n in fx.notifications {
            if let OwnedNotification::MemberDown(id) = n {
                self.downs.push((at, id.name, self.now));
            }
        }
    }

    fn announce(&mut self, from: u16, to: u16) {
        self.nodes
            .get_mut(&addr(from))
            .expect("node")
            .announce(addr(to))
            .expect("announce");
        self.collect(addr(from));
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            let due: Vec<_> = self
                .packets
                .iter()
                .filter(|p| p.0 <= self.now)
                .cloned()
                .collect();
            self.packets.retain(|p| p.0 > self.now);
            for (_, to, data) in due {
                if self.dead.contains(&to) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&to) {
                    let _ = n.handle_datagram(&data);
                    self.collect(to);
                }
            }
            while let Some(Reverse((due, _, _, _))) = self.timers.peek() {
                if *due > self.now {
                    break;
                }
                let Some(Reverse((_, _, at, TimerBox(t)))) = self.timers.pop() else {
                    break;
                };
                if self.dead.contains(&at) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&at) {
                    let _ = n.handle_timer(t);
                    self.collect(at);
                }
            }
        }
    }

    fn active_names(&self, at: u16) -> BTreeSet<String> {
        self.nodes[&addr(at)]
            .members()
            .into_iter()
            .filter(|(_, s)| *s != State::Down)
            .map(|(id, _)| id.name)
            .collect()
    }
}

fn names(v: &[u16]) -> BTreeSet<String> {
    v.iter().map(|i| format!("n{i}")).collect()
}

#[test]
fn join_through_one_member_then_everyone_knows_everyone() {
    let mut net = Net::new();
    for i in 1..=4 {
        net.add(i, "c1");
    }
    for i in 2..=4 {
        net.announce(i, 1);
    }
    net.advance(3000);
    for i in 1..=4u16 {
        let others: Vec<u16> = (1..=4).filter(|j| *j != i).collect();
        assert_eq!(net.active_names(i), names(&others), "view of n{i}");
    }
    let m = net.nodes[&addr(1)].members();
    let n2 = m.iter().find(|(id, _)| id.name == "n2").expect("n2 listed");
    assert_eq!(
        n2.0.meta["rack"], "r2",
        "metadata travels with the identity"
    );
}

#[test]
fn killed_node_is_declared_down_by_every_survivor_quickly() {
    let mut net = Net::three_joined();
    assert_eq!(net.active_names(1), names(&[2, 3]));
    let killed_at = net.now;
    net.dead.insert(addr(3));
    net.advance(5000);
    for i in [1u16, 2] {
        let seen = net
            .downs
            .iter()
            .find(|(at, name, _)| *at == addr(i) && name == "n3")
            .map(|(_, _, t)| t - killed_at);
        let after = seen.unwrap_or_else(|| panic!("n{i} never saw n3 down"));
        // simulated milliseconds: the configured probe period, RTT and suspicion bound this
        assert!(after <= 1500, "n{i} saw n3 down after {after} ms");
        assert_eq!(
            net.active_names(i),
            names(
                &[1, 2]
                    .iter()
                    .copied()
                    .filter(|j| *j != i)
                    .collect::<Vec<_>>()
            )
        );
    }
}

#[test]
fn graceful_leave_is_seen_without_waiting_for_suspicion() {
    let mut net = Net::three_joined();
    net.nodes
        .get_mut(&addr(3))
        .expect("n3")
        .leave()
        .expect("leave");
    net.collect(addr(3));
    net.advance(50);
    net.dead.insert(addr(3));
    assert_eq!(net.active_names(1), names(&[2]));
}

#[test]
fn node_of_another_cluster_is_rejected_and_never_listed() {
    let mut net = Net::new();
    net.add(1, "c1");
    net.add(2, "c1");
    net.add(9, "other");
    net.announce(2, 1);
    net.announce(9, 1);
    net.advance(3000);
    assert_eq!(net.active_names(1), names(&[2]));
    assert_eq!(net.active_names(2), names(&[1]));
    assert!(net.active_names(9).is_empty());
    let d = wrap("other", b"x");
    assert_eq!(
        net.nodes.get_mut(&addr(1)).expect("n1").handle_datagram(&d),
        Err(MembershipError::WrongCluster {
            got: "other".into(),
            expected: "c1".into()
        })
    );
}

#[test]
fn garbage_datagrams_are_rejected() {
    let mut s = Swim::new(Ident::placeholder(addr(1)), "c1", 1, None);
    assert!(matches!(
        s.handle_datagram(b""),
        Err(MembershipError::NotBerth { .. })
    ));
    assert!(matches!(
        s.handle_datagram(b"BS\xff"),
        Err(MembershipError::NotBerth { .. })
    ));
    assert!(matches!(
        s.handle_datagram(&vec![0u8; MAX_DATAGRAM + 1]),
        Err(MembershipError::TooBig { .. })
    ));
    assert!(matches!(
        s.handle_datagram(&wrap("c1", b"\x00\x01garbage")),
        Err(MembershipError::Foca(_))
    ));
    assert!(s.members().is_empty());
    let _ = Duration::ZERO;
}

#[test]
fn lossy_delayed_network_declares_no_live_node_down() {
    let mut net = Net::new();
    for i in 1..=5 {
        net.add(i, "c1");
    }
    for i in 2..=5 {
        net.announce(i, 1);
    }
    net.drop_every = 20; // 5% loss
    net.max_delay = 30;
    net.advance(20_000);
    assert!(
        net.downs.is_empty(),
        "live nodes declared down: {:?}",
        net.downs
    );
    for i in 1..=5u16 {
        assert_eq!(net.active_names(i).len(), 4, "view of n{i}");
    }
}

#[test]
fn partitioned_node_is_declared_down_then_rejoins_after_healing() {
    let mut net = Net::three_joined();
    net.isolated.insert(addr(3));
    net.advance(5000);
    assert!(!net.active_names(1).contains("n3"));
    assert!(net.active_names(3).is_empty());
    net.isolated.clear();
    net.advance(10_000);
    for i in 1..=3u16 {
        let others: Vec<u16> = (1..=3).filter(|j| *j != i).collect();
        assert_eq!(
            net.active_names(i),
            names(&others),
            "view of n{i} after healing"
        );
    }
}

#[test]
fn sealed_gossip_keeps_out_a_node_that_knows_only_the_cluster_id() {
    let ring = KeyRing::generate();
    let mut net = Net::new();
    for i in 1..=3 {
        net.add_with(i, "c1", Some(ring.clone()));
    }
    // Same cluster ID: one speaks in clear, one seals with another key.
    net.add(8, "c1");
    net.add_with(9, "c1", Some(KeyRing::generate()));
    for i in [2, 3, 8, 9] {
        net.announce(i, 1);
    }
    net.advance(5000);
    for i in 1..=3u16 {
        let others: Vec<u16> = (1..=3).filter(|j| *j != i).collect();
        assert_eq!(net.active_names(i), names(&others), "view of n{i}");
    }
    assert!(net.active_names(8).is_empty());
    assert!(net.active_names(9).is_empty());
    // A clear datagram with the right cluster ID is refused by a sealed node.
    let e = net
        .nodes
        .get_mut(&addr(1))
        .expect("n1")
        .handle_datagram(&wrap("c1", b"\x00\x01"));
    assert!(matches!(e, Err(MembershipError::Sealed(_))), "{e:?}");
}

#[test]
fn key_rotation_under_loss_declares_no_live_node_down() {
    let old = crate::tls::keyring::generate_key();
    let new = crate::tls::keyring::generate_key();
    let ring = KeyRing::new(vec![old]).expect("ring");
    let mut net = Net::new();
    for i in 1..=5 {
        net.add_with(i, "c1", Some(ring.clone()));
    }
    for i in 2..=5 {
        net.announce(i, 1);
    }
    net.drop_every = 20;
    net.max_delay = 30;
    net.advance(5000);
    // Each step reaches the nodes one at a time, with gossip running in between.
    type Step = fn(&mut KeyRing, &[u8; 32], &[u8; 32]);
    let steps: [Step; 3] = [
        |r, _, n| r.install(*n).expect("install"),
        |r, _, n| r.use_key(n).expect("use"),
        |r, o, _| r.remove(o).expect("remove"),
    ];
    for step in steps {
        for i in 1..=5u16 {
            let ring = net
                .nodes
                .get_mut(&addr(i))
                .expect("node")
                .ring_mut()
                .expect("sealed");
            step(ring, &old, &new);
            net.advance(700);
        }
    }
    net.advance(5000);
    assert!(
        net.downs.is_empty(),
        "live nodes declared down: {:?}",
        net.downs
    );
    for i in 1..=5u16 {
        assert_eq!(net.active_names(i).len(), 4, "view of n{i}");
        let fp = net.nodes[&addr(i)].ring().expect("sealed").fingerprints();
        assert_eq!(
            fp,
            vec![crate::tls::keyring::fingerprint(&new)],
            "ring of n{i}"
        );
    }
}
