//! 10,000 units on 1,000 machines: the plan is checked for correctness (not timed; the
//! timing is `benches/src/bin/schedule.rs`).

use std::collections::HashSet;

use super::*;
use crate::schedule::constraints::conflict;

/// 1,000 machines (region eu/us/ap, disk ssd/hdd) and 10,000 units of every kind.
pub(crate) fn big_cluster() -> Sim {
    let mut s = Sim::new();
    for i in 0..1000 {
        let region = ["eu", "us", "ap"][i % 3];
        let disk = ["ssd", "hdd"][i % 2];
        s.machine(&format!("m{i:04}"), &[("region", region), ("disk", disk)]);
    }
    for i in 0..6000 {
        s.unit(&format!("u{i:05}.service"), "");
    }
    for i in 0..1000 {
        s.unit(&format!("eu{i:04}.service"), "MachineMetadata=region=eu");
        s.unit(
            &format!("fast{i:04}.service"),
            "MachineMetadata=region=eu region=us\nMachineMetadata=disk=ssd",
        );
    }
    for i in 0..1000 {
        s.unit(&format!("web@{i}.service"), "Conflicts=web@*.service");
    }
    for i in 0..500 {
        s.unit(
            &format!("side{i:04}.service"),
            &format!("MachineOf=u{i:05}.service"),
        );
    }
    for i in 0..400 {
        s.unit(
            &format!("pin{i:04}.service"),
            &format!("MachineID=m{:04}", (i * 7) % 1000),
        );
    }
    for i in 0..100 {
        s.unit(
            &format!("mars{i:03}.service"),
            "MachineMetadata=region=mars",
        );
    }
    s
}

/// Every placement satisfies every constraint.
fn verify(s: &Sim) {
    // Live and held machines (the units of a held machine stay there).
    let known: HashMap<&str, &BTreeMap<String, String>> =
        s.machines.iter().map(|m| (m.0.as_str(), &m.1)).collect();
    let mut per_machine: HashMap<&str, Vec<UnitInput<'_>>> = HashMap::new();
    for (u, st) in &s.units {
        let Some(m) = s.on(u.name.as_str()) else {
            continue;
        };
        let md = known
            .get(m)
            .unwrap_or_else(|| panic!("{} on a machine neither live nor held", u.name));
        assert!(
            u.fleet.metadata_matches(md),
            "{} on {m} without its metadata",
            u.name
        );
        if let Some(id) = &u.fleet.machine_id {
            assert_eq!(id, m, "{}", u.name);
        }
        for p in &u.fleet.machine_of {
            assert_eq!(s.on(p.as_str()), Some(m), "{} not with {p}", u.name);
        }
        per_machine
            .entry(m)
            .or_default()
            .push(UnitInput::of(u, *st));
    }
    for (m, here) in &per_machine {
        for (i, a) in here.iter().enumerate() {
            for b in &here[i + 1..] {
                assert!(!conflict(a, b), "{} and {} conflict on {m}", a.name, b.name);
            }
        }
    }
}

#[test]
fn ten_thousand_units_on_a_thousand_machines() {
    let mut s = big_cluster();
    let p = s.step();
    assert_eq!(p.changes.len(), 9900);
    assert!(p.changes.iter().all(|c| matches!(c, Change::Place { .. })));
    let unplaced: Vec<&str> = p.unplaceable.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(unplaced.len(), 100);
    assert!(p
        .unplaceable
        .iter()
        .all(|(u, r)| u.starts_with("mars") && r.to_string() == "no live machine has region=mars"));
    verify(&s);
    let loads = s.loads();
    let (min, max) = (loads.values().min().copied(), loads.values().max().copied());
    assert_eq!(
        (min, max),
        (Some(9), Some(10)),
        "least-loaded spreads 9,900 units as 9 or 10 per machine"
    );

    // A new leader plans from the written schedule: nothing changes.
    let again = s.plan();
    assert_eq!((again.changes.len(), again.unplaceable.len()), (0, 100));

    // 20 machines die (past the bound), 20 are held: only the dead machines' units move.
    let dead: HashSet<String> = (0..20).map(|i| format!("m{:04}", i * 50)).collect();
    let held: Vec<String> = (0..20).map(|i| format!("m{:04}", i * 50 + 1)).collect();
    let before = s.schedule.clone();
    for m in &dead {
        s.set_status(m, None);
    }
    for m in &held {
        s.set_status(m, Some(MachineStatus::Held));
    }
    let p = s.step();
    for c in &p.changes {
        match c {
            Change::Move { from, .. } | Change::Remove { from, .. } => {
                assert!(dead.contains(from), "{c:?}")
            }
            Change::Place { .. } => panic!("nothing new to place: {c:?}"),
        }
    }
    let moved = before
        .values()
        .filter(|pl| dead.contains(&pl.machine))
        .count();
    assert_eq!(p.changes.len(), moved);
    for (u, pl) in &before {
        if held.contains(&pl.machine) {
            assert_eq!(
                s.on(u),
                Some(pl.machine.as_str()),
                "{u} left a held machine"
            );
        }
    }
    verify(&s);
    assert_eq!(s.plan().changes.len(), 0);
}
