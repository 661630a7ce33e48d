//! The scheduler's decisions (pure: no clock, no IO; the leader feeds it registry data).
//!
//! [`plan`] takes the units with their desired state, the machines (`live`: may take units;
//! `held`: not live, but the daemon's at-most-once bound has not passed, so their units stay
//! put) and the current `/schedule` (with each key's mod_revision), and returns a [`Plan`]:
//! the writes to make (each with the revision to compare-and-swap on) and, for every unit that
//! cannot be placed, the constraint that failed.
//!
//! Rules (fleet's `engine/reconciler.go`, `engine/scheduler.go`, `agent/state.go`):
//! - Only non-template, non-`Global` units whose desired state is `loaded` or `launched` are
//!   placed; a `/schedule` entry of any other unit (inactive, global, template, or no longer
//!   submitted) is removed.
//! - A placed unit stays where it is while its machine is live and it is still eligible there
//!   (stable across plans and across leaders: a plan never moves a unit for balance). Units on a
//!   held machine stay, unchecked. Units on any other machine (dead past the bound, or unknown)
//!   are moved.
//! - Eligibility of a machine for unit U: live; `MachineID` names it; its metadata satisfies
//!   `MachineMetadata` (OR within a key, AND across keys); it runs every `MachineOf` unit (so a
//!   follower is unplaceable while its peer is not placed, and follows it when the peer moves);
//!   no unit on it conflicts with U (U's `Conflicts` globs match it, or its globs match U:
//!   symmetric, as fleet's `HasConflict`), including the `Global` units running there; no unit
//!   on it replaces U.
//! - Among eligible machines the least loaded wins (load = units placed there), ties broken by
//!   machine name (fleet sorted by unit count, then machine id).
//! - `Replaces` (fleet's semantics): the replacing unit is placed as any other; units it
//!   replaces that share its machine are moved elsewhere (or left unplaced, with the reason),
//!   and never placed on a machine that runs a unit replacing them. Two units replacing each
//!   other ignore it, as fleet (`unit::check_set` refuses such sets at submit).
//! - Order: units are placed in name order, a `MachineOf` peer before its followers.
//!
//! `Global` units are not placed: the agent on each machine calls [`globals_on`] (or
//! [`global_eligible`] for one unit) with the same constraint code: metadata, and no conflict
//! with the units scheduled there or with an eligible global unit of a smaller name.
//!
//! Cost: machines are grouped by distinct `MachineMetadata` requirement, each group keeps its
//! machines ordered by (load, name), so choosing a machine is a walk from the least loaded one
//! that stops at the first without a conflict, not a scan of every machine; conflict checks
//! look only at the units on the candidate machine.

mod constraints;
mod planner;
mod state;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::unit::{FleetOptions, Unit, UnitName};

pub use constraints::{global_eligible, globals_on};
pub use planner::plan;

/// A unit's desired state (`/units/<name>`), fleet's job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Submitted only: never placed.
    Inactive,
    /// Placed on a machine, not started.
    Loaded,
    /// Placed and running.
    Launched,
}

/// One unit as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct UnitInput<'a> {
    /// Its name.
    pub name: &'a UnitName,
    /// Its desired state.
    pub state: DesiredState,
    /// Its `[X-Fleet]` constraints.
    pub fleet: &'a FleetOptions,
}

impl<'a> UnitInput<'a> {
    /// The scheduler's view of a parsed unit.
    pub fn of(unit: &'a Unit, state: DesiredState) -> UnitInput<'a> {
        UnitInput {
            name: &unit.name,
            state,
            fleet: &unit.fleet,
        }
    }
}

/// Whether a machine takes units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineStatus {
    /// Alive: may take new units.
    Live,
    /// Not live, but its units must stay put until the at-most-once bound has passed.
    Held,
}

/// One machine as the scheduler sees it. Machines that are neither live nor held are simply
/// left out.
#[derive(Debug, Clone, Copy)]
pub struct MachineInput<'a> {
    /// Its name (the `MachineID` units name).
    pub name: &'a str,
    /// Its metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// Live or held.
    pub status: MachineStatus,
}

/// A current `/schedule/<unit>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The machine it names.
    pub machine: String,
    /// The key's mod_revision, to compare-and-swap on.
    pub mod_revision: u64,
}

/// What [`plan`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Every submitted unit (any state; globals and templates included, they are skipped).
    pub units: &'a [UnitInput<'a>],
    /// The live and held machines.
    pub machines: &'a [MachineInput<'a>],
    /// The current schedule: unit name -> placement.
    pub schedule: &'a HashMap<String, Placement>,
}

/// Why a unit cannot be placed (or cannot stay), naming the constraint that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The `[X-Fleet]` key whose constraint failed, when one did.
    pub key: Option<&'static str>,
    /// A sentence for `status`, e.g. `no live machine has region=mars`.
    pub message: String,
}

impl Reason {
    pub(crate) fn new(key: Option<&'static str>, message: impl Into<String>) -> Reason {
        Reason {
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One write to `/schedule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create `/schedule/<unit>` (it must not exist: compare on revision 0).
    Place {
        /// The unit.
        unit: String,
        /// Its machine.
        machine: String,
    },
    /// Point `/schedule/<unit>` at another machine (compare on `prev_revision`).
    Move {
        /// The unit.
        unit: String,
        /// The machine it leaves.
        from: String,
        /// The machine it goes to.
        to: String,
        /// The key's current mod_revision.
        prev_revision: u64,
        /// Why it leaves `from`.
        reason: Reason,
    },
    /// Delete `/schedule/<unit>` (compare on `prev_revision`).
    Remove {
        /// The unit.
        unit: String,
        /// The machine it leaves.
        from: String,
        /// The key's current mod_revision.
        prev_revision: u64,
        /// Why.
        reason: Reason,
    },
}

impl Change {
    /// The unit this change is about.
    pub fn unit(&self) -> &str {
        match self {
            Change::Place { unit, .. }
            | Change::Move { unit, .. }
            | Change::Remove { unit, .. } => unit,
        }
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The writes, at most one per unit, in unit name order.
    pub changes: Vec<Change>,
    /// Every unit to be placed that is not placed after this plan, with why, in name order.
    pub unplaceable: Vec<(String, Reason)>,
}
