//! `[Container]`: a container from an image, with podman Quadlet's key names.
//!
//! | key | value |
//! |---|---|
//! | `Image` | image reference in the machine's store (required) |
//! | `Exec` | arguments replacing the image's Cmd (its Entrypoint stays), systemd word quoting |
//! | `Environment` | `NAME=value` words; repeatable; wins over the image's and the files' |
//! | `EnvironmentFile` | absolute path of a podman-format env file (see `unit::EnvFileFormat::Podman`); repeatable |
//! | `User` | `user`, `uid`, `user:group` or `uid:gid`, resolved in the image |
//! | `WorkingDir` | absolute path |
//! | `Volume` | `HOST-DIR:CONTAINER-DIR[:OPTIONS]`, options `ro rw bind rbind nosuid suid nodev dev noexec exec [r]shared [r]slave [r]private`; repeatable |
//! | `PublishPort` | `[IP:]HOST:CONTAINER[/tcp\|udp]` (IPv6 as `[::1]`); repeatable |
//! | `Network` | `host`, `none` or a CNI network name; default `berth`, the cluster network (one subnet per machine, routed between machines) |
//! | `ReadOnly` | boolean: read-only root (with tmpfs on /tmp, /var/tmp, /run, as podman) |
//! | `AddCapability`, `DropCapability` | capability names (`CAP_NET_ADMIN`, `net_admin`) or `all`; repeatable |
//! | `HealthCmd` | a shell command (run with `/bin/sh -c`), a JSON array (exec form), or `none` |
//! | `HealthInterval` | time span between checks (default 30 s) |
//! | `X-ServiceName` | berth's own: the service name `PublishPort`s are registered under (default: the unit's prefix, `%p`) |
//!
//! Not supported, refused by name: named and anonymous volumes, volume options `z Z U O copy
//! nocopy idmap`, port ranges and random host ports (a published port is registered, so it is
//! fixed). On a CNI network a `PublishPort` goes through the portmap plugin (`HOST` on the
//! machine forwarded to `CONTAINER` in the container); with `Network=host` the container's
//! ports are the host's, so `HOST` must equal `CONTAINER`; with `Network=none` nothing is
//! reachable (the port is still registered). Other `X-` keys are ignored; any other key is
//! an error.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use super::error::UnitError;
use super::parse::Ctx;
use super::service::user_name;
use super::syntax::Entry;
use super::values::{self, CapabilityName};
use super::IgnoredKey;

/// A bind mount from the host (`Volume=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container.
    pub destination: String,
    /// `ro`.
    pub read_only: bool,
    /// `rbind` (default) or `bind`.
    pub recursive: bool,
    /// `shared`, `rshared`, `slave`, `rslave`, `private` or `rprivate` when given.
    pub propagation: Option<String>,
    /// `nosuid`, `suid`, `nodev`, `dev`, `noexec`, `exec` as given.
    pub flags: Vec<String>,
}

/// A port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

/// A published port (`PublishPort=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPort {
    /// The host address to bind, when given.
    pub ip: Option<IpAddr>,
    /// The port on the machine (registered as the service's port).
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// `Network=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The machine's network namespace.
    Host,
    /// A new network namespace with only loopback.
    None,
    /// A CNI network by name (the agent attaches it; `berth` is the cluster network).
    Named(String),
}

/// `HealthCmd=` and `HealthInterval=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The command to run inside the container.
    pub command: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
}

/// The parsed `[Container]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerOptions {
    /// `Image=`.
    pub image: String,
    /// `Exec=`: replaces the image's Cmd.
    pub exec: Option<Vec<String>>,
    /// `Environment=` in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` absolute paths in order.
    pub environment_files: Vec<String>,
    /// `User=`.
    pub user: Option<String>,
    /// `WorkingDir=`.
    pub working_dir: Option<String>,
    /// `Volume=`s.
    pub volumes: Vec<Volume>,
    /// `PublishPort=`s.
    pub publish_ports: Vec<PublishPort>,
    /// `Network=`; `None` when not given: the cluster network `berth`.
    pub network: Option<Network>,
    /// `ReadOnly=`.
    pub read_only: bool,
    /// `AddCapability=`s.
    pub add_capabilities: Vec<CapabilityName>,
    /// `DropCapability=`s.
    pub drop_capabilities: Vec<CapabilityName>,
    /// `HealthCmd=` (+ `HealthInterval=`).
    pub health: Option<HealthCheck>,
    /// `X-ServiceName=`.
    pub service_name: Option<String>,
}

