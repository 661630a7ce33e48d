//! Agent-to-agent messages over the peer links (frame kind `KIND_AGENT`, JSON bodies): a
//! unit's journal read on the node that runs it and relayed to the node whose API client
//! asked, once or as a follow stream; and execs in a unit's container (`ExecReq`,
//! `ExecDone`; see `daemon::exec`).
//!
//! ```text
//!   client --GET journal--> node A                     node B (runs the unit)
//!                           A --JournalReq{id}-------> B   tail (+ follow)
//!                           A <--JournalData{id}------ B   lines, done?
//!   client <--chunks------- A
//!   (client gone)           A --JournalCancel{id}----> B   stop following
//! ```
//!
//! Each side sends on its own outbound link to the other (as Raft messages go), so a reply
//! needs nothing but the requester's node id.

use std::time::{Duration, Instant};

use mio::Token;
use serde::{Deserialize, Serialize};

use super::conn::{ApiState, Conn};
use super::Daemon;
use crate::agent::journal;
use crate::api::http;
use crate::config::node_id;
use crate::net::frame::{self, KIND_AGENT};

/// Most lines in one JournalData frame.
const LINES_PER_FRAME: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum AgentFrame {
    JournalReq {
        id: u64,
        from: u64,
        unit: String,
        lines: usize,
        follow: bool,
    },
    JournalData {
        id: u64,
        lines: Vec<String>,
        done: bool,
        #[serde(default)]
        error: Option<String>,
    },
    JournalCancel {
        id: u64,
        from: u64,
    },
    /// Run `cmd` in `unit`'s container (the receiver runs it).
    ExecReq {
        id: u64,
        from: u64,
        unit: String,
        cmd: Vec<String>,
        timeout_ms: u64,
    },
    ExecDone {
        id: u64,
        outcome: crate::agent::exec::ExecOutcome,
    },
}

/// How long the node asked for a journal has to send its first lines.
const REMOTE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A journal relayed from another node to one of our API clients.
#[derive(Debug)]
pub(super) struct RemoteRead {
    pub token: Token,
    pub peer: u64,
    pub asked: Instant,
    pub answered: bool,
}

/// A follower on another node of a journal here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RemoteFollower {
    pub peer: u64,
    pub id: u64,
}

impl Daemon {
    /// Queues an agent frame on the link to `to`; false if it cannot be queued.
    pub(super) fn send_agent(&mut self, to: u64, f: &AgentFrame) -> bool {
        let Ok(body) = serde_json::to_vec(f) else {
            return false;
        };
        let data = frame::encode(&self.cfg.cluster_id, KIND_AGENT, &body);
        self.queue_frame(to, &data)
    }

    /// Ends relays whose node did not answer in time (dead, cut off, or without the unit).
    pub(super) fn expire_remote_reads(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .remote_reads
            .iter()
            .filter(|(_, r)| !r.answered && now.duration_since(r.asked) > REMOTE_ANSWER_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let peer = self.remote_reads.get(&id).map_or(0, |r| r.peer);
            let who = self.name_of(peer);
            self.relay_journal(
                Some(peer),
                id,
                &[],
                true,
                Some(format!(
                    "{who} did not answer within {} s",
                    REMOTE_ANSWER_TIMEOUT.as_secs()
                )),
            );
        }
    }

