//! `[X-Fleet]`: keys, aliases, the per-unit rules and the set rules.

use std::collections::BTreeMap;

use super::*;

fn fleet_unit(name: &str, body: &str) -> Unit {
    ok(
        name,
        &format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{body}\n"),
    )
}

fn fleet(body: &str) -> FleetOptions {
    fleet_unit("a.service", body).fleet
}

fn fleet_refused(body: &str) -> String {
    refused(
        "a.service",
        &format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{body}\n"),
    )
}

fn md(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn keys_and_deprecated_aliases() {
    let f = fleet("X-ConditionMachineID=m1\nGlobal=false\nX-ConditionMachineMetadata=region=eu");
    assert_eq!(f.machine_id.as_deref(), Some("m1"));
    assert!(!f.global);
    let f = fleet("X-ConditionMachineOf=db.service\nX-Conflicts=web*");
    assert_eq!(f.machine_of[0].as_str(), "db.service");
    assert_eq!(f.conflicts[0].as_str(), "web*");
    let f = fleet("Global=yes\nMachineMetadata=disk=ssd");
    assert!(f.global);
    let f = fleet("Replaces=old.service");
    assert_eq!(f.replaces[0].as_str(), "old.service");
    assert!(fleet_refused("X-ConditionMachineBootID=abc")
        .ends_with("not supported (fleet deprecated it); use MachineID="));
    assert_eq!(
        fleet_refused("Machine=x"),
        "a.service:4: [X-Fleet] Machine: unknown key in [X-Fleet] (known: MachineID, MachineOf, MachineMetadata, Conflicts, Global, Replaces)"
    );
}

#[test]
fn metadata_or_within_a_key_and_across_keys() {
    let f = fleet(
        "MachineMetadata=\"region=us-east-1\" \"diskType=SSD\"\nMachineMetadata=region=us-west-1",
    );
    assert!(f.metadata_matches(&md(&[("region", "us-east-1"), ("diskType", "SSD")])));
    assert!(f.metadata_matches(&md(&[
        ("region", "us-west-1"),
        ("diskType", "SSD"),
        ("x", "y")
    ])));
    assert!(
        !f.metadata_matches(&md(&[("region", "us-west-1")])),
        "diskType missing"
    );
    assert!(!f.metadata_matches(&md(&[("region", "eu"), ("diskType", "SSD")])));
    // Unquoted, several pairs in one value.
    let f = fleet("MachineMetadata=a=1 b=2");
    assert_eq!(f.machine_metadata.len(), 2);
    assert!(fleet("").metadata_matches(&md(&[])));
    for v in ["region", "=eu", "region="] {
        assert_eq!(
            fleet_refused(&format!("MachineMetadata={v}")),
            format!("a.service:4: [X-Fleet] MachineMetadata: \"{v}\": want key=value with both non-empty")
        );
    }
    // An empty assignment clears.
    assert!(fleet("MachineMetadata=a=1\nMachineMetadata=")
        .machine_metadata
        .is_empty());
}

#[test]
fn single_valued_keys() {
    assert!(fleet_refused("MachineID=a b").ends_with("takes a single value"));
    assert!(fleet_refused("Global=perhaps")
        .ends_with("not a boolean (want yes/no, true/false, on/off, 1/0)"));
    assert_eq!(
        fleet("MachineID=a\nMachineID=b").machine_id.as_deref(),
        Some("b")
    );
    assert!(!fleet("Global=true\nGlobal=").global);
}

#[test]
fn machine_of_names_are_validated() {
    assert!(fleet_refused("MachineOf=db").ends_with("no suffix (want name.service)"));
    assert!(fleet_refused("MachineOf=db@.service")
        .ends_with("a template is never placed; name an instance"));
    let f = fleet("MachineOf=db.service cache.service");
    assert_eq!(f.machine_of.len(), 2);
}

#[test]
fn globs_as_go_path_match() {
    let g = |s: &str| UnitGlob::parse(s).expect("glob");
    assert!(g("web@*.service").matches("web@1.service"));
    assert!(g("web@*.service").matches("web@.service"));
    assert!(!g("web@*.service").matches("web.service"));
    assert!(g("web?.service").matches("web1.service"));
    assert!(g("web[0-9].service").matches("web7.service"));
    assert!(!g("web[^0-9].service").matches("web7.service"));
    assert!(g("web[^0-9].service").matches("webx.service"));
    assert!(g("web[!0-9].service").matches("webx.service"));
    assert!(g("a\\*.service").matches("a*.service"));
    assert!(!g("a\\*.service").matches("ab.service"));
    assert!(g("a.service").is_literal() && !g("a*").is_literal());
    assert!(UnitGlob::parse("web[").is_err());
    assert!(fleet_refused("Conflicts=web[").contains("[X-Fleet] Conflicts: \"web[\": invalid glob"));
}

#[test]
fn conflicts_direction_helpers() {
    let f = fleet("Conflicts=web@*.service db.service");
    assert!(f.conflicts_with("web@3.service") && f.conflicts_with("db.service"));
    assert!(!f.conflicts_with("cache.service"));
    assert!(fleet("Replaces=old*").replaces_unit("old1.service"));
}

#[test]
fn exclusive_options_as_fleet() {
    for (body, key, reason) in [
        (
            "MachineID=m\nMachineOf=b.service",
            "MachineOf",
            "MachineID= cannot be used with MachineOf=",
        ),
        (
            "MachineID=m\nConflicts=b*",
            "Conflicts",
            "MachineID= cannot be used with Conflicts=",
        ),
        (
            "Global=true\nMachineID=m",
            "MachineID",
            "MachineID= cannot be used with Global=",
        ),
        (
            "MachineID=m\nReplaces=b.service",
            "Replaces",
            "MachineID= cannot be used with Replaces=",
        ),
        (
            "Global=true\nMachineOf=b.service",
            "MachineOf",
            "Global= cannot be used with MachineOf=",
        ),
        (
            "Global=true\nReplaces=b.service",
            "Replaces",
            "Global= cannot be used with Replaces=",
        ),
        (
            "Conflicts=x*\nReplaces=b.service",
            "Replaces",
            "Conflicts= cannot be used with Replaces=",
        ),
    ] {
        let line = 3 + body.lines().count();
        assert_eq!(
            fleet_refused(body),
            format!("a.service:{line}: [X-Fleet] {key}: {reason}"),
            "{body}"
        );
    }
    // What fleet allows together.
    fleet("Global=true\nMachineMetadata=a=b\nConflicts=x*");
    fleet("MachineID=m\nMachineMetadata=a=b");
    fleet("MachineOf=b.service\nMachineMetadata=a=b\nConflicts=c*");
    fleet("Replaces=b.service\nMachineOf=c.service\nMachineMetadata=a=b");
}

#[test]
fn unresolvable_and_self_references() {
    assert_eq!(
        fleet_refused("MachineOf=web@1.service\nConflicts=web@*.service"),
        "a.service:5: [X-Fleet] Conflicts: unresolvable: MachineOf=web@1.service matches Conflicts=web@*.service"
    );
    assert_eq!(
        fleet_refused("MachineOf=b.service\nReplaces=b*"),
        "a.service:5: [X-Fleet] Replaces: unresolvable: MachineOf=b.service matches Replaces=b*"
    );
    assert_eq!(
        fleet_refused("MachineOf=a.service"),
        "a.service:4: [X-Fleet] MachineOf: a unit cannot be MachineOf itself"
    );
    assert_eq!(
        fleet_refused("Replaces=a.service"),
        "a.service:4: [X-Fleet] Replaces: a unit cannot name itself in Replaces="
    );
    assert_eq!(
        fleet_refused("Conflicts=a.service"),
        "a.service:4: [X-Fleet] Conflicts: a unit cannot name itself in Conflicts="
    );
    // A glob also matching the unit itself keeps its siblings away: fine.
    let u = fleet_unit("web@1.service", "Conflicts=web@*.service");
    assert!(u.fleet.conflicts_with("web@2.service"));
    // Specifiers make self-references too.
    assert!(refused(
        "web@1.service",
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOf=%n\n"
    )
    .ends_with("a unit cannot be MachineOf itself"));
}

#[test]
fn set_rules_circular_replaces() {
    let a = fleet_unit("a.service", "Replaces=b.service");
    let b = fleet_unit("b.service", "Replaces=c*");
    let c = fleet_unit("c1.service", "Replaces=a.service");
    let d = fleet_unit("d.service", "Replaces=a.service");
    check_set(&[&a, &b, &d]).expect("a chain is fine");
    let e = check_set(&[&d, &c, &b, &a]).expect_err("cycle");
    assert_eq!(
        e.to_string(),
        "a.service:4: [X-Fleet] Replaces: circular replacement is not allowed: a.service -> b.service -> c1.service -> a.service"
            .replace("circular replacement is not allowed", "circular Replaces")
    );
    // Two instances of one template replacing their siblings replace each other.
    let t = ok(
        "w@.service",
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nReplaces=w@*.service\n",
    );
    let w1 = t
        .for_instance(&UnitName::parse("w@1.service").expect("n"))
        .expect("i");
    let w2 = t
        .for_instance(&UnitName::parse("w@2.service").expect("n"))
        .expect("i");
    check_set(&[&t, &w1]).expect("the template itself is never placed; one instance is fine");
    assert!(check_set(&[&w1, &w2])
        .expect_err("mutual")
        .to_string()
        .ends_with("circular Replaces: w@1.service -> w@2.service -> w@1.service"));
}

#[test]
fn set_rules_circular_machine_of() {
    let a = fleet_unit("a.service", "MachineOf=b.service");
    let b = fleet_unit("b.service", "MachineOf=c.service");
    let c = fleet_unit("c.service", "");
    check_set(&[&a, &b, &c]).expect("chain");
    let c2 = fleet_unit("c.service", "MachineOf=a.service");
    assert_eq!(
        check_set(&[&a, &b, &c2]).expect_err("cycle").to_string(),
        "a.service:4: [X-Fleet] MachineOf: circular MachineOf: a.service -> b.service -> c.service -> a.service"
    );
}
