use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn members(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A fake registry: machine -> (value, mod_revision).
#[derive(Default)]
struct Store {
    kv: BTreeMap<String, (String, u64)>,
    rev: u64,
}

impl Store {
    fn allocated(&self) -> Vec<Allocated> {
        self.kv
            .iter()
            .map(|(m, (v, r))| Allocated {
                machine: m.clone(),
                value: v.clone(),
                mod_revision: *r,
            })
            .collect()
    }
    fn apply(&mut self, plan: &SubnetPlan) {
        self.rev += 1;
        for w in &plan.writes {
            match w {
                SubnetWrite::Put { machine, subnet } => {
                    self.kv
                        .insert(machine.clone(), (subnet.to_string(), self.rev));
                }
                SubnetWrite::Delete { machine } => {
                    self.kv.remove(machine);
                }
            }
        }
    }
    fn subnets(&self) -> BTreeMap<String, Ipv4Net> {
        parse_allocations(&self.allocated())
    }
}

fn assert_disjoint(cfg: &SubnetConfig, subnets: &BTreeMap<String, Ipv4Net>) {
    let all: Vec<(&String, &Ipv4Net)> = subnets.iter().collect();
    for (i, (m, a)) in all.iter().enumerate() {
        assert!(
            cfg.cluster.contains(*a) && a.prefix_len() == cfg.prefix_len,
            "{m}: {a}"
        );
        for (n, b) in &all[i + 1..] {
            assert!(
                !a.contains(*b) && !b.contains(*a),
                "{m} {a} overlaps {n} {b}"
            );
        }
    }
}

#[test]
fn new_members_get_distinct_subnets_and_a_second_plan_writes_nothing() {
    let cfg = SubnetConfig::default();
    let mut store = Store::default();
    let m = members(&["n1", "n2", "n3"]);
    let plan = plan_subnets(&cfg, &store.allocated(), &m);
    assert_eq!(plan.writes.len(), 3);
    assert!(plan.unallocated.is_empty() && plan.replaced.is_empty());
    store.apply(&plan);
    assert_disjoint(&cfg, &store.subnets());
    assert_eq!(store.subnets().len(), 3);
    assert_eq!(
        plan_subnets(&cfg, &store.allocated(), &m),
        SubnetPlan::default()
    );
}

#[test]
fn every_leader_computes_the_same_plan_from_the_same_state() {
    let cfg = SubnetConfig::default();
    let mut store = Store::default();
    store.apply(&plan_subnets(&cfg, &[], &members(&["a", "b"])));
    let before = store.subnets();
    let m = members(&["a", "b", "c", "d"]);
    let mut shuffled = store.allocated();
    shuffled.reverse();
    let p1 = plan_subnets(&cfg, &store.allocated(), &m);
    let p2 = plan_subnets(&cfg, &shuffled, &m);
    assert_eq!(p1, p2);
    store.apply(&p1);
    // the existing machines kept theirs
    for (machine, subnet) in &before {
        assert_eq!(store.subnets()[machine], *subnet);
    }
}

#[test]
fn a_removed_machine_is_freed_and_its_subnet_reusable() {
    let cfg = SubnetConfig::new("10.88.0.0/24".parse().unwrap(), 25).unwrap();
    let mut store = Store::default();
    store.apply(&plan_subnets(&cfg, &[], &members(&["a", "b"])));
    let a_net = store.subnets()["a"];
    let plan = plan_subnets(&cfg, &store.allocated(), &members(&["b", "c"]));
    assert_eq!(
        plan.writes[0],
        SubnetWrite::Delete {
            machine: "a".into()
        }
    );
    assert_eq!(
        plan.writes[1],
        SubnetWrite::Put {
            machine: "c".into(),
            subnet: a_net
        },
        "only a's slot is free"
    );
    store.apply(&plan);
    assert_disjoint(&cfg, &store.subnets());
}

#[test]
fn a_full_range_leaves_members_unallocated() {
    let cfg = SubnetConfig::new("10.88.0.0/16".parse().unwrap(), 17).unwrap();
    let plan = plan_subnets(&cfg, &[], &members(&["a", "b", "c"]));
    assert_eq!(plan.writes.len(), 2);
    assert_eq!(plan.unallocated.len(), 1);
}

#[test]
fn bad_and_overlapping_allocations_are_replaced() {
    let cfg = SubnetConfig::default();
    let alloc = |m: &str, v: &str| Allocated {
        machine: m.into(),
        value: v.into(),
        mod_revision: 5,
    };
    let current = [
        alloc("a", "10.88.7.0/24"),
        alloc("b", "10.88.7.0/24"), // same as a: b loses (name order)
        alloc("c", "10.99.0.0/24"), // outside the range
        alloc("d", "10.88.8.0/25"), // wrong size
        alloc("e", "10.88.9.1/24"), // host bits
        alloc("f", "garbage"),
        alloc("g", " 10.88.10.0/24"), // fine after trimming
    ];
    let m = members(&["a", "b", "c", "d", "e", "f", "g"]);
    let plan = plan_subnets(&cfg, &current, &m);
    assert_eq!(plan.replaced.len(), 5, "{:?}", plan.replaced);
    let puts: Vec<&str> = plan
        .writes
        .iter()
        .filter_map(|w| match w {
            SubnetWrite::Put { machine, .. } => Some(machine.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(puts, ["b", "c", "d", "e", "f"]);
    let mut store = Store::default();
    for a in &current {
        store.kv.insert(a.machine.clone(), (a.value.clone(), 5));
    }
    store.apply(&plan);
    assert_disjoint(&cfg, &store.subnets());
    assert_eq!(store.subnets()["a"].to_string(), "10.88.7.0/24");
    assert_eq!(store.subnets()["g"].to_string(), "10.88.10.0/24");
}

#[test]
fn the_transaction_compares_every_written_key() {
    let cfg = SubnetConfig::default();
    let current = [Allocated {
        machine: "gone".into(),
        value: "10.88.1.0/24".into(),
        mod_revision: 42,
    }];
    let plan = plan_subnets(&cfg, &current, &members(&["new"]));
    let Some(Command::Txn { compare, ops }) = plan.to_txn(&current) else {
        panic!("no txn")
    };
    assert_eq!(
        compare,
        [
            Compare {
                key: "/network/subnets/gone".into(),
                mod_revision: 42
            },
            Compare {
                key: "/network/subnets/new".into(),
                mod_revision: 0
            }
        ]
    );
    assert_eq!(
        ops[0],
        TxnOp::Delete {
            key: "/network/subnets/gone".into()
        }
    );
    assert!(matches!(&ops[1], TxnOp::Put { key, lease: 0, .. } if key == "/network/subnets/new"));
    assert_eq!(SubnetPlan::default().to_txn(&current), None);
}

#[test]
fn config_is_checked() {
    assert!(SubnetConfig::new("10.88.0.1/16".parse().unwrap(), 24)
        .unwrap_err()
        .contains("host bits"));
    assert!(SubnetConfig::new("10.88.0.0/16".parse().unwrap(), 8)
        .unwrap_err()
        .contains("between /16"));
    assert!(SubnetConfig::new("10.88.0.0/16".parse().unwrap(), 31).is_err());
    assert!(SubnetConfig::new("0.0.0.0/0".parse().unwrap(), 30)
        .unwrap_err()
        .contains("2^24"));
    assert_eq!(SubnetConfig::default().cluster.to_string(), "10.88.0.0/16");
}

#[test]
fn keys_outside_the_prefix_are_not_allocations() {
    assert_eq!(Allocated::from_kv("/machines/a", "x", 1), None);
    assert_eq!(Allocated::from_kv("/network/subnets/", "x", 1), None);
    assert_eq!(Allocated::from_kv("/network/subnets/a/b", "x", 1), None);
    assert_eq!(
        Allocated::from_kv("/network/subnets/a", "x", 1)
            .unwrap()
            .machine,
        "a"
    );
}

/// Random joins and removals over a small range: never an overlap, every member has a
/// subnet while there is room, and a member's subnet never changes while it stays.
#[test]
fn random_membership_changes_keep_the_invariants() {
    let cfg = SubnetConfig::new("10.88.0.0/24".parse().unwrap(), 28).unwrap(); // 16 slots
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = Store::default();
        let mut m: BTreeSet<String> = BTreeSet::new();
        for _ in 0..100 {
            let name = format!("n{}", rng.gen_range(0..24));
            if rng.gen_bool(0.6) {
                m.insert(name);
            } else {
                m.remove(&name);
            }
            let before = store.subnets();
            let plan = plan_subnets(&cfg, &store.allocated(), &m);
            store.apply(&plan);
            let after = store.subnets();
            assert_disjoint(&cfg, &after);
            for (machine, subnet) in &before {
                if m.contains(machine) {
                    assert_eq!(
                        after.get(machine),
                        Some(subnet),
                        "seed {seed}: {machine} moved"
                    );
                } else {
                    assert!(
                        !after.contains_key(machine),
                        "seed {seed}: {machine} not freed"
                    );
                }
            }
            let want = m.len().min(16);
            assert_eq!(after.len(), want, "seed {seed}");
            assert_eq!(plan.unallocated.len(), m.len() - want);
            assert_eq!(
                plan_subnets(&cfg, &store.allocated(), &m).writes,
                vec![],
                "seed {seed}: not a fixpoint"
            );
        }
    }
}