    /// Starts relaying `unit`'s journal from `machine` to API client `token`.
    pub(super) fn start_remote_journal(
        &mut self,
        token: Token,
        unit: &str,
        lines: usize,
        follow: bool,
        machine: &str,
    ) -> Result<(), http::HttpError> {
        let peer = node_id(machine);
        let id = self.next_remote_id;
        self.next_remote_id += 1;
        let req = AgentFrame::JournalReq {
            id,
            from: self.id,
            unit: unit.to_string(),
            lines,
            follow,
        };
        if !self.send_agent(peer, &req) {
            return Err(http::err(
                502,
                format!("cannot reach {machine} for the journal of {unit}"),
            ));
        }
        self.remote_reads.insert(
            id,
            RemoteRead {
                token,
                peer,
                asked: Instant::now(),
                answered: false,
            },
        );
        self.write_api(token, &http::stream_head());
        if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
            c.state = ApiState::Following {
                unit: unit.to_string(),
            };
        }
        self.flush_api(token);
        Ok(())
    }

    /// An agent frame from the link whose certificate names `peer` (None: --insecure).
    pub(super) fn on_agent_frame(&mut self, peer: Option<u64>, body: &[u8]) {
        let f: AgentFrame = match serde_json::from_slice(body) {
            Ok(f) => f,
            Err(e) => {
                self.warn_limited(format_args!("undecodable agent frame: {e}"));
                return;
            }
        };
        let claimed = match &f {
            AgentFrame::JournalReq { from, .. }
            | AgentFrame::JournalCancel { from, .. }
            | AgentFrame::ExecReq { from, .. } => Some(*from),
            AgentFrame::JournalData { .. } | AgentFrame::ExecDone { .. } => None,
        };
        if let (Some(peer), Some(from)) = (peer, claimed) {
            if peer != from {
                self.warn_limited(format_args!(
                    "agent frame claims to be from {from:016x}, but the link's certificate names {peer:016x}; refused"
                ));
                return;
            }
        }
        match f {
            AgentFrame::JournalReq {
                id,
                from,
                unit,
                lines,
                follow,
            } => self.serve_remote_journal(from, id, &unit, lines, follow),
            AgentFrame::JournalData {
                id,
                lines,
                done,
                error,
            } => self.relay_journal(peer, id, &lines, done, error),
            AgentFrame::JournalCancel { id, from } => {
                for list in self.remote_followers.values_mut() {
                    list.retain(|f| !(f.peer == from && f.id == id));
                }
            }
            AgentFrame::ExecReq {
                id,
                from,
                unit,
                cmd,
                timeout_ms,
            } => self.serve_remote_exec(from, id, &unit, cmd, timeout_ms),
            AgentFrame::ExecDone { id, outcome } => self.relay_exec(peer, id, outcome),
        }
    }

    fn serve_remote_journal(&mut self, from: u64, id: u64, unit: &str, lines: usize, follow: bool) {
        let tail = match self.agent_journal_dir() {
            Some(dir) => journal::tail(&dir, unit, lines.min(100_000)).map_err(|e| e.to_string()),
            None => Err(format!("{} runs no agent", self.cfg.name)),
        };
        let (tail, error) = match tail {
            Ok(t) => (t, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let done = !follow || error.is_some();
        let mut chunks: Vec<Vec<String>> = tail
            .chunks(LINES_PER_FRAME)
            .map(<[String]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let n = chunks.len();
        for (i, lines) in chunks.into_iter().enumerate() {
            let f = AgentFrame::JournalData {
                id,
                lines,
                done: done && i + 1 == n,
                error: if i + 1 == n { error.clone() } else { None },
            };
            self.send_agent(from, &f);
        }
        if !done {
            self.remote_followers
                .entry(unit.to_string())
                .or_default()
                .push(RemoteFollower { peer: from, id });
        }
    }

    /// New lines of a unit here, for followers on other nodes.
    pub(super) fn journal_lines_remote(&mut self, unit: &str, lines: &[String]) {
        let Some(list) = self.remote_followers.get(unit).cloned() else {
            return;
        };
        let mut alive = Vec::new();
        for f in list {
            let frame = AgentFrame::JournalData {
                id: f.id,
                lines: lines.to_vec(),
                done: false,
                error: None,
            };
            if self.send_agent(f.peer, &frame) {
                alive.push(f);
            }
        }
        self.remote_followers.insert(unit.to_string(), alive);
    }

    fn relay_journal(
        &mut self,
        from: Option<u64>,
        id: u64,
        lines: &[String],
        done: bool,
        error: Option<String>,
    ) {
        let Some(r) = self.remote_reads.get_mut(&id) else {
            return;
        };
        if from.is_some_and(|f| f != r.peer) {
            // Only the node asked may answer (ids are guessable).
            return;
        }
        r.answered = true;
        let token = r.token;
        let peer = r.peer;
        let open = matches!(
            self.conns.get(&token),
            Some(Conn::Api(c)) if matches!(c.state, ApiState::Following { .. })
        );
        if !open {
            self.remote_reads.remove(&id);
            self.send_agent(peer, &AgentFrame::JournalCancel { id, from: self.id });
            return;
        }
        let mut out = Vec::new();
        for l in lines {
            out.extend(http::chunk(format!("{l}\n").as_bytes()));
        }
        if let Some(e) = error {
            out.extend(http::chunk(format!("-- {e} --\n").as_bytes()));
        }
        if done {
            out.extend(http::chunk(b""));
            self.remote_reads.remove(&id);
            if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                c.state = ApiState::Idle;
                c.close_after_write = true;
            }
        }
        self.write_api(token, &out);
        self.flush_api(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let f = AgentFrame::JournalReq {
            id: 7,
            from: 1,
            unit: "web.service".into(),
            lines: 10,
            follow: true,
        };
        let s = serde_json::to_string(&f).expect("encode");
        assert!(s.contains("\"t\":\"journal_req\""), "{s}");
        assert_eq!(serde_json::from_str::<AgentFrame>(&s).expect("decode"), f);
        assert!(serde_json::from_str::<AgentFrame>("{\"t\":\"nope\"}").is_err());
        let e = AgentFrame::ExecReq {
            id: 1,
            from: 2,
            unit: "web.service".into(),
            cmd: vec!["ls".into()],
            timeout_ms: 1000,
        };
        let s = serde_json::to_string(&e).expect("encode");
        assert!(s.contains("\"t\":\"exec_req\""), "{s}");
        assert_eq!(serde_json::from_str::<AgentFrame>(&s).expect("decode"), e);
    }
}
