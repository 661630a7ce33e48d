//! [`plan`]: keep what is still valid, place the rest, and write down the difference.
//!
//! 1. Keep: each scheduled unit stays on a held machine, or on a live machine where
//!    `MachineID`/`MachineMetadata` still hold and no unit kept before it (name order)
//!    conflicts with it; then units replaced by a unit on their machine, and followers whose
//!    `MachineOf` units are not all on their machine, are released (cascading to their own
//!    followers).
//! 2. Place: every unplaced unit, in name order with `MachineOf` units first; a unit placed on
//!    a machine pushes the units it replaces there (and their followers) back into the queue.
//! 3. Diff against the current schedule.

use std::collections::{HashMap, VecDeque};

use super::constraints::{describe, dynamic_check, replaces, static_check};
use super::state::State;
use super::{Change, DesiredState, Input, MachineStatus, Plan, Reason};

/// Decides the schedule (see the module doc of `schedule`).
pub fn plan(input: &Input<'_>) -> Plan {
    let mut st = State::new(input);
    let n = st.units.len();
    let mut left_because: Vec<Option<Reason>> = vec![None; n];
    keep(&mut st, input, &mut left_because);
    let mut failed: Vec<Option<Reason>> = vec![None; n];
    place_all(&mut st, &mut left_because, &mut failed);
    diff(&st, input, left_because, failed)
}

fn keep(st: &mut State<'_>, input: &Input<'_>, left_because: &mut [Option<Reason>]) {
    for u in 0..st.units.len() as u32 {
        let Some(p) = input.schedule.get(st.unit(u).name.as_str()) else {
            continue;
        };
        let Some(&m) = st.machine_idx.get(p.machine.as_str()) else {
            left_because[u as usize] =
                Some(Reason::new(None, format!("machine {} is gone", p.machine)));
            continue;
        };
        if st.machine(m).status == MachineStatus::Held {
            st.place(u, m);
            continue;
        }
        let ok = static_check(st.unit(u).fleet, st.machine(m))
            .and_then(|()| dynamic_check(st, u, m, false));
        match ok {
            Ok(()) => st.place(u, m),
            Err(r) => left_because[u as usize] = Some(r),
        }
    }
    // Units replaced by a unit on their (live) machine leave it.
    for m in 0..st.machines.len() as u32 {
        if !st.is_live(m) || !st.has_replacing(m) {
            continue;
        }
        let here = st.on[m as usize].clone();
        for &v in &here {
            let replacer = here
                .iter()
                .find(|&&r| st.assign[r as usize] == Some(m) && replaces(st.unit(r), st.unit(v)));
            if let Some(&r) = replacer {
                let reason = format!("replaced by {} on {}", st.unit(r).name, st.machine(m).name);
                release(
                    st,
                    v,
                    Reason::new(Some("Replaces"), reason),
                    left_because,
                    &mut Vec::new(),
                );
            }
        }
    }
    // Followers whose MachineOf units are elsewhere leave too.
    for u in 0..st.units.len() as u32 {
        if let Some(m) = st.assign[u as usize] {
            if st.is_live(m) {
                if let Err(r) = peers_here(st, u, m) {
                    release(st, u, r, left_because, &mut Vec::new());
                }
            }
        }
    }
}

/// Takes `u` off its machine with `reason`, and its followers there with it (appended to
/// `released` after `u`).
fn release(
    st: &mut State<'_>,
    u: u32,
    reason: Reason,
    left_because: &mut [Option<Reason>],
    released: &mut Vec<u32>,
) {
    let Some(m) = st.assign[u as usize] else {
        return;
    };
    let followers = st.followers_on(u, m);
    st.unplace(u);
    left_because[u as usize].get_or_insert(reason);
    released.push(u);
    for f in followers {
        let why = format!(
            "MachineOf={}: it left {}",
            st.unit(u).name,
            st.machine(m).name
        );
        release(
            st,
            f,
            Reason::new(Some("MachineOf"), why),
            left_because,
            released,
        );
    }
}

/// `Ok` when every `MachineOf` unit of `u` is placed on `m`.
fn peers_here(st: &State<'_>, u: u32, m: u32) -> Result<(), Reason> {
    for p in &st.unit(u).fleet.machine_of {
        match st
            .unit_idx
            .get(p.as_str())
            .and_then(|&pi| st.assign[pi as usize])
        {
            Some(pm) if pm == m => {}
            _ => {
                let why = format!("MachineOf={p}: not on {}", st.machine(m).name);
                return Err(Reason::new(Some("MachineOf"), why));
            }
        }
    }
    Ok(())
}

