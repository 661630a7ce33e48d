//! API request handlers: answers from the local replica, writes proposed through Raft and
//! answered once applied here, watch streams fed from applied events. The connections
//! themselves (accept, read, limits, write, close) live in api_conn.rs.

use std::collections::BTreeMap;

use mio::Token;
use raft::eraftpb::ConfChangeType;
use serde_json::{json, Value};

use super::conn::{ApiState, Conn};
use super::{Daemon, ReplyKind, Responder, SelfLease};
use crate::api::http::{self, err, HttpError};
use crate::api::routes::{Route, Service};
use crate::config::node_id;
use crate::raft::RaftError;
use crate::registry::{ApplyError, Command, Event, KeyValue, Outcome};

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision, "version": kv.version, "lease": kv.lease,
    })
}

fn event_line(e: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(e).unwrap_or_default();
    line.push(b'\n');
    http::chunk(&line)
}

fn propose_error(e: RaftError) -> HttpError {
    match e {
        RaftError::Raft(raft::Error::ProposalDropped) | RaftError::NotLeader => {
            err(503, "no leader: the cluster cannot accept writes right now")
        }
        RaftError::ConfPending => err(409, "a configuration change is already in progress"),
        other => err(500, other.to_string()),
    }
}

impl Daemon {
    /// Serves a route: Some(answer) now, or None when the answer comes later.
    pub(super) fn execute(
        &mut self,
        token: Token,
        r: Route,
    ) -> Result<Option<(u16, Value)>, HttpError> {
        let reg = self.node.registry();
        let now = |v: Value| Ok(Some((200, v)));
        match r {
            Route::Health => {
                now(json!({"ok": true, "name": self.cfg.name, "cluster_id": self.cfg.cluster_id}))
            }
            Route::Leader => {
                let l = self.node.leader_id();
                now(json!({
                    "name": self.cfg.name,
                    "leader": if l == 0 { Value::Null } else { json!(self.name_of(l)) },
                    "leader_id": if l == 0 { Value::Null } else { json!(l) },
                    "term": self.node.term(),
                }))
            }
            Route::Cluster => now(self.cluster_json()),
            Route::Machines => now(self.machines_json()),
            Route::GossipKeys => now(self.gossip_keys_json()),
            Route::GossipKey { op, key } => now(self.gossip_key_op(op, &key)?),
            Route::Metrics => {
                let body = self.metrics_text();
                self.write_raw(token, 200, "text/plain; version=0.0.4", body.as_bytes());
                Ok(None)
            }
            Route::GetKey { key } => match reg.get(&key) {
                Some(kv) => now(kv_json(&kv)),
                None => Err(err(404, format!("key {key} not found"))),
            },
            Route::Range { prefix } => {
                let kvs: Vec<Value> = reg.range(&prefix).iter().map(kv_json).collect();
                now(json!({"revision": reg.revision(), "kvs": kvs}))
            }
            Route::Services => {
                let mut all: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for kv in reg.range("/services/") {
                    if let Ok(s) = serde_json::from_str::<Service>(&kv.value) {
                        all.entry(s.name.clone()).or_default().push(json!(s));
                    }
                }
                now(json!({ "services": all }))
            }
            Route::LookupService { name } => {
                let list: Vec<Value> = reg
                    .range(&format!("/services/{name}/"))
                    .into_iter()
                    .filter_map(|kv| serde_json::from_str::<Service>(&kv.value).ok())
                    .map(|s| json!(s))
                    .collect();
                now(Value::Array(list))
            }
            Route::Watch {
                prefix,
                from_revision,
            } => {
                let history = reg
                    .events_since(&prefix, from_revision)
                    .map_err(|e| err(410, e.to_string()))?;
                let from = reg.revision() + 1;
                let mut out = http::stream_head();
                for e in &history {
                    out.extend(event_line(e));
                }
                self.write_api(token, &out);
                if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                    c.state = ApiState::Watching { prefix, from };
                }
                self.flush_api(token);
                Ok(None)
            }
            Route::Put {
                key,
                value,
                lease,
                prev_revision,
            } => self.write(
                token,
                ReplyKind::Registry,
                Command::Put {
                    key,
                    value,
                    lease,
                    prev_revision,
                },
            ),
            Route::Delete { key, prefix } => {
                self.write(token, ReplyKind::Registry, Command::Delete { key, prefix })
            }
            Route::LeaseGrant { ttl_s } => self.write(
                token,
                ReplyKind::Registry,
                Command::LeaseGrant {
                    ttl_ms: ttl_s * 1000,
                },
            ),
            Route::KeepAlive { id } => {
                self.write(token, ReplyKind::Registry, Command::LeaseKeepAlive { id })
            }
            Route::Revoke { id } => {
                self.write(token, ReplyKind::Registry, Command::LeaseRevoke { id })
            }
            Route::RegisterService(mut s) => {
                let SelfLease::Held { id, .. } = self.self_lease else {
                    return Err(err(503, "this node has not registered with the cluster yet (no node lease); retry shortly"));
                };
                s.machine = self.cfg.name.clone();
                let key = format!("/services/{}/{}/{}", s.name, s.machine, s.instance);
                let value = serde_json::to_string(&s).map_err(|e| err(500, e.to_string()))?;
                self.my_services.insert(key.clone(), value.clone());
                self.write(
                    token,
                    ReplyKind::Registry,
                    Command::Put {
                        key,
                        value,
                        lease: id,
                        prev_revision: None,
                    },
                )
            }
            Route::Units(u) => self.execute_units(token, u),
            Route::AddVoter { name } => {
                let id = node_id(&name);
                let conf = self.node.conf();
                if conf.voters.contains(&id) {
                    return Err(err(409, format!("{name} is already a voter")));
                }
                if !conf.learners.contains(&id) {
                    return Err(err(
                        404,
                        format!("{name} is not a member (no learner with that name)"),
                    ));
                }
                self.conf_write(token, ConfChangeType::AddNode, id, &name)
            }
            Route::RemoveMember { name } => {
                let id = node_id(&name);
                let conf = self.node.conf();
                let voter = conf.voters.contains(&id);
                if !voter && !conf.learners.contains(&id) {
                    return Err(err(404, format!("{name} is not a member")));
                }
                if voter && conf.voters.len() <= 1 {
                    return Err(err(409, "cannot remove the last voter"));
                }
                if id == self.node.leader_id() {
                    return Err(err(
                        409,
                        format!("{name} is the leader; it cannot be removed"),
                    ));
                }
                self.conf_write(token, ConfChangeType::RemoveNode, id, &name)
            }
            Route::RemoveVoter { name } => {
                let id = node_id(&name);
                let conf = self.node.conf();
                if !conf.voters.contains(&id) {
                    return Err(err(404, format!("{name} is not a voter")));
                }
                if conf.voters.len() <= 1 {
                    return Err(err(409, "cannot demote the last voter"));
                }
                if id == self.node.leader_id() {
                    return Err(err(
                        409,
                        format!("{name} is the leader; it cannot be demoted"),
                    ));
                }
                self.conf_write(token, ConfChangeType::AddLearnerNode, id, &name)
            }
        }
    }

    pub(super) fn write(
        &mut self,
        token: Token,
        kind: ReplyKind,
        cmd: Command,
    ) -> Result<Option<(u16, Value)>, HttpError> {
        let req = self
            .propose(cmd, Responder::Client { token, kind })
            .map_err(propose_error)?;
        if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
            c.state = ApiState::Waiting { req };
        }
        Ok(None)
    }

    fn conf_write(
        &mut self,
        token: Token,
        change: ConfChangeType,
        id: u64,
        name: &str,
    ) -> Result<Option<(u16, Value)>, HttpError> {
        let responder = Responder::Client {
            token,
            kind: ReplyKind::Conf,
        };
        self.propose_conf(change, id, name, Some(responder))
            .map_err(propose_error)?;
        if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
            c.state = ApiState::Waiting { req: 0 };
        }
        Ok(None)
    }

    /// Answers a client whose write was applied (or failed).
    pub(super) fn reply_client(
        &mut self,
        token: Token,
        kind: ReplyKind,
        result: Result<Outcome, String>,
    ) {
        // Replies come as this node applies the entry: the registry is as the write found it.
        if let (
            ReplyKind::UnitSubmit { name, hash },
            Ok(Outcome::Failed {
                error: ApplyError::CasMismatch { .. },
            }),
        ) = (&kind, &result)
        {
            let same = super::units_api::unit_record(self.node.registry(), name)
                .filter(|(rec, _)| rec.hash == *hash);
            if let Some((_, rev)) = same {
                return self.respond_later(token, 200, &super::units_api::unchanged(rev));
            }
        }
        let (status, body) = match result {
            Err(e) => (503, json!({ "error": e })),
            Ok(Outcome::Failed { error }) => {
                let status = match error {
                    ApplyError::CasMismatch { .. } => 409,
                    ApplyError::LeaseNotFound { .. } => 404,
                    _ => 400,
                };
                (status, json!({ "error": error.to_string() }))
            }
            Ok(Outcome::Put { revision }) => (200, json!({ "revision": revision })),
            Ok(Outcome::Deleted { revision, deleted })
            | Ok(Outcome::Revoked { revision, deleted }) => {
                (200, json!({ "revision": revision, "deleted": deleted }))
            }
            Ok(Outcome::Lease { id, ttl_ms }) => (200, json!({ "id": id, "ttl": ttl_ms / 1000 })),
            Ok(Outcome::Txn {
                revision,
                puts,
                deleted,
            }) => (
                200,
                json!({ "revision": revision, "puts": puts, "deleted": deleted }),
            ),
            Ok(Outcome::Heartbeat) => (200, json!({})),
        };
        debug_assert_ne!(kind, ReplyKind::Conf);
        self.respond_later(token, status, &body);
    }

    /// Streams applied events to every watcher whose prefix matches.
    pub(super) fn fan_out(&mut self, events: &[Event]) {
        let revision = self.node.registry().revision();
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .filter(
                |(_, c)| matches!(c, Conn::Api(a) if matches!(a.state, ApiState::Watching { .. })),
            )
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
                continue;
            };
            let ApiState::Watching { prefix, from } = &mut c.state else {
                continue;
            };
            let mut out = Vec::new();
            for e in events {
                if e.mod_revision >= *from && e.key.starts_with(prefix.as_str()) {
                    out.extend(event_line(e));
                }
            }
            *from = (*from).max(revision + 1);
            if !out.is_empty() {
                self.write_api(token, &out);
                self.flush_api(token);
            }
        }
    }

    /// After a snapshot replaced the registry, catch watchers up from its history.
    pub(super) fn resync_watchers(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            let Some(Conn::Api(c)) = self.conns.get(&token) else {
                continue;
            };
            let ApiState::Watching { prefix, from } = &c.state else {
                continue;
            };
            let reg = self.node.registry();
            match reg.events_since(prefix, *from) {
                Ok(events) => {
                    let next = reg.revision() + 1;
                    let out: Vec<u8> = events.iter().flat_map(event_line).collect();
                    if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                        if let ApiState::Watching { from, .. } = &mut c.state {
                            *from = (*from).max(next);
                        }
                    }
                    self.write_api(token, &out);
                }
                Err(e) => {
                    let mut out =
                        http::chunk(format!("{}\n", json!({"error": e.to_string()})).as_bytes());
                    out.extend(http::chunk(b""));
                    self.write_api(token, &out);
                    if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                        c.close_after_write = true;
                    }
                }
            }
            self.flush_api(token);
        }
    }
}
