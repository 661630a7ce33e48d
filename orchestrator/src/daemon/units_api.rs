//! The /v1/units routes (fleetctl's verbs): reads from the local replica, writes through
//! Raft with compare-and-swap on the unit's record; and unit journals, streamed to
//! followers as lines arrive.

use std::collections::BTreeMap;

use mio::Token;
use serde_json::{json, Value};

use super::conn::{ApiState, Conn};
use super::{Daemon, ReplyKind};
use crate::agent::journal;
use crate::api::http::{self, err, HttpError};
use crate::api::unit_routes::UnitRoute;
use crate::keyspace::{self, Desired, MachineRecord, ScheduleRecord, StateRecord, UnitRecord};
use crate::registry::{Command, Compare, Registry, TxnOp};
use crate::unit::{self, UnitName};

type Answer = Result<Option<(u16, Value)>, HttpError>;

/// The answer to a write that found the registry already as asked.
pub(super) fn unchanged(revision: u64) -> Value {
    json!({"revision": revision, "unchanged": true})
}

pub(super) fn unit_record(reg: &Registry, name: &str) -> Option<(UnitRecord, u64)> {
    let kv = reg.get(&keyspace::unit_key(name))?;
    Some((keyspace::decode(&kv.value)?, kv.mod_revision))
}

fn states_of(reg: &Registry, unit: &str) -> Vec<StateRecord> {
    reg.range(keyspace::STATE)
        .into_iter()
        .filter(|kv| kv.key.ends_with(&format!("/{unit}")))
        .filter_map(|kv| keyspace::decode::<StateRecord>(&kv.value))
        .filter(|s| s.unit == unit)
        .collect()
}

fn machine_addrs(reg: &Registry) -> BTreeMap<String, String> {
    reg.range(keyspace::MACHINES)
        .into_iter()
        .filter_map(|kv| keyspace::decode::<MachineRecord>(&kv.value))
        .map(|m| (m.name, m.addr.ip().to_string()))
        .collect()
}

/// The JSON of one unit: its record, where it is placed (or why not) and its states.
fn unit_json(reg: &Registry, rec: &UnitRecord, with_text: bool) -> Value {
    let placed = reg
        .get(&keyspace::schedule_key(&rec.name))
        .and_then(|kv| keyspace::decode::<ScheduleRecord>(&kv.value))
        .map(|s| s.machine)
        .unwrap_or_default();
    let reason = reg
        .get(&keyspace::unplaced_key(&rec.name))
        .map(|kv| kv.value.clone())
        .unwrap_or_default();
    let states = states_of(reg, &rec.name);
    let description = unit::parse_unit(&rec.name, &rec.text)
        .ok()
        .and_then(|u| u.description);
    let mut v = json!({
        "name": rec.name, "hash": rec.hash, "desired": rec.desired.as_str(),
        "machine": placed, "reason": reason, "states": states,
        "description": description,
    });
    if with_text {
        v["text"] = json!(rec.text);
    }
    v
}

impl Daemon {
    pub(super) fn execute_units(&mut self, token: Token, r: UnitRoute) -> Answer {
        match r {
            UnitRoute::Submit { name, text } => self.submit_unit(token, name, text),
            UnitRoute::List => {
                let reg = self.node.registry();
                let list: Vec<Value> = reg
                    .range(keyspace::UNITS)
                    .into_iter()
                    .filter_map(|kv| keyspace::decode::<UnitRecord>(&kv.value))
                    .map(|u| unit_json(reg, &u, false))
                    .collect();
                Ok(Some((200, Value::Array(list))))
            }
            UnitRoute::Get { name } => {
                let reg = self.node.registry();
                let (rec, _) = unit_record(reg, &name)
                    .ok_or_else(|| err(404, format!("unit {name} not found")))?;
                Ok(Some((200, unit_json(reg, &rec, true))))
            }
            UnitRoute::States => {
                let reg = self.node.registry();
                let addrs = machine_addrs(reg);
                let list: Vec<Value> = reg
                    .range(keyspace::STATE)
                    .into_iter()
                    .filter_map(|kv| keyspace::decode::<StateRecord>(&kv.value))
                    .map(|s| {
                        let mut v = json!(s);
                        v["addr"] = json!(addrs.get(&s.machine).cloned().unwrap_or_default());
                        v
                    })
                    .collect();
                Ok(Some((200, Value::Array(list))))
            }
            UnitRoute::SetDesired { name, desired } => self.set_desired(token, name, desired),
            UnitRoute::SetDesiredMany { names, desired } => {
                self.set_desired_many(token, &names, desired)
            }
            UnitRoute::Destroy { name } => {
                let reg = self.node.registry();
                let (_, rev) = unit_record(reg, &name)
                    .ok_or_else(|| err(404, format!("unit {name} not found")))?;
                let cmd = Command::Txn {
                    compare: vec![Compare {
                        key: keyspace::unit_key(&name),
                        mod_revision: rev,
                    }],
                    ops: vec![
                        TxnOp::Delete {
                            key: keyspace::unit_key(&name),
                        },
                        TxnOp::Delete {
                            key: keyspace::unplaced_key(&name),
                        },
                    ],
                };
                self.write(token, ReplyKind::Registry, cmd)
            }
            UnitRoute::Journal {
                name,
                lines,
                follow,
                machine,
            } => self.journal(token, &name, lines, follow, machine),
            UnitRoute::Exec {
                name,
                cmd,
                timeout_s,
            } => self.start_exec(token, &name, cmd, timeout_s),
        }
    }