/// Unplaced units, in name order, each after its `MachineOf` units.
fn placement_order(st: &State<'_>) -> Vec<u32> {
    // 0 = not visited, 1 = being visited (a MachineOf cycle stops here), 2 = done.
    let mut mark = vec![0u8; st.units.len()];
    let mut order = Vec::new();
    for start in 0..st.units.len() as u32 {
        let mut stack = vec![(start, false)];
        while let Some((u, expanded)) = stack.pop() {
            let ui = u as usize;
            if expanded {
                mark[ui] = 2;
                if st.assign[ui].is_none() {
                    order.push(u);
                }
                continue;
            }
            if mark[ui] != 0 {
                continue;
            }
            mark[ui] = 1;
            stack.push((u, true));
            for p in st.unit(u).fleet.machine_of.iter().rev() {
                if let Some(&pi) = st.unit_idx.get(p.as_str()) {
                    if mark[pi as usize] == 0 {
                        stack.push((pi, false));
                    }
                }
            }
        }
    }
    order
}

fn place_all(
    st: &mut State<'_>,
    left_because: &mut [Option<Reason>],
    failed: &mut [Option<Reason>],
) {
    let mut queue: VecDeque<u32> = placement_order(st).into();
    // Each placement can push back the units it replaces; bound the work all the same.
    let mut budget = 4 * st.units.len() + 16;
    while let Some(u) = queue.pop_front() {
        if st.assign[u as usize].is_some() {
            continue;
        }
        if budget == 0 {
            failed[u as usize] = Some(Reason::new(
                Some("Replaces"),
                "replacements did not settle in this plan",
            ));
            continue;
        }
        budget -= 1;
        match choose(st, u) {
            Err(r) => failed[u as usize] = Some(r),
            Ok(m) => {
                st.place(u, m);
                failed[u as usize] = None;
                kick_replaced(st, u, m, left_because, &mut queue);
            }
        }
    }
}

/// Units on `m` replaced by `u` leave, with their followers, and are queued again.
fn kick_replaced(
    st: &mut State<'_>,
    u: u32,
    m: u32,
    left_because: &mut [Option<Reason>],
    queue: &mut VecDeque<u32>,
) {
    if st.unit(u).fleet.replaces.is_empty() {
        return;
    }
    let victims: Vec<u32> = st.on[m as usize]
        .iter()
        .copied()
        .filter(|&v| replaces(st.unit(u), st.unit(v)))
        .collect();
    let mut released = Vec::new();
    for v in victims {
        let why = format!("replaced by {} on {}", st.unit(u).name, st.machine(m).name);
        release(
            st,
            v,
            Reason::new(Some("Replaces"), why),
            left_because,
            &mut released,
        );
    }
    queue.extend(released);
}

