//! SWIM membership with foca (IO-free): node identity, datagram framing and a [`Swim`]
//! wrapper that collects what foca wants sent, scheduled and reported. The daemon moves
//! datagrams and fires timers; the scenario tests do the same over a simulated network.
//!
//! With a gossip key ring (the default), every datagram is sealed with an AEAD under the
//! ring's primary key ([`crate::tls::keyring`]) and a datagram that opens with no key of the
//! ring is dropped before foca sees it. Without one (`--insecure`), datagrams carry the
//! cluster ID in clear and anyone who knows it can speak SWIM.

#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{Foca, Identity, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec, Runtime};
use rand09::{rngs::SmallRng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use foca::{State, Timer};

use crate::tls::KeyRing;

/// Largest datagram sent or accepted (foca payload plus our prefix).
pub const MAX_DATAGRAM: usize = 1400;
const MAGIC: [u8; 2] = *b"BS";

/// A node's SWIM identity: address (unique key), name, metadata, and a boot number so a
/// restarted node replaces its previous incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    pub addr: SocketAddr,
    pub name: String,
    pub meta: BTreeMap<String, String>,
    pub boot: u64,
}

impl Identity for Ident {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            boot: self.boot + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

impl Ident {
    /// A stand-in for a member known only by address (join and bootstrap targets); foca accepts
    /// an announce addressed to any identity with the member's address.
    pub fn placeholder(addr: SocketAddr) -> Self {
        Self {
            addr,
            name: String::new(),
            meta: BTreeMap::new(),
            boot: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("datagram of {len} bytes is too short or lacks the berth prefix")]
    NotBerth { len: usize },
    #[error("datagram from cluster {got:?}, this node is in cluster {expected:?}")]
    WrongCluster { got: String, expected: String },
    #[error("datagram of {len} bytes exceeds the {max}-byte limit")]
    TooBig { len: usize, max: usize },
    #[error("swim: {0}")]
    Foca(String),
    #[error(transparent)]
    Sealed(#[from] crate::tls::keyring::KeyRingError),
}

/// Prefixes a foca payload with the cluster ID.
pub fn wrap(cluster_id: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + cluster_id.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(cluster_id.len() as u8);
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the prefix and returns the foca payload.
pub fn unwrap<'a>(cluster_id: &str, datagram: &'a [u8]) -> Result<&'a [u8], MembershipError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(MembershipError::TooBig {
            len: datagram.len(),
            max: MAX_DATAGRAM,
        });
    }
    if datagram.len() < 3 || datagram[..2] != MAGIC {
        return Err(MembershipError::NotBerth {
            len: datagram.len(),
        });
    }
    let n = usize::from(datagram[2]);
    let Some(id) = datagram.get(3..3 + n) else {
        return Err(MembershipError::NotBerth {
            len: datagram.len(),
        });
    };
    if id != cluster_id.as_bytes() {
        return Err(MembershipError::WrongCluster {
            got: String::from_utf8_lossy(id).into_owned(),
            expected: cluster_id.to_string(),
        });
    }
    Ok(&datagram[3 + n..])
}

/// foca settings tuned so a dead node is declared down well within 1.5 s on a LAN.
pub fn swim_config() -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(16).expect("16 is not zero"));
    c.probe_period = Duration::from_millis(300);
    c.probe_rtt = Duration::from_millis(120);
    c.suspect_to_down_after = Duration::from_millis(450);
    c.remove_down_after = Duration::from_secs(120);
    c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - 66).expect("not zero");
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: NonZeroUsize::new(3).expect("not zero"),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::new(1).expect("not zero"),
    });
    // After a partition heals, both sides find each other again within seconds.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(2).expect("not zero"),
    });
    c
}

/// What foca asked for, collected by [`Swim`].
#[derive(Debug, Default)]
pub struct Effects {
    /// (destination, wrapped datagram)
    pub send: Vec<(SocketAddr, Vec<u8>)>,
    pub timers: Vec<(Duration, Timer<Ident>)>,
    pub notifications: Vec<OwnedNotification<Ident>>,
}

struct Collect<'a> {
    cluster_id: &'a str,
    ring: Option<&'a KeyRing>,
    fx: &'a mut Effects,
}