    fn submit_unit(&mut self, token: Token, name: String, text: String) -> Answer {
        let parsed = unit::parse_unit(&name, &text).map_err(|e| err(400, e.to_string()))?;
        let reg = self.node.registry();
        if let Some((existing, rev)) = unit_record(reg, &name) {
            if existing.hash == parsed.hash {
                return Ok(Some((200, unchanged(rev))));
            }
            return Err(err(
                409,
                format!("unit {name} already exists with other content; destroy it first"),
            ));
        }
        // The new unit must not close a cycle of Replaces or MachineOf. A cycle through it
        // needs an edge out of it, so a unit with neither key cannot close one (and the set
        // is not re-read on every submit); the others come from the parse cache.
        if !parsed.fleet.replaces.is_empty() || !parsed.fleet.machine_of.is_empty() {
            let records: Vec<UnitRecord> = reg
                .range(keyspace::UNITS)
                .into_iter()
                .filter_map(|kv| keyspace::decode::<UnitRecord>(&kv.value))
                .collect();
            for r in &records {
                self.sched
                    .parsed
                    .entry((r.name.clone(), r.hash.clone()))
                    .or_insert_with(|| unit::parse_unit(&r.name, &r.text).ok());
            }
            let mut set: Vec<&unit::Unit> = records
                .iter()
                .filter_map(|r| {
                    self.sched
                        .parsed
                        .get(&(r.name.clone(), r.hash.clone()))?
                        .as_ref()
                })
                .collect();
            set.push(&parsed);
            unit::check_set(&set).map_err(|e| err(400, e.to_string()))?;
        }
        let rec = UnitRecord {
            name: name.clone(),
            text,
            hash: parsed.hash.clone(),
            desired: Desired::Inactive,
        };
        let kind = ReplyKind::UnitSubmit {
            name: name.clone(),
            hash: rec.hash.clone(),
        };
        self.put_unit(token, &rec, 0, kind)
    }

    fn put_unit(&mut self, token: Token, rec: &UnitRecord, prev: u64, kind: ReplyKind) -> Answer {
        let value = serde_json::to_string(rec).map_err(|e| err(500, e.to_string()))?;
        let cmd = Command::Put {
            key: keyspace::unit_key(&rec.name),
            value,
            lease: 0,
            prev_revision: Some(prev),
        };
        self.write(token, kind, cmd)
    }

