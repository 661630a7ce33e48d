//! `image run --net NAME -p HOST:CONTAINER[/tcp|udp]`: a one-off container on a CNI network,
//! through the same `berth_cni::Invoker` berthd's agent uses. The container's network
//! namespace is held at `STORE/cni/image-run/netns/<name>` (config.json joins it), the
//! network's chain is added before the container starts, published ports go to portmap,
//! and DEL plus the namespace's removal follow when the run ends, also when it failed.
//! A run killed with SIGKILL leaves its attachment recorded
//! (`STORE/cni/image-run/attachments`); the next `image run --net` or `image prune`
//! deletes every one whose container is gone and whose `image run` no longer runs.
//!
//! The runtime itself stays network-agnostic, as runc is: it only joins the namespace.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use berth_cni::{Attachment, AttachmentKey, Invoker, InvokerConfig, PortMapping, RuntimeConfig};
use berth_images::store::Store;

/// `--net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetChoice {
    None,
    Host,
    Cni(String),
}

impl NetChoice {
    pub fn parse(s: &str) -> NetChoice {
        match s {
            "none" => NetChoice::None,
            "host" => NetChoice::Host,
            n => NetChoice::Cni(n.to_string()),
        }
    }
}

/// Where CNI configs and plugins are, and image run's own CNI state.
#[derive(Debug, Clone)]
pub struct CniDirs {
    pub conf_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    /// `STORE/cni/image-run`.
    pub state: PathBuf,
}

impl CniDirs {
    pub fn new(store: &Store, conf_dir: PathBuf, plugin_dirs: Vec<PathBuf>) -> CniDirs {
        let plugin_dirs = if plugin_dirs.is_empty() {
            InvokerConfig::default().plugin_dirs
        } else {
            plugin_dirs
        };
        CniDirs {
            conf_dir,
            plugin_dirs,
            state: store.root().join("cni").join("image-run"),
        }
    }

    fn invoker(&self) -> Invoker {
        Invoker::new(InvokerConfig {
            plugin_dirs: self.plugin_dirs.clone(),
            state_dir: self.state.join("attachments"),
            timeout: Duration::from_secs(30),
        })
    }

    fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }

    /// The network namespace file of container `name`.
    pub fn netns(&self, name: &str) -> PathBuf {
        self.netns_dir().join(name)
    }
}

/// `-p [IP:]HOST:CONTAINER[/tcp|udp]`.
pub fn parse_publish(s: &str) -> anyhow::Result<PortMapping> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, p @ ("tcp" | "udp"))) => (spec, p),
        Some((_, p)) => bail!("-p {s}: unknown protocol {p:?} (tcp or udp)"),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c, h] => (*c, *h, None),
        [c, h, ip] => (
            *c,
            *h,
            Some(ip.trim_start_matches('[').trim_end_matches(']')),
        ),
        _ => bail!("-p {s}: want [IP:]HOST:CONTAINER[/tcp|udp]"),
    };
    let port = |v: &str, what: &str| -> anyhow::Result<u16> {
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => bail!("-p {s}: the {what} port {v:?} is not 1-65535"),
        }
    };
    Ok(PortMapping {
        host_port: port(host, "host")?,
        container_port: port(container, "container")?,
        protocol: protocol.into(),
        host_ip: ip
            .map(|i| i.parse::<IpAddr>())
            .transpose()
            .with_context(|| format!("-p {s}: not an IP address"))?,
    })
}

/// A container's attachment, to be detached when the run ends.
pub struct Attached {
    invoker: Invoker,
    key: AttachmentKey,
    netns: PathBuf,
}

/// Makes the namespace and adds `network`'s chain to it; on failure nothing is left.
pub fn attach(
    dirs: &CniDirs,
    network: &str,
    name: &str,
    ports: Vec<PortMapping>,
) -> anyhow::Result<(Attached, Option<IpAddr>)> {
    let net = berth_cni::find_network(&dirs.conf_dir, network)?;
    let netns = dirs.netns(name);
    std::fs::create_dir_all(dirs.netns_dir())
        .with_context(|| format!("creating {}", dirs.netns_dir().display()))?;
    berth_cni::netns::create(&netns)?;
    let invoker = dirs.invoker();
    let att = Attachment {
        container_id: name.to_string(),
        netns: netns.clone(),
        ifname: "eth0".into(),
        args: Vec::new(),
        runtime_config: RuntimeConfig {
            port_mappings: ports,
            ..RuntimeConfig::default()
        },
    };
    match invoker.add(&net, &att) {
        Ok(result) => {
            let key = AttachmentKey {
                network: net.name.clone(),
                container_id: name.to_string(),
                ifname: "eth0".into(),
            };
            let ip = result.container_ip();
            Ok((
                Attached {
                    invoker,
                    key,
                    netns,
                },
                ip,
            ))
        }
        Err(e) => {
            let _ = berth_cni::netns::remove(&netns);
            Err(e).with_context(|| format!("attaching container {name} to network {network}"))
        }
    }
}

impl Attached {
    /// DEL, then the namespace goes (also when DEL failed: its record stays for the sweep).
    pub fn detach(self) -> anyhow::Result<()> {
        let del = self.invoker.del(&self.key);
        let ns = berth_cni::netns::remove(&self.netns);
        del.with_context(|| {
            format!(
                "detaching {} from {}",
                self.key.container_id, self.key.network
            )
        })?;
        ns?;
        Ok(())
    }
}

/// Deletes what killed runs left: attachments (and namespace files) of containers that are
/// gone from `root` and whose snapshot's owner (the `image run` process) no longer runs.
pub fn sweep(store: &Store, root: &Path, dirs: &CniDirs) -> anyhow::Result<()> {
    let owners: HashMap<String, bool> = store
        .snapshots()?
        .into_iter()
        .map(|s| (s.name, s.owner.is_some_and(|o| o.alive())))
        .collect();
    let alive = |id: &str| root.join(id).exists() || owners.get(id).copied().unwrap_or(false);
    let invoker = dirs.invoker();
    let report = invoker.cleanup_leftovers(|rec| alive(&rec.attachment.container_id))?;
    for k in &report.removed {
        tracing::info!(network = %k.network, container = %k.container_id, "removed an attachment a killed image run left");
    }
    for (k, e) in &report.failed {
        eprintln!(
            "berth: cannot remove {}'s attachment to {}: {e}",
            k.container_id, k.network
        );
    }
    if let Ok(entries) = std::fs::read_dir(dirs.netns_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !alive(&name) {
                let _ = berth_cni::netns::remove(&e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(p.host_ip, None);
        let p = parse_publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (53, 5353, "udp")
        );
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        let p = parse_publish("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        for bad in [
            "80",
            "0:80",
            "a:80",
            "8080:80/sctp",
            "1.2.3:8:8",
            "70000:80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        assert_eq!(NetChoice::parse("none"), NetChoice::None);
        assert_eq!(NetChoice::parse("host"), NetChoice::Host);
        assert_eq!(NetChoice::parse("berth"), NetChoice::Cni("berth".into()));
    }
}
