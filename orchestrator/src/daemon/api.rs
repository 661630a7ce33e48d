//! API connections on the unix socket: bounded buffers, requests parsed in the loop, answers
//! from the local replica, writes proposed through Raft and answered once applied here, watch
//! streams fed from applied events.

use std::collections::BTreeMap;
use std::io;

use mio::{Interest, Token};
use raft::eraftpb::ConfChangeType;
use serde_json::{json, Value};

use super::conn::{
    api_cap, api_eviction_key, api_timeout, read_all, ApiConn, ApiState, ApiTimeout, Conn,
    WriteBuf, API_RBUF_MAX, API_RESERVE, API_WBUF_MAX,
};
use super::{Daemon, ReplyKind, Responder, SelfLease};
use crate::api::http::{self, err, HttpError, Request};
use crate::api::routes::{route, Route, Service};
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
    pub(super) fn accept_api(&mut self) {
        if self.accept_paused(super::API_LISTEN) {
            return;
        }
        loop {
            match self.api_listener.accept() {
                Ok((mut stream, _)) => {
                    if !self.make_room_for_api_client() {
                        drop(stream);
                        continue;
                    }
                    let token = self.alloc_token();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!("cannot register API client: {e}");
                        continue;
                    }
                    self.conns.insert(
                        token,
                        Conn::Api(ApiConn {
                            stream,
                            last_active: std::time::Instant::now(),
                            request_started: None,
                            rbuf: Vec::new(),
                            wbuf: WriteBuf::default(),
                            state: ApiState::Idle,
                            close_after_write: false,
                            eof: false,
                            close_current: false,
                        }),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.accept_failed(super::API_LISTEN, "API socket", &e);
                    break;
                }
            }
        }
    }

    pub(super) fn on_api(&mut self, token: Token, readable: bool, _writable: bool) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        if readable {
            let rbuf = &mut c.rbuf;
            let watching = matches!(c.state, ApiState::Watching { .. });
            let mut overflow = false;
            let mut got = false;
            match read_all(&mut c.stream, |chunk| {
                got = true;
                if watching {
                    return true; // a watcher has nothing more to say; discard
                }
                if rbuf.len() + chunk.len() > API_RBUF_MAX {
                    overflow = true;
                    return false;
                }
                rbuf.extend_from_slice(chunk);
                true
            }) {
                Ok(eof) => {
                    c.eof |= eof;
                    if got {
                        let now = std::time::Instant::now();
                        c.last_active = now;
                        if !c.rbuf.is_empty() && c.request_started.is_none() {
                            c.request_started = Some(now);
                        }
                    }
                }
                Err(_) => {
                    self.close_api(token);
                    return;
                }
            }
            if overflow {
                self.metrics.api_errors += 1;
                let e = err(413, "request too large");
                self.write_api(token, &http::error(&e, true));
                if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                    c.close_after_write = true;
                    c.rbuf.clear();
                }
            }
        }
        self.process_requests(token);
        self.flush_api(token);
    }

    /// Parses and serves requests while the connection is idle.
    fn process_requests(&mut self, token: Token) {
        loop {
            let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
                return;
            };
            if c.state != ApiState::Idle || c.close_after_write {
                return;
            }
            match http::parse(&c.rbuf) {
                Ok(None) => return,
                Ok(Some((req, used))) => {
                    c.rbuf.drain(..used);
                    // A pipelined next request starts its own clock now.
                    c.request_started = (!c.rbuf.is_empty()).then(std::time::Instant::now);
                    c.close_current = req.close;
                    self.metrics.api_requests += 1;
                    self.serve(token, &req);
                }
                Err(e) => {
                    c.rbuf.clear();
                    c.close_after_write = true;
                    self.metrics.api_errors += 1;
                    tracing::debug!("malformed API request: {e}");
                    self.write_api(token, &http::error(&e, true));
                    return;
                }
            }
        }
    }

    /// Room for one more API client: true when under the cap, or after closing the client
    /// that has been idle longest (so a pile of idle connections cannot lock berthctl out).
    fn make_room_for_api_client(&mut self) -> bool {
        let cap = api_cap();
        let mut clients = 0;
        let mut victim: Option<((u8, std::time::Instant), Token)> = None;
        for (t, c) in &self.conns {
            if let Conn::Api(a) = c {
                clients += 1;
                if let Some(key) = api_eviction_key(a) {
                    if victim.is_none_or(|(k, _)| key < k) {
                        victim = Some((key, *t));
                    }
                }
            }
        }
        if clients < cap {
            return true;
        }
        match victim {
            Some((_, t)) => {
                tracing::debug!("API client cap {cap} reached: closing the idlest client");
                self.close_api(t);
                true
            }
            None => {
                self.warn_limited(format_args!(
                    "refusing an API client: {cap} connected, none idle"
                ));
                false
            }
        }
    }

    /// Watch streams may use all but [`API_RESERVE`] of the API slots.
    fn watch_slots_left(&self) -> bool {
        let watchers = self
            .conns
            .values()
            .filter(|c| matches!(c, Conn::Api(a) if matches!(a.state, ApiState::Watching { .. })))
            .count();
        watchers + API_RESERVE < api_cap()
    }

    /// Closes API clients that overstayed (see [`api_timeout`]); slow requests get a 408.
    pub(super) fn reap_api_clients(&mut self, now: std::time::Instant) {
        let due: Vec<(Token, ApiTimeout)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| match c {
                Conn::Api(a) => api_timeout(a, now).map(|why| (*t, why)),
                _ => None,
            })
            .collect();
        for (token, why) in due {
            match why {
                ApiTimeout::Answer(status, message) => {
                    self.metrics.api_errors += 1;
                    tracing::debug!("API client timed out: {message}");
                    self.write_api(token, &http::error(&err(status, message), true));
                    if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                        c.close_after_write = true;
                        c.rbuf.clear();
                        c.request_started = None;
                    }
                    self.flush_api(token);
                }
                ApiTimeout::Close(reason) => {
                    tracing::debug!("closing an API client: {reason}");
                    self.close_api(token);
                }
            }
        }
    }

    fn flush_api(&mut self, token: Token) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        let done = match c.wbuf.flush(&mut c.stream) {
            Ok(done) => done,
            Err(_) => {
                self.close_api(token);
                return;
            }
        };
        if done {
            c.last_active = std::time::Instant::now();
        }
        let idle = c.state == ApiState::Idle;
        let finished = done && (c.close_after_write || (c.eof && idle && c.rbuf.is_empty()));
        if finished || (c.eof && matches!(c.state, ApiState::Watching { .. })) {
            self.close_api(token);
        }
    }

    fn close_api(&mut self, token: Token) {
        if let Some(Conn::Api(mut c)) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn write_api(&mut self, token: Token, data: &[u8]) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        if c.wbuf.pending() + data.len() > API_WBUF_MAX {
            tracing::warn!(
                "API client too slow (backlog over {API_WBUF_MAX} bytes); disconnecting"
            );
            self.close_api(token);
            return;
        }
        c.wbuf.push(data);
    }

    /// Sends a complete JSON response and returns the connection to idle.
    pub(super) fn respond(&mut self, token: Token, status: u16, body: &Value) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        let close = c.close_current;
        c.state = ApiState::Idle;
        if close {
            c.close_after_write = true;
        }
        if status >= 400 {
            self.metrics.api_errors += 1;
        }
        self.write_api(token, &http::json(status, body, close));
        self.flush_api(token);
    }

    /// Answers a request that waited for a proposal, then serves any pipelined requests.
    pub(super) fn respond_later(&mut self, token: Token, status: u16, body: &Value) {
        self.respond(token, status, body);
        self.process_requests(token);
        self.flush_api(token);
    }

    fn respond_err(&mut self, token: Token, e: &HttpError) {
        self.respond(token, e.status, &json!({ "error": e.message }));
    }

    fn serve(&mut self, token: Token, req: &Request) {
        let r = match route(req) {
            Ok(r) => r,
            Err(e) => return self.respond_err(token, &e),
        };
        if matches!(r, Route::Watch { .. }) && !self.watch_slots_left() {
            let e = err(503, "too many watch streams on this node; retry later");
            return self.respond_err(token, &e);
        }
        match self.execute(token, r) {
            Ok(Some((status, body))) => self.respond(token, status, &body),
            Ok(None) => {}
            Err(e) => self.respond_err(token, &e),
        }
    }

    /// Serves a route: Some(answer) now, or None when the answer comes later.
    fn execute(&mut self, token: Token, r: Route) -> Result<Option<(u16, Value)>, HttpError> {
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
                Some(kv) => now(kv_json(kv)),
                None => Err(err(404, format!("key {key} not found"))),
            },
            Route::Range { prefix } => {
                let kvs: Vec<Value> = reg.range(&prefix).into_iter().map(kv_json).collect();
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

    fn write(
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

    fn write_raw(&mut self, token: Token, status: u16, content_type: &str, body: &[u8]) {
        let close = match self.conns.get_mut(&token) {
            Some(Conn::Api(c)) => {
                if c.close_current {
                    c.close_after_write = true;
                }
                c.close_current
            }
            _ => return,
        };
        self.write_api(token, &http::response(status, content_type, body, close));
        self.flush_api(token);
    }

    /// Answers a client whose write was applied (or failed).
    pub(super) fn reply_client(
        &mut self,
        token: Token,
        kind: ReplyKind,
        result: Result<Outcome, String>,
    ) {
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
        debug_assert_eq!(kind, ReplyKind::Registry);
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
