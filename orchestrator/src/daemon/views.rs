//! Read-only views of the node's state for the API: cluster, machines, metrics.

use serde_json::{json, Value};

use super::Daemon;

impl Daemon {
    pub(super) fn cluster_json(&self) -> Value {
        let conf = self.node.conf();
        let member = |id: &u64, role: &str| {
            let (name, addr) = self
                .book
                .get(id)
                .map(|(n, a)| (n.clone(), a.to_string()))
                .unwrap_or_else(|| (format!("{id:016x}"), String::new()));
            json!({"name": name, "id": id, "addr": addr, "role": role})
        };
        let mut members: Vec<Value> = conf.voters.iter().map(|id| member(id, "voter")).collect();
        members.extend(conf.learners.iter().map(|id| member(id, "learner")));
        let l = self.node.leader_id();
        json!({
            "cluster_id": self.cfg.cluster_id, "name": self.cfg.name, "id": self.id,
            "term": self.node.term(),
            "leader": if l == 0 { Value::Null } else { json!(self.name_of(l)) },
            "commit_index": self.node.commit_index(), "applied_index": self.node.applied_index(),
            "members": members,
        })
    }

    pub(super) fn machines_json(&self) -> Value {
        let leader = self.name_of(self.node.leader_id());
        let mut list = vec![json!({
            "name": self.cfg.name, "addr": self.cfg.advertise.to_string(),
            "metadata": self.cfg.metadata, "state": "alive", "leader": leader == self.cfg.name,
        })];
        let mut members = self.swim.members();
        members.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (id, state) in members {
            if id.name.is_empty() || id.name == self.cfg.name {
                continue;
            }
            let state = match state {
                foca::State::Alive => "alive",
                foca::State::Suspect => "suspect",
                foca::State::Down => "dead",
            };
            list.push(json!({
                "name": id.name, "addr": id.addr.to_string(), "metadata": id.meta,
                "state": state, "leader": leader == id.name,
            }));
        }
        Value::Array(list)
    }

    pub(super) fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let alive = self
            .swim
            .members()
            .iter()
            .filter(|(_, s)| *s == foca::State::Alive)
            .count();
        let lines = [
            ("berthd_raft_term", "gauge", self.node.term()),
            (
                "berthd_raft_is_leader",
                "gauge",
                u64::from(self.node.is_leader()),
            ),
            (
                "berthd_raft_commit_index",
                "gauge",
                self.node.commit_index(),
            ),
            (
                "berthd_raft_applied_index",
                "gauge",
                self.node.applied_index(),
            ),
            (
                "berthd_raft_leader_changes_total",
                "counter",
                m.leader_changes,
            ),
            (
                "berthd_registry_revision",
                "gauge",
                self.node.registry().revision(),
            ),
            (
                "berthd_registry_leases",
                "gauge",
                self.lease_clock.len() as u64,
            ),
            ("berthd_swim_alive_members", "gauge", alive as u64),
            ("berthd_api_requests_total", "counter", m.api_requests),
            ("berthd_api_errors_total", "counter", m.api_errors),
            ("berthd_proposals_total", "counter", m.proposals),
            ("berthd_applied_entries_total", "counter", m.applied),
            ("berthd_bad_peer_frames_total", "counter", m.bad_frames),
            ("berthd_bad_datagrams_total", "counter", m.bad_datagrams),
            ("berthd_peer_connects_total", "counter", m.peer_connects),
            (
                "berthd_pending_proposals",
                "gauge",
                self.pending.len() as u64,
            ),
        ];
        let mut out = String::new();
        for (name, kind, v) in lines {
            out.push_str(&format!("# TYPE {name} {kind}\n{name} {v}\n"));
        }
        out
    }
}
