//! `POST /v1/units/NAME/exec` (`berthctl exec UNIT -- CMD...`, fleetctl ssh's job): run a
//! command in a unit's container wherever it runs. The node the client asked finds the
//! machine where the unit is active (itself first); there the agent runs `berth exec` (see
//! `agent::exec`). Another machine is asked over the peer link, and its answer relayed:
//!
//! ```text
//!   client --POST exec--> node A                       node B (runs the unit)
//!                         A --ExecReq{id, cmd}-------> B   agent: berth exec (thread)
//!                         A <--ExecDone{id, outcome}-- B
//!   client <--200 {exit_code, stdout, stderr}-- A
//! ```
//!
//! The answer: the outcome as JSON (output base64, each stream at most 256 KiB), or 409 when
//! the unit runs nowhere, 502 when its machine cannot be reached, 504 when it does not
//! answer within the exec's timeout plus [`ANSWER_SLACK`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Token;
use serde_json::json;

use super::conn::{ApiState, Conn};
use super::remote::AgentFrame;
use super::Daemon;
use crate::agent::exec::ExecOutcome;
use crate::api::http::{err, HttpError};
use crate::config::node_id;
use crate::keyspace::{self, StateRecord};

/// What the asking node waits beyond the exec's own timeout for the answer.
const ANSWER_SLACK: Duration = Duration::from_secs(10);

/// Where an exec's outcome goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    Api(Token),
    Peer { peer: u64, id: u64 },
}

/// An API client waiting for another machine's answer.
#[derive(Debug)]
struct Waiting {
    token: Token,
    peer: u64,
    deadline: Instant,
}

/// The daemon's execs in flight.
#[derive(Debug, Default)]
pub(super) struct ExecState {
    next: u64,
    /// Agent requests (ours) -> where their outcome goes.
    local: HashMap<u64, ReplyTo>,
    /// Relays to another machine -> the API client waiting.
    remote: HashMap<u64, Waiting>,
}

impl ExecState {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

type Answer = Result<Option<(u16, serde_json::Value)>, HttpError>;

impl Daemon {
    /// Starts an exec for API client `token`.
    pub(super) fn start_exec(
        &mut self,
        token: Token,
        unit: &str,
        cmd: Vec<String>,
        timeout_s: u64,
    ) -> Answer {
        let machine = self.machine_running(unit)?;
        let timeout = Duration::from_secs(timeout_s);
        if machine == self.cfg.name {
            let id = self.execs.id();
            let agent = self
                .agent
                .as_mut()
                .ok_or_else(|| err(409, format!("{} runs no agent", machine)))?;
            agent
                .exec(id, unit, cmd, timeout)
                .map_err(|e| err(409, e))?;
            self.execs.local.insert(id, ReplyTo::Api(token));
        } else {
            let peer = node_id(&machine);
            let id = self.execs.id();
            let req = AgentFrame::ExecReq {
                id,
                from: self.id,
                unit: unit.to_string(),
                cmd,
                timeout_ms: timeout.as_millis() as u64,
            };
            if !self.send_agent(peer, &req) {
                return Err(err(
                    502,
                    format!("cannot reach {machine}, where {unit} runs"),
                ));
            }
            self.execs.remote.insert(
                id,
                Waiting {
                    token,
                    peer,
                    deadline: Instant::now() + timeout + ANSWER_SLACK,
                },
            );
        }
        if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
            c.state = ApiState::Waiting { req: 0 };
        }
        Ok(None)
    }

    /// The machine where `unit` is active: this one if it is here, else the one its state
    /// record names.
    fn machine_running(&self, unit: &str) -> Result<String, HttpError> {
        let reg = self.node.registry();
        if reg.get(&keyspace::unit_key(unit)).is_none() {
            return Err(err(404, format!("unit {unit} not found")));
        }
        let active: Vec<String> = reg
            .range(keyspace::STATE)
            .into_iter()
            .filter_map(|kv| keyspace::decode::<StateRecord>(&kv.value))
            .filter(|s| s.unit == unit && s.active == "active")
            .map(|s| s.machine)
            .collect();
        if active.contains(&self.cfg.name) {
            return Ok(self.cfg.name.clone());
        }
        active
            .into_iter()
            .next()
            .ok_or_else(|| err(409, format!("{unit} is not running on any machine")))
    }

    /// Another machine asks us to run an exec.
    pub(super) fn serve_remote_exec(
        &mut self,
        from: u64,
        id: u64,
        unit: &str,
        cmd: Vec<String>,
        timeout_ms: u64,
    ) {
        let mine = self.execs.id();
        let started = match self.agent.as_mut() {
            Some(a) => a.exec(mine, unit, cmd, Duration::from_millis(timeout_ms)),
            None => Err(format!("{} runs no agent", self.cfg.name)),
        };
        match started {
            Ok(()) => {
                self.execs
                    .local
                    .insert(mine, ReplyTo::Peer { peer: from, id });
            }
            Err(e) => {
                let outcome = ExecOutcome::failed(&self.cfg.name, e);
                self.send_agent(from, &AgentFrame::ExecDone { id, outcome });
            }
        }
    }

    /// Outcomes of the agent's execs, to their API clients or asking machines.
    pub(super) fn route_execs(&mut self) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        for done in agent.finished_execs() {
            match self.execs.local.remove(&done.request) {
                Some(ReplyTo::Api(token)) => self.answer_exec(token, &done.outcome),
                Some(ReplyTo::Peer { peer, id }) => {
                    let machine = done.outcome.machine.clone();
                    let f = AgentFrame::ExecDone {
                        id,
                        outcome: done.outcome,
                    };
                    if !self.send_agent(peer, &f) {
                        // Say so in a small frame, rather than leave the asker waiting.
                        let outcome = ExecOutcome::failed(
                            &machine,
                            "the outcome could not be queued on the peer link".into(),
                        );
                        if !self.send_agent(peer, &AgentFrame::ExecDone { id, outcome }) {
                            tracing::warn!(peer = %self.name_of(peer), "exec outcome not sent");
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Another machine's answer to one of our relays (only the machine asked may answer).
    pub(super) fn relay_exec(&mut self, from: Option<u64>, id: u64, outcome: ExecOutcome) {
        let Some(w) = self.execs.remote.get(&id) else {
            return;
        };
        if from.is_some_and(|f| f != w.peer) {
            return;
        }
        if let Some(w) = self.execs.remote.remove(&id) {
            self.answer_exec(w.token, &outcome);
        }
    }

    /// Relays whose machine did not answer in time.
    pub(super) fn expire_execs(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .execs
            .remote
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.execs.remote.remove(&id) {
                let who = self.name_of(w.peer);
                self.respond_later(
                    w.token,
                    504,
                    &json!({ "error": format!("{who} did not answer the exec in time") }),
                );
            }
        }
    }

    fn answer_exec(&mut self, token: Token, outcome: &ExecOutcome) {
        match serde_json::to_value(outcome) {
            Ok(v) => self.respond_later(token, 200, &v),
            Err(e) => self.respond_later(token, 500, &json!({ "error": e.to_string() })),
        }
    }
}
