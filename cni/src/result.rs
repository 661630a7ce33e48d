//! ADD results (CNI spec "Success"): parsed and validated for versions 0.3.0 to 1.0.0.
//!
//! The raw JSON is kept beside the typed view: the spec passes a result to the next plugin
//! (`prevResult`) exactly as the previous one printed it, and the record stores it so DEL
//! and CHECK get it back after a restart.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::clean;

/// A validated ADD result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The result exactly as the plugin printed it.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` for host-side ones.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpConfig {
    /// Address with its prefix length (`10.88.1.5/24`).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl CniResult {
    /// The first address on an interface inside the container (the one to register).
    pub fn container_ip(&self) -> Option<IpAddr> {
        self.ips
            .iter()
            .find(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|itf| itf.sandbox.is_some())
            })
            .or_else(|| self.ips.first())
            .map(|ip| ip.address.addr())
    }
}

// Wire forms: field names as the spec writes them; unknown fields are allowed (plugins add
// their own, e.g. pciID, socketPath) and travel on in `raw`.
#[derive(Deserialize)]
struct WireResult {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<WireInterface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    /// 0.3.x/0.4.0 only: "4" or "6".
    #[serde(default)]
    version: Option<String>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<i64>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

/// Parses and validates a result that must be of version `expected` (the network's
/// `cniVersion`: plugins answer in the version they were asked for).
pub fn parse_result(bytes: &[u8], expected: &str) -> Result<CniResult, String> {
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    if !raw.is_object() {
        return Err("not a JSON object".into());
    }
    let wire: WireResult =
        serde_json::from_value(raw.clone()).map_err(|e| format!("not a CNI result: {e}"))?;
    if wire.cni_version != expected {
        return Err(format!(
            "cniVersion {:?}, expected {expected:?}",
            clean(&wire.cni_version, 40)
        ));
    }
    let interfaces = wire
        .interfaces
        .into_iter()
        .enumerate()
        .map(|(i, w)| interface(w).map_err(|e| format!("interfaces[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let legacy = expected != "1.0.0";
    let ips = wire
        .ips
        .into_iter()
        .enumerate()
        .map(|(i, w)| ip_config(w, legacy, interfaces.len()).map_err(|e| format!("ips[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let routes = wire
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, w)| route(w).map_err(|e| format!("routes[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CniResult {
        cni_version: wire.cni_version,
        interfaces,
        ips,
        routes,
        dns: wire.dns,
        raw,
    })
}

fn interface(w: WireInterface) -> Result<Interface, String> {
    if w.name.is_empty() || w.name.len() > 15 {
        return Err(format!(
            "name {:?} is not an interface name",
            clean(&w.name, 40)
        ));
    }
    if let Some(mac) = &w.mac {
        if !mac.is_empty() && !is_mac(mac) {
            return Err(format!("mac {:?} is not a MAC address", clean(mac, 40)));
        }
    }
    Ok(Interface {
        name: w.name,
        mac: w.mac.filter(|m| !m.is_empty()),
        mtu: w.mtu,
        sandbox: w.sandbox.filter(|s| !s.is_empty()),
    })
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn ip_config(w: WireIp, legacy: bool, n_interfaces: usize) -> Result<IpConfig, String> {
    let address: IpNet = w.address.parse().map_err(|_| {
        format!(
            "address {:?} is not an address/prefix",
            clean(&w.address, 60)
        )
    })?;
    if legacy {
        let want = if address.addr().is_ipv4() { "4" } else { "6" };
        match w.version.as_deref() {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(format!(
                    "version {:?} does not match address {address}",
                    clean(v, 10)
                ))
            }
            None => return Err("no version (required before CNI 1.0.0)".into()),
        }
    }
    let gateway = match w.gateway.as_deref() {
        None | Some("") => None,
        Some(g) => {
            let g: IpAddr = g
                .parse()
                .map_err(|_| format!("gateway {:?} is not an address", clean(g, 60)))?;
            if g.is_ipv4() != address.addr().is_ipv4() {
                return Err(format!(
                    "gateway {g} and address {address} are of different families"
                ));
            }
            Some(g)
        }
    };
    let interface = match w.interface {
        None => None,
        Some(i) if i >= 0 && (i as usize) < n_interfaces => Some(i as usize),
        Some(i) => {
            return Err(format!(
                "interface index {i} out of range (there are {n_interfaces})"
            ))
        }
    };
    Ok(IpConfig {
        address,
        gateway,
        interface,
    })
}

fn route(w: WireRoute) -> Result<Route, String> {
    let dst: IpNet = w
        .dst
        .parse()
        .map_err(|_| format!("dst {:?} is not a prefix", clean(&w.dst, 60)))?;
    let gw = match w.gw.as_deref() {
        None | Some("") => None,
        Some(g) => Some(
            g.parse()
                .map_err(|_| format!("gw {:?} is not an address", clean(g, 60)))?,
        ),
    };
    Ok(Route { dst, gw })
}

/// A plugin's VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE_100: &str = r#"{
      "cniVersion": "1.0.0",
      "interfaces": [
        {"name": "berth0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/c1"}
      ],
      "ips": [{"interface": 2, "address": "10.88.1.5/24", "gateway": "10.88.1.1"}],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dns": {"nameservers": ["10.88.1.1"], "search": ["berth"]},
      "pciID": "ignored but kept"
    }"#;

    #[test]
    fn parses_a_bridge_result() {
        let r = parse_result(BRIDGE_100.as_bytes(), "1.0.0").unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/c1"));
        assert_eq!(r.ips[0].address, "10.88.1.5/24".parse::<IpNet>().unwrap());
        assert_eq!(r.ips[0].gateway, Some("10.88.1.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(r.dns.nameservers, ["10.88.1.1"]);
        assert_eq!(r.container_ip(), Some("10.88.1.5".parse().unwrap()));
        assert_eq!(r.raw["pciID"], "ignored but kept");
    }

    #[test]
    fn parses_a_040_result_with_versions() {
        let doc = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
            "ips":[{"version":"4","interface":0,"address":"10.1.0.2/16"},
                   {"version":"6","address":"fd00::2/64","gateway":"fd00::1"}]}"#;
        let r = parse_result(doc.as_bytes(), "0.4.0").unwrap();
        assert_eq!(r.ips.len(), 2);
        assert!(r.ips[1].address.addr().is_ipv6());
        let bad = doc.replace(r#""version":"6""#, r#""version":"4""#);
        let e = parse_result(bad.as_bytes(), "0.4.0").unwrap_err();
        assert!(
            e.contains("ips[1]: version \"4\" does not match address fd00::2/64"),
            "{e}"
        );
        let none = doc.replace(r#""version":"4","#, "");
        assert!(parse_result(none.as_bytes(), "0.4.0")
            .unwrap_err()
            .contains("ips[0]: no version"));
    }

    #[test]
    fn invalid_results_are_refused_with_the_reason() {
        let cases = [
            ("", "invalid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"ips":[]}"#, "not a CNI result"),
            (
                r#"{"cniVersion":"0.4.0"}"#,
                "cniVersion \"0.4.0\", expected \"1.0.0\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.300/24"}]}"#,
                "ips[0]: address",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3"}]}"#,
                "is not an address/prefix",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/24","interface":0}]}"#,
                "interface index 0 out of range",
            ),
            (
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.3/24","gateway":"fd00::1"}]}"#,
                "different families",
            ),
            (
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"default"}]}"#,
                "routes[0]: dst",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"a-very-long-interface-name"}]}"#,
                "interfaces[0]: name",
            ),
            (
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"zz"}]}"#,
                "mac \"zz\"",
            ),
        ];
        for (doc, want) in cases {
            let e = parse_result(doc.as_bytes(), "1.0.0").unwrap_err();
            assert!(e.contains(want), "{doc}: {e} (wanted {want})");
        }
    }

    #[test]
    fn empty_result_is_valid_and_has_no_ip() {
        let r = parse_result(br#"{"cniVersion":"1.0.0"}"#, "1.0.0").unwrap();
        assert!(r.ips.is_empty() && r.interfaces.is_empty());
        assert_eq!(r.container_ip(), None);
    }
}
