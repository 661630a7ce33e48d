//! Each placement rule, its unplaceable reason, rescheduling and stability.

use super::*;

#[test]
fn least_loaded_spreading_ties_by_name() {
    let mut s = Sim::new();
    s.machine("m2", &[]).machine("m1", &[]).machine("m3", &[]);
    for i in 0..7 {
        s.unit(&format!("u{i}.service"), "");
    }
    let p = s.step();
    assert_eq!(p.changes.len(), 7);
    assert!(p.unplaceable.is_empty());
    assert_eq!(s.loads().values().copied().collect::<Vec<_>>(), [3, 2, 2]);
    assert_eq!(
        (
            s.on("u0.service"),
            s.on("u1.service"),
            s.on("u2.service"),
            s.on("u3.service")
        ),
        (Some("m1"), Some("m2"), Some("m3"), Some("m1"))
    );
}

#[test]
fn stable_no_rebalancing_and_fresh_plans_change_nothing() {
    let mut s = Sim::new();
    s.machine("m1", &[]);
    for i in 0..4 {
        s.unit(&format!("u{i}.service"), "");
    }
    s.step();
    s.machine("m2", &[]);
    // A new machine does not pull placed units over; a new unit goes to it.
    assert_eq!(s.plan(), Plan::default());
    s.unit("new.service", "");
    let p = s.step();
    assert_eq!(
        p.changes,
        [Change::Place {
            unit: "new.service".into(),
            machine: "m2".into()
        }]
    );
    // A fresh scheduler (a new leader) given this schedule changes nothing, twice.
    assert_eq!(s.plan(), Plan::default());
    assert_eq!(s.plan(), Plan::default());
}

#[test]
fn machine_id() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]).machine("m3", &[]);
    s.unit("a.service", "MachineID=m3")
        .unit("b.service", "MachineID=m9");
    let p = s.step();
    assert_eq!(s.on("a.service"), Some("m3"));
    assert_eq!(
        Sim::why(&p, "b.service"),
        "MachineID=m9: no live machine m9"
    );
    assert_eq!(p.unplaceable[0].1.key, Some("MachineID"));
    s.set_status("m2", Some(MachineStatus::Held));
    s.unit("c.service", "MachineID=m2");
    assert_eq!(Sim::why(&s.step(), "c.service"), "machine m2 is not live");
}

#[test]
fn machine_metadata_or_and_reasons() {
    let mut s = Sim::new();
    s.machine("eu1", &[("region", "eu"), ("disk", "hdd")]);
    s.machine("eu2", &[("region", "eu"), ("disk", "ssd")]);
    s.machine("us1", &[("region", "us"), ("disk", "ssd")]);
    s.unit("ssd-eu.service", "MachineMetadata=region=eu disk=ssd");
    s.unit(
        "z-any-ssd.service",
        "MachineMetadata=region=eu\nMachineMetadata=region=us disk=ssd",
    );
    s.unit("mars.service", "MachineMetadata=region=mars");
    s.unit(
        "both.service",
        "MachineMetadata=region=mars region=venus disk=ssd",
    );
    let p = s.step();
    assert_eq!(s.on("ssd-eu.service"), Some("eu2"));
    // eu2 has one unit now: the least loaded ssd machine in eu or us is us1.
    assert_eq!(s.on("z-any-ssd.service"), Some("us1"));
    assert_eq!(
        Sim::why(&p, "mars.service"),
        "no live machine has region=mars"
    );
    assert_eq!(
        Sim::why(&p, "both.service"),
        "no live machine has disk=ssd and (region=mars or region=venus)"
    );
    assert_eq!(p.unplaceable.len(), 2);
}

#[test]
fn no_machines_at_all() {
    let mut s = Sim::new();
    s.unit("a.service", "");
    let p = s.step();
    assert_eq!(Sim::why(&p, "a.service"), "no live machine");
    assert!(p.changes.is_empty());
}

#[test]
fn conflicts_are_symmetric() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]);
    // Only b declares the conflict; a, placed first, still keeps b away.
    s.unit("a.service", "")
        .unit("b.service", "Conflicts=a.service");
    s.unit("c.service", "MachineOf=a.service");
    let p = s.step();
    assert!(p.unplaceable.is_empty());
    assert_ne!(s.on("a.service"), s.on("b.service"));
    // d conflicts with both a and b: every machine refuses it.
    s.unit("d.service", "Conflicts=a.service b.service");
    let p = s.step();
    assert_eq!(
        Sim::why(&p, "d.service"),
        "every live machine is refused; the least loaded: conflicts with b.service on m2"
    );
    assert_eq!(p.unplaceable[0].1.key, Some("Conflicts"));
    // e is declared by nobody but is matched by f's glob: f cannot follow e's machine.
    s.unit("e@1.service", "")
        .unit("f.service", "Conflicts=e@*.service\nMachineOf=g.service");
    s.unit("g.service", "MachineOf=e@1.service");
    let p = s.step();
    assert_eq!(s.on("g.service"), s.on("e@1.service"));
    assert!(
        Sim::why(&p, "f.service").starts_with("MachineOf=g.service: its machine"),
        "{p:?}"
    );
    assert!(
        Sim::why(&p, "f.service").ends_with("conflicts with e@1.service on m1")
            || Sim::why(&p, "f.service").ends_with("conflicts with e@1.service on m2")
    );
}