const KEYS: &str = "Image, Exec, Environment, EnvironmentFile, User, WorkingDir, Volume, PublishPort, Network, ReadOnly, AddCapability, DropCapability, HealthCmd, HealthInterval, X-ServiceName";
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Reads `[Container]`.
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    entries: &[&Entry],
    ignored: &mut Vec<IgnoredKey>,
) -> Result<ContainerOptions, UnitError> {
    let mut c = ContainerOptions::default();
    let mut health_interval = DEFAULT_HEALTH_INTERVAL;
    let mut port_lines = Vec::new();
    for e in entries {
        if e.key.starts_with("X-") && e.key != "X-ServiceName" {
            ignored.push(IgnoredKey::of(ctx.section, e));
            continue;
        }
        if e.key == "HealthInterval" {
            let v = ctx.expand(e)?;
            health_interval = values::parse_timespan(&v)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be more than 0".into())
                    } else {
                        Ok(d)
                    }
                })
                .map_err(|r| ctx.err(e, Some(&v), r))?;
            continue;
        }
        if e.key == "PublishPort" {
            port_lines.push(*e);
        }
        entry(ctx, e, &mut c)?;
    }
    if let Some(h) = &mut c.health {
        h.interval = health_interval;
    }
    if c.image.is_empty() {
        return Err(UnitError::file(ctx.error_name, "required").at_key(ctx.section, Some("Image")));
    }
    if c.network == Some(Network::Host) {
        for (p, e) in c.publish_ports.iter().zip(&port_lines) {
            if p.host_port != p.container_port {
                return Err(ctx.err(
                    e,
                    Some(&e.value),
                    "with Network=host the container port is the host port: they must be equal",
                ));
            }
        }
    }
    Ok(c)
}

fn entry(ctx: &Ctx<'_>, e: &Entry, c: &mut ContainerOptions) -> Result<(), UnitError> {
    let v = ctx.expand(e)?;
    let bad = |r: String| ctx.err(e, Some(&v), r);
    let empty = v.is_empty();
    match e.key.as_str() {
        "Image" if empty => c.image.clear(),
        "Image" => {
            berth_images::reference::Reference::from_str(&v).map_err(|r| bad(r.to_string()))?;
            c.image = v;
        }
        "Exec" => c.exec = (!empty).then(|| ctx.words(e)).transpose()?,
        "Environment" if empty => c.environment.clear(),
        "Environment" => c.environment.extend(ctx.assignments(e)?),
        "EnvironmentFile" if empty => c.environment_files.clear(),
        "EnvironmentFile" if !v.starts_with('/') => {
            return Err(bad("want an absolute path".into()))
        }
        "EnvironmentFile" => c.environment_files.push(v),
        "User" if empty => c.user = None,
        "User" => {
            let (u, g) = v.split_once(':').unwrap_or((&v, ""));
            user_name(u).map_err(&bad)?;
            if v.contains(':') {
                user_name(g).map_err(|_| bad("not a group name or gid".into()))?;
            }
            c.user = Some(v);
        }
        "WorkingDir" if empty => c.working_dir = None,
        "WorkingDir" if !v.starts_with('/') => return Err(bad("want an absolute path".into())),
        "WorkingDir" => c.working_dir = Some(v),
        "Volume" if empty => c.volumes.clear(),
        "Volume" => c.volumes.push(parse_volume(&v).map_err(bad)?),
        "PublishPort" if empty => c.publish_ports.clear(),
        "PublishPort" => c.publish_ports.push(parse_publish_port(&v).map_err(bad)?),
        "Network" if empty => c.network = None,
        "Network" => c.network = Some(parse_network(&v).map_err(bad)?),
        "ReadOnly" if empty => c.read_only = false,
        "ReadOnly" => c.read_only = values::parse_bool(&v).map_err(bad)?,
        "AddCapability" | "DropCapability" => {
            let list = if e.key == "AddCapability" {
                &mut c.add_capabilities
            } else {
                &mut c.drop_capabilities
            };
            if empty {
                list.clear();
            }
            for w in ctx.words(e)? {
                list.push(values::parse_capability(&w).map_err(|r| ctx.err(e, Some(&w), r))?);
            }
        }
        "HealthCmd" => c.health = parse_health(&v).map_err(bad)?,
        "X-ServiceName" if empty => c.service_name = None,
        "X-ServiceName" => c.service_name = Some(service_name(&v).map_err(bad)?),
        _ => return Err(ctx.unknown_key(e, KEYS)),
    }
    Ok(())
}

fn absolute(p: &str, what: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} must be an absolute path"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{what} must not contain '..'"));
    }
    Ok(())
}

