//! What should run on this machine, and what to do about what does (pure).
//!
//! The targets come from the registry: every unit the leader placed here (`/schedule/<u>`
//! naming this machine) whose desired state is `loaded` or `launched`, plus every `Global`
//! unit this machine is eligible for (decided here, by the scheduler's own constraint code,
//! as fleet's agents did). The actions compare them with the instances this agent holds.

use std::collections::BTreeMap;

use crate::keyspace::{Desired, ScheduleRecord, UnitRecord};

/// A unit that belongs on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub hash: String,
    /// `launched`: run it; `loaded`: only report it as loaded here.
    pub launch: bool,
}

/// Where a unit stands for this machine, as the caller decides for `Global` units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A non-global unit: the schedule decides.
    Scheduled,
    /// A global unit that may run here.
    GlobalHere,
    /// A global unit that may not run here (constraints), or a unit that cannot be parsed.
    NotHere,
}

/// The units that belong on `machine`.
pub fn targets(
    machine: &str,
    units: &BTreeMap<String, UnitRecord>,
    schedule: &BTreeMap<String, ScheduleRecord>,
    placement: impl Fn(&UnitRecord) -> Placement,
) -> BTreeMap<String, Target> {
    let mut out = BTreeMap::new();
    for (name, u) in units {
        if u.desired == Desired::Inactive {
            continue;
        }
        let here = match placement(u) {
            Placement::Scheduled => schedule.get(name).is_some_and(|s| s.machine == machine),
            Placement::GlobalHere => true,
            Placement::NotHere => false,
        };
        if here {
            out.insert(
                name.clone(),
                Target {
                    hash: u.hash.clone(),
                    launch: u.desired == Desired::Launched,
                },
            );
        }
    }
    out
}

/// What the agent holds for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub hash: String,
    /// Already being stopped and removed.
    pub removing: bool,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create an instance of this unit text and run it.
    Launch { unit: String, hash: String },
    /// Stop and remove the instance (not wanted here any more, not launched, or replaced by
    /// a new text: the new one is launched once the old one is gone).
    Remove { unit: String },
}

/// Compares targets with held instances. Instances being removed are left alone until they
/// are gone; only then is a replacement launched.
pub fn actions(targets: &BTreeMap<String, Target>, held: &BTreeMap<String, Held>) -> Vec<Action> {
    let mut out = Vec::new();
    for (unit, h) in held {
        if h.removing {
            continue;
        }
        let keep = targets
            .get(unit)
            .is_some_and(|t| t.launch && t.hash == h.hash);
        if !keep {
            out.push(Action::Remove { unit: unit.clone() });
        }
    }
    for (unit, t) in targets {
        if t.launch && !held.contains_key(unit) {
            out.push(Action::Launch {
                unit: unit.clone(),
                hash: t.hash.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, hash: &str, desired: Desired) -> (String, UnitRecord) {
        (
            name.to_string(),
            UnitRecord {
                name: name.into(),
                text: String::new(),
                hash: hash.into(),
                desired,
            },
        )
    }

    fn placed(unit: &str, machine: &str) -> (String, ScheduleRecord) {
        (
            unit.to_string(),
            ScheduleRecord {
                machine: machine.into(),
                reason: String::new(),
            },
        )
    }

    #[test]
    fn targets_follow_schedule_desired_state_and_global_eligibility() {
        let units: BTreeMap<_, _> = [
            unit("a.service", "1", Desired::Launched),
            unit("b.service", "2", Desired::Launched),
            unit("c.service", "3", Desired::Loaded),
            unit("d.service", "4", Desired::Inactive),
            unit("g.service", "5", Desired::Launched),
            unit("h.service", "6", Desired::Launched),
        ]
        .into();
        let schedule: BTreeMap<_, _> = [
            placed("a.service", "n1"),
            placed("b.service", "n2"),
            placed("c.service", "n1"),
            placed("d.service", "n1"),
        ]
        .into();
        let t = targets("n1", &units, &schedule, |u| match u.name.as_str() {
            "g.service" => Placement::GlobalHere,
            "h.service" => Placement::NotHere,
            _ => Placement::Scheduled,
        });
        let names: Vec<_> = t.iter().map(|(n, t)| (n.as_str(), t.launch)).collect();
        assert_eq!(
            names,
            vec![
                ("a.service", true),
                ("c.service", false),
                ("g.service", true)
            ]
        );
    }

    #[test]
    fn actions_launch_remove_and_replace_after_removal() {
        let targets: BTreeMap<_, _> = [
            (
                "new.service".to_string(),
                Target {
                    hash: "1".into(),
                    launch: true,
                },
            ),
            (
                "same.service".to_string(),
                Target {
                    hash: "2".into(),
                    launch: true,
                },
            ),
            (
                "changed.service".to_string(),
                Target {
                    hash: "3b".into(),
                    launch: true,
                },
            ),
            (
                "loaded.service".to_string(),
                Target {
                    hash: "4".into(),
                    launch: false,
                },
            ),
        ]
        .into();
        let held: BTreeMap<_, _> = [
            (
                "same.service".to_string(),
                Held {
                    hash: "2".into(),
                    removing: false,
                },
            ),
            (
                "changed.service".to_string(),
                Held {
                    hash: "3a".into(),
                    removing: false,
                },
            ),
            (
                "loaded.service".to_string(),
                Held {
                    hash: "4".into(),
                    removing: false,
                },
            ),
            (
                "gone.service".to_string(),
                Held {
                    hash: "5".into(),
                    removing: false,
                },
            ),
            (
                "leaving.service".to_string(),
                Held {
                    hash: "6".into(),
                    removing: true,
                },
            ),
        ]
        .into();
        let a = actions(&targets, &held);
        assert_eq!(
            a,
            vec![
                Action::Remove {
                    unit: "changed.service".into()
                },
                Action::Remove {
                    unit: "gone.service".into()
                },
                Action::Remove {
                    unit: "loaded.service".into()
                },
                Action::Launch {
                    unit: "new.service".into(),
                    hash: "1".into()
                },
            ]
        );
        // Once the old instance is gone, the new text is launched.
        let mut held = held;
        held.remove("changed.service");
        assert!(actions(&targets, &held).contains(&Action::Launch {
            unit: "changed.service".into(),
            hash: "3b".into()
        }));
    }
}