impl Runtime<Ident> for Collect<'_> {
    fn notify(&mut self, notification: foca::Notification<'_, Ident>) {
        self.fx.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: Ident, data: &[u8]) {
        let datagram = match self.ring {
            Some(ring) => ring.seal(self.cluster_id, data),
            None => wrap(self.cluster_id, data),
        };
        self.fx.send.push((to.addr, datagram));
    }

    fn submit_after(&mut self, event: Timer<Ident>, after: Duration) {
        self.fx.timers.push((after, event));
    }
}

/// One node's SWIM state.
pub struct Swim {
    foca: Foca<Ident, PostcardCodec, SmallRng, NoCustomBroadcast>,
    cluster_id: String,
    ident: Ident,
    fx: Effects,
    ring: Option<KeyRing>,
}

impl Swim {
    /// A node of `cluster_id`; with `ring`, datagrams are sealed and opened with it.
    pub fn new(ident: Ident, cluster_id: &str, seed: u64, ring: Option<KeyRing>) -> Self {
        Self {
            foca: Foca::new(
                ident.clone(),
                swim_config(),
                SmallRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            cluster_id: cluster_id.to_string(),
            ident,
            fx: Effects::default(),
            ring,
        }
    }

    /// The gossip key ring, if datagrams are sealed.
    pub fn ring(&self) -> Option<&KeyRing> {
        self.ring.as_ref()
    }

    /// Changes the key ring (rotation); None when datagrams are not sealed.
    pub fn ring_mut(&mut self) -> Option<&mut KeyRing> {
        self.ring.as_mut()
    }

    fn rt(
        &mut self,
    ) -> (
        &mut Foca<Ident, PostcardCodec, SmallRng, NoCustomBroadcast>,
        Collect<'_>,
    ) {
        (
            &mut self.foca,
            Collect {
                cluster_id: &self.cluster_id,
                ring: self.ring.as_ref(),
                fx: &mut self.fx,
            },
        )
    }

    pub fn identity(&self) -> &Ident {
        &self.ident
    }

    /// Feeds a received datagram (sealed, or with the clear prefix when insecure).
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> Result<(), MembershipError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(MembershipError::TooBig {
                len: datagram.len(),
                max: MAX_DATAGRAM,
            });
        }
        let opened;
        let payload = match &self.ring {
            Some(ring) => {
                opened = ring.open(&self.cluster_id, datagram)?;
                opened.as_slice()
            }
            None => unwrap(&self.cluster_id, datagram)?,
        };
        let (foca, rt) = self.rt();
        foca.handle_data(payload, rt)
            .map_err(|e| MembershipError::Foca(e.to_string()))
    }

    pub fn handle_timer(&mut self, timer: Timer<Ident>) -> Result<(), MembershipError> {
        let (foca, rt) = self.rt();
        foca.handle_timer(timer, rt)
            .map_err(|e| MembershipError::Foca(e.to_string()))
    }

    /// Asks the member at `addr` to let us in.
    pub fn announce(&mut self, addr: SocketAddr) -> Result<(), MembershipError> {
        let (foca, rt) = self.rt();
        foca.announce(Ident::placeholder(addr), rt)
            .map_err(|e| MembershipError::Foca(e.to_string()))
    }

    /// Graceful leave: tells a few members we are going.
    pub fn leave(&mut self) -> Result<(), MembershipError> {
        let (foca, rt) = self.rt();
        foca.leave_cluster(rt)
            .map_err(|e| MembershipError::Foca(e.to_string()))
    }

    /// Everything collected since the last call.
    pub fn take_effects(&mut self) -> Effects {
        for n in &self.fx.notifications {
            if let OwnedNotification::Rejoin(id) = n {
                self.ident = id.clone();
            }
        }
        std::mem::take(&mut self.fx)
    }

    /// Every known member (not us) with its state, including down ones not yet forgotten.
    pub fn members(&self) -> Vec<(Ident, State)> {
        self.foca
            .iter_membership_state()
            .map(|m: &Member<Ident>| (m.id().clone(), m.state()))
            .collect()
    }

    /// True if some active (alive or suspect) member is named `name`.
    pub fn is_active(&self, name: &str) -> bool {
        self.foca.iter_members().any(|m| m.id().name == name)
    }
}
