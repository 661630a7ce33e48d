//! The registry keys the orchestrator itself reads and writes, and their JSON values.
//!
//! ```text
//! /machines/<machine>              MachineRecord   under the machine's lease
//! /units/<unit>                    UnitRecord      written through the API (submit, start, ...)
//! /schedule/<unit>                 ScheduleRecord  written by the leader's scheduler only
//! /unplaced/<unit>                 text            why the leader could not place the unit
//! /state/<machine>/<unit>          StateRecord     written by that machine's agent, under its lease
//! /services/<svc>/<machine>/<inst> api::routes::Service, under the registering machine's lease
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MACHINES: &str = "/machines/";
pub const UNITS: &str = "/units/";
pub const SCHEDULE: &str = "/schedule/";
pub const STATE: &str = "/state/";
pub const SERVICES: &str = "/services/";
pub const UNPLACED: &str = "/unplaced/";

pub fn machine_key(machine: &str) -> String {
    format!("{MACHINES}{machine}")
}

pub fn unit_key(unit: &str) -> String {
    format!("{UNITS}{unit}")
}

pub fn schedule_key(unit: &str) -> String {
    format!("{SCHEDULE}{unit}")
}

/// Why the leader could not place a unit (plain text), written by the leader.
pub fn unplaced_key(unit: &str) -> String {
    format!("{UNPLACED}{unit}")
}

pub fn state_key(machine: &str, unit: &str) -> String {
    format!("{STATE}{machine}/{unit}")
}

/// The value stored at /machines/<name>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub name: String,
    pub addr: std::net::SocketAddr,
    pub metadata: BTreeMap<String, String>,
    pub id: u64,
    /// The machine runs an agent (takes units). Absent in records of older versions.
    #[serde(default)]
    pub agent: bool,
}

/// fleet's target states of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Submitted: stored, not placed.
    Inactive,
    /// Placed on a machine, not running.
    Loaded,
    /// Placed and running.
    Launched,
}

impl Desired {
    pub fn as_str(&self) -> &'static str {
        match self {
            Desired::Inactive => "inactive",
            Desired::Loaded => "loaded",
            Desired::Launched => "launched",
        }
    }
}

impl From<Desired> for crate::schedule::DesiredState {
    fn from(d: Desired) -> Self {
        match d {
            Desired::Inactive => Self::Inactive,
            Desired::Loaded => Self::Loaded,
            Desired::Launched => Self::Launched,
        }
    }
}

/// The value stored at /units/<name>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub name: String,
    /// The unit file as submitted.
    pub text: String,
    /// sha256 of `text`, hex.
    pub hash: String,
    pub desired: Desired,
}

/// The value stored at /schedule/<unit>: where the leader placed it, or why it could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScheduleRecord {
    /// Empty when the unit is not placed.
    #[serde(default)]
    pub machine: String,
    /// Why the unit is not placed (empty when placed).
    #[serde(default)]
    pub reason: String,
}

/// The value stored at /state/<machine>/<unit>: what the agent there reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateRecord {
    pub unit: String,
    pub machine: String,
    /// The unit text's hash the agent runs.
    pub hash: String,
    /// systemd's ActiveState: active, activating, deactivating, inactive, failed.
    pub active: String,
    /// systemd's SubState: running, start, auto-restart, stop-sigterm, dead, failed, ...
    pub sub: String,
    /// `loaded` while the unit is placed here (fleet's LOAD column).
    pub load: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Exit code of the last run, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended the last run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    #[serde(default)]
    pub restarts: u32,
    /// Unix milliseconds of the last change of `active`/`sub`.
    #[serde(default)]
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The CNI network the container is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The container's address on that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// While the unit's image is being pulled: how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulling: Option<String>,
}

/// Parses a JSON value of the registry, ignoring values that are not of the expected shape
/// (a hand-written key must not break the daemon).
pub fn decode<T: for<'de> Deserialize<'de>>(value: &str) -> Option<T> {
    serde_json::from_str(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_old_machine_records_read() {
        let u = UnitRecord {
            name: "web.service".into(),
            text: "[Service]\nExecStart=/bin/true\n".into(),
            hash: "ab".into(),
            desired: Desired::Launched,
        };
        let s = serde_json::to_string(&u).expect("encode");
        assert!(s.contains("\"desired\":\"launched\""));
        assert_eq!(decode::<UnitRecord>(&s), Some(u));
        let old = r#"{"name":"n1","addr":"10.0.0.1:7380","metadata":{},"id":1}"#;
        let m: MachineRecord = decode(old).expect("old record");
        assert!(!m.agent);
        assert_eq!(decode::<UnitRecord>("not json"), None);
        assert_eq!(state_key("n1", "a.service"), "/state/n1/a.service");
    }
}
