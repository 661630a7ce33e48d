//! The node's standing duties, run from housekeeping: its own lease and registration, peer
//! discovery, and the leader's chores (expired leases, dead members' leases, adding learners).

use std::time::{Duration, Instant};

use raft::eraftpb::ConfChangeType;

use super::{
    Daemon, Internal, Responder, SelfLease, KEEPALIVE_EVERY, NODE_LEASE_TTL_MS, PROPOSAL_TIMEOUT,
};
use crate::config::node_id;
use crate::keyspace::MachineRecord;
use crate::membership::Ident;
use crate::registry::{ApplyError, Command, Outcome};

/// How long SWIM's verdict on a dead member is acted upon.
const DOWN_MEMORY: Duration = Duration::from_secs(10);

impl Daemon {
    pub(super) fn on_internal(&mut self, i: Internal, result: Result<Outcome, String>) {
        match (i, result) {
            (Internal::Grant, Ok(Outcome::Lease { id, .. })) => {
                tracing::info!(
                    lease = id,
                    "node lease granted; registering /machines/{}",
                    self.cfg.name
                );
                self.self_lease = SelfLease::Held {
                    id,
                    last_keepalive: Instant::now(),
                    inflight: false,
                };
                self.register_self(id);
            }
            (Internal::Grant, r) => {
                tracing::debug!("node lease grant failed: {r:?}");
                self.self_lease = SelfLease::None;
            }
            (Internal::KeepAlive(id), r) => {
                if let SelfLease::Held {
                    id: mine,
                    last_keepalive,
                    ..
                } = self.self_lease
                {
                    if mine != id {
                        return;
                    }
                    self.self_lease = match r {
                        Ok(Outcome::Lease { .. }) => SelfLease::Held {
                            id,
                            last_keepalive: Instant::now(),
                            inflight: false,
                        },
                        Ok(Outcome::Failed {
                            error: ApplyError::LeaseNotFound { .. },
                        }) => {
                            tracing::warn!(
                                lease = id,
                                "this node's lease is gone; registering again"
                            );
                            SelfLease::None
                        }
                        _ => SelfLease::Held {
                            id,
                            last_keepalive,
                            inflight: false,
                        },
                    };
                }
            }
            (Internal::Fire, Ok(Outcome::Failed { error })) => {
                tracing::warn!("registration write failed: {error}")
            }
            (Internal::Fire, _) => {}
            (i @ (Internal::Beat(_) | Internal::Schedule | Internal::Report), r) => {
                self.on_units_internal(i, &r)
            }
            (Internal::Subnets, r) => self.on_subnets_applied(&r),
        }
    }

