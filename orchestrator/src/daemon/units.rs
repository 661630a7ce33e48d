//! Units in the loop: the agent's effects (state, services, journal lines), its heartbeats,
//! and on the leader the scheduling pass (plan from the replica, one transaction of
//! compare-and-swap writes to /schedule and /unplaced, one in flight at a time).

use std::collections::{BTreeMap, HashMap};

use super::{Daemon, Internal, Responder, SelfLease};
use crate::agent::{sys::boottime_ms, Out};
use crate::fence::Standing;
use crate::keyspace::{self, MachineRecord, ScheduleRecord, UnitRecord};
use crate::registry::{Command, Compare, Outcome, TxnOp};
use crate::schedule::{self, Change, MachineInput, MachineStatus, UnitInput};
use crate::unit::{self, Unit};

/// The leader's scheduling state.
#[derive(Debug, Default)]
pub(super) struct SchedState {
    /// Something the plan depends on changed since the last pass.
    pub dirty: bool,
    /// How many of a plan's transactions are still being committed.
    pub in_flight: usize,
    /// When a machine's standing changes next (boot-time ms).
    pub next_change: Option<u64>,
    /// Parsed units by (name, hash): a template and its instances share a text and hash.
    pub parsed: HashMap<(String, String), Option<Unit>>,
    /// Metadata of machines seen in /machines (kept when their record vanishes with their
    /// lease, so a held machine still has it).
    pub metadata: BTreeMap<String, BTreeMap<String, String>>,
}

impl Daemon {
    /// Registry events touched keys that units depend on.
    pub(super) fn note_events(&mut self, events: &[crate::registry::Event]) {
        self.note_network_events(events);
        self.note_dns_events(events);
        for e in events {
            let k = e.key.as_str();
            if k.starts_with(keyspace::UNITS)
                || k.starts_with(keyspace::SCHEDULE)
                || k.starts_with(keyspace::MACHINES)
            {
                self.units_dirty = true;
                self.sched.dirty = true;
                return;
            }
        }
    }

    /// After every turn of the loop: the leader plans if something changed, the agent
    /// reconciles if the registry changed, and its effects are routed.
    pub(super) fn run_agent(&mut self) {
        if self.node.is_leader() && self.sched.dirty {
            self.schedule_pass();
        }
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        if std::mem::take(&mut self.units_dirty) | agent.wants_reconcile() {
            agent.reconcile(self.node.registry());
        }
        let outs = agent.take_out();
        self.route_agent_outs(outs);
    }

    fn route_agent_outs(&mut self, outs: Vec<Out>) {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for o in outs {
            match o {
                Out::Own { key, value } => {
                    self.my_services.insert(key.clone(), value.clone());
                    puts.push((key, value));
                }
                Out::Disown { key } => {
                    self.my_services.remove(&key);
                    deletes.push(key);
                }
                Out::Journal { unit, lines } => self.journal_lines(&unit, &lines),
            }
        }
        if puts.is_empty() && deletes.is_empty() {
            return;
        }
        let lease = match self.self_lease {
            SelfLease::Held { id, .. } => id,
            // Written with the rest of my_services once the node has its lease.
            _ if deletes.is_empty() => return,
            _ => 0,
        };
        let mut ops: Vec<TxnOp> = deletes
            .into_iter()
            .map(|key| TxnOp::Delete { key })
            .collect();
        if lease != 0 {
            ops.extend(
                puts.into_iter()
                    .map(|(key, value)| TxnOp::Put { key, value, lease }),
            );
        }
        let cmd = Command::Txn {
            compare: Vec::new(),
            ops,
        };
        if let Err(e) = self.propose(cmd, Responder::Internal(Internal::Report)) {
            tracing::debug!("agent report not proposed: {e}");
            self.report_retry = true;
        }
    }