fn parse_volume(v: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [_] => {
            return Err(
                "anonymous volumes are not supported: want HOST-DIR:CONTAINER-DIR[:OPTIONS]".into(),
            )
        }
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => return Err("too many ':' (want HOST-DIR:CONTAINER-DIR[:OPTIONS])".into()),
    };
    if !src.starts_with('/') {
        return Err(
            "named volumes are not supported: the source must be an absolute host path".into(),
        );
    }
    absolute(src, "the host path")?;
    absolute(dst, "the container path")?;
    let mut vol = Volume {
        source: src.to_string(),
        destination: dst.to_string(),
        read_only: false,
        recursive: true,
        propagation: None,
        flags: Vec::new(),
    };
    let (mut rw_seen, mut bind_seen) = (false, false);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "rw" if rw_seen => return Err("ro/rw given twice".into()),
            "ro" | "rw" => (rw_seen, vol.read_only) = (true, o == "ro"),
            "bind" | "rbind" if bind_seen => return Err("bind/rbind given twice".into()),
            "bind" | "rbind" => (bind_seen, vol.recursive) = (true, o == "rbind"),
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                if vol.propagation.is_some() {
                    return Err("more than one propagation option".into());
                }
                vol.propagation = Some(o.to_string());
            }
            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" => {
                vol.flags.push(o.to_string())
            }
            "z" | "Z" | "U" | "O" | "copy" | "nocopy" | "idmap" => {
                return Err(format!("volume option {o:?} is not supported"))
            }
            other => {
                return Err(format!(
                    "unknown volume option {:?}",
                    super::name::truncate(other, 40)
                ))
            }
        }
    }
    Ok(vol)
}

fn port(s: &str, which: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err(format!(
            "{which} port is missing (random host ports are not supported: the port is registered)"
        ));
    }
    if s.contains('-') && s.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Err("port ranges are not supported".into());
    }
    match s.parse::<u16>() {
        Ok(0) => Err(format!("{which} port must be 1-65535")),
        Ok(p) => Ok(p),
        Err(_) if s.chars().all(|c| c.is_ascii_digit()) => {
            Err(format!("{which} port must be 1-65535"))
        }
        Err(_) => Err(format!("{which} port is not a number")),
    }
}

fn parse_publish_port(v: &str) -> Result<PublishPort, String> {
    let (spec, protocol) = match v.rsplit_once('/') {
        Some((s, "tcp")) => (s, Protocol::Tcp),
        Some((s, "udp")) => (s, Protocol::Udp),
        Some((_, p)) => {
            return Err(format!(
                "unknown protocol {:?} (want tcp or udp)",
                super::name::truncate(p, 20)
            ))
        }
        None => (v, Protocol::Tcp),
    };
    let (ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
        let (ip, ports) = rest
            .split_once("]:")
            .ok_or("unclosed '[' around the IPv6 address")?;
        (Some(ip), ports)
    } else {
        match spec.matches(':').count() {
            1 => (None, spec),
            2 => spec
                .split_once(':')
                .map(|(i, p)| (Some(i), p))
                .ok_or("want [IP:]HOST:CONTAINER")?,
            0 => {
                return Err(
                    "want [IP:]HOST:CONTAINER: the host port is required (it is registered)".into(),
                )
            }
            _ => return Err("want [IP:]HOST:CONTAINER (write an IPv6 address as [addr])".into()),
        }
    };
    let ip = match ip {
        None | Some("") => None,
        Some(i) => Some(
            IpAddr::from_str(i)
                .map_err(|_| format!("{:?} is not an IP address", super::name::truncate(i, 60)))?,
        ),
    };
    let (host, container) = ports.split_once(':').ok_or("want [IP:]HOST:CONTAINER")?;
    Ok(PublishPort {
        ip,
        host_port: port(host, "host")?,
        container_port: port(container, "container")?,
        protocol,
    })
}

fn parse_network(v: &str) -> Result<Network, String> {
    Ok(match v {
        "host" => Network::Host,
        "none" => Network::None,
        n if n.len() <= 253
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) =>
        {
            Network::Named(n.to_string())
        }
        _ => return Err("want host, none or a network name ([A-Za-z0-9][A-Za-z0-9_.-]*)".into()),
    })
}

fn parse_health(v: &str) -> Result<Option<HealthCheck>, String> {
    let command = if v.is_empty() || v == "none" {
        return Ok(None);
    } else if v.starts_with('[') {
        let argv: Vec<String> =
            serde_json::from_str(v).map_err(|e| format!("not a JSON array of strings: {e}"))?;
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("empty command".into());
        }
        argv
    } else {
        vec!["/bin/sh".into(), "-c".into(), v.to_string()]
    };
    Ok(Some(HealthCheck {
        command,
        interval: DEFAULT_HEALTH_INTERVAL,
    }))
}

/// A service name as registered: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 253 bytes.
fn service_name(v: &str) -> Result<String, String> {
    let ok = v.len() <= 253
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(v.to_string())
    } else {
        Err("want [A-Za-z0-9][A-Za-z0-9._-]*, at most 253 bytes".into())
    }
}
