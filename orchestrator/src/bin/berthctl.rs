//! berthctl: fleetctl-style client for berthd's API socket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_orchestrator::api::http::percent_encode;
use berth_orchestrator::client::Client;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// `println!` that ends the program quietly when the reader has gone away
/// (`berthctl list-units | head -1`), as `head` and `grep -q` expect, instead of panicking
/// on EPIPE; any other stdout failure is an error with its cause.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&e);
        }
    }};
}

/// `print!` with `out!`'s handling of a closed stdout.
macro_rules! out_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&e);
        }
    }};
}

#[path = "berthctl/exec.rs"]
mod exec;
#[path = "berthctl/units.rs"]
mod units;

#[derive(Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Control a Berth cluster through berthd"
)]
struct Cli {
    /// berthd API socket, or https://HOST:PORT (a node's --api-listen) with --cert/--key/--ca
    #[arg(long, default_value = "/run/berth/berthd.sock", global = true)]
    endpoint: String,
    /// Client certificate for an https:// endpoint (berthd credentials add-client)
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Its private key
    #[arg(long = "key", id = "client_key", global = true)]
    client_key: Option<PathBuf>,
    /// The cluster CA certificate
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Seconds to wait for berthd to accept and answer a request
    #[arg(long, default_value_t = 15, global = true)]
    timeout: u64,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the machines in the cluster (a '*' marks the leader)
    ListMachines,
    /// Read and write registry keys
    #[command(subcommand)]
    Kv(Kv),
    /// Service registry
    #[command(subcommand)]
    Services(Services),
    /// Raft membership
    #[command(subcommand)]
    Cluster(Cluster),
    /// The gossip key ring of the node answering (serf's `keys`); rotate a key by running
    /// install on every node, then use on every node, then remove the old key on every node
    #[command(subcommand)]
    Gossip(Gossip),
    #[command(flatten)]
    Units(units::UnitCmd),
    /// Run a command in a unit's container, wherever it runs: exec UNIT -- CMD [ARGS...]
    Exec(exec::ExecArgs),
}

