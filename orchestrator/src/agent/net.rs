//! Units' container networks. A unit on a CNI network (`Network=` a name, or unset: the
//! cluster network `berth`) gets a named network namespace, held at
//! `<run_dir>/netns/<container id>` (the path config.json joins), and the network's chain
//! added to it through the shared `berth_cni::Invoker`; both on a worker thread, while the
//! bundle is prepared on another. The attachment is deleted and the namespace removed when
//! the instance ends; a failed attach undoes itself (the invoker DELs what ADD made) and
//! removes the namespace, so nothing is left behind. At start, [`SweepJob`] DELs every
//! attachment whose container was not re-adopted (a crash's leftovers) and removes their
//! namespace files.
//!
//! Published ports go to the chain as `portMappings` (the portmap plugin); containers get
//! a resolv.conf naming berthd's DNS first ([`resolv_conf`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_cni::{Attachment, AttachmentKey, Invoker, PortMapping, RuntimeConfig};

use super::work::{Done, JobKind};
use crate::network::CLUSTER_NETWORK;
use crate::unit::{Network, Protocol, Unit};

/// The interface name inside containers.
pub const IFNAME: &str = "eth0";
/// Most bytes of the host's resolv.conf read (for its nameservers and search domains).
const MAX_RESOLV_CONF: u64 = 64 << 10;

/// How a unit's container is networked (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// The machine's network namespace (fleet-era units, `Network=host`).
    Host,
    /// A new namespace with only loopback (`Network=none`; berth makes it).
    None,
    /// A namespace attached to this CNI network.
    Cni(String),
}

impl NetMode {
    pub fn of(u: &Unit) -> NetMode {
        let Some(c) = &u.container else {
            return NetMode::Host;
        };
        match &c.network {
            Some(Network::Host) => NetMode::Host,
            Some(Network::None) => NetMode::None,
            Some(Network::Named(n)) => NetMode::Cni(n.clone()),
            None => NetMode::Cni(CLUSTER_NETWORK.to_string()),
        }
    }

    pub fn network(&self) -> Option<&str> {
        match self {
            NetMode::Cni(n) => Some(n),
            _ => None,
        }
    }
}

/// The unit's `PublishPort=`s as the portmap plugin takes them.
pub fn port_mappings(u: &Unit) -> Vec<PortMapping> {
    let Some(c) = &u.container else {
        return Vec::new();
    };
    c.publish_ports
        .iter()
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            }
            .into(),
            host_ip: p.ip,
        })
        .collect()
}

/// Where a container's network namespace is held.
pub fn netns_path(run_dir: &Path, cid: &str) -> PathBuf {
    run_dir.join("netns").join(cid)
}

