//! Cluster duties: driving Raft Readies, applying outcomes (replies, lease clock, watchers),
//! SWIM notifications, the node's own lease and registration, and the leader's chores
//! (expired leases, dead members' leases, adding learners).

use std::time::Instant;

use foca::OwnedNotification;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::{Daemon, DaemonError, Pending, Responder, SelfLease, PROPOSAL_TIMEOUT};
use crate::config::node_id;
use crate::membership::Ident;
use crate::raft::{Applied, ConfContext, Proposal, RaftError};
use crate::registry::{Command, Outcome};

fn responder_token(token: mio::Token) -> Responder {
    Responder::Client {
        token,
        kind: super::ReplyKind::Conf,
    }
}

/// Start of the error a write in flight gets when leadership moves.
const LEADER_CHANGED: &str = "leader changed while the write was in flight";

impl Daemon {
    /// Handles Readies until raft has nothing more to say.
    pub(super) fn drive(&mut self) -> Result<(), DaemonError> {
        for _ in 0..64 {
            // A leader's appends go out before its own fsync (raft-rs allows it), so the
            // leader's and the followers' disk writes overlap.
            for m in self.node.begin_ready() {
                self.send_raft(m);
            }
            self.flush_peers();
            let out = match self.node.process_ready() {
                Ok(out) => out,
                Err(RaftError::Disk(e)) => {
                    // Durability is gone; continuing could acknowledge writes that are lost.
                    return Err(DaemonError::Disk(e));
                }
                Err(e) => return Err(e.into()),
            };
            let idle = out.messages.is_empty()
                && out.applied.is_empty()
                && out.events.is_empty()
                && !out.snapshot_installed;
            for m in out.messages {
                self.send_raft(m);
            }
            self.flush_peers();
            for peer in std::mem::take(&mut self.leader_links_lost) {
                self.node.leader_link_lost(peer);
            }
            for (id, snap) in std::mem::take(&mut self.reports) {
                match snap {
                    None => self.node.report_unreachable(id),
                    Some(status) => self.node.report_snapshot(id, status),
                }
            }
            if out.snapshot_installed {
                let now = self.now_ms();
                self.lease_clock.reset(self.node.registry().leases(), now);
                self.resync_watchers();
                self.units_dirty = true;
                self.sched.dirty = true;
                self.note_snapshot_installed();
            }
            for a in out.applied {
                self.on_applied(a);
            }
            if !out.events.is_empty() {
                self.note_events(&out.events);
                self.fan_out(&out.events);
            }
            if idle {
                break;
            }
        }
        self.check_leader();
        Ok(())
    }

