//! The planner's indexed view of the cluster: units and machines by index (name order), who
//! runs where, and the machines of each metadata group ordered by (load, name).

use std::collections::{BTreeSet, HashMap};

use super::{DesiredState, Input, MachineInput, MachineStatus, UnitInput};
use crate::unit::MetadataRequirement;

/// Machines that satisfy one `MachineMetadata` requirement, least loaded first.
struct Group {
    by_load: BTreeSet<(u32, u32)>,
}

pub(crate) struct State<'a> {
    /// Units to place (loaded/launched, not global, not templates), by name.
    pub units: Vec<UnitInput<'a>>,
    pub unit_idx: HashMap<&'a str, u32>,
    /// Global units (loaded/launched), by name.
    pub globals: Vec<UnitInput<'a>>,
    /// Unit -> the global units it conflicts with.
    pub global_conflicts: Vec<Vec<u32>>,
    /// Live and held machines, by name.
    pub machines: Vec<MachineInput<'a>>,
    pub machine_idx: HashMap<&'a str, u32>,
    /// Unit -> machine.
    pub assign: Vec<Option<u32>>,
    /// Machine -> units on it, in the order they were put there.
    pub on: Vec<Vec<u32>>,
    /// Machine -> how many of its units have `Conflicts` / `Replaces`.
    with_conflicts: Vec<u32>,
    with_replaces: Vec<u32>,
    groups: Vec<Group>,
    group_of: HashMap<&'a MetadataRequirement, u32>,
    /// Machine -> the groups it belongs to.
    member_of: Vec<Vec<u32>>,
}

impl<'a> State<'a> {
    pub fn new(input: &Input<'a>) -> State<'a> {
        let active =
            |u: &&UnitInput<'a>| u.state != DesiredState::Inactive && !u.name.is_template();
        let mut units: Vec<UnitInput<'a>> = input
            .units
            .iter()
            .filter(active)
            .filter(|u| !u.fleet.global)
            .copied()
            .collect();
        units.sort_by(|a, b| a.name.cmp(b.name));
        units.dedup_by(|a, b| a.name == b.name);
        let mut globals: Vec<UnitInput<'a>> = input
            .units
            .iter()
            .filter(active)
            .filter(|u| u.fleet.global)
            .copied()
            .collect();
        globals.sort_by(|a, b| a.name.cmp(b.name));
        let mut machines: Vec<MachineInput<'a>> = input.machines.to_vec();
        machines.sort_by(|a, b| a.name.cmp(b.name));
        machines.dedup_by(|a, b| a.name == b.name);
        let unit_idx = units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i as u32))
            .collect();
        let machine_idx = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name, i as u32))
            .collect();
        let global_conflicts = units
            .iter()
            .map(|u| {
                (0..globals.len() as u32)
                    .filter(|&g| super::constraints::conflict(u, &globals[g as usize]))
                    .collect()
            })
            .collect();
        State {
            global_conflicts,
            assign: vec![None; units.len()],
            on: vec![Vec::new(); machines.len()],
            with_conflicts: vec![0; machines.len()],
            with_replaces: vec![0; machines.len()],
            member_of: vec![Vec::new(); machines.len()],
            groups: Vec::new(),
            group_of: HashMap::new(),
            units,
            unit_idx,
            globals,
            machines,
            machine_idx,
        }
    }

    pub fn unit(&self, u: u32) -> &UnitInput<'a> {
        &self.units[u as usize]
    }

    pub fn machine(&self, m: u32) -> &MachineInput<'a> {
        &self.machines[m as usize]
    }

    pub fn is_live(&self, m: u32) -> bool {
        self.machine(m).status == MachineStatus::Live
    }

    fn load(&self, m: u32) -> u32 {
        self.on[m as usize].len() as u32
    }

    fn reorder(&mut self, m: u32, old: u32) {
        let new = self.load(m);
        for &g in &self.member_of[m as usize] {
            let set = &mut self.groups[g as usize].by_load;
            set.remove(&(old, m));
            set.insert((new, m));
        }
    }

    /// Puts unit `u` on machine `m`.
    pub fn place(&mut self, u: u32, m: u32) {
        let old = self.load(m);
        self.assign[u as usize] = Some(m);
        self.on[m as usize].push(u);
        let f = self.units[u as usize].fleet;
        self.with_conflicts[m as usize] += u32::from(!f.conflicts.is_empty());
        self.with_replaces[m as usize] += u32::from(!f.replaces.is_empty());
        self.reorder(m, old);
    }

    /// Takes unit `u` off its machine.
    pub fn unplace(&mut self, u: u32) {
        let Some(m) = self.assign[u as usize].take() else {
            return;
        };
        let old = self.load(m);
        self.on[m as usize].retain(|&x| x != u);
        let f = self.units[u as usize].fleet;
        self.with_conflicts[m as usize] -= u32::from(!f.conflicts.is_empty());
        self.with_replaces[m as usize] -= u32::from(!f.replaces.is_empty());
        self.reorder(m, old);
    }

    /// True when some unit on `m` has `Conflicts` / `Replaces` (the cheap test first).
    pub fn has_conflicting(&self, m: u32) -> bool {
        self.with_conflicts[m as usize] > 0
    }

    pub fn has_replacing(&self, m: u32) -> bool {
        self.with_replaces[m as usize] > 0
    }

    /// The group of live machines satisfying `req`, made on first use.
    pub fn group(&mut self, req: &'a MetadataRequirement) -> u32 {
        if let Some(&g) = self.group_of.get(req) {
            return g;
        }
        let g = self.groups.len() as u32;
        let mut by_load = BTreeSet::new();
        for m in 0..self.machines.len() as u32 {
            let mach = self.machine(m);
            let matches = req
                .iter()
                .all(|(k, vals)| mach.metadata.get(k).is_some_and(|v| vals.contains(v)));
            if self.is_live(m) && matches {
                by_load.insert((self.load(m), m));
                self.member_of[m as usize].push(g);
            }
        }
        self.groups.push(Group { by_load });
        self.group_of.insert(req, g);
        g
    }

    /// The machines of group `g`, least loaded first, ties by name.
    pub fn group_machines(&self, g: u32) -> impl Iterator<Item = u32> + '_ {
        self.groups[g as usize].by_load.iter().map(|&(_, m)| m)
    }

    pub fn group_is_empty(&self, g: u32) -> bool {
        self.groups[g as usize].by_load.is_empty()
    }

    /// Units whose `MachineOf` names `u`, on machine `m`.
    pub fn followers_on(&self, u: u32, m: u32) -> Vec<u32> {
        let name = self.unit(u).name;
        self.on[m as usize]
            .iter()
            .copied()
            .filter(|&f| self.unit(f).fleet.machine_of.iter().any(|p| p == name))
            .collect()
    }
}
