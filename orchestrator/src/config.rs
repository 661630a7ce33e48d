//! berthd configuration: a TOML file and flags (flags win), validated into [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// berthd's command line (every key can also come from the `--config` TOML file).
#[derive(Debug, Default, Clone, clap::Parser)]
#[command(
    name = "berthd",
    version,
    about = "Berth cluster daemon: SWIM membership, Raft registry",
    args_conflicts_with_subcommands = true
)]
pub struct Flags {
    /// Instead of running the daemon: make credentials
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// TOML file with the same keys as the flags (cluster-id = "...", metadata = {k = "v"}, ...)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cluster ID carried by every packet and frame (required)
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// This node's unique name (default: hostname)
    #[arg(long)]
    pub name: Option<String>,
    /// Machine metadata key=value (repeatable)
    #[arg(long = "metadata")]
    pub metadata: Vec<String>,
    /// Data directory (orchestrator files go under DIR/orchestrator/)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TCP (Raft) and UDP (SWIM) address
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address other nodes use to reach this one (default: --listen)
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Unix socket of the HTTP API
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Initial voters: NAME=IP:PORT,NAME=IP:PORT,...
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Any member's IP:PORT; this node joins as a learner
    #[arg(long)]
    pub join: Option<SocketAddr>,
    /// Raft tick length in milliseconds
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Raft election timeout in ticks (randomised between this and twice this)
    #[arg(long)]
    pub election_ticks: Option<usize>,
    /// Raft heartbeat interval in ticks
    #[arg(long)]
    pub heartbeat_ticks: Option<usize>,
    /// This node's credentials: ca.pem, node.pem, node.key, gossip.keys (made by
    /// `berthd credentials init`); default /etc/berth/credentials
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Take a registry snapshot (and compact the log) every this many entries
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Also serve the HTTP API on this TCP address, TLS with client certificates from the
    /// cluster CA (`berthd credentials add-client`)
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Run WITHOUT peer authentication and encryption (plain TCP frames and UDP datagrams
    /// that anyone who knows the cluster ID can forge); for experiments only
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub agent: crate::agent::config::AgentFlags,
    #[command(flatten)]
    pub network: crate::network::config::NetworkFlags,
}

/// `berthd credentials ...`: the cluster's CA, node and client certificates, gossip keys.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Make and manage credentials (see orchestrator/README.md, "Bootstrap")
    #[command(subcommand)]
    Credentials(CredentialsCmd),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredentialsCmd {
    /// A new CA and gossip key under OUT/ca/, and OUT/nodes/NAME/ for each --node
    Init {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        cluster_id: String,
        /// Node names (repeatable or comma-separated)
        #[arg(long = "node", value_delimiter = ',')]
        nodes: Vec<String>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// OUT/nodes/NAME/ for one more node, signed by OUT/ca/
    AddNode {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        cluster_id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// OUT/clients/NAME/ for berthctl --endpoint https://... (--read-only: reads only)
    AddClient {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        cluster_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Print a new random gossip key (for `berthctl gossip install`)
    Keygen,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ValidityArgs {
    /// Days the issued certificates are valid
    #[arg(long, default_value_t = 825)]
    pub days: i64,
    /// Start the validity this many days in the past (tests make expired certificates so)
    #[arg(long, default_value_t = 0)]
    pub backdate_days: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    cluster_id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    socket: Option<PathBuf>,
    bootstrap: Option<Bootstrap>,
    join: Option<SocketAddr>,
    tick_ms: Option<u64>,
    election_ticks: Option<usize>,
    heartbeat_ticks: Option<usize>,
    credentials: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    api_listen: Option<SocketAddr>,
    snapshot_every: Option<u64>,
    agent: Option<crate::agent::config::AgentFile>,
    network: Option<crate::network::config::NetworkFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Bootstrap {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("--cluster-id is required")]
    MissingClusterId,
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(field: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Raft timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            tick_ms: 10,
            // 250-500 ms: survives ~200 ms stalls (fsync on a busy disk, starved CPU) without
            // spurious elections; --election-ticks 10 gives faster failover on quiet machines.
            election_ticks: 25,
            heartbeat_ticks: 3,
        }
    }
}

/// How peers are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// TLS and sealed gossip with the credentials in this directory.
    Credentials(PathBuf),
    /// Plain frames and datagrams (`--insecure`).
    Insecure,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster_id: String,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub socket: PathBuf,
    pub bootstrap: Vec<(String, SocketAddr)>,
    pub join: Option<SocketAddr>,
    pub timing: Timing,
    pub security: Security,
    /// The remote API's TCP address (needs credentials).
    pub api_listen: Option<SocketAddr>,
    /// Entries between registry snapshots.
    pub snapshot_every: u64,
    /// The at-most-once timing (used by the leader even on a node without an agent).
    pub fence: crate::fence::FenceConfig,
    /// The agent, unless disabled.
    pub agent: Option<crate::agent::AgentConfig>,
    /// The cluster network, CNI and DNS.
    pub network: crate::network::NetworkConfig,
}

impl Config {
    /// Where the orchestrator keeps its files.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("orchestrator")
    }

    /// True when this node is one of the initial voters.
    pub fn is_bootstrap_voter(&self) -> bool {
        self.bootstrap.iter().any(|(n, _)| n == &self.name)
    }
}

/// Checks a cluster ID or node name: 1..=63 bytes of `[A-Za-z0-9._-]`.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 63 {
        return Err(invalid(field, value, "must be 1 to 63 bytes long"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            field,
            value,
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// Parses `NAME=IP:PORT,NAME=IP:PORT`.
pub fn parse_bootstrap(items: &[String]) -> Result<Vec<(String, SocketAddr)>, ConfigError> {
    let mut out: Vec<(String, SocketAddr)> = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, addr) = item
            .split_once('=')
            .ok_or_else(|| invalid("bootstrap", item, "expected NAME=IP:PORT"))?;
        validate_name("bootstrap name", name)?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| invalid("bootstrap", item, &format!("bad address: {e}")))?;
        if out.iter().any(|(n, a)| n == name || *a == addr) {
            return Err(invalid("bootstrap", item, "duplicate name or address"));
        }
        out.push((name.to_string(), addr));
    }
    Ok(out)
}

fn parse_metadata(items: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| invalid("metadata", item, "expected key=value"))?;
        if k.is_empty() {
            return Err(invalid("metadata", item, "empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The address other nodes reach this one at when `--advertise` is not given: the listen
/// address itself, or, when that is unspecified (0.0.0.0 / ::), this host's one usable
/// address of the same family (`host_addrs`: the addresses of its interfaces that are up).
/// Loopback and link-local addresses are skipped unless nothing else exists; several
/// candidates are ambiguous and must be settled with `--advertise`.
pub fn default_advertise(
    listen: SocketAddr,
    host_addrs: &[std::net::IpAddr],
) -> Result<SocketAddr, ConfigError> {
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let same_family = |ip: &&std::net::IpAddr| ip.is_ipv4() == listen.is_ipv4();
    let link_local = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    let mut routable: Vec<std::net::IpAddr> = host_addrs
        .iter()
        .filter(same_family)
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !link_local(ip))
        .copied()
        .collect();
    routable.sort();
    routable.dedup();
    match routable.as_slice() {
        [one] => Ok(SocketAddr::new(*one, listen.port())),
        [] => {
            let loopback = host_addrs.iter().filter(same_family).find(|ip| ip.is_loopback());
            match loopback {
                Some(lo) => Ok(SocketAddr::new(*lo, listen.port())),
                None => Err(invalid(
                    "advertise",
                    &listen.to_string(),
                    "this host has no address to advertise; set --advertise",
                )),
            }
        }
        many => Err(invalid(
            "advertise",
            &listen.to_string(),
            &format!(
                "--listen is unspecified and this host has several addresses ({}); set --advertise to the one other nodes reach",
                many.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Merges `file` (TOML text, when `--config` was given) under `flags` and validates.
/// `host_addrs` are this host's interface addresses (for the default `--advertise`).
pub fn resolve(
    flags: Flags,
    file: Option<&str>,
    hostname: &str,
    host_addrs: &[std::net::IpAddr],
) -> Result<Config, ConfigError> {
    let file: FileConfig = match (file, &flags.config) {
        (Some(text), path) => toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?,
        (None, _) => FileConfig::default(),
    };
    let cluster_id = flags
        .cluster_id
        .or(file.cluster_id)
        .ok_or(ConfigError::MissingClusterId)?;
    validate_name("cluster-id", &cluster_id)?;
    let name = flags
        .name
        .or(file.name)
        .unwrap_or_else(|| hostname.to_string());
    validate_name("name", &name)?;
    let mut metadata = file.metadata;
    metadata.extend(parse_metadata(&flags.metadata)?);
    let listen = flags
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7380)));
    let advertise = match flags.advertise.or(file.advertise) {
        Some(a) => a,
        None => default_advertise(listen, host_addrs)?,
    };
    if advertise.ip().is_unspecified() {
        return Err(invalid(
            "advertise",
            &advertise.to_string(),
            "must be a routable address (set --advertise when --listen is 0.0.0.0)",
        ));
    }
    if advertise.port() == 0 || listen.port() == 0 {
        return Err(invalid(
            "listen",
            &listen.to_string(),
            "port 0 is not allowed",
        ));
    }
    let bootstrap = match (flags.bootstrap, file.bootstrap) {
        (Some(s), _) => parse_bootstrap(&[s])?,
        (None, Some(Bootstrap::One(s))) => parse_bootstrap(&[s])?,
        (None, Some(Bootstrap::Many(v))) => parse_bootstrap(&v)?,
        (None, None) => Vec::new(),
    };
    let join = flags.join.or(file.join);
    let api_listen = flags.api_listen.or(file.api_listen);
    if api_listen.is_some() && (flags.insecure || file.insecure) {
        return Err(invalid(
            "api-listen",
            &api_listen.map(|a| a.to_string()).unwrap_or_default(),
            "the remote API needs credentials (client certificates); it cannot run with --insecure",
        ));
    }
    let defaults = Timing::default();
    let timing = Timing {
        tick_ms: flags.tick_ms.or(file.tick_ms).unwrap_or(defaults.tick_ms),
        election_ticks: flags
            .election_ticks
            .or(file.election_ticks)
            .unwrap_or(defaults.election_ticks),
        heartbeat_ticks: flags
            .heartbeat_ticks
            .or(file.heartbeat_ticks)
            .unwrap_or(defaults.heartbeat_ticks),
    };
    if timing.tick_ms == 0 || timing.tick_ms > 1000 {
        return Err(invalid(
            "tick-ms",
            &timing.tick_ms.to_string(),
            "must be 1..=1000",
        ));
    }
    if timing.heartbeat_ticks == 0 || timing.election_ticks <= timing.heartbeat_ticks {
        return Err(invalid(
            "election-ticks",
            &timing.election_ticks.to_string(),
            "must be greater than heartbeat-ticks (>= 1)",
        ));
    }
    let data_dir = flags
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth"));
    let agent_file = file.agent.unwrap_or_default();
    let fence = crate::agent::config::fence_config(&flags.agent, &agent_file)?;
    let network = crate::network::config::resolve(
        &flags.network,
        &file.network.unwrap_or_default(),
        advertise.ip(),
        &data_dir,
    )?;
    let agent = crate::agent::config::resolve(
        &flags.agent,
        &agent_file,
        &name,
        &metadata,
        advertise.ip(),
        &data_dir,
        &network,
    )?;
    Ok(Config {
        cluster_id,
        name,
        metadata,
        data_dir,
        listen,
        advertise,
        socket: flags
            .socket
            .or(file.socket)
            .unwrap_or_else(|| PathBuf::from("/run/berth/berthd.sock")),
        bootstrap,
        join,
        timing,
        api_listen,
        snapshot_every: flags
            .snapshot_every
            .or(file.snapshot_every)
            .unwrap_or(10_000)
            .max(1),
        security: if flags.insecure || file.insecure {
            Security::Insecure
        } else {
            Security::Credentials(
                flags
                    .credentials
                    .or(file.credentials)
                    .unwrap_or_else(|| PathBuf::from("/etc/berth/credentials")),
            )
        },
        fence,
        agent,
        network,
    })
}

/// The Raft id of a node: a 64-bit FNV-1a hash of its name (never 0).
pub fn node_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("berthd").chain(args.iter().copied()))
    }

    #[test]
    fn flags_override_file() {
        let file = r#"
cluster-id = "c1"
name = "from-file"
metadata = { region = "eu", disk = "ssd" }
listen = "10.0.0.1:7000"
bootstrap = ["a=10.0.0.1:7000", "b=10.0.0.2:7000,c=10.0.0.3:7000"]
"#;
        let c = resolve(
            flags(&[
                "--name",
                "n1",
                "--metadata",
                "region=us",
                "--socket",
                "/tmp/s",
            ]),
            Some(file),
            "host",
            &[],
        )
        .expect("valid");
        assert_eq!(c.cluster_id, "c1");
        assert_eq!(c.name, "n1");
        assert_eq!(c.metadata["region"], "us");
        assert_eq!(c.metadata["disk"], "ssd");
        assert_eq!(c.advertise, "10.0.0.1:7000".parse().expect("addr"));
        assert_eq!(c.bootstrap.len(), 3);
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert_eq!(c.state_dir(), PathBuf::from("/var/lib/berth/orchestrator"));
        assert!(!c.is_bootstrap_voter());
    }

    #[test]
    fn defaults_and_hostname() {
        let c = resolve(
            flags(&["--cluster-id", "c", "--listen", "127.0.0.1:7380"]),
            None,
            "myhost",
            &[],
        )
        .expect("valid");
        assert_eq!(c.name, "myhost");
        assert_eq!(c.timing, Timing::default());
        assert!(c.bootstrap.is_empty() && c.join.is_none());
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = resolve(flags(&[]), None, "h", &[]).expect_err("no cluster id");
        assert_eq!(e, ConfigError::MissingClusterId);
        let e = resolve(flags(&["--cluster-id", "a/b"]), None, "h", &[]).expect_err("bad id");
        assert!(e.to_string().contains("cluster-id"), "{e}");
        let two: Vec<std::net::IpAddr> = vec![
            "10.0.0.1".parse().expect("ip"),
            "192.168.1.1".parse().expect("ip"),
        ];
        let e = resolve(flags(&["--cluster-id", "c"]), None, "h", &two).expect_err("ambiguous");
        assert!(e.to_string().contains("advertise"), "{e}");
        assert!(e.to_string().contains("192.168.1.1"), "{e}");
        let e = resolve(flags(&["--cluster-id", "c"]), None, "h", &[]).expect_err("no address");
        assert!(e.to_string().contains("advertise"), "{e}");
        let e = resolve(
            flags(&[
                "--cluster-id",
                "c",
                "--advertise",
                "1.2.3.4:5",
                "--bootstrap",
                "a=x",
            ]),
            None,
            "h",
            &[],
        )
        .expect_err("bad bootstrap");
        assert!(e.to_string().contains("bootstrap"), "{e}");
        let e = resolve(
            flags(&[
                "--cluster-id",
                "c",
                "--advertise",
                "1.2.3.4:5",
                "--metadata",
                "novalue",
            ]),
            None,
            "h",
            &[],
        )
        .expect_err("bad metadata");
        assert!(e.to_string().contains("metadata"), "{e}");
        let e = resolve(flags(&["--config", "/x.toml"]), Some("bogus = 1"), "h", &[])
            .expect_err("unknown key");
        assert!(e.to_string().contains("/x.toml"), "{e}");
    }

    #[test]
    fn unspecified_listen_advertises_the_hosts_one_routable_address() {
        let ip = |s: &str| -> std::net::IpAddr { s.parse().expect("ip") };
        let listen: SocketAddr = "0.0.0.0:7380".parse().expect("addr");
        let host = [
            ip("127.0.0.1"),
            ip("169.254.3.4"),
            ip("10.1.2.3"),
            ip("fe80::1"),
        ];
        assert_eq!(
            default_advertise(listen, &host),
            Ok("10.1.2.3:7380".parse().expect("addr"))
        );
        // the defaults (no --listen, no --advertise) start on such a host
        let c = resolve(flags(&["--cluster-id", "c"]), None, "h", &host).expect("valid");
        assert_eq!(c.listen, listen);
        assert_eq!(c.advertise, "10.1.2.3:7380".parse().expect("addr"));
        // a host with only loopback advertises loopback
        assert_eq!(
            default_advertise(listen, &[ip("127.0.0.1")]),
            Ok("127.0.0.1:7380".parse().expect("addr"))
        );
        // a specific listen address is its own advertise address
        let specific: SocketAddr = "10.9.9.9:1".parse().expect("addr");
        assert_eq!(default_advertise(specific, &host), Ok(specific));
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("n1"), node_id("n1"));
        assert_ne!(node_id("n1"), node_id("n2"));
        assert_ne!(node_id(""), 0);
    }
}
