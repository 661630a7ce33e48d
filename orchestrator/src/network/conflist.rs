//! The CNI network a node writes from its subnet (pure): bridge + host-local, then portmap
//! (published ports), firewall (accept forwarding to the containers where the host's
//! FORWARD policy drops), and loopback (brings up the container's `lo`).
//!
//! The bridge's address is the subnet's first host address and the containers' gateway;
//! host-local hands out the rest of the node's subnet.
//!
//! Traffic between cluster subnets is not masqueraded, with the stock plugins and no rule
//! of our own: the bridge plugin's `ipMasq` chain accepts (leaves alone) destinations inside
//! the container address's own network, *address/prefix as IPAM returned it*, and
//! masquerades the rest. So host-local is given the whole cluster range as its `subnet`
//! and the node's subnet as `rangeStart`..`rangeEnd`: a container gets `10.88.3.5/16`
//! (an address of its node's /24, with the cluster's prefix), and the chain skips all of
//! 10.88.0.0/16 while traffic leaving the cluster is masqueraded as before. The cluster
//! prefix on the container's interface would make every cluster address look on-link, so
//! IPAM also routes the two halves of the cluster range via the gateway (more specific
//! than the on-link /16): containers on other nodes are reached through this node's
//! host-gw routes, and those on this node through the bridge (the node forwards them back
//! onto it). The bridge itself gets the gateway address with the cluster prefix; the
//! node's host-gw routes to the other nodes' subnets are more specific still.

use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

/// What a node's network config is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// The CNI network's name (`berth`).
    pub name: String,
    /// The bridge's name (`berth0`).
    pub bridge: String,
    /// This node's subnet, from the cluster allocation.
    pub subnet: Ipv4Net,
    /// The cluster range the subnet is part of (not masqueraded, see the module doc).
    pub cluster: Ipv4Net,
    pub mtu: Option<u32>,
    /// host-local's lease directory (its default is /var/lib/cni/networks).
    pub ipam_dir: Option<PathBuf>,
    /// Include the firewall plugin.
    pub firewall: bool,
}

impl NodeNetwork {
    /// The default network (`berth` on bridge `berth0`) on `subnet` of `cluster`.
    pub fn new(subnet: Ipv4Net, cluster: Ipv4Net) -> Self {
        NodeNetwork {
            name: "berth".into(),
            bridge: "berth0".into(),
            subnet,
            cluster,
            mtu: None,
            ipam_dir: None,
            firewall: true,
        }
    }
}

/// The `.conflist` document (CNI 1.0.0) for the node; write it as
/// `<config dir>/10-<name>.conflist` (atomically) when the subnet is known or changes.
pub fn node_conflist(n: &NodeNetwork) -> Value {
    let subnet = n.subnet.trunc();
    let cluster = n.cluster.trunc();
    let mut hosts = subnet.hosts();
    let gateway = hosts.next().unwrap_or(subnet.network());
    let first = hosts.next().unwrap_or(gateway);
    let last = hosts.last().unwrap_or(first);
    let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
    // The halves of the cluster range, via the gateway (see the module doc).
    match cluster.subnets(cluster.prefix_len().saturating_add(1).min(32)) {
        Ok(halves) if cluster.prefix_len() < 32 => {
            routes.extend(halves.map(|h| json!({"dst": h.to_string()})))
        }
        _ => {}
    }
    let mut ipam = json!({
        "type": "host-local",
        "ranges": [[{
            "subnet": cluster.to_string(),
            "rangeStart": first.to_string(),
            "rangeEnd": last.to_string(),
            "gateway": gateway.to_string(),
        }]],
        "routes": routes,
    });
    if let Some(dir) = &n.ipam_dir {
        ipam["dataDir"] = json!(dir.display().to_string());
    }
    let mut bridge = json!({
        "type": "bridge",
        "bridge": n.bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": ipam,
    });
    if let Some(mtu) = n.mtu {
        bridge["mtu"] = json!(mtu);
    }
    let mut plugins = vec![
        bridge,
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ];
    if n.firewall {
        plugins.push(json!({"type": "firewall", "backend": "iptables"}));
    }
    plugins.push(json!({"type": "loopback"}));
    json!({"cniVersion": "1.0.0", "name": n.name, "plugins": plugins})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_parses_with_the_invoker_and_uses_the_subnet() {
        let mut n = NodeNetwork::new(
            "10.88.3.0/24".parse().unwrap(),
            "10.88.0.0/16".parse().unwrap(),
        );
        n.mtu = Some(1400);
        n.ipam_dir = Some("/var/lib/berth/ipam".into());
        let doc = node_conflist(&n);
        let parsed =
            berth_cni::NetworkConfigList::from_conflist(doc.to_string().as_bytes(), None).unwrap();
        assert_eq!(parsed.name, "berth");
        let types: Vec<&str> = parsed
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall", "loopback"]);
        assert!(parsed.plugins[1].has_capability("portMappings"));
        let bridge = &parsed.plugins[0].raw;
        assert_eq!(bridge["bridge"], "berth0");
        assert_eq!(bridge["mtu"], 1400);
        let range = &bridge["ipam"]["ranges"][0][0];
        assert_eq!(
            range["subnet"], "10.88.0.0/16",
            "the cluster prefix: not masqueraded"
        );
        assert_eq!(range["rangeStart"], "10.88.3.2");
        assert_eq!(range["rangeEnd"], "10.88.3.254");
        assert_eq!(range["gateway"], "10.88.3.1");
        assert_eq!(
            bridge["ipam"]["routes"],
            serde_json::json!([{"dst": "0.0.0.0/0"}, {"dst": "10.88.0.0/17"}, {"dst": "10.88.128.0/17"}])
        );
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/berth/ipam");
        n.firewall = false;
        assert_eq!(node_conflist(&n)["plugins"].as_array().unwrap().len(), 3);
    }
}
