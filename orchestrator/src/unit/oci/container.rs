//! `[Container]` units: the image's config with the unit's keys applied.

use serde_json::{json, Value};

use berth_images::bundle::{self, Net, Overrides, UserDb};
use berth_images::manifest::ImageConfig;

use super::{env_files, OciContext, OciError};
use crate::unit::{CapabilityName, ContainerOptions, EnvFileFormat, Network, Unit, Volume};

/// runc's default capabilities, which `bundle::generate` grants.
const DEFAULT_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

pub(super) fn config(
    unit: &Unit,
    c: &ContainerOptions,
    image: &ImageConfig,
    users: &UserDb,
    ctx: &OciContext<'_>,
) -> Result<Value, OciError> {
    let paths: Vec<&str> = c.environment_files.iter().map(String::as_str).collect();
    let mut vars = env_files(unit, &paths, ctx.env_files, EnvFileFormat::Podman)?;
    vars.extend(c.environment.iter().cloned());
    let overrides = Overrides {
        cmd: c.exec.clone(),
        env: vars.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: c.working_dir.clone(),
        user: c.user.clone(),
        memory: None,
        net: Net::Host,
        hostname: ctx.hostname.to_string(),
        terminal: false,
        fallback_args: Vec::new(),
    };
    let mut config =
        bundle::generate(image, users, &overrides).map_err(|source| OciError::Bundle {
            unit: unit.name.to_string(),
            source,
        })?;
    network(unit, c, ctx, &mut config)?;
    mounts(c, &mut config);
    capabilities(c, &mut config);
    Ok(config)
}

fn network(
    unit: &Unit,
    c: &ContainerOptions,
    ctx: &OciContext<'_>,
    config: &mut Value,
) -> Result<(), OciError> {
    let ns = match (&c.network, ctx.netns_path) {
        (Some(Network::Host), _) => None,
        (Some(Network::None), _) => Some(json!({"type": "network"})),
        (None, Some(p)) | (Some(Network::Named(_)), Some(p)) => {
            Some(json!({"type": "network", "path": p}))
        }
        (Some(Network::Named(n)), None) => {
            return Err(OciError::NoNetns {
                unit: unit.name.to_string(),
                network: n.clone(),
            })
        }
        (None, None) => {
            return Err(OciError::NoNetns {
                unit: unit.name.to_string(),
                network: crate::network::CLUSTER_NETWORK.to_string(),
            })
        }
    };
    let joins = ns.as_ref().is_some_and(|n| n.get("path").is_some());
    if let (Some(ns), Some(list)) = (ns, config["linux"]["namespaces"].as_array_mut()) {
        list.insert(1, ns);
    }
    if let (true, Some(src), Some(list)) = (joins, ctx.resolv_conf, config["mounts"].as_array_mut())
    {
        list.push(
            json!({"destination": "/etc/resolv.conf", "type": "bind", "source": src,
                         "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}),
        );
    }
    Ok(())
}

fn bind(v: &Volume) -> Value {
    let mut options = vec![
        if v.recursive { "rbind" } else { "bind" }.to_string(),
        if v.read_only { "ro" } else { "rw" }.to_string(),
    ];
    options.extend(v.propagation.iter().cloned());
    options.extend(v.flags.iter().cloned());
    json!({"destination": v.destination, "type": "bind", "source": v.source, "options": options})
}

fn mounts(c: &ContainerOptions, config: &mut Value) {
    let Some(list) = config["mounts"].as_array_mut() else {
        return;
    };
    if c.read_only {
        for (dest, mode) in [("/tmp", "1777"), ("/var/tmp", "1777"), ("/run", "755")] {
            list.push(
                json!({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                             "options": ["rw", "nosuid", "nodev", format!("mode={mode}")]}),
            );
        }
    }
    list.extend(c.volumes.iter().map(bind));
    if c.read_only {
        config["root"]["readonly"] = json!(true);
    }
}

/// Every capability name, sorted.
pub(super) fn all_caps() -> Vec<String> {
    let mut all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    all.sort();
    all
}

fn capabilities(c: &ContainerOptions, config: &mut Value) {
    if c.add_capabilities.is_empty() && c.drop_capabilities.is_empty() {
        return;
    }
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for d in &c.drop_capabilities {
        match d {
            CapabilityName::All => set.clear(),
            CapabilityName::One(cap) => set.retain(|x| *x != cap.to_string()),
        }
    }
    for a in &c.add_capabilities {
        match a {
            CapabilityName::All => set = all_caps(),
            CapabilityName::One(cap) if !set.contains(&cap.to_string()) => {
                set.push(cap.to_string())
            }
            CapabilityName::One(_) => {}
        }
    }
    for which in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][which] = json!(set);
    }
}
