//! berthd's network flags and `[network]` table, resolved into [`NetworkConfig`]: the
//! cluster range and subnet size (the leader's allocation; give every node the same), where
//! CNI configs, plugins and berthd's CNI state live, and the DNS listener.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::subnet::SubnetConfig;
use crate::config::ConfigError;

/// The network every `[Container]` unit joins unless it says `Network=`.
pub const CLUSTER_NETWORK: &str = "berth";
/// The file the node writes its cluster network's config to, in the CNI config directory.
pub const CLUSTER_CONFLIST: &str = "10-berth.conflist";

/// berthd's network flags (flattened into its command line).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct NetworkFlags {
    /// The cluster network's range, split into one subnet per machine (default 10.88.0.0/16)
    #[arg(long)]
    pub cluster_range: Option<Ipv4Net>,
    /// Prefix length of each machine's subnet (default 24)
    #[arg(long)]
    pub subnet_prefix: Option<u8>,
    /// CNI network configs: the node writes its cluster network here, units' named
    /// networks are looked up here (default /etc/cni/net.d)
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Where CNI plugins are searched, in order (repeatable; default /usr/lib/cni, /opt/cni/bin)
    #[arg(long = "cni-plugin-dir")]
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// DNS for <service>.service.berth. on IP:PORT, or `off` (default: the advertised IP, port 53)
    #[arg(long)]
    pub dns_listen: Option<String>,
}

/// The `[network]` table of the TOML file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkFile {
    pub cluster_range: Option<Ipv4Net>,
    pub subnet_prefix: Option<u8>,
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_plugin_dirs: Option<Vec<PathBuf>>,
    pub dns_listen: Option<String>,
}

/// Where DNS is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsListen {
    Off,
    /// The default: a taken port is logged and DNS stays off (berthd still starts).
    Default(SocketAddr),
    /// Given by flag or file: a taken port stops berthd from starting.
    Given(SocketAddr),
}

impl DnsListen {
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            DnsListen::Off => None,
            DnsListen::Default(a) | DnsListen::Given(a) => Some(*a),
        }
    }
}

/// The resolved network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub subnets: SubnetConfig,
    pub conf_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    /// berthd's CNI state: `attachments/` (the invoker's records), `ipam/` (host-local's
    /// leases for the cluster network).
    pub state_dir: PathBuf,
    pub dns: DnsListen,
    /// The address containers on a CNI network are given as their resolver (berthd's DNS
    /// when it listens on port 53 at an address they reach; else none).
    pub container_dns: Option<IpAddr>,
}