    fn check_leader(&mut self) {
        let leader = self.node.leader_id();
        let is_leader = self.node.is_leader();
        if leader != self.last_leader {
            self.metrics.leader_changes += 1;
            let name = self.name_of(leader);
            tracing::info!(leader = %name, leader_id = leader, term = self.node.term(), "leader changed");
            self.last_leader = leader;
            let stale: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.leader != leader)
                .map(|(r, _)| *r)
                .collect();
            for req in stale {
                if let Some(p) = self.pending.remove(&req) {
                    self.reply(
                        p.responder,
                        Err(format!(
                            "{LEADER_CHANGED}; it may or may not have been applied, retry"
                        )),
                    );
                }
            }
        }
        if is_leader && !self.was_leader {
            // A new leader plans from the schedule it finds.
            self.sched.dirty = true;
            // Followers never saw keep-alives in real time: restart every TTL, as etcd does.
            let now = self.now_ms();
            self.lease_clock.restart_all(now);
        }
        self.was_leader = is_leader;
    }

    pub(super) fn name_of(&self, id: u64) -> String {
        if id == 0 {
            return String::new();
        }
        self.book
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("{id:016x}"))
    }

    /// Proposes a registry command; `responder` is told once it is applied here.
    pub(super) fn propose(&mut self, cmd: Command, responder: Responder) -> Result<u64, RaftError> {
        let req = self.next_request()?;
        let p = Proposal {
            origin: self.id,
            req,
            cmd,
        };
        self.node.propose(&p)?;
        self.metrics.proposals += 1;
        self.await_applied(req, responder);
        Ok(req)
    }

    /// A request number for a new proposal; none while no leader is known (raft-rs
    /// would drop the proposal).
    fn next_request(&mut self) -> Result<u64, RaftError> {
        if self.node.leader_id() == 0 {
            return Err(RaftError::Raft(raft::Error::ProposalDropped));
        }
        let req = self.next_req;
        self.next_req += 1;
        Ok(req)
    }

    /// Remembers who waits for proposal `req`, until it applies, the leader changes or
    /// PROPOSAL_TIMEOUT passes.
    fn await_applied(&mut self, req: u64, responder: Responder) {
        self.pending.insert(
            req,
            Pending {
                responder,
                deadline: Instant::now() + PROPOSAL_TIMEOUT,
                leader: self.node.leader_id(),
            },
        );
    }

    /// Proposes a single configuration change.
    pub(super) fn propose_conf(
        &mut self,
        change: ConfChangeType,
        target: u64,
        name: &str,
        responder: Option<Responder>,
    ) -> Result<(), RaftError> {
        let req = self.next_request()?;
        let addr = self
            .book
            .get(&target)
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        let ctx = ConfContext {
            origin: if responder.is_some() { self.id } else { 0 },
            req,
            name: name.to_string(),
            addr,
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = target;
        let mut cc = ConfChangeV2::default();
        cc.changes.push(single);
        self.node.propose_conf(&ctx, cc)?;
        if let Some(responder) = responder {
            self.await_applied(req, responder);
        }
        Ok(())
    }

    fn on_applied(&mut self, a: Applied) {
        self.metrics.applied += 1;
        let now = self.now_ms();
        match a {
            Applied::Command {
                origin,
                req,
                cmd,
                outcome,
                ..
            } => {
                match (&cmd, &outcome) {
                    (
                        Command::LeaseGrant { .. } | Command::LeaseKeepAlive { .. },
                        Outcome::Lease { id, ttl_ms },
                    ) => self.lease_clock.touch(*id, *ttl_ms, now),
                    (Command::Heartbeat { machine }, _) => self.beat_applied(machine),
                    (Command::LeaseRevoke { id }, _) => {
                        self.lease_clock.remove(*id);
                        if let SelfLease::Held { id: mine, .. } = self.self_lease {
                            if mine == *id {
                                tracing::warn!(
                                    lease = id,
                                    "this node's lease was revoked; registering again"
                                );
                                self.self_lease = SelfLease::None;
                            }
                        }
                    }
                    _ => {}
                }
                if origin == self.id {
                    if let Some(p) = self.pending.remove(&req) {
                        self.reply(p.responder, Ok(outcome));
                    }
                }
            }
            Applied::Conf { ctx, result, .. } => {
                match &result {
                    Ok(cs) => tracing::info!(
                        name = %ctx.name, voters = ?cs.voters, learners = ?cs.learners,
                        "configuration changed"
                    ),
                    Err(e) => {
                        tracing::warn!(name = %ctx.name, "configuration change rejected: {e}")
                    }
                }
                if !ctx.name.is_empty() {
                    if let Ok(addr) = ctx.addr.parse() {
                        self.book
                            .insert(node_id(&ctx.name), (ctx.name.clone(), addr));
                    }
                }
                if ctx.origin == self.id {
                    if let Some(p) = self.pending.remove(&ctx.req) {
                        self.reply_conf(p.responder, result.map(|_| ()));
                    }
                }
            }
        }
    }

    /// Routes an applied outcome (or a failure) to whoever waits for it.
    pub(super) fn reply(&mut self, responder: Responder, result: Result<Outcome, String>) {
        match responder {
            Responder::Client {
                token,
                kind: super::ReplyKind::Conf,
            } => self.reply_conf(responder_token(token), result.map(|_| ())),
            Responder::Client { token, kind } => self.reply_client(token, kind, result),
            Responder::Internal(i) => self.on_internal(i, result),
        }
    }

    fn reply_conf(&mut self, responder: Responder, result: Result<(), String>) {
        if let Responder::Client { token, .. } = responder {
            let (status, body) = match result {
                Ok(_) => {
                    let cs = self.node.conf();
                    let names = |ids: &[u64]| -> Vec<String> {
                        ids.iter().map(|i| self.name_of(*i)).collect()
                    };
                    (
                        200,
                        serde_json::json!({"voters": names(&cs.voters), "learners": names(&cs.learners)}),
                    )
                }
                Err(e) if e.starts_with("not applied") || e.starts_with(LEADER_CHANGED) => {
                    (503, serde_json::json!({ "error": e }))
                }
                Err(e) => (409, serde_json::json!({ "error": e })),
            };
            self.respond_later(token, status, &body);
        }
    }

    pub(super) fn on_membership(&mut self, n: OwnedNotification<Ident>) {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(name = %id.name, addr = %id.addr, "member up");
                if !id.name.is_empty() {
                    self.book
                        .insert(node_id(&id.name), (id.name.clone(), id.addr));
                    self.down.remove(&id.name);
                }
            }
            OwnedNotification::MemberDown(id) => {
                tracing::info!(name = %id.name, addr = %id.addr, "member down");
                if !id.name.is_empty() && id.name != self.cfg.name {
                    self.down.insert(id.name, Instant::now());
                }
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(
                    boot = id.boot,
                    "declared down by the cluster; rejoined with a new identity"
                )
            }
            OwnedNotification::Rename(a, b) => {
                tracing::debug!(from = ?a, to = ?b, "member renamed")
            }
            OwnedNotification::Active => tracing::info!("swim: connected to the cluster"),
            OwnedNotification::Idle => tracing::warn!("swim: no active members"),
            OwnedNotification::Defunct => tracing::warn!("swim: this node was declared down"),
        }
    }
}