#[test]
fn siblings_of_a_template_spread_one_per_machine() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]).machine("m3", &[]);
    for i in 1..=4 {
        s.unit(&format!("web@{i}.service"), "Conflicts=web@*.service");
    }
    let p = s.step();
    let mut machines: Vec<_> = (1..=3)
        .map(|i| s.on(&format!("web@{i}.service")).expect("placed"))
        .collect();
    machines.sort();
    assert_eq!(machines, ["m1", "m2", "m3"]);
    assert!(Sim::why(&p, "web@4.service").contains("conflicts with web@"));
}

#[test]
fn machine_of_chains_and_follow_the_peer() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]).machine("m3", &[]);
    s.unit("0-filler.service", "MachineID=m1");
    // z-db is placed after its followers by name, but MachineOf orders it first.
    s.unit("a-side.service", "MachineOf=b-mid.service");
    s.unit("b-mid.service", "MachineOf=z-db.service");
    s.unit("z-db.service", "");
    s.unit("orphan.service", "MachineOf=missing.service");
    let p = s.step();
    let m = s.on("z-db.service").expect("placed");
    assert_eq!(m, "m2");
    assert_eq!(
        (s.on("b-mid.service"), s.on("a-side.service")),
        (Some(m), Some(m))
    );
    assert_eq!(
        Sim::why(&p, "orphan.service"),
        "MachineOf=missing.service: missing.service is not loaded"
    );
    // The peer's machine dies: the whole chain moves together.
    s.set_status("m2", None);
    let p = s.step();
    let m = s.on("z-db.service").expect("placed");
    assert_eq!(m, "m3");
    assert_eq!(
        (s.on("b-mid.service"), s.on("a-side.service")),
        (Some(m), Some(m))
    );
    assert_eq!(
        p.changes
            .iter()
            .filter(|c| matches!(c, Change::Move { .. }))
            .count(),
        3
    );
    // Peers on two machines cannot be followed.
    s.unit("x.service", "MachineID=m1")
        .unit("y.service", "MachineID=m3");
    s.unit("xy.service", "MachineOf=x.service y.service");
    assert_eq!(
        Sim::why(&s.step(), "xy.service"),
        "MachineOf: x.service is on m1 and y.service on m3"
    );
    // A follower of an inactive unit is unplaceable.
    s.unit_in("idle.service", "", DesiredState::Inactive)
        .unit("f.service", "MachineOf=idle.service");
    assert_eq!(
        Sim::why(&s.step(), "f.service"),
        "MachineOf=idle.service: idle.service is not loaded"
    );
}

#[test]
fn follower_metadata_must_hold_on_the_peers_machine() {
    let mut s = Sim::new();
    s.machine("m1", &[("disk", "hdd")]);
    s.unit("db.service", "").unit(
        "f.service",
        "MachineOf=db.service\nMachineMetadata=disk=ssd",
    );
    let p = s.step();
    assert_eq!(
        Sim::why(&p, "f.service"),
        "MachineOf=db.service: its machine m1: machine m1 does not have disk=ssd"
    );
    assert_eq!(p.unplaceable[0].1.key, Some("MachineMetadata"));
}

#[test]
fn replaces_moves_the_replaced_unit_away() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]);
    s.unit("old.service", "MachineID=m1")
        .unit("other.service", "MachineID=m2");
    s.step();
    s.unit("old.service", "");
    // new is placed as any unit (least loaded, ties by name: m1), and old leaves m1.
    s.unit("new.service", "Replaces=old.service");
    let p = s.step();
    assert_eq!(s.on("new.service"), Some("m1"));
    assert_eq!(s.on("old.service"), Some("m2"));
    let mv = p
        .changes
        .iter()
        .find(|c| c.unit() == "old.service")
        .expect("old moved");
    match mv {
        Change::Move {
            from, to, reason, ..
        } => {
            assert_eq!((from.as_str(), to.as_str()), ("m1", "m2"));
            assert_eq!(reason.to_string(), "replaced by new.service on m1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.plan(), Plan::default());
    // With one machine, the replaced unit has nowhere to go.
    let mut s = Sim::new();
    s.machine("m1", &[]);
    s.unit("old.service", "")
        .unit("new.service", "Replaces=old*");
    let p = s.step();
    assert_eq!(s.on("new.service"), Some("m1"));
    assert_eq!(
        Sim::why(&p, "old.service"),
        "every live machine is refused; the least loaded: replaced by new.service on m1"
    );
}

#[test]
fn replaced_unit_kept_together_with_its_replacer_leaves_on_the_next_plan() {
    // Both already on m1 (e.g. written by an older leader): the replaced one moves.
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]);
    s.unit("a.service", "")
        .unit("b.service", "Replaces=a.service");
    s.schedule.insert(
        "a.service".into(),
        Placement {
            machine: "m1".into(),
            mod_revision: 7,
        },
    );
    s.schedule.insert(
        "b.service".into(),
        Placement {
            machine: "m1".into(),
            mod_revision: 8,
        },
    );
    let p = s.step();
    assert_eq!(p.changes.len(), 1);
    assert!(
        matches!(&p.changes[0], Change::Move { unit, to, prev_revision: 7, .. } if unit == "a.service" && to == "m2")
    );
}

