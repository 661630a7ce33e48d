//! Subnet allocation for the cluster network (pure): the cluster range (default
//! 10.88.0.0/16) is split into per-machine subnets (default /24s) that the leader records
//! under `/network/subnets/<machine>`.
//!
//! [`plan_subnets`] takes the current allocations and the cluster's members and returns the
//! writes to make. It is a function of its input alone, so any leader computes the same
//! writes from the same registry state:
//! - a member keeps a valid allocation (inside the range, of the right size, not
//!   overlapping one kept for a machine earlier in name order), so a subnet is stable
//!   across leader changes and restarts;
//! - a member without one gets the subnet at a slot derived from its name (FNV-1a), or the
//!   next free one after it: the same machine tends to get the same subnet back;
//! - an allocation of a machine that is no longer a member is deleted (freed).
//!
//! Pass the members of the cluster (the Raft configuration, or whatever the daemon uses
//! for "removed"), not the SWIM-alive machines: a rebooting node must keep its subnet,
//! since its containers' addresses come from it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::node_id;
use crate::registry::{Command, Compare, TxnOp};

/// Registry prefix of the allocations; the value is the subnet (`10.88.3.0/24`).
pub const SUBNET_PREFIX: &str = "/network/subnets/";

/// The cluster range and the size of each machine's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetConfig {
    pub cluster: Ipv4Net,
    /// Prefix length of a machine's subnet (24 by default).
    pub prefix_len: u8,
}

impl Default for SubnetConfig {
    fn default() -> Self {
        SubnetConfig {
            cluster: Ipv4Net::new(Ipv4Addr::new(10, 88, 0, 0), 16).unwrap_or_default(),
            prefix_len: 24,
        }
    }
}

impl SubnetConfig {
    /// Checks the range can hold subnets of that size with room for a bridge address and
    /// containers (prefix at most /30).
    pub fn new(cluster: Ipv4Net, prefix_len: u8) -> Result<Self, String> {
        if cluster != cluster.trunc() {
            return Err(format!(
                "cluster range {cluster} has host bits set (use {})",
                cluster.trunc()
            ));
        }
        if prefix_len < cluster.prefix_len() || prefix_len > 30 {
            return Err(format!(
                "machine subnet size /{prefix_len} must be between /{} (the cluster range) and /30",
                cluster.prefix_len()
            ));
        }
        if prefix_len - cluster.prefix_len() > 24 {
            return Err(format!(
                "{cluster} split into /{prefix_len}s gives more than 2^24 subnets"
            ));
        }
        Ok(SubnetConfig {
            cluster,
            prefix_len,
        })
    }

    fn slots(&self) -> u32 {
        1u32 << (self.prefix_len - self.cluster.prefix_len())
    }

    fn subnet_at(&self, slot: u32) -> Ipv4Net {
        let base = u32::from(self.cluster.network());
        let size = 1u64 << (32 - self.prefix_len);
        let addr = base.wrapping_add((u64::from(slot) * size) as u32);
        Ipv4Net::new(Ipv4Addr::from(addr), self.prefix_len).unwrap_or_default()
    }

    fn slot_of(&self, subnet: &Ipv4Net) -> Option<u32> {
        if subnet.prefix_len() != self.prefix_len
            || !self.cluster.contains(subnet)
            || *subnet != subnet.trunc()
        {
            return None;
        }
        let offset = u32::from(subnet.network()) - u32::from(self.cluster.network());
        Some(offset >> (32 - self.prefix_len))
    }
}

/// One allocation as read from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    pub machine: String,
    /// The stored value, unparsed (it may be garbage).
    pub value: String,
    /// Its mod_revision, for the transaction's compares.
    pub mod_revision: u64,
}

impl Allocated {
    /// From a registry key and value under [`SUBNET_PREFIX`]; `None` for other keys.
    pub fn from_kv(key: &str, value: &str, mod_revision: u64) -> Option<Self> {
        let machine = key.strip_prefix(SUBNET_PREFIX)?;
        (!machine.is_empty() && !machine.contains('/')).then(|| Allocated {
            machine: machine.to_string(),
            value: value.to_string(),
            mod_revision,
        })
    }
}

/// A write to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetWrite {
    Put { machine: String, subnet: Ipv4Net },
    Delete { machine: String },
}