    /// Many units' desired state in one transaction (each compared on its record's
    /// revision): all change or none.
    fn set_desired_many(&mut self, token: Token, names: &[String], desired: Desired) -> Answer {
        let mut compare = Vec::new();
        let mut ops = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.desired_write(name, desired) {
                Ok(Some((rec, prev))) => {
                    let value = serde_json::to_string(&rec).map_err(|e| err(500, e.to_string()))?;
                    compare.push(Compare {
                        key: keyspace::unit_key(name),
                        mod_revision: prev,
                    });
                    ops.push(TxnOp::Put {
                        key: keyspace::unit_key(name),
                        value,
                        lease: 0,
                    });
                }
                Ok(None) => {}
                Err(e) if e.status == 404 => missing.push(name.clone()),
                Err(e) => return Err(e),
            }
        }
        if !missing.is_empty() {
            return Err(err(
                404,
                format!("units not found (nothing changed): {}", missing.join(", ")),
            ));
        }
        if ops.is_empty() {
            return Ok(Some((200, unchanged(self.node.registry().revision()))));
        }
        self.write(token, ReplyKind::Registry, Command::Txn { compare, ops })
    }

    /// The record to write for `name`'s new desired state and the revision to compare on
    /// (None: already so). An instance of a submitted template is made from its text.
    fn desired_write(
        &self,
        name: &str,
        desired: Desired,
    ) -> Result<Option<(UnitRecord, u64)>, HttpError> {
        let parsed_name = UnitName::parse(name).map_err(|e| err(400, e.to_string()))?;
        if parsed_name.is_template() && desired != Desired::Inactive {
            return Err(err(
                400,
                format!(
                    "{name} is a template; load or start an instance of it (like {})",
                    name.replacen("@.", "@1.", 1)
                ),
            ));
        }
        let reg = self.node.registry();
        if let Some((mut rec, rev)) = unit_record(reg, name) {
            if rec.desired == desired {
                return Ok(None);
            }
            rec.desired = desired;
            return Ok(Some((rec, rev)));
        }
        let template = parsed_name
            .template()
            .and_then(|t| unit_record(reg, t.as_str()));
        let Some((tpl, _)) = template.filter(|_| desired != Desired::Inactive) else {
            return Err(err(404, format!("unit {name} not found")));
        };
        let parsed = unit::parse_unit(name, &tpl.text).map_err(|e| err(400, e.to_string()))?;
        Ok(Some((
            UnitRecord {
                name: name.to_string(),
                text: tpl.text,
                hash: parsed.hash,
                desired,
            },
            0,
        )))
    }

    fn set_desired(&mut self, token: Token, name: String, desired: Desired) -> Answer {
        match self.desired_write(&name, desired)? {
            Some((rec, prev)) => self.put_unit(token, &rec, prev, ReplyKind::Registry),
            None => {
                let rev = unit_record(self.node.registry(), &name).map_or(0, |(_, r)| r);
                Ok(Some((200, unchanged(rev))))
            }
        }
    }

    /// Serves a unit's journal: from this node's files when it runs (or ran) here.
    fn journal(
        &mut self,
        token: Token,
        name: &str,
        lines: usize,
        follow: bool,
        machine: Option<String>,
    ) -> Answer {
        let reg = self.node.registry();
        let here = self.cfg.name.clone();
        let target = machine.unwrap_or_else(|| {
            let states = states_of(reg, name);
            if states.iter().any(|s| s.machine == here) {
                return here.clone();
            }
            reg.get(&keyspace::schedule_key(name))
                .and_then(|kv| keyspace::decode::<ScheduleRecord>(&kv.value))
                .map(|s| s.machine)
                .filter(|m| !m.is_empty())
                .or_else(|| states.first().map(|s| s.machine.clone()))
                .unwrap_or(here.clone())
        });
        if target != here {
            return self.remote_journal(token, name, lines, follow, &target);
        }
        let Some(dir) = self.agent_journal_dir() else {
            return Err(err(
                404,
                format!("{here} runs no agent, so it has no journals"),
            ));
        };
        let tail = journal::tail(&dir, name, lines)
            .map_err(|e| err(500, format!("reading the journal of {name}: {e}")))?;
        let mut out = http::stream_head();
        for l in tail {
            out.extend(http::chunk(format!("{l}\n").as_bytes()));
        }
        if !follow {
            out.extend(http::chunk(b""));
        }
        self.write_api(token, &out);
        if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
            if follow {
                c.state = ApiState::Following {
                    unit: name.to_string(),
                };
            } else if c.close_current {
                c.close_after_write = true;
            }
        }
        if follow {
            self.journal_followers
                .entry(name.to_string())
                .or_default()
                .push(token);
        }
        self.flush_api(token);
        Ok(None)
    }

    pub(super) fn agent_journal_dir(&self) -> Option<std::path::PathBuf> {
        self.cfg.agent.as_ref().map(|a| a.journal_dir.clone())
    }

    /// New journal lines of a unit running here: to every client following it.
    pub(super) fn journal_lines(&mut self, unit: &str, lines: &[String]) {
        self.journal_lines_remote(unit, lines);
        let Some(tokens) = self.journal_followers.get(unit).cloned() else {
            return;
        };
        let mut data = Vec::new();
        for l in lines {
            data.extend(http::chunk(format!("{l}\n").as_bytes()));
        }
        let mut alive = Vec::new();
        for t in tokens {
            let following = matches!(
                self.conns.get(&t),
                Some(Conn::Api(c)) if matches!(&c.state, ApiState::Following { unit: u } if u == unit)
            );
            if following {
                self.write_api(t, &data);
                self.flush_api(t);
                alive.push(t);
            }
        }
        if alive.is_empty() {
            self.journal_followers.remove(unit);
        } else {
            self.journal_followers.insert(unit.to_string(), alive);
        }
    }
}

impl Daemon {
    /// Asks `machine`'s berthd for the journal over the peer link (see `remote`).
    fn remote_journal(
        &mut self,
        token: Token,
        name: &str,
        lines: usize,
        follow: bool,
        machine: &str,
    ) -> Answer {
        self.start_remote_journal(token, name, lines, follow, machine)?;
        Ok(None)
    }
}