/// The resolv.conf of a container on a CNI network (pure): berthd's DNS first (answers
/// `<service>.service.berth.`; REFUSED for other names, so the resolver moves on), then
/// the host's own non-loopback nameservers (a loopback one, such as systemd-resolved's,
/// is not reachable from the container's namespace); `service.berth` searched first, so
/// a bare service name resolves.
pub fn resolv_conf(dns: Option<IpAddr>, host: &str) -> String {
    let mut servers: Vec<String> = dns.iter().map(IpAddr::to_string).collect();
    let mut search = vec!["service.berth".to_string()];
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    if !ip.is_loopback() && !servers.contains(&ip.to_string()) {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => {
                for w in words {
                    let ok = w.len() <= 253
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                    if ok && !search.iter().any(|s| s == w) {
                        search.push(w.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    servers.truncate(3); // glibc reads three
    search.truncate(6);
    let mut out = String::from("# written by berthd\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out.push_str(&format!("search {}\n", search.join(" ")));
    out
}

/// The host's resolv.conf (bounded; empty when unreadable).
pub fn host_resolv_conf() -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open("/etc/resolv.conf") {
        let _ = f.take(MAX_RESOLV_CONF).read_to_string(&mut s);
    }
    s
}

/// Makes the namespace and adds the network's chain to it, on a worker thread.
pub struct AttachJob {
    pub unit: String,
    pub generation: u64,
    pub invoker: Arc<Invoker>,
    pub conf_dir: PathBuf,
    pub network: String,
    pub cid: String,
    pub netns: PathBuf,
    pub ports: Vec<PortMapping>,
}

impl AttachJob {
    pub fn run(self) -> Done {
        let (result, ip) = match self.attach() {
            Ok(ip) => (Ok(()), ip),
            Err(e) => (Err(e), None),
        };
        Done {
            unit: self.unit,
            generation: self.generation,
            kind: JobKind::Attach,
            result,
            ip,
        }
    }

    fn attach(&self) -> Result<Option<IpAddr>, String> {
        // A namespace file left by a crash midway (its attachment was swept at start).
        berth_cni::netns::remove(&self.netns).map_err(|e| e.to_string())?;
        if let Some(dir) = self.netns.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let net =
            berth_cni::find_network(&self.conf_dir, &self.network).map_err(|e| e.to_string())?;
        berth_cni::netns::create(&self.netns).map_err(|e| e.to_string())?;
        let att = Attachment {
            container_id: self.cid.clone(),
            netns: self.netns.clone(),
            ifname: IFNAME.into(),
            args: Vec::new(),
            runtime_config: RuntimeConfig {
                port_mappings: self.ports.clone(),
                ..RuntimeConfig::default()
            },
        };
        match self.invoker.add(&net, &att) {
            Ok(result) => Ok(result.container_ip()),
            Err(e) => {
                // The invoker undid the chain; the namespace goes too.
                if let Err(ns) = berth_cni::netns::remove(&self.netns) {
                    tracing::warn!(unit = %self.unit, "{ns}");
                }
                Err(e.to_string())
            }
        }
    }
}

/// Deletes the attachment and removes the namespace, on a worker thread.
pub struct DetachJob {
    pub unit: String,
    pub generation: u64,
    pub invoker: Arc<Invoker>,
    pub key: AttachmentKey,
    pub netns: PathBuf,
}

impl DetachJob {
    pub fn run(self) -> Done {
        let del = self
            .invoker
            .del(&self.key)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // The namespace goes even if DEL failed: the record stays and a later DEL (the
        // plugins tolerate a missing namespace on DEL) finishes the job.
        let ns = berth_cni::netns::remove(&self.netns).map_err(|e| e.to_string());
        Done {
            unit: self.unit,
            generation: self.generation,
            kind: JobKind::Detach,
            result: del.and(ns),
            ip: None,
        }
    }
}

/// Removes what a previous berthd left: attachments of containers not re-adopted, and
/// namespace files nobody holds. Runs before any attach (the agent waits for it).
pub struct SweepJob {
    pub invoker: Arc<Invoker>,
    pub netns_dir: PathBuf,
    /// Container ids of the re-adopted instances: their attachments stay.
    pub keep: BTreeSet<String>,
}

impl SweepJob {
    pub fn run(self) -> Done {
        let mut problems = Vec::new();
        match self
            .invoker
            .cleanup_leftovers(|rec| self.keep.contains(&rec.attachment.container_id))
        {
            Ok(report) => {
                for k in &report.removed {
                    tracing::info!(network = %k.network, cid = %k.container_id, "removed a leftover network attachment");
                }
                for (k, e) in &report.failed {
                    problems.push(format!("{}/{}: {e}", k.network, k.container_id));
                }
                for e in &report.unreadable {
                    problems.push(e.to_string());
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if self.keep.contains(&name) {
                    continue;
                }
                if let Err(err) = berth_cni::netns::remove(&e.path()) {
                    problems.push(err.to_string());
                }
            }
        }
        Done {
            unit: String::new(),
            generation: 0,
            kind: JobKind::Sweep,
            result: if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            },
            ip: None,
        }
    }
}

/// The container address recorded for an attachment (for a re-adopted container).
pub fn recorded_ip(invoker: &Invoker, key: &AttachmentKey) -> Option<IpAddr> {
    let rec = invoker.records().read(key).ok()??;
    let version = rec.config["cniVersion"].as_str()?.to_string();
    let bytes = serde_json::to_vec(rec.result.as_ref()?).ok()?;
    berth_cni::result::parse_result(&bytes, &version)
        .ok()?
        .container_ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        crate::unit::parse_unit("web.service", text).expect("unit")
    }

    #[test]
    fn modes_and_ports_from_the_unit() {
        let u =
            unit("[Container]\nImage=web\nPublishPort=8080:80\nPublishPort=10.0.0.1:53:53/udp\n");
        assert_eq!(NetMode::of(&u), NetMode::Cni("berth".into()), "the default");
        let ports = port_mappings(&u);
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].host_port, ports[0].container_port), (8080, 80));
        assert_eq!(ports[0].protocol, "tcp");
        assert_eq!(ports[1].protocol, "udp");
        assert_eq!(ports[1].host_ip, Some("10.0.0.1".parse().expect("ip")));
        let host = unit("[Container]\nImage=web\nNetwork=host\n");
        assert_eq!(NetMode::of(&host), NetMode::Host);
        let none = unit("[Container]\nImage=web\nNetwork=none\n");
        assert_eq!(NetMode::of(&none), NetMode::None);
        let named = unit("[Container]\nImage=web\nNetwork=lab\n");
        assert_eq!(NetMode::of(&named).network(), Some("lab"));
        let fleet = unit("[Service]\nExecStart=/bin/true\n");
        assert_eq!(NetMode::of(&fleet), NetMode::Host);
    }

    #[test]
    fn resolv_conf_puts_berthd_first_and_keeps_reachable_host_servers() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        let r = resolv_conf(Some("10.0.0.7".parse().expect("ip")), host);
        assert_eq!(
            r,
            "# written by berthd\nnameserver 10.0.0.7\nnameserver 192.0.2.53\nsearch service.berth corp.example\n"
        );
        let r = resolv_conf(None, "nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\nnameserver 4.4.4.4\nsearch a\x1b[0m\n");
        assert_eq!(r.matches("nameserver").count(), 3);
        assert!(!r.contains('\x1b'), "{r}");
    }
}