impl SubnetWrite {
    pub fn key(&self) -> String {
        match self {
            SubnetWrite::Put { machine, .. } | SubnetWrite::Delete { machine } => {
                format!("{SUBNET_PREFIX}{machine}")
            }
        }
    }
}

/// What [`plan_subnets`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetPlan {
    pub writes: Vec<SubnetWrite>,
    /// Members left without a subnet: the range is full.
    pub unallocated: Vec<String>,
    /// Allocations replaced because they were unusable (`machine: reason`).
    pub replaced: Vec<String>,
}

impl SubnetPlan {
    /// The writes as one registry transaction that applies only if no allocation changed
    /// since `allocated` was read (a new key: only if it still does not exist). `None` when
    /// there is nothing to write.
    pub fn to_txn(&self, allocated: &[Allocated]) -> Option<Command> {
        if self.writes.is_empty() {
            return None;
        }
        let revs: BTreeMap<&str, u64> = allocated
            .iter()
            .map(|a| (a.machine.as_str(), a.mod_revision))
            .collect();
        let mut compare = Vec::new();
        let mut ops = Vec::new();
        for w in &self.writes {
            let (machine, op) = match w {
                SubnetWrite::Put { machine, subnet } => (
                    machine,
                    TxnOp::Put {
                        key: w.key(),
                        value: subnet.to_string(),
                        lease: 0,
                    },
                ),
                SubnetWrite::Delete { machine } => (machine, TxnOp::Delete { key: w.key() }),
            };
            compare.push(Compare {
                key: w.key(),
                mod_revision: revs.get(machine.as_str()).copied().unwrap_or(0),
            });
            ops.push(op);
        }
        Some(Command::Txn { compare, ops })
    }
}

/// The writes that give every member a distinct subnet and free those of non-members.
pub fn plan_subnets(
    cfg: &SubnetConfig,
    allocated: &[Allocated],
    members: &BTreeSet<String>,
) -> SubnetPlan {
    let mut plan = SubnetPlan::default();
    let mut sorted: Vec<&Allocated> = allocated.iter().collect();
    sorted.sort_by(|a, b| a.machine.cmp(&b.machine));
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut has: BTreeSet<&str> = BTreeSet::new();
    for a in sorted {
        if !members.contains(&a.machine) {
            plan.writes.push(SubnetWrite::Delete {
                machine: a.machine.clone(),
            });
            continue;
        }
        let slot = a
            .value
            .trim()
            .parse::<Ipv4Net>()
            .ok()
            .and_then(|n| cfg.slot_of(&n));
        match slot {
            Some(s) if used.insert(s) => {
                has.insert(&a.machine);
            }
            Some(_) => plan.replaced.push(format!(
                "{}: {} overlaps an earlier machine's",
                a.machine, a.value
            )),
            None => plan.replaced.push(format!(
                "{}: {:?} is not a /{} in {}",
                a.machine, a.value, cfg.prefix_len, cfg.cluster
            )),
        }
    }
    for m in members.iter().filter(|m| !has.contains(m.as_str())) {
        match free_slot(cfg, &used, m) {
            Some(slot) => {
                used.insert(slot);
                plan.writes.push(SubnetWrite::Put {
                    machine: m.clone(),
                    subnet: cfg.subnet_at(slot),
                });
            }
            None => plan.unallocated.push(m.clone()),
        }
    }
    plan
}

/// The machine's preferred slot (from its name) or the next free one after it.
fn free_slot(cfg: &SubnetConfig, used: &BTreeSet<u32>, machine: &str) -> Option<u32> {
    let n = cfg.slots();
    if used.len() as u64 >= u64::from(n) {
        return None;
    }
    let start = (node_id(machine) % u64::from(n)) as u32;
    (0..n).map(|i| (start + i) % n).find(|s| !used.contains(s))
}

/// Parses the stored allocations (for route planning and the node's own conflist);
/// unparsable values are skipped.
pub fn parse_allocations(allocated: &[Allocated]) -> BTreeMap<String, Ipv4Net> {
    allocated
        .iter()
        .filter_map(|a| {
            a.value
                .trim()
                .parse::<Ipv4Net>()
                .ok()
                .map(|n| (a.machine.clone(), n))
        })
        .collect()
}

#[cfg(test)]
#[path = "subnet_tests.rs"]
mod tests;