#[derive(Subcommand)]
enum Kv {
    /// Print a key's value
    Get { key: String },
    /// Set a key
    Put {
        key: String,
        value: String,
        /// Attach the key to a new lease with this TTL (seconds)
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Delete a key (or every key under a prefix)
    Rm {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// List keys under a prefix (default /)
    Ls { prefix: Option<String> },
    /// Stream changes under a prefix
    Watch {
        prefix: String,
        #[arg(long)]
        from_revision: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Services {
    /// List every registered service instance
    Ls,
    /// Instances of one service
    Lookup { name: String },
    /// Register a service instance under this node's lease
    Register {
        name: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        port: u16,
        /// key=value (repeatable)
        #[arg(long)]
        meta: Vec<String>,
        /// Instance name (default IP:PORT)
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Subcommand)]
enum Cluster {
    /// Members, term, leader, commit and applied index
    Status,
    /// Promote a learner to voter
    AddVoter { name: String },
    /// Demote a voter to learner
    RemoveVoter { name: String },
    /// Remove a (dead) member from the Raft configuration; a live one is re-added as a learner
    RemoveMember { name: String },
}

#[derive(Subcommand)]
enum Gossip {
    /// Fingerprints of the node's gossip keys, the primary (sealing) key first; never keys
    Keys,
    /// Add a key to the ring: datagrams sealed with it are accepted from now on
    Install {
        /// The key in hex (`berthd credentials keygen` prints one); `-` reads it from stdin,
        /// which keeps it out of the process list
        key: String,
    },
    /// Seal datagrams with this key from now on (it must be installed)
    Use {
        /// The key in hex, or `-` for stdin
        key: String,
    },
    /// Drop a key from the ring (not the one in use)
    Remove {
        /// The key in hex, or `-` for stdin
        key: String,
    },
}

/// A gossip key from the command line, or from stdin for `-`.
fn gossip_key(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg.trim().to_string());
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the gossip key from stdin")?;
    let key = line.trim();
    if key.is_empty() {
        anyhow::bail!("no gossip key on stdin");
    }
    Ok(key.to_string())
}

fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("berthctl: writing to stdout: {e}");
    std::process::exit(1);
}

fn main() -> ExitCode {
    if let Some(code) =
        berth_packaging::generate_if_requested(<Cli as clap::CommandFactory>::command)
    {
        return code;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn key_path(key: &str) -> String {
    let key = if key.starts_with('/') {
        key.to_string()
    } else {
        format!("/{key}")
    };
    format!("/v1/keys{}", percent_encode(&key))
}

fn print_json(v: &Value) {
    out!("{v}");
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn meta_text(v: Option<&Value>) -> String {
    let Some(Value::Object(m)) = v else {
        return "-".into();
    };
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_meta(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("invalid --meta {item:?}: expected key=value"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn service_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|e| {
            vec![
                s(e, "name"),
                s(e, "machine"),
                s(e, "instance"),
                format!("{}:{}", s(e, "ip"), s(e, "port")),
                match (e.get("container_ip"), e.get("container_port")) {
                    (Some(ip), Some(port)) if !ip.is_null() => {
                        format!("{}:{}", s(e, "container_ip"), port)
                    }
                    _ => "-".into(),
                },
                meta_text(e.get("meta")),
            ]
        })
        .collect()
}

/// ADDRESS: the machine's address and port; CLUSTER ADDRESS: the container's own on the
/// cluster network (a unit on a CNI network), reachable from every machine.
const SERVICE_HEADERS: [&str; 6] = [
    "SERVICE",
    "MACHINE",
    "INSTANCE",
    "ADDRESS",
    "CLUSTER ADDRESS",
    "META",
];

fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::from_endpoint(
        &cli.endpoint,
        cli.cert.as_deref(),
        cli.client_key.as_deref(),
        cli.ca.as_deref(),
    )?
    .with_timeout(std::time::Duration::from_secs(cli.timeout.max(1)));
    let json_out = cli.format == Format::Json;
    match cli.cmd {
        Cmd::Units(u) => return units::run(&c, json_out, u),
        Cmd::Exec(a) => return exec::run(c, a),
        Cmd::ListMachines => {
            let v = c.json("GET", "/v1/machines", None)?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    let mark = if m.get("leader") == Some(&Value::Bool(true)) {
                        "*"
                    } else {
                        ""
                    };
                    let addr = s(m, "addr");
                    let ip = addr
                        .rsplit_once(':')
                        .map(|(ip, _)| ip.to_string())
                        .unwrap_or(addr);
                    vec![
                        format!("{}{mark}", s(m, "name")),
                        ip,
                        s(m, "state"),
                        meta_text(m.get("metadata")),
                    ]
                })
                .collect();
            table(&["MACHINE", "IP", "STATE", "METADATA"], &rows);
        }
        Cmd::Kv(Kv::Get { key }) => {
            let v = c.json("GET", &key_path(&key), None)?;
            if json_out {
                print_json(&v);
            } else {
                out!("{}", s(&v, "value"));
            }
        }
        Cmd::Kv(Kv::Put { key, value, ttl }) => {
            let mut body = json!({ "value": value });
            if let Some(ttl) = ttl {
                let lease = c.json("POST", "/v1/leases", Some(&json!({ "ttl": ttl })))?;
                body["lease"] = lease.get("id").cloned().unwrap_or(Value::Null);
            }
            let v = c.json("PUT", &key_path(&key), Some(&body))?;
            if json_out {
                print_json(&v);
            } else {
                out!("revision {}", s(&v, "revision"));
            }
        }
        Cmd::Kv(Kv::Rm { key, prefix }) => {
            let path = format!(
                "{}{}",
                key_path(&key),
                if prefix { "?prefix=true" } else { "" }
            );
            let v = c.json("DELETE", &path, None)?;
            if json_out {
                print_json(&v);
            } else {
                out!(
                    "deleted {} (revision {})",
                    s(&v, "deleted"),
                    s(&v, "revision")
                );
            }
        }
        Cmd::Kv(Kv::Ls { prefix }) => {
            let prefix = prefix.unwrap_or_else(|| "/".into());
            let v = c.json("GET", &format!("{}?prefix=true", key_path(&prefix)), None)?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v
                .get("kvs")
                .and_then(|k| k.as_array())
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|kv| {
                    vec![
                        s(kv, "key"),
                        s(kv, "mod_revision"),
                        s(kv, "lease"),
                        s(kv, "value"),
                    ]
                })
                .collect();
            table(&["KEY", "REVISION", "LEASE", "VALUE"], &rows);
        }
        Cmd::Kv(Kv::Watch {
            prefix,
            from_revision,
        }) => {
            let prefix = if prefix.starts_with('/') {
                prefix
            } else {
                format!("/{prefix}")
            };
            let mut target = format!("/v1/watch?prefix={}", percent_encode(&prefix));
            if let Some(r) = from_revision {
                target.push_str(&format!("&from_revision={r}"));
            }
            c.stream(&target, |line| {
                if json_out {
                    out!("{line}");
                } else if let Ok(e) = serde_json::from_str::<Value>(line) {
                    if e.get("error").is_some() {
                        out!("error: {}", s(&e, "error"));
                    } else {
                        out!(
                            "{} {} {} (revision {})",
                            s(&e, "type"),
                            s(&e, "key"),
                            s(&e, "value"),
                            s(&e, "mod_revision")
                        );
                    }
                }
                true
            })?;
        }
        Cmd::Services(Services::Ls) => {
            let v = c.json("GET", "/v1/services", None)?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut rows = Vec::new();
            if let Some(Value::Object(m)) = v.get("services") {
                for list in m.values() {
                    rows.extend(service_rows(
                        list.as_array().map(|a| a.as_slice()).unwrap_or_default(),
                    ));
                }
            }
            table(&SERVICE_HEADERS, &rows);
        }
        Cmd::Services(Services::Lookup { name }) => {
            let v = c.json(
                "GET",
                &format!("/v1/services/{}", percent_encode(&name)),
                None,
            )?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let list = v.as_array().map(|a| a.as_slice()).unwrap_or_default();
            if list.is_empty() {
                bail!("no instances of service {name}");
            }
            table(&SERVICE_HEADERS, &service_rows(list));
        }
        Cmd::Services(Services::Register {
            name,
            ip,
            port,
            meta,
            instance,
        }) => {
            let mut body =
                json!({ "name": name, "ip": ip, "port": port, "meta": parse_meta(&meta)? });
            if let Some(i) = instance {
                body["instance"] = json!(i);
            }
            let v = c.json("POST", "/v1/services", Some(&body))?;
            if json_out {
                print_json(&v);
            } else {
                out!(
                    "registered {name} at {ip}:{port} (revision {})",
                    s(&v, "revision")
                );
            }
        }
        Cmd::Cluster(Cluster::Status) => {
            let v = c.json("GET", "/v1/cluster", None)?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            out!(
                "cluster {}  node {}  term {}  leader {}",
                s(&v, "cluster_id"),
                s(&v, "name"),
                s(&v, "term"),
                s(&v, "leader")
            );
            out!(
                "commit index {}  applied index {}",
                s(&v, "commit_index"),
                s(&v, "applied_index")
            );
            let leader = s(&v, "leader");
            let rows: Vec<Vec<String>> = v
                .get("members")
                .and_then(|m| m.as_array())
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    let name = s(m, "name");
                    let mark = if name == leader { "*" } else { "" };
                    vec![
                        format!("{name}{mark}"),
                        s(m, "addr"),
                        s(m, "role"),
                        s(m, "id"),
                    ]
                })
                .collect();
            table(&["MEMBER", "ADDR", "ROLE", "ID"], &rows);
        }
        Cmd::Gossip(g) => {
            let (op, arg) = match &g {
                Gossip::Keys => ("", ""),
                Gossip::Install { key } => ("install", key.as_str()),
                Gossip::Use { key } => ("use", key.as_str()),
                Gossip::Remove { key } => ("remove", key.as_str()),
            };
            let v = if op.is_empty() {
                c.json("GET", "/v1/gossip/keys", None)?
            } else {
                let body = json!({ "op": op, "key": gossip_key(arg)? });
                c.json("POST", "/v1/gossip/keys", Some(&body))?
            };
            if json_out {
                print_json(&v);
                return Ok(());
            }
            if v["sealed"] != json!(true) {
                out!("gossip is not sealed on this node (--insecure)");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["keys"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let fp = k.as_str().map_or_else(|| k.to_string(), str::to_string);
                    let role = if i == 0 { "primary" } else { "accepted" };
                    vec![fp, role.to_string()]
                })
                .collect();
            table(&["FINGERPRINT", "ROLE"], &rows);
        }
        Cmd::Cluster(Cluster::AddVoter { name }) => {
            let v = c.json("POST", "/v1/cluster/voters", Some(&json!({ "name": name })))?;
            if json_out {
                print_json(&v);
            } else {
                out!("{name} is now a voter");
            }
        }
        Cmd::Cluster(Cluster::RemoveMember { name }) => {
            let v = c.json(
                "DELETE",
                &format!("/v1/cluster/members/{}", percent_encode(&name)),
                None,
            )?;
            if json_out {
                print_json(&v);
            } else {
                out!("{name} is no longer a member");
            }
        }
        Cmd::Cluster(Cluster::RemoveVoter { name }) => {
            let v = c.json(
                "DELETE",
                &format!("/v1/cluster/voters/{}", percent_encode(&name)),
                None,
            )?;
            if json_out {
                print_json(&v);
            } else {
                out!("{name} is now a learner");
            }
        }
    }
    Ok(())
}
