//! What each plugin run gets (pure): the `CNI_*` environment and the config on stdin, with
//! `name`, `cniVersion`, `prevResult` and `runtimeConfig` injected as the spec requires, and
//! the order of the runs for each command.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{check_name, NetworkConfigList};
use crate::error::{clean, Error};

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// One container's attachment to one network: what the runtime passes on every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    /// The network namespace's path (`/proc/PID/ns/net` or a bind mount such as
    /// `/run/netns/NAME`).
    pub netns: PathBuf,
    /// The interface name inside the container (`eth0`).
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K=V;...`), e.g. `IgnoreUnknown=1`.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// Capability arguments handed to the plugins that declare them.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

/// Capability arguments (CNI conventions): `portMappings`, and any other capability as raw
/// JSON (`extra`, keyed by capability name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// A published port, as the portmap plugin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl Attachment {
    /// Checks the fields the plugins and the record file names rely on.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Error::Attachment { field, reason };
        check_name("container id", &self.container_id).map_err(|r| bad("container_id", r))?;
        check_ifname(&self.ifname).map_err(|r| bad("ifname", r))?;
        if !self.netns.is_absolute() {
            return Err(bad(
                "netns",
                format!("{:?} is not an absolute path", self.netns),
            ));
        }
        for (k, v) in &self.args {
            let ok = |s: &str| {
                !s.is_empty() && !s.contains([';', '=']) && !s.chars().any(char::is_control)
            };
            if !ok(k) || v.contains(';') || v.chars().any(char::is_control) {
                return Err(bad(
                    "args",
                    format!(
                        "{:?}={:?} cannot be written in CNI_ARGS",
                        clean(k, 40),
                        clean(v, 40)
                    ),
                ));
            }
        }
        for m in &self.runtime_config.port_mappings {
            if m.host_port == 0
                || m.container_port == 0
                || !["tcp", "udp", "sctp"].contains(&m.protocol.as_str())
            {
                return Err(bad(
                    "port_mappings",
                    format!("{m:?}: ports must be non-zero, protocol tcp, udp or sctp"),
                ));
            }
        }
        Ok(())
    }
}

/// A Linux interface name of the safe kind: 1-15 of `[A-Za-z0-9_.-]`, not `.`/`..`.
fn check_ifname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not an interface name (1-15 of letters, digits, '_', '.', '-')",
            clean(s, 40)
        ))
    }
}

/// The environment of one plugin run. `PATH` is passed so plugins find iptables and ip.
pub fn environment(
    cmd: Command,
    att: &Attachment,
    plugin_dirs: &[PathBuf],
    path: &str,
) -> Vec<(String, String)> {
    let cni_path: Vec<String> = plugin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let mut env = vec![
        ("CNI_COMMAND".to_string(), cmd.as_str().to_string()),
        ("CNI_CONTAINERID".to_string(), att.container_id.clone()),
        ("CNI_NETNS".to_string(), att.netns.display().to_string()),
        ("CNI_IFNAME".to_string(), att.ifname.clone()),
        ("CNI_PATH".to_string(), cni_path.join(":")),
        ("PATH".to_string(), path.to_string()),
    ];
    if !att.args.is_empty() {
        let args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(("CNI_ARGS".to_string(), args.join(";")));
    }
    env
}

/// The config for plugin `index` of `net`: its own object plus `name`, `cniVersion`, the
/// `runtimeConfig` of the capabilities it declares, and `prevResult` when given.
pub fn plugin_stdin(
    net: &NetworkConfigList,
    index: usize,
    prev_result: Option<&Value>,
    rc: &RuntimeConfig,
) -> Value {
    let plugin = &net.plugins[index];
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    let mut runtime = Map::new();
    if plugin.has_capability("portMappings") && !rc.port_mappings.is_empty() {
        if let Ok(v) = serde_json::to_value(&rc.port_mappings) {
            runtime.insert("portMappings".into(), v);
        }
    }
    for (cap, value) in &rc.extra {
        if plugin.has_capability(cap) {
            runtime.insert(cap.clone(), value.clone());
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    } else {
        conf.remove("runtimeConfig");
    }
    match prev_result {
        Some(prev) => conf.insert("prevResult".into(), prev.clone()),
        None => conf.remove("prevResult"),
    };
    Value::Object(conf)
}

/// Whether DEL and CHECK carry the cached ADD result (`prevResult`): from 0.4.0 on.
pub fn passes_cached_result(version: &str) -> bool {
    !matches!(version, "0.3.0" | "0.3.1")
}

/// Plugin indices in the order a command runs them: ADD and CHECK in chain order, DEL in
/// reverse.
pub fn order(cmd: Command, len: usize) -> Vec<usize> {
    match cmd {
        Command::Del => (0..len).rev().collect(),
        _ => (0..len).collect(),
    }
}

/// `PATH` for plugins: the caller's, or the usual system one.
pub fn default_path() -> String {
    std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// Whether a netns path still exists (a dead container's `/proc/PID/ns/net` does not).
pub fn netns_exists(p: &Path) -> bool {
    p.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkConfigList {
        NetworkConfigList::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"berth","plugins":[
                {"type":"bridge","bridge":"b0","runtimeConfig":{"stale":1},"prevResult":{"stale":1}},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}},
                {"type":"tuning","capabilities":{"io.berth/x":true}}]}"#,
            None,
        )
        .unwrap()
    }

    fn att() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            netns: "/run/netns/c1".into(),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), "p".into()),
            ],
            runtime_config: RuntimeConfig {
                port_mappings: vec![PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: None,
                }],
                extra: [
                    ("io.berth/x".to_string(), Value::from(7)),
                    ("bandwidth".to_string(), Value::from(1)),
                ]
                .into_iter()
                .collect(),
            },
        }
    }

    #[test]
    fn environment_has_every_cni_variable() {
        let env = environment(
            Command::Add,
            &att(),
            &["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            "/bin",
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CNI_COMMAND"), Some("ADD"));
        assert_eq!(get("CNI_CONTAINERID"), Some("c1"));
        assert_eq!(get("CNI_NETNS"), Some("/run/netns/c1"));
        assert_eq!(get("CNI_IFNAME"), Some("eth0"));
        assert_eq!(get("CNI_PATH"), Some("/usr/lib/cni:/opt/cni/bin"));
        assert_eq!(get("CNI_ARGS"), Some("IgnoreUnknown=1;K8S_POD_NAME=p"));
        assert_eq!(get("PATH"), Some("/bin"));
        let mut bare = att();
        bare.args.clear();
        assert!(environment(Command::Del, &bare, &[], "/bin")
            .iter()
            .all(|(k, _)| k != "CNI_ARGS"));
    }

    #[test]
    fn stdin_injects_name_version_prev_result_and_declared_capabilities_only() {
        let n = net();
        let first = plugin_stdin(&n, 0, None, &att().runtime_config);
        assert_eq!(first["name"], "berth");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "b0");
        assert!(
            first.get("prevResult").is_none(),
            "stale prevResult must go: {first}"
        );
        assert!(
            first.get("runtimeConfig").is_none(),
            "no capability declared: {first}"
        );

        let prev = serde_json::json!({"cniVersion":"1.0.0","ips":[]});
        let second = plugin_stdin(&n, 1, Some(&prev), &att().runtime_config);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            serde_json::json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        let third = plugin_stdin(&n, 2, Some(&prev), &att().runtime_config);
        assert_eq!(third["runtimeConfig"], serde_json::json!({"io.berth/x": 7}));
    }

    #[test]
    fn del_runs_in_reverse() {
        assert_eq!(order(Command::Add, 3), [0, 1, 2]);
        assert_eq!(order(Command::Check, 3), [0, 1, 2]);
        assert_eq!(order(Command::Del, 3), [2, 1, 0]);
        assert!(passes_cached_result("1.0.0") && passes_cached_result("0.4.0"));
        assert!(!passes_cached_result("0.3.1"));
    }

    #[test]
    fn attachment_validation_names_the_field() {
        assert!(att().validate().is_ok());
        type Change = Box<dyn Fn(&mut Attachment)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|a| a.container_id = "../x".into()), "container_id"),
            (Box::new(|a| a.container_id = String::new()), "container_id"),
            (Box::new(|a| a.ifname = "eth0/../x".into()), "ifname"),
            (Box::new(|a| a.ifname = "a234567890123456".into()), "ifname"),
            (Box::new(|a| a.netns = "netns".into()), "netns"),
            (
                Box::new(|a| a.args.push(("A;B".into(), "1".into()))),
                "args",
            ),
            (
                Box::new(|a| a.runtime_config.port_mappings[0].protocol = "icmp".into()),
                "port_mappings",
            ),
            (
                Box::new(|a| a.runtime_config.port_mappings[0].host_port = 0),
                "port_mappings",
            ),
        ];
        for (change, field) in cases {
            let mut a = att();
            change(&mut a);
            match a.validate() {
                Err(Error::Attachment { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
