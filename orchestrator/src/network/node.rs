//! What the registry's network records mean for the daemon (pure): which machines the
//! leader allocates subnets for, and, on every node, its own subnet (for its conflist) and
//! the routes to the others'.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::routes::{desired_routes, HostRoute, Peer};
use super::subnet::Allocated;
use crate::config::node_id;

/// The machines that get (or keep) a subnet: members of the Raft configuration (by id, so
/// a name the leader has not learnt yet is still recognised) that run an agent or already
/// have one. A member that is down keeps its subnet (its containers' addresses come from
/// it); one removed from the configuration loses it.
pub fn subnet_members(
    conf_ids: &BTreeSet<u64>,
    agents: &BTreeSet<String>,
    allocated: &[Allocated],
) -> BTreeSet<String> {
    agents
        .iter()
        .cloned()
        .chain(allocated.iter().map(|a| a.machine.clone()))
        .filter(|m| conf_ids.contains(&node_id(m)))
        .collect()
}

/// What one node should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// This node's subnet (its conflist is written from it); `None` until allocated.
    pub subnet: Option<Ipv4Net>,
    /// Routes to the other machines' subnets via their addresses (host-gw).
    pub routes: Vec<HostRoute>,
}

/// The node's plan from the allocations and the machines' addresses (IPv6 addresses cannot
/// be IPv4 gateways and are skipped; so are machines whose address is unknown).
pub fn node_plan(
    me: &str,
    allocations: &BTreeMap<String, Ipv4Net>,
    addrs: &BTreeMap<String, IpAddr>,
) -> NodePlan {
    let subnet = allocations.get(me).map(|s| s.trunc());
    let peers: Vec<Peer> = allocations
        .iter()
        .filter(|(m, _)| m.as_str() != me)
        .filter_map(|(m, s)| {
            let addr: Ipv4Addr = match addrs.get(m)? {
                IpAddr::V4(a) => *a,
                IpAddr::V6(_) => return None,
            };
            Some(Peer {
                machine: m.clone(),
                subnet: *s,
                addr,
            })
        })
        .collect();
    NodePlan {
        subnet,
        routes: desired_routes(me, subnet, &peers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(m: &str, v: &str) -> Allocated {
        Allocated {
            machine: m.into(),
            value: v.into(),
            mod_revision: 1,
        }
    }

    #[test]
    fn members_are_configuration_members_with_an_agent_or_a_subnet() {
        let conf: BTreeSet<u64> = ["n1", "n2", "n3"].iter().map(|n| node_id(n)).collect();
        let agents: BTreeSet<String> = ["n1", "n9"].iter().map(|s| s.to_string()).collect();
        let allocated = [alloc("n2", "10.88.2.0/24"), alloc("gone", "10.88.7.0/24")];
        let m = subnet_members(&conf, &agents, &allocated);
        // n1 (agent), n2 (has one, e.g. down now); not n3 (no agent), n9 (not a member),
        // nor the removed "gone"
        assert_eq!(m.into_iter().collect::<Vec<_>>(), ["n1", "n2"]);
    }

    #[test]
    fn a_node_gets_its_subnet_and_routes_to_peers_with_addresses() {
        let net = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let allocations: BTreeMap<String, Ipv4Net> = [
            ("n1".to_string(), net("10.88.1.0/24")),
            ("n2".to_string(), net("10.88.2.0/24")),
            ("n3".to_string(), net("10.88.3.0/24")),
            ("n4".to_string(), net("10.88.4.0/24")),
        ]
        .into();
        let addrs: BTreeMap<String, IpAddr> = [
            ("n1".to_string(), "192.168.1.1".parse().expect("ip")),
            ("n2".to_string(), "192.168.1.2".parse().expect("ip")),
            ("n4".to_string(), "fd00::4".parse().expect("ip")),
        ]
        .into();
        let p = node_plan("n1", &allocations, &addrs);
        assert_eq!(p.subnet, Some(net("10.88.1.0/24")));
        // n3 has no known address and n4 only an IPv6 one
        assert_eq!(
            p.routes,
            [HostRoute {
                dst: net("10.88.2.0/24"),
                via: "192.168.1.2".parse().expect("ip"),
            }]
        );
        let none = node_plan("n7", &BTreeMap::new(), &addrs);
        assert_eq!(none, NodePlan::default());
    }
}
