//! Simulated scheduling: units, machines and a `/schedule` with revisions, no IO.

mod globals;
mod rules;
mod scale;

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::unit::{parse_unit, Unit};

/// A simulated cluster: submitted units, machines, and the `/schedule` keys.
pub(super) struct Sim {
    pub units: Vec<(Unit, DesiredState)>,
    pub machines: Vec<(String, BTreeMap<String, String>, MachineStatus)>,
    pub schedule: HashMap<String, Placement>,
    pub revision: u64,
}

impl Sim {
    pub fn new() -> Sim {
        Sim {
            units: Vec::new(),
            machines: Vec::new(),
            schedule: HashMap::new(),
            revision: 0,
        }
    }

    /// Submits a launched unit with this `[X-Fleet]` body.
    pub fn unit(&mut self, name: &str, fleet: &str) -> &mut Sim {
        self.unit_in(name, fleet, DesiredState::Launched)
    }

    pub fn unit_in(&mut self, name: &str, fleet: &str, state: DesiredState) -> &mut Sim {
        let text = format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{fleet}\n");
        let u = parse_unit(name, &text).unwrap_or_else(|e| panic!("{e}"));
        self.units.retain(|(x, _)| x.name != u.name);
        self.units.push((u, state));
        self
    }

    pub fn machine(&mut self, name: &str, md: &[(&str, &str)]) -> &mut Sim {
        let md = md
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.machines.push((name.into(), md, MachineStatus::Live));
        self
    }

    pub fn set_status(&mut self, name: &str, status: Option<MachineStatus>) {
        match status {
            Some(s) => self
                .machines
                .iter_mut()
                .filter(|m| m.0 == name)
                .for_each(|m| m.2 = s),
            None => self.machines.retain(|m| m.0 != name),
        }
    }

    pub fn plan(&self) -> Plan {
        let units: Vec<UnitInput<'_>> = self
            .units
            .iter()
            .map(|(u, s)| UnitInput::of(u, *s))
            .collect();
        let machines: Vec<MachineInput<'_>> = self
            .machines
            .iter()
            .map(|(n, md, s)| MachineInput {
                name: n,
                metadata: md,
                status: *s,
            })
            .collect();
        plan(&Input {
            units: &units,
            machines: &machines,
            schedule: &self.schedule,
        })
    }

    /// Applies a plan as the registry would: every write compares its revision first.
    pub fn apply(&mut self, plan: &Plan) {
        let mut seen = std::collections::HashSet::new();
        for c in &plan.changes {
            assert!(
                seen.insert(c.unit().to_string()),
                "{} changed twice in one plan",
                c.unit()
            );
            self.revision += 1;
            match c {
                Change::Place { unit, machine } => {
                    assert!(!self.schedule.contains_key(unit), "{unit} placed twice");
                    self.schedule.insert(
                        unit.clone(),
                        Placement {
                            machine: machine.clone(),
                            mod_revision: self.revision,
                        },
                    );
                }
                Change::Move {
                    unit,
                    from,
                    to,
                    prev_revision,
                    ..
                } => {
                    let p = self
                        .schedule
                        .get_mut(unit)
                        .expect("moved unit is scheduled");
                    assert_eq!(
                        (&p.machine, p.mod_revision),
                        (from, *prev_revision),
                        "{unit}"
                    );
                    *p = Placement {
                        machine: to.clone(),
                        mod_revision: self.revision,
                    };
                }
                Change::Remove {
                    unit,
                    from,
                    prev_revision,
                    ..
                } => {
                    let p = self
                        .schedule
                        .remove(unit)
                        .expect("removed unit is scheduled");
                    assert_eq!(
                        (&p.machine, p.mod_revision),
                        (from, *prev_revision),
                        "{unit}"
                    );
                }
            }
        }
    }

    /// Plans and applies; returns the plan.
    pub fn step(&mut self) -> Plan {
        let p = self.plan();
        self.apply(&p);
        p
    }

    pub fn on(&self, unit: &str) -> Option<&str> {
        self.schedule.get(unit).map(|p| p.machine.as_str())
    }

    /// Units per machine.
    pub fn loads(&self) -> BTreeMap<&str, usize> {
        let mut l: BTreeMap<&str, usize> =
            self.machines.iter().map(|m| (m.0.as_str(), 0)).collect();
        for p in self.schedule.values() {
            *l.entry(p.machine.as_str()).or_default() += 1;
        }
        l
    }

    /// The reason `unit` is not placed.
    pub fn why(plan: &Plan, unit: &str) -> String {
        plan.unplaceable
            .iter()
            .find(|(u, _)| u == unit)
            .map(|(_, r)| r.to_string())
            .unwrap_or_else(|| panic!("{unit} is not unplaceable in {plan:?}"))
    }
}
