//! The CNI network a node writes from its subnet (pure): bridge + host-local, then portmap
//! (published ports), firewall (accept forwarding to the containers where the host's
//! FORWARD policy drops), and loopback (brings up the container's `lo`).
//!
//! The bridge's address is the subnet's first host address and the containers' gateway;
//! host-local hands out the rest. `ipMasq` masquerades traffic from the containers to
//! anything outside the node's subnet, which includes other nodes' subnets: a container
//! reached across nodes sees the peer node's address as the source. Keeping source
//! addresses across nodes needs a masquerade rule that excludes the cluster range, which
//! the bridge plugin cannot express; that is left open.

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
    pub mtu: Option<u32>,
    /// host-local's lease directory (its default is /var/lib/cni/networks).
    pub ipam_dir: Option<PathBuf>,
    /// Include the firewall plugin.
    pub firewall: bool,
}

impl NodeNetwork {
    pub fn new(subnet: Ipv4Net) -> Self {
        NodeNetwork {
            name: "berth".into(),
            bridge: "berth0".into(),
            subnet,
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
    let gateway = subnet.hosts().next().unwrap_or(subnet.network());
    let mut ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": subnet.to_string(), "gateway": gateway.to_string()}]],
        "routes": [{"dst": "0.0.0.0/0"}],
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
        let mut n = NodeNetwork::new("10.88.3.0/24".parse().unwrap());
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
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.3.0/24");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.88.3.1");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/berth/ipam");
        n.firewall = false;
        assert_eq!(node_conflist(&n)["plugins"].as_array().unwrap().len(), 3);
    }
}