impl NetworkConfig {
    pub fn attachments_dir(&self) -> PathBuf {
        self.state_dir.join("attachments")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    pub fn cluster_conflist(&self) -> PathBuf {
        self.conf_dir.join(CLUSTER_CONFLIST)
    }
}

fn invalid(field: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Resolves flags over the file; `advertise` is the node's advertised IP.
pub fn resolve(
    flags: &NetworkFlags,
    file: &NetworkFile,
    advertise: IpAddr,
    data_dir: &Path,
) -> Result<NetworkConfig, ConfigError> {
    let d = SubnetConfig::default();
    let cluster = flags
        .cluster_range
        .or(file.cluster_range)
        .unwrap_or(d.cluster);
    let prefix = flags
        .subnet_prefix
        .or(file.subnet_prefix)
        .unwrap_or(d.prefix_len);
    let subnets = SubnetConfig::new(cluster, prefix)
        .map_err(|reason| invalid("cluster-range", format!("{cluster} /{prefix}"), reason))?;
    let plugin_dirs = if !flags.cni_plugin_dirs.is_empty() {
        flags.cni_plugin_dirs.clone()
    } else {
        file.cni_plugin_dirs
            .clone()
            .unwrap_or_else(|| vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()])
    };
    for p in &plugin_dirs {
        if !p.is_absolute() {
            return Err(invalid(
                "cni-plugin-dir",
                p.display(),
                "must be an absolute path",
            ));
        }
    }
    let conf_dir = flags
        .cni_conf_dir
        .clone()
        .or(file.cni_conf_dir.clone())
        .unwrap_or_else(|| "/etc/cni/net.d".into());
    if !conf_dir.is_absolute() {
        return Err(invalid(
            "cni-conf-dir",
            conf_dir.display(),
            "must be an absolute path",
        ));
    }
    let dns = match flags.dns_listen.as_deref().or(file.dns_listen.as_deref()) {
        None => DnsListen::Default(SocketAddr::new(advertise, 53)),
        Some("off") => DnsListen::Off,
        Some(s) => DnsListen::Given(
            s.parse()
                .map_err(|_| invalid("dns-listen", s, "want IP:PORT (e.g. 10.0.0.1:53) or off"))?,
        ),
    };
    if dns.addr().is_some_and(|a| a.port() == 0) {
        return Err(invalid("dns-listen", format!("{dns:?}"), "port 0"));
    }
    Ok(NetworkConfig {
        subnets,
        conf_dir,
        plugin_dirs,
        state_dir: data_dir.join("cni"),
        container_dns: container_dns(dns, advertise),
        dns,
    })
}

/// What containers can use as their resolver: resolv.conf has no port, so only port 53;
/// an unspecified listen address is reached at the advertised one; loopback is not
/// reachable from a container's namespace.
fn container_dns(dns: DnsListen, advertise: IpAddr) -> Option<IpAddr> {
    let a = dns.addr().filter(|a| a.port() == 53)?;
    let ip = if a.ip().is_unspecified() {
        advertise
    } else {
        a.ip()
    };
    (!ip.is_loopback()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn defaults_follow_the_advertised_address() {
        let c = resolve(
            &NetworkFlags::default(),
            &NetworkFile::default(),
            ip("10.0.0.7"),
            Path::new("/var/lib/berth"),
        )
        .expect("valid");
        assert_eq!(c.subnets.cluster.to_string(), "10.88.0.0/16");
        assert_eq!(c.subnets.prefix_len, 24);
        assert_eq!(c.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            c.cluster_conflist(),
            PathBuf::from("/etc/cni/net.d/10-berth.conflist")
        );
        assert_eq!(c.plugin_dirs.len(), 2);
        assert_eq!(c.ipam_dir(), PathBuf::from("/var/lib/berth/cni/ipam"));
        assert_eq!(
            c.dns,
            DnsListen::Default("10.0.0.7:53".parse().expect("addr"))
        );
        assert_eq!(c.container_dns, Some(ip("10.0.0.7")));
    }

    #[test]
    fn the_network_table_of_the_config_file() {
        use clap::Parser;
        let flags = crate::config::Flags::parse_from([
            "berthd",
            "--cluster-id",
            "c",
            "--listen",
            "10.0.0.7:7380",
            "--cni-conf-dir",
            "/etc/berth/net.d",
        ]);
        let file = "[network]\ncluster-range = \"10.50.0.0/16\"\nsubnet-prefix = 26\ncni-conf-dir = \"/x\"\ncni-plugin-dirs = [\"/opt/cni/bin\"]\ndns-listen = \"10.0.0.7:5353\"\n";
        let c = crate::config::resolve(flags, Some(file), "h", &[]).expect("valid");
        assert_eq!(c.network.subnets.cluster.to_string(), "10.50.0.0/16");
        assert_eq!(c.network.subnets.prefix_len, 26);
        assert_eq!(
            c.network.conf_dir,
            PathBuf::from("/etc/berth/net.d"),
            "flag wins"
        );
        assert_eq!(c.network.plugin_dirs, [PathBuf::from("/opt/cni/bin")]);
        assert_eq!(c.network.container_dns, None, "not on port 53");
        assert_eq!(
            c.agent.expect("agent").network,
            c.network,
            "the agent uses the same settings"
        );
        let e = crate::config::resolve(
            crate::config::Flags::parse_from([
                "berthd",
                "--cluster-id",
                "c",
                "--listen",
                "10.0.0.7:1",
            ]),
            Some("[network]\nbogus = 1\n"),
            "h",
            &[],
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn flags_win_and_bad_values_are_named() {
        let file = NetworkFile {
            cluster_range: Some("10.200.0.0/16".parse().expect("net")),
            subnet_prefix: Some(26),
            dns_listen: Some("off".into()),
            ..NetworkFile::default()
        };
        let flags = NetworkFlags {
            subnet_prefix: Some(25),
            dns_listen: Some("127.0.0.1:5353".into()),
            ..NetworkFlags::default()
        };
        let c = resolve(&flags, &file, ip("10.0.0.7"), Path::new("/d")).expect("valid");
        assert_eq!(c.subnets.cluster.to_string(), "10.200.0.0/16");
        assert_eq!(c.subnets.prefix_len, 25);
        assert_eq!(
            c.dns,
            DnsListen::Given("127.0.0.1:5353".parse().expect("addr"))
        );
        assert_eq!(c.container_dns, None, "not port 53, and loopback");
        let c = resolve(
            &NetworkFlags::default(),
            &file,
            ip("10.0.0.7"),
            Path::new("/d"),
        )
        .expect("valid");
        assert_eq!(c.dns, DnsListen::Off);
        let bad = NetworkFlags {
            cluster_range: Some("10.88.0.0/16".parse().expect("net")),
            subnet_prefix: Some(8),
            ..NetworkFlags::default()
        };
        let e = resolve(
            &bad,
            &NetworkFile::default(),
            ip("10.0.0.7"),
            Path::new("/d"),
        )
        .expect_err("prefix shorter than the range");
        assert!(e.to_string().contains("cluster-range"), "{e}");
        let bad = NetworkFlags {
            dns_listen: Some("nope".into()),
            ..NetworkFlags::default()
        };
        let e = resolve(
            &bad,
            &NetworkFile::default(),
            ip("10.0.0.7"),
            Path::new("/d"),
        )
        .expect_err("bad dns");
        assert!(e.to_string().contains("dns-listen"), "{e}");
        let wildcard = NetworkFlags {
            dns_listen: Some("0.0.0.0:53".into()),
            ..NetworkFlags::default()
        };
        let c = resolve(
            &wildcard,
            &NetworkFile::default(),
            ip("10.0.0.7"),
            Path::new("/d"),
        )
        .expect("valid");
        assert_eq!(c.container_dns, Some(ip("10.0.0.7")));
    }
}