#[test]
fn reschedule_after_death_held_machines_keep_their_units() {
    let mut s = Sim::new();
    s.machine("m1", &[]).machine("m2", &[]).machine("m3", &[]);
    for i in 0..6 {
        s.unit(&format!("u{i}.service"), "");
    }
    s.step();
    let on_m1: Vec<String> = (0..6)
        .map(|i| format!("u{i}.service"))
        .filter(|u| s.on(u) == Some("m1"))
        .collect();
    let on_m2: Vec<String> = (0..6)
        .map(|i| format!("u{i}.service"))
        .filter(|u| s.on(u) == Some("m2"))
        .collect();
    // m1 is within the at-most-once bound (held), m2 is past it (gone).
    s.set_status("m1", Some(MachineStatus::Held));
    s.set_status("m2", None);
    let p = s.step();
    for u in &on_m1 {
        assert_eq!(s.on(u), Some("m1"), "{u} stays on the held machine");
    }
    for u in &on_m2 {
        assert_eq!(s.on(u), Some("m3"), "{u} moves to the only live machine");
        let c = p.changes.iter().find(|c| c.unit() == u).expect("moved");
        assert!(
            matches!(c, Change::Move { reason, .. } if reason.to_string() == "machine m2 is gone")
        );
    }
    // New units never go to a held machine.
    s.unit("late.service", "");
    s.step();
    assert_eq!(s.on("late.service"), Some("m3"));
    // m1 comes back: nothing moves back.
    s.set_status("m1", Some(MachineStatus::Live));
    assert_eq!(s.plan(), Plan::default());
}

#[test]
fn ineligible_after_metadata_change_moves_or_is_removed() {
    let mut s = Sim::new();
    s.machine("a", &[("role", "web")])
        .machine("b", &[("role", "web")]);
    s.unit("w.service", "MachineMetadata=role=web");
    s.step();
    assert_eq!(s.on("w.service"), Some("a"));
    s.machines[0].1.insert("role".into(), "db".into());
    let p = s.step();
    assert_eq!(s.on("w.service"), Some("b"));
    assert!(
        matches!(&p.changes[0], Change::Move { reason, .. } if reason.to_string() == "machine a does not have role=web")
    );
    s.machines[1].1.clear();
    let p = s.step();
    assert_eq!(s.on("w.service"), None);
    assert!(
        matches!(&p.changes[0], Change::Remove { reason, .. } if reason.to_string() == "no live machine has role=web")
    );
    assert_eq!(Sim::why(&p, "w.service"), "no live machine has role=web");
}

#[test]
fn entries_of_units_not_to_place_are_removed() {
    let mut s = Sim::new();
    s.machine("m1", &[]);
    s.unit("a.service", "")
        .unit("b.service", "")
        .unit("c.service", "");
    s.step();
    s.unit_in("a.service", "", DesiredState::Inactive);
    s.unit("b.service", "Global=true");
    s.units.retain(|(u, _)| u.name.as_str() != "c.service");
    s.schedule.insert(
        "t@.service".into(),
        Placement {
            machine: "m1".into(),
            mod_revision: 99,
        },
    );
    let tmpl = parse_unit("t@.service", "[Service]\nExecStart=/bin/true\n").expect("template");
    s.units.push((tmpl, DesiredState::Launched));
    let p = s.step();
    let reasons: Vec<(String, String)> = p
        .changes
        .iter()
        .map(|c| match c {
            Change::Remove { unit, reason, .. } => (unit.clone(), reason.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("a.service".into(), "desired state inactive".into()),
            (
                "b.service".into(),
                "a global unit is not placed (every eligible machine runs it)".into()
            ),
            ("c.service".into(), "the unit is not submitted".into()),
            ("t@.service".into(), "a template is never placed".into()),
        ]
    );
    assert!(s.schedule.is_empty());
    // Loaded units are placed like launched ones; inactive ones never.
    s.unit_in("l.service", "", DesiredState::Loaded);
    s.step();
    assert_eq!((s.on("l.service"), s.on("a.service")), (Some("m1"), None));
}

#[test]
fn unit_conflicting_with_a_global_unit_avoids_its_machines() {
    let mut s = Sim::new();
    s.machine("m1", &[("gpu", "yes")]).machine("m2", &[]);
    s.unit("g.service", "Global=true\nMachineMetadata=gpu=yes");
    s.unit("a.service", "Conflicts=g.service");
    s.step();
    assert_eq!(s.on("a.service"), Some("m2"));
    s.set_status("m2", None);
    let p = s.step();
    assert_eq!(Sim::why(&p, "a.service"), "every live machine is refused; the least loaded: conflicts with global unit g.service on m1");
}