    /// Agent timers and heartbeats; the leader's scheduling pass. From housekeeping.
    pub(super) fn units_housekeeping(&mut self) {
        self.expire_remote_reads();
        self.expire_execs();
        let now = std::time::Instant::now();
        self.network_housekeeping(now);
        self.dns_turn(Some(now));
        if let Some(agent) = self.agent.as_mut() {
            agent.tick();
            if self.node.leader_id() != 0 {
                if let Some(at) = agent.beat_due() {
                    let cmd = Command::Heartbeat {
                        machine: self.cfg.name.clone(),
                    };
                    if self
                        .propose(cmd, Responder::Internal(Internal::Beat(at)))
                        .is_err()
                    {
                        if let Some(agent) = self.agent.as_mut() {
                            agent.beat_done(at, false);
                        }
                    }
                }
            }
            if std::mem::take(&mut self.report_retry) {
                // Re-put everything owned (a failed report may have lost some).
                let owned: Vec<Out> = self
                    .my_services
                    .iter()
                    .map(|(k, v)| Out::Own {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect();
                self.route_agent_outs(owned);
            }
        }
        self.run_agent();
        if self.node.is_leader() {
            self.schedule_pass();
        }
    }

    /// A heartbeat from `machine` was applied here.
    pub(super) fn beat_applied(&mut self, machine: &str) {
        self.liveness.beat_applied(machine, boottime_ms());
    }

    pub(super) fn on_units_internal(&mut self, i: Internal, result: &Result<Outcome, String>) {
        match i {
            Internal::Beat(at) => {
                let ok = matches!(result, Ok(Outcome::Heartbeat));
                if let Some(agent) = self.agent.as_mut() {
                    agent.beat_done(at, ok);
                }
            }
            Internal::Schedule => {
                self.sched.in_flight = self.sched.in_flight.saturating_sub(1);
                match result {
                    Ok(Outcome::Txn { .. }) => {}
                    Ok(Outcome::Failed { error }) => {
                        tracing::info!("schedule write lost a race ({error}); planning again");
                        self.sched.dirty = true;
                    }
                    Err(e) => {
                        tracing::debug!("schedule write not applied: {e}");
                        self.sched.dirty = true;
                    }
                    Ok(_) => {}
                }
            }
            Internal::Report if !matches!(result, Ok(Outcome::Txn { .. })) => {
                self.report_retry = true;
            }
            _ => {}
        }
    }

    /// The leader's pass: plan from the replica and write the changes in one transaction.
    fn schedule_pass(&mut self) {
        let now = boottime_ms();
        let due = self.sched.next_change.is_some_and(|t| now >= t);
        if self.sched.in_flight > 0 || !(self.sched.dirty || due) {
            return;
        }
        self.sched.dirty = false;
        let reg = self.node.registry();
        let records: Vec<UnitRecord> = reg
            .range(keyspace::UNITS)
            .into_iter()
            .filter_map(|kv| keyspace::decode::<UnitRecord>(&kv.value))
            .collect();
        let mut current: HashMap<String, schedule::Placement> = HashMap::new();
        for kv in reg.range(keyspace::SCHEDULE) {
            let Some(name) = kv.key.strip_prefix(keyspace::SCHEDULE) else {
                continue;
            };
            let machine = keyspace::decode::<ScheduleRecord>(&kv.value)
                .map(|r| r.machine)
                .unwrap_or_default();
            current.insert(
                name.to_string(),
                schedule::Placement {
                    machine,
                    mod_revision: kv.mod_revision,
                },
            );
        }
        let unplaced: BTreeMap<String, (String, u64)> = reg
            .range(keyspace::UNPLACED)
            .into_iter()
            .filter_map(|kv| {
                let n = kv.key.strip_prefix(keyspace::UNPLACED)?;
                Some((n.to_string(), (kv.value.clone(), kv.mod_revision)))
            })
            .collect();
        let mut with_record: BTreeMap<String, bool> = BTreeMap::new();
        for kv in reg.range(keyspace::MACHINES) {
            if let Some(m) = keyspace::decode::<MachineRecord>(&kv.value) {
                with_record.insert(m.name.clone(), m.agent);
                self.sched.metadata.insert(m.name, m.metadata);
            }
        }
        // Parse (cached; entries of units gone are dropped once they pile up).
        if self.sched.parsed.len() > records.len() * 2 + 64 {
            let live: std::collections::HashSet<(String, String)> = records
                .iter()
                .map(|r| (r.name.clone(), r.hash.clone()))
                .collect();
            self.sched.parsed.retain(|k, _| live.contains(k));
        }
        for r in &records {
            let key = (r.name.clone(), r.hash.clone());
            self.sched
                .parsed
                .entry(key)
                .or_insert_with(|| unit::parse_unit(&r.name, &r.text).ok());
        }
        // Every machine the cluster knows of: by record, by heartbeat, or named by a placement.
        let mut names: Vec<String> = with_record.keys().cloned().collect();
        names.extend(self.liveness.machines());
        names.extend(current.values().map(|p| p.machine.clone()));
        names.sort();
        names.dedup();
        let fence = self.cfg.fence;
        let mut statuses = Vec::new();
        for n in &names {
            let standing = self.liveness.standing(n, now, &fence);
            let status = match (standing, with_record.get(n)) {
                (Standing::Live, Some(true)) => MachineStatus::Live,
                (Standing::Gone, _) => continue,
                // Live without a record (lease just revoked, or no agent), or held.
                _ => MachineStatus::Held,
            };
            statuses.push((n.clone(), status));
        }
        self.sched.next_change = self.liveness.next_change_ms(&names, now, &fence);
        let empty = BTreeMap::new();
        let machines: Vec<MachineInput> = statuses
            .iter()
            .map(|(n, status)| MachineInput {
                name: n,
                metadata: self.sched.metadata.get(n).unwrap_or(&empty),
                status: *status,
            })
            .collect();
        let units: Vec<UnitInput> = records
            .iter()
            .filter_map(|r| {
                let u = self
                    .sched
                    .parsed
                    .get(&(r.name.clone(), r.hash.clone()))?
                    .as_ref()?;
                Some(UnitInput::of(u, r.desired.into()))
            })
            .collect();
        let plan = schedule::plan(&schedule::Input {
            units: &units,
            machines: &machines,
            schedule: &current,
        });
        let batches = plan_writes(&plan, &unplaced);
        if batches.is_empty() {
            return;
        }
        tracing::info!(
            changes = plan.changes.len(),
            unplaceable = plan.unplaceable.len(),
            transactions = batches.len(),
            "scheduling"
        );
        for c in &plan.changes {
            match c {
                Change::Place { unit, machine } => tracing::debug!(%unit, %machine, "placing"),
                Change::Move {
                    unit,
                    from,
                    to,
                    reason,
                    ..
                } => tracing::info!(%unit, %from, %to, %reason, "moving"),
                Change::Remove {
                    unit, from, reason, ..
                } => tracing::info!(%unit, %from, %reason, "unplacing"),
            }
        }
        for (compare, ops) in batches {
            let cmd = Command::Txn { compare, ops };
            match self.propose(cmd, Responder::Internal(Internal::Schedule)) {
                Ok(_) => self.sched.in_flight += 1,
                Err(e) => {
                    tracing::debug!("schedule not proposed: {e}");
                    self.sched.dirty = true;
                    break;
                }
            }
        }
    }
}

/// Placements per transaction: a plan of any size becomes entries of bounded size (each
/// change is independent, so batches may commit separately; a lost race in one batch only
/// makes the next pass plan again).
const CHANGES_PER_TXN: usize = 2_000;

/// The transactions for a plan: /schedule writes compare-and-swapped on the revisions the
/// plan read, /unplaced reasons put where they changed and deleted where a unit got placed;
/// at most [`CHANGES_PER_TXN`] changes (and as many reason writes) per transaction.
fn plan_writes(
    plan: &schedule::Plan,
    unplaced: &BTreeMap<String, (String, u64)>,
) -> Vec<(Vec<Compare>, Vec<TxnOp>)> {
    let record = |machine: &str| {
        serde_json::to_string(&ScheduleRecord {
            machine: machine.to_string(),
            reason: String::new(),
        })
        .unwrap_or_default()
    };
    let mut writes: Vec<(Option<Compare>, TxnOp)> = Vec::new();
    for c in &plan.changes {
        let key = keyspace::schedule_key(c.unit());
        let (rev, op) = match c {
            Change::Place { machine, .. } => (
                0,
                TxnOp::Put {
                    key: key.clone(),
                    value: record(machine),
                    lease: 0,
                },
            ),
            Change::Move {
                to, prev_revision, ..
            } => (
                *prev_revision,
                TxnOp::Put {
                    key: key.clone(),
                    value: record(to),
                    lease: 0,
                },
            ),
            Change::Remove { prev_revision, .. } => {
                (*prev_revision, TxnOp::Delete { key: key.clone() })
            }
        };
        writes.push((
            Some(Compare {
                key,
                mod_revision: rev,
            }),
            op,
        ));
    }
    let reasons: BTreeMap<&str, &str> = plan
        .unplaceable
        .iter()
        .map(|(u, r)| (u.as_str(), r.message.as_str()))
        .collect();
    for (unit, text) in &reasons {
        if unplaced.get(*unit).map(|(t, _)| t.as_str()) != Some(*text) {
            writes.push((
                None,
                TxnOp::Put {
                    key: keyspace::unplaced_key(unit),
                    value: text.to_string(),
                    lease: 0,
                },
            ));
        }
    }
    for unit in unplaced.keys() {
        if !reasons.contains_key(unit.as_str()) {
            writes.push((
                None,
                TxnOp::Delete {
                    key: keyspace::unplaced_key(unit),
                },
            ));
        }
    }
    writes
        .chunks(CHANGES_PER_TXN)
        .map(|chunk| {
            let compare = chunk.iter().filter_map(|(c, _)| c.clone()).collect();
            let ops = chunk.iter().map(|(_, op)| op.clone()).collect();
            (compare, ops)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Plan, Reason};

    #[test]
    fn big_plans_become_bounded_transactions_with_a_compare_per_schedule_write() {
        let mut plan = Plan::default();
        for n in 0..4_500 {
            plan.changes.push(Change::Place {
                unit: format!("u{n}.service"),
                machine: "m1".into(),
            });
        }
        plan.unplaceable.push((
            "x.service".into(),
            Reason::new(Some("MachineMetadata"), "no live machine has region=mars"),
        ));
        let mut unplaced = BTreeMap::new();
        unplaced.insert("u1.service".to_string(), ("old reason".to_string(), 7));
        let txns = plan_writes(&plan, &unplaced);
        assert_eq!(txns.len(), 3);
        let total_ops: usize = txns.iter().map(|(_, o)| o.len()).sum();
        // 4,500 placements, one new reason, one stale reason deleted.
        assert_eq!(total_ops, 4_502);
        assert!(txns
            .iter()
            .all(|(c, o)| c.len() <= o.len() && o.len() <= CHANGES_PER_TXN));
        let compares: usize = txns.iter().map(|(c, _)| c.len()).sum();
        assert_eq!(compares, 4_500);
        assert!(txns[0].0.iter().all(|c| c.mod_revision == 0));
        // Nothing to write: no transaction at all.
        assert!(plan_writes(&Plan::default(), &BTreeMap::new()).is_empty());
    }
}
