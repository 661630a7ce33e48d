//! Host routes for flannel's host-gw mode (pure): a route to every other machine's subnet
//! via that machine's address, and the difference between the routes a node has and
//! those it should have. The node's own routes are told apart from everyone else's by a
//! routing protocol number of their own ([`ROUTE_PROTOCOL`]), so the diff never touches a
//! route it did not make.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The `proto` number berthd's routes carry (`ip route ... proto 152`); unassigned in
/// iproute2's rt_protos table.
pub const ROUTE_PROTOCOL: u8 = 152;

/// A route to a subnet through a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRoute {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
}

/// Another machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub machine: String,
    pub subnet: Ipv4Net,
    /// Its address on the shared network (from its advertised address).
    pub addr: Ipv4Addr,
}

/// The routes a node should have: one per other machine, skipping the node's own subnet,
/// a peer whose address lies inside a container subnet (a gateway that would route through
/// the overlay itself), and a subnet claimed twice (the lower machine name wins, so both
/// ends agree).
pub fn desired_routes(me: &str, my_subnet: Option<Ipv4Net>, peers: &[Peer]) -> Vec<HostRoute> {
    let mut by_dst: BTreeMap<Ipv4Net, (&str, Ipv4Addr)> = BTreeMap::new();
    let subnets: Vec<Ipv4Net> = peers
        .iter()
        .map(|p| p.subnet.trunc())
        .chain(my_subnet)
        .collect();
    for p in peers {
        let dst = p.subnet.trunc();
        if p.machine == me || Some(dst) == my_subnet.map(|s| s.trunc()) {
            continue;
        }
        if subnets.iter().any(|s| s.contains(&p.addr)) {
            continue;
        }
        match by_dst.get(&dst) {
            Some((m, _)) if *m <= p.machine.as_str() => {}
            _ => {
                by_dst.insert(dst, (&p.machine, p.addr));
            }
        }
    }
    by_dst
        .into_iter()
        .map(|(dst, (_, via))| HostRoute { dst, via })
        .collect()
}

/// What to change so that the node's routes become `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub add: Vec<HostRoute>,
    pub remove: Vec<HostRoute>,
}

impl RouteDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The diff from `current` (the routes carrying [`ROUTE_PROTOCOL`]) to `desired`. A subnet
/// whose gateway changed is removed and added again; removals come first when applied.
pub fn diff_routes(current: &[HostRoute], desired: &[HostRoute]) -> RouteDiff {
    let mut add: Vec<HostRoute> = desired
        .iter()
        .filter(|r| !current.contains(r))
        .copied()
        .collect();
    let mut remove: Vec<HostRoute> = current
        .iter()
        .filter(|r| !desired.contains(r))
        .copied()
        .collect();
    add.sort();
    add.dedup();
    remove.sort();
    remove.dedup();
    RouteDiff { add, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn peer(m: &str, subnet: &str, addr: &str) -> Peer {
        Peer {
            machine: m.into(),
            subnet: net(subnet),
            addr: addr.parse().unwrap(),
        }
    }

    fn route(dst: &str, via: &str) -> HostRoute {
        HostRoute {
            dst: net(dst),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn one_route_per_other_machine() {
        let peers = [
            peer("n1", "10.88.1.0/24", "192.168.5.1"),
            peer("n2", "10.88.2.0/24", "192.168.5.2"),
            peer("n3", "10.88.3.0/24", "192.168.5.3"),
        ];
        let r = desired_routes("n1", Some(net("10.88.1.0/24")), &peers);
        assert_eq!(
            r,
            [
                route("10.88.2.0/24", "192.168.5.2"),
                route("10.88.3.0/24", "192.168.5.3")
            ]
        );
    }

    #[test]
    fn skips_own_subnet_gateways_inside_the_overlay_and_duplicate_claims() {
        let peers = [
            peer("n2", "10.88.1.0/24", "192.168.5.2"), // claims my subnet
            peer("n3", "10.88.3.0/24", "10.88.2.9"),   // address inside a container subnet
            peer("n4", "10.88.4.0/24", "192.168.5.4"),
            peer("n0", "10.88.4.0/24", "192.168.5.10"), // same subnet: n0 < n4 wins
            peer("n5", "10.88.2.0/24", "192.168.5.5"),
        ];
        let r = desired_routes("n1", Some(net("10.88.1.0/24")), &peers);
        assert_eq!(
            r,
            [
                route("10.88.2.0/24", "192.168.5.5"),
                route("10.88.4.0/24", "192.168.5.10")
            ]
        );
    }

    #[test]
    fn a_node_without_a_subnet_still_routes_to_the_others() {
        let r = desired_routes("n9", None, &[peer("n1", "10.88.1.7/24", "192.168.5.1")]);
        assert_eq!(r, [route("10.88.1.0/24", "192.168.5.1")]);
    }

    #[test]
    fn diff_adds_removes_and_moves() {
        let current = [
            route("10.88.2.0/24", "192.168.5.2"),
            route("10.88.3.0/24", "192.168.5.3"),
        ];
        let desired = [
            route("10.88.3.0/24", "192.168.5.33"),
            route("10.88.4.0/24", "192.168.5.4"),
        ];
        let d = diff_routes(&current, &desired);
        assert_eq!(
            d.add,
            [
                route("10.88.3.0/24", "192.168.5.33"),
                route("10.88.4.0/24", "192.168.5.4")
            ]
        );
        assert_eq!(
            d.remove,
            [
                route("10.88.2.0/24", "192.168.5.2"),
                route("10.88.3.0/24", "192.168.5.3")
            ]
        );
        assert!(diff_routes(&desired, &desired).is_empty());
        assert_eq!(diff_routes(&[], &[]), RouteDiff::default());
    }

    #[test]
    fn a_departed_machine_loses_its_route() {
        let peers = [
            peer("n2", "10.88.2.0/24", "192.168.5.2"),
            peer("n3", "10.88.3.0/24", "192.168.5.3"),
        ];
        let before = desired_routes("n1", Some(net("10.88.1.0/24")), &peers);
        let after = desired_routes("n1", Some(net("10.88.1.0/24")), &peers[..1]);
        let d = diff_routes(&before, &after);
        assert_eq!(d.remove, [route("10.88.3.0/24", "192.168.5.3")]);
        assert!(d.add.is_empty());
    }
}