    /// Writes /machines/<name> and this node's services under lease `id`.
    fn register_self(&mut self, id: u64) {
        let record = MachineRecord {
            name: self.cfg.name.clone(),
            addr: self.cfg.advertise,
            metadata: self.cfg.metadata.clone(),
            id: self.id,
            agent: true,
        };
        let mut writes = vec![(
            format!("/machines/{}", self.cfg.name),
            serde_json::to_string(&record).unwrap_or_default(),
        )];
        writes.extend(self.my_services.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (key, value) in writes {
            let cmd = Command::Put {
                key,
                value,
                lease: id,
                prev_revision: None,
            };
            if let Err(e) = self.propose(cmd, Responder::Internal(Internal::Fire)) {
                tracing::debug!("registration write not proposed: {e}");
            }
        }
    }

    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.expire_pending(now);
        self.reap_stalled_links(now);
        self.refresh_book(now);
        self.announce_if_alone(now);
        self.self_registration(now);
        if self.node.is_leader() {
            self.leader_chores(now);
        }
        self.units_housekeeping();
        self.down
            .retain(|_, t| now.duration_since(*t) < DOWN_MEMORY);
    }

    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in expired {
            if let Some(p) = self.pending.remove(&req) {
                self.reply(
                    p.responder,
                    Err(format!(
                        "not applied within {} s (leader change or lost quorum?)",
                        PROPOSAL_TIMEOUT.as_secs()
                    )),
                );
            }
        }
    }

    /// Learns peer addresses from /machines records (they survive restarts in the registry).
    fn refresh_book(&mut self, now: Instant) {
        if self
            .last_book_refresh
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_book_refresh = Some(now);
        let records: Vec<MachineRecord> = self
            .node
            .registry()
            .range("/machines/")
            .iter()
            .filter_map(|kv| serde_json::from_str(&kv.value).ok())
            .collect();
        for r in records {
            self.book
                .entry(node_id(&r.name))
                .or_insert((r.name, r.addr));
        }
    }

    /// While SWIM knows no one, announce to every address we know, once a second.
    fn announce_if_alone(&mut self, now: Instant) {
        if self
            .swim
            .members()
            .iter()
            .any(|(_, s)| *s != foca::State::Down)
        {
            return;
        }
        if self
            .last_announce
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_announce = Some(now);
        let mut targets: Vec<std::net::SocketAddr> = self.book.values().map(|(_, a)| *a).collect();
        targets.extend(self.cfg.join);
        targets.sort();
        targets.dedup();
        for addr in targets {
            if addr == self.cfg.advertise {
                continue;
            }
            if let Err(e) = self.swim.announce(addr) {
                tracing::debug!(%addr, "announce: {e}");
            }
        }
        self.flush_swim();
    }

    fn self_registration(&mut self, now: Instant) {
        if self.node.leader_id() == 0 {
            return;
        }
        match self.self_lease {
            SelfLease::None => {
                let cmd = Command::LeaseGrant {
                    ttl_ms: NODE_LEASE_TTL_MS,
                };
                if self
                    .propose(cmd, Responder::Internal(Internal::Grant))
                    .is_ok()
                {
                    self.self_lease = SelfLease::Granting;
                }
            }
            SelfLease::Granting => {}
            SelfLease::Held {
                id,
                last_keepalive,
                inflight,
            } => {
                if !inflight && now.duration_since(last_keepalive) >= KEEPALIVE_EVERY {
                    let cmd = Command::LeaseKeepAlive { id };
                    if self
                        .propose(cmd, Responder::Internal(Internal::KeepAlive(id)))
                        .is_ok()
                    {
                        self.self_lease = SelfLease::Held {
                            id,
                            last_keepalive,
                            inflight: true,
                        };
                    }
                }
            }
        }
    }

    fn leader_chores(&mut self, now: Instant) {
        let now_ms = self.now_ms();
        for id in self.lease_clock.take_expired(now_ms) {
            tracing::info!(lease = id, "lease expired; revoking");
            let _ = self.propose(
                Command::LeaseRevoke { id },
                Responder::Internal(Internal::Fire),
            );
        }
        // Members SWIM declared dead lose their lease (and with it /machines and services).
        let names: Vec<String> = self.down.keys().cloned().collect();
        for name in names {
            if self.swim.is_active(&name) {
                self.down.remove(&name);
                continue;
            }
            let lease = self
                .node
                .registry()
                .get(&format!("/machines/{name}"))
                .map(|kv| kv.lease)
                .unwrap_or(0);
            if lease != 0 {
                tracing::info!(%name, lease, "member is dead; revoking its lease");
                if self
                    .propose(
                        Command::LeaseRevoke { id: lease },
                        Responder::Internal(Internal::Fire),
                    )
                    .is_err()
                {
                    continue;
                }
            }
            self.down.remove(&name);
        }
        // Every live member that is not in the configuration becomes a learner.
        if self.node.has_pending_conf()
            || self
                .last_conf_attempt
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(500))
        {
            return;
        }
        let conf = self.node.conf().clone();
        let candidates: Vec<Ident> = self
            .swim
            .members()
            .into_iter()
            .filter(|(_, s)| *s == foca::State::Alive)
            .map(|(id, _)| id)
            .filter(|id| {
                let rid = node_id(&id.name);
                !id.name.is_empty() && !conf.voters.contains(&rid) && !conf.learners.contains(&rid)
            })
            .collect();
        // Only a member whose node certificate checked out (see `peer_proven`).
        let mut proven = None;
        for ident in candidates {
            let rid = node_id(&ident.name);
            self.book.insert(rid, (ident.name.clone(), ident.addr));
            if self.peer_proven(rid) {
                proven = Some(ident);
                break;
            }
        }
        if let Some(ident) = proven {
            self.last_conf_attempt = Some(now);
            let rid = node_id(&ident.name);
            tracing::info!(name = %ident.name, "adding member as a learner");
            if let Err(e) =
                self.propose_conf(ConfChangeType::AddLearnerNode, rid, &ident.name, None)
            {
                tracing::debug!("add learner: {e}");
            }
        }
    }
}
