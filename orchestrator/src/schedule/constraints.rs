//! The constraint checks, shared by the planner and by the agents' `Global` decisions.

use super::state::State;
use super::{DesiredState, MachineInput, MachineStatus, Reason, UnitInput};
use crate::unit::{FleetOptions, MetadataRequirement, UnitName};

/// True when `a` and `b` must not share a machine (either one's `Conflicts` matches the other).
pub(crate) fn conflict(a: &UnitInput<'_>, b: &UnitInput<'_>) -> bool {
    a.name != b.name
        && (a.fleet.conflicts_with(b.name.as_str()) || b.fleet.conflicts_with(a.name.as_str()))
}

/// True when `a` replaces `b` (and not the other way round: mutual replacement is ignored).
pub(crate) fn replaces(a: &UnitInput<'_>, b: &UnitInput<'_>) -> bool {
    a.name != b.name
        && a.fleet.replaces_unit(b.name.as_str())
        && !b.fleet.replaces_unit(a.name.as_str())
}

/// `region=eu`, `(region=eu or region=us) and disk=ssd`.
pub(crate) fn describe(req: &MetadataRequirement) -> String {
    let parts: Vec<String> = req
        .iter()
        .map(|(k, vals)| {
            let alts: Vec<String> = vals.iter().map(|v| format!("{k}={v}")).collect();
            if alts.len() > 1 && req.len() > 1 {
                format!("({})", alts.join(" or "))
            } else {
                alts.join(" or ")
            }
        })
        .collect();
    parts.join(" and ")
}

/// `MachineID` and `MachineMetadata` against one machine.
pub(crate) fn static_check(fleet: &FleetOptions, machine: &MachineInput<'_>) -> Result<(), Reason> {
    if let Some(id) = &fleet.machine_id {
        if id != machine.name {
            return Err(Reason::new(
                Some("MachineID"),
                format!("MachineID={id}: not machine {}", machine.name),
            ));
        }
    }
    if !fleet.metadata_matches(machine.metadata) {
        return Err(Reason::new(
            Some("MachineMetadata"),
            format!(
                "machine {} does not have {}",
                machine.name,
                describe(&fleet.machine_metadata)
            ),
        ));
    }
    Ok(())
}

/// Is global unit `g` running on `m` as far as the planner is concerned: metadata matches and
/// no unit placed there conflicts with it. (Conservative: conflicts between global units are
/// not looked at here, so a unit may be kept off a machine by a global unit that another global
/// unit keeps away.)
fn global_on(st: &State<'_>, g: &UnitInput<'_>, m: u32) -> bool {
    st.is_live(m)
        && g.fleet.metadata_matches(st.machine(m).metadata)
        && !st.on[m as usize].iter().any(|&v| conflict(g, st.unit(v)))
}

/// A unit on `m` that keeps `u` off `m`: a conflict, or a unit replacing `u`; with `globals`,
/// also a global unit running there that conflicts with `u`. (A unit already placed takes
/// precedence over global units, as in fleet, where a machine runs a global unit only if it
/// does not conflict with the units scheduled there: so keeping a unit ignores them.)
pub(crate) fn dynamic_check(st: &State<'_>, u: u32, m: u32, globals: bool) -> Result<(), Reason> {
    let me = st.unit(u);
    let mine = !me.fleet.conflicts.is_empty();
    if mine || st.has_conflicting(m) {
        for &v in &st.on[m as usize] {
            if conflict(me, st.unit(v)) {
                return Err(Reason::new(
                    Some("Conflicts"),
                    format!(
                        "conflicts with {} on {}",
                        st.unit(v).name,
                        st.machine(m).name
                    ),
                ));
            }
        }
    }
    if st.has_replacing(m) {
        for &v in &st.on[m as usize] {
            if replaces(st.unit(v), me) {
                return Err(Reason::new(
                    Some("Replaces"),
                    format!("replaced by {} on {}", st.unit(v).name, st.machine(m).name),
                ));
            }
        }
    }
    if !globals {
        return Ok(());
    }
    for &gi in &st.global_conflicts[u as usize] {
        let g = &st.globals[gi as usize];
        if global_on(st, g, m) {
            return Err(Reason::new(
                Some("Conflicts"),
                format!(
                    "conflicts with global unit {} on {}",
                    g.name,
                    st.machine(m).name
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the global unit `unit` runs on `machine`, given `here`: the units scheduled there and
/// the global units already running there. `Err` names the failed constraint.
pub fn global_eligible(
    unit: &UnitInput<'_>,
    machine: &MachineInput<'_>,
    here: &[UnitInput<'_>],
) -> Result<(), Reason> {
    if machine.status != MachineStatus::Live {
        return Err(Reason::new(
            None,
            format!("machine {} is not live", machine.name),
        ));
    }
    if !unit.fleet.metadata_matches(machine.metadata) {
        return Err(Reason::new(
            Some("MachineMetadata"),
            format!(
                "machine {} does not have {}",
                machine.name,
                describe(&unit.fleet.machine_metadata)
            ),
        ));
    }
    match here.iter().find(|v| conflict(unit, v)) {
        Some(v) => Err(Reason::new(
            Some("Conflicts"),
            format!("conflicts with {} on {}", v.name, machine.name),
        )),
        None => Ok(()),
    }
}

/// The agent's decision for every global unit on its own machine: `scheduled_here` are the
/// units `/schedule` puts there; `globals` any units (non-global, inactive and template ones
/// are skipped). Global units are taken in name order, each checked against the scheduled units
/// and the global units accepted before it, so two conflicting global units resolve the same
/// way on every machine (the smaller name runs).
pub fn globals_on<'u>(
    machine: &MachineInput<'_>,
    scheduled_here: &[UnitInput<'u>],
    globals: &[UnitInput<'u>],
) -> Vec<(&'u UnitName, Result<(), Reason>)> {
    let mut candidates: Vec<&UnitInput<'u>> = globals
        .iter()
        .filter(|g| g.fleet.global && g.state != DesiredState::Inactive && !g.name.is_template())
        .collect();
    candidates.sort_by(|a, b| a.name.cmp(b.name));
    let mut here: Vec<UnitInput<'u>> = scheduled_here.to_vec();
    let mut out = Vec::with_capacity(candidates.len());
    for g in candidates {
        let verdict = global_eligible(g, machine, &here);
        if verdict.is_ok() {
            here.push(*g);
        }
        out.push((g.name, verdict));
    }
    out
}
