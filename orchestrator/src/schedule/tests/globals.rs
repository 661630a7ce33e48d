//! Global units: evaluated by each machine's agent.

use super::*;

fn verdicts(s: &Sim, machine: &str) -> Vec<(String, Result<(), String>)> {
    let m = s.machines.iter().find(|m| m.0 == machine).expect("machine");
    let mi = MachineInput {
        name: &m.0,
        metadata: &m.1,
        status: m.2,
    };
    let all: Vec<UnitInput<'_>> = s
        .units
        .iter()
        .map(|(u, st)| UnitInput::of(u, *st))
        .collect();
    let here: Vec<UnitInput<'_>> = all
        .iter()
        .filter(|u| s.on(u.name.as_str()) == Some(machine))
        .copied()
        .collect();
    globals_on(&mi, &here, &all)
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.map_err(|e| e.to_string())))
        .collect()
}

#[test]
fn globals_as_machines_join() {
    let mut s = Sim::new();
    s.unit("mon.service", "Global=true");
    s.unit("ssd-cache.service", "Global=true\nMachineMetadata=disk=ssd");
    s.unit_in("off.service", "Global=true", DesiredState::Inactive);
    s.machine("m1", &[]);
    assert_eq!(
        verdicts(&s, "m1"),
        [
            ("mon.service".into(), Ok(())),
            (
                "ssd-cache.service".into(),
                Err("machine m1 does not have disk=ssd".into())
            )
        ]
    );
    // A machine joining later runs them too, as its metadata allows; nothing is scheduled.
    s.machine("m2", &[("disk", "ssd")]);
    assert_eq!(
        verdicts(&s, "m2"),
        [
            ("mon.service".into(), Ok(())),
            ("ssd-cache.service".into(), Ok(()))
        ]
    );
    assert_eq!(s.plan(), Plan::default());
}

#[test]
fn global_conflicts_with_scheduled_units_and_other_globals() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]);
    s.unit("db.service", "MachineID=m1");
    s.step();
    // A global unit submitted later does not push the scheduled unit away: it skips m1.
    s.unit("agent.service", "Global=true\nConflicts=db.service");
    s.unit("b-global.service", "Global=true");
    s.unit(
        "c-global.service",
        "Global=true\nConflicts=b-global.service",
    );
    assert_eq!(s.plan(), Plan::default());
    assert_eq!(s.on("db.service"), Some("m1"));
    assert_eq!(
        verdicts(&s, "m1"),
        [
            (
                "agent.service".into(),
                Err("conflicts with db.service on m1".into())
            ),
            ("b-global.service".into(), Ok(())),
            (
                "c-global.service".into(),
                Err("conflicts with b-global.service on m1".into())
            ),
        ]
    );
    assert_eq!(verdicts(&s, "m2")[0], ("agent.service".into(), Ok(())));
    // A new unit conflicting with the global unit goes where it does not run (m2 is less
    // loaded, but runs agent.service).
    s.unit("db2.service", "Conflicts=agent.service");
    s.step();
    assert_eq!(s.on("db2.service"), Some("m1"));
    // global_eligible alone, on a held machine.
    let units: Vec<UnitInput<'_>> = s
        .units
        .iter()
        .map(|(u, st)| UnitInput::of(u, *st))
        .collect();
    let md = BTreeMap::new();
    let held = MachineInput {
        name: "m9",
        metadata: &md,
        status: MachineStatus::Held,
    };
    assert_eq!(
        global_eligible(&units[1], &held, &[])
            .expect_err("held")
            .to_string(),
        "machine m9 is not live"
    );
}