/// The machine for `u`, or why there is none.
fn choose(st: &mut State<'_>, u: u32) -> Result<u32, Reason> {
    let fleet = st.unit(u).fleet;
    if let Some(first) = fleet.machine_of.first() {
        let m = peers_machine(st, u)?;
        return check_one(st, u, m).map(|()| m).map_err(|r| {
            let why = format!("MachineOf={first}: its machine {}: {r}", st.machine(m).name);
            Reason::new(r.key.or(Some("MachineOf")), why)
        });
    }
    if let Some(id) = &fleet.machine_id {
        let Some(&m) = st.machine_idx.get(id.as_str()) else {
            return Err(Reason::new(
                Some("MachineID"),
                format!("MachineID={id}: no live machine {id}"),
            ));
        };
        return check_one(st, u, m).map(|()| m);
    }
    let g = st.group(&fleet.machine_metadata);
    if st.group_is_empty(g) {
        let msg = if fleet.machine_metadata.is_empty() {
            "no live machine".to_string()
        } else {
            format!("no live machine has {}", describe(&fleet.machine_metadata))
        };
        return Err(Reason::new(
            Some("MachineMetadata").filter(|_| !fleet.machine_metadata.is_empty()),
            msg,
        ));
    }
    let mut first_refusal = None;
    for m in st.group_machines(g) {
        match dynamic_check(st, u, m, true) {
            Ok(()) => return Ok(m),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    let r = first_refusal.unwrap_or_else(|| Reason::new(None, "no live machine"));
    let scope = if fleet.machine_metadata.is_empty() {
        String::new()
    } else {
        format!(" with {}", describe(&fleet.machine_metadata))
    };
    Err(Reason::new(
        r.key,
        format!("every live machine{scope} is refused; the least loaded: {r}"),
    ))
}

/// The one machine all of `u`'s `MachineOf` units are on.
fn peers_machine(st: &State<'_>, u: u32) -> Result<u32, Reason> {
    let mut at: Option<(u32, &str)> = None;
    for p in &st.unit(u).fleet.machine_of {
        let Some(&pi) = st.unit_idx.get(p.as_str()) else {
            return Err(Reason::new(
                Some("MachineOf"),
                format!("MachineOf={p}: {p} is not loaded"),
            ));
        };
        let Some(pm) = st.assign[pi as usize] else {
            return Err(Reason::new(
                Some("MachineOf"),
                format!("MachineOf={p}: {p} is not placed"),
            ));
        };
        match at {
            Some((m, other)) if m != pm => {
                let why = format!(
                    "MachineOf: {other} is on {} and {p} on {}",
                    st.machine(m).name,
                    st.machine(pm).name
                );
                return Err(Reason::new(Some("MachineOf"), why));
            }
            _ => at = Some((pm, p.as_str())),
        }
    }
    at.map(|(m, _)| m)
        .ok_or_else(|| Reason::new(Some("MachineOf"), "no MachineOf unit"))
}

/// Every constraint of `u` against the single machine `m`.
fn check_one(st: &State<'_>, u: u32, m: u32) -> Result<(), Reason> {
    if !st.is_live(m) {
        let key = if st.unit(u).fleet.machine_id.is_some() {
            Some("MachineID")
        } else {
            None
        };
        return Err(Reason::new(
            key,
            format!("machine {} is not live", st.machine(m).name),
        ));
    }
    static_check(st.unit(u).fleet, st.machine(m))?;
    dynamic_check(st, u, m, true)
}

fn diff(
    st: &State<'_>,
    input: &Input<'_>,
    left_because: Vec<Option<Reason>>,
    failed: Vec<Option<Reason>>,
) -> Plan {
    let mut plan = Plan::default();
    for (u, (left, fail)) in left_because.into_iter().zip(failed).enumerate() {
        let name = st.units[u].name.as_str();
        let now = st.assign[u].map(|m| st.machines[m as usize].name);
        match (input.schedule.get(name), now) {
            (None, Some(m)) => plan.changes.push(Change::Place {
                unit: name.into(),
                machine: m.into(),
            }),
            (Some(p), Some(m)) if p.machine != m => plan.changes.push(Change::Move {
                unit: name.into(),
                from: p.machine.clone(),
                to: m.into(),
                prev_revision: p.mod_revision,
                reason: left.unwrap_or_else(|| Reason::new(None, "moved")),
            }),
            (Some(p), None) => plan.changes.push(Change::Remove {
                unit: name.into(),
                from: p.machine.clone(),
                prev_revision: p.mod_revision,
                reason: fail
                    .clone()
                    .or(left)
                    .unwrap_or_else(|| Reason::new(None, "unplaceable")),
            }),
            _ => {}
        }
        if now.is_none() {
            let reason = fail.unwrap_or_else(|| Reason::new(None, "unplaceable"));
            plan.unplaceable.push((name.into(), reason));
        }
    }
    remove_unscheduled(st, input, &mut plan);
    plan.changes.sort_by(|a, b| a.unit().cmp(b.unit()));
    plan
}

/// `/schedule` entries of units that are not to be placed.
fn remove_unscheduled(st: &State<'_>, input: &Input<'_>, plan: &mut Plan) {
    let by_name: HashMap<&str, _> = input.units.iter().map(|u| (u.name.as_str(), u)).collect();
    for (name, p) in input.schedule {
        if st.unit_idx.contains_key(name.as_str()) {
            continue;
        }
        let why = match by_name.get(name.as_str()) {
            None => "the unit is not submitted",
            Some(u) if u.name.is_template() => "a template is never placed",
            Some(u) if u.fleet.global => {
                "a global unit is not placed (every eligible machine runs it)"
            }
            Some(u) if u.state == DesiredState::Inactive => "desired state inactive",
            Some(_) => "not placeable",
        };
        plan.changes.push(Change::Remove {
            unit: name.clone(),
            from: p.machine.clone(),
            prev_revision: p.mod_revision,
            reason: Reason::new(None, why),
        });
    }
}
