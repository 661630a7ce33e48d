//! The agent's flags and `[agent]` table of berthd's TOML file, resolved into
//! [`AgentConfig`](super::AgentConfig).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::runner::AgentConfig;
use crate::config::ConfigError;
use crate::fence::FenceConfig;

/// berthd's agent flags (flattened into its command line).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentFlags {
    /// Run no agent: this machine takes no units
    #[arg(long)]
    pub no_agent: bool,
    /// The OCI runtime that runs units (default: `berth` next to berthd, else on PATH)
    #[arg(long)]
    pub berth: Option<PathBuf>,
    /// The agent's runtime state (berth's root for units, fifos, fence file)
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The image store units' images come from
    #[arg(long)]
    pub image_store: Option<PathBuf>,
    /// Parent cgroup of the units' containers (default /berth/<name>)
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// registries.conf for pulling units' images (insecure registries, mirrors)
    #[arg(long)]
    pub registries_conf: Option<PathBuf>,
    /// Bound of one unit journal file, bytes (two files are kept)
    #[arg(long)]
    pub journal_max: Option<u64>,
    /// How often the agent proves it reaches the quorum, ms
    #[arg(long)]
    pub agent_beat_ms: Option<u64>,
    /// How long units may run after the last proof, ms
    #[arg(long)]
    pub agent_lease_ms: Option<u64>,
    /// What the leader waits beyond that before moving a silent machine's units, ms
    #[arg(long)]
    pub agent_margin_ms: Option<u64>,
}

/// The `[agent]` table of the TOML file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentFile {
    pub enabled: Option<bool>,
    pub berth: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub image_store: Option<PathBuf>,
    pub cgroup_parent: Option<String>,
    pub journal_max: Option<u64>,
    pub registries_conf: Option<PathBuf>,
    pub beat_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub margin_ms: Option<u64>,
}

/// The berth binary: next to the running berthd if there, else `berth` on PATH.
fn default_berth() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("berth"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("berth"))
}

/// The cluster's fence timing from flags and file (defaults otherwise), validated.
pub fn fence_config(flags: &AgentFlags, file: &AgentFile) -> Result<FenceConfig, ConfigError> {
    let d = FenceConfig::default();
    let ms = |f: Option<u64>, t: Option<u64>, dflt: Duration| {
        f.or(t).map(Duration::from_millis).unwrap_or(dflt)
    };
    let fence = FenceConfig {
        beat: ms(flags.agent_beat_ms, file.beat_ms, d.beat),
        run_for: ms(flags.agent_lease_ms, file.lease_ms, d.run_for),
        margin: ms(flags.agent_margin_ms, file.margin_ms, d.margin),
    };
    fence.validate().map_err(|reason| ConfigError::Invalid {
        field: "agent timing",
        value: format!(
            "beat {} ms, lease {} ms, margin {} ms",
            fence.beat.as_millis(),
            fence.run_for.as_millis(),
            fence.margin.as_millis()
        ),
        reason,
    })?;
    Ok(fence)
}

/// The agent's configuration, or None when it is disabled.
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    flags: &AgentFlags,
    file: &AgentFile,
    name: &str,
    metadata: &BTreeMap<String, String>,
    node_ip: IpAddr,
    data_dir: &std::path::Path,
    network: &crate::network::NetworkConfig,
) -> Result<Option<AgentConfig>, ConfigError> {
    let fence = fence_config(flags, file)?;
    if flags.no_agent || file.enabled == Some(false) {
        return Ok(None);
    }
    let cgroup_parent = flags
        .cgroup_parent
        .clone()
        .or(file.cgroup_parent.clone())
        .unwrap_or_else(|| format!("/berth/{name}"));
    if !cgroup_parent.starts_with('/') || cgroup_parent.split('/').any(|c| c == "..") {
        return Err(ConfigError::Invalid {
            field: "cgroup-parent",
            value: cgroup_parent,
            reason: "must be an absolute cgroup path without '..'".into(),
        });
    }
    Ok(Some(AgentConfig {
        machine: name.to_string(),
        metadata: metadata.clone(),
        node_ip,
        berth: flags
            .berth
            .clone()
            .or(file.berth.clone())
            .unwrap_or_else(default_berth),
        run_dir: flags
            .run_dir
            .clone()
            .or(file.run_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/run/berth/agent").join(name)),
        image_store: flags
            .image_store
            .clone()
            .or(file.image_store.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/berth")),
        journal_dir: data_dir.join("orchestrator").join("journal"),
        journal_max: flags
            .journal_max
            .or(file.journal_max)
            .unwrap_or(super::journal::DEFAULT_MAX_BYTES),
        registries_conf: flags
            .registries_conf
            .clone()
            .or(file.registries_conf.clone())
            .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf")),
        cgroup_parent,
        fence,
        network: network.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> crate::network::NetworkConfig {
        crate::network::config::resolve(
            &Default::default(),
            &Default::default(),
            "10.0.0.1".parse().expect("ip"),
            std::path::Path::new("/var/lib/berth"),
        )
        .expect("network defaults")
    }

    /// The agent of node n1 with `flags`, all else default.
    fn agent_of(flags: &AgentFlags) -> Result<Option<AgentConfig>, ConfigError> {
        resolve(
            flags,
            &AgentFile::default(),
            "n1",
            &BTreeMap::new(),
            "10.0.0.1".parse().expect("ip"),
            std::path::Path::new("/var/lib/berth"),
            &net(),
        )
    }

    #[test]
    fn defaults_and_overrides() {
        let c = agent_of(&AgentFlags::default())
            .expect("valid")
            .expect("enabled");
        assert_eq!(c.cgroup_parent, "/berth/n1");
        assert_eq!(c.run_dir, PathBuf::from("/run/berth/agent/n1"));
        assert_eq!(
            c.journal_dir,
            PathBuf::from("/var/lib/berth/orchestrator/journal")
        );
        assert_eq!(c.fence, FenceConfig::default());
        let e = agent_of(&AgentFlags {
            agent_lease_ms: Some(100),
            ..AgentFlags::default()
        })
        .expect_err("lease shorter than 4 beats");
        assert!(e.to_string().contains("agent timing"), "{e}");
        let off = agent_of(&AgentFlags {
            no_agent: true,
            ..AgentFlags::default()
        });
        assert!(off.expect("valid").is_none());
    }
}
