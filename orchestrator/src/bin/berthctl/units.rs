//! fleetctl's unit verbs: submit, load, start, stop, unload, destroy, cat, status,
//! list-unit-files, list-units, journal.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_orchestrator::api::http::percent_encode;
use berth_orchestrator::client::Client;
use clap::Subcommand;
use serde_json::{json, Value};

use super::{print_json, s, table};

#[derive(Subcommand)]
pub enum UnitCmd {
    /// Store unit files in the cluster (inactive: not placed yet)
    Submit {
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Place units on machines without starting them (files are submitted first)
    Load {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Place and start units (files are submitted first); waits until they run
    Start {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop units (they stay placed: loaded)
    Stop {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop units and take them off their machines (they stay submitted)
    Unload {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove units from the cluster (stopping them)
    Destroy {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Print a unit file
    Cat { unit: String },
    /// Where units run and how they are doing, with their last journal lines
    Status {
        #[arg(required = true)]
        units: Vec<String>,
        /// Journal lines to show
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Every unit file with its desired and current state
    ListUnitFiles,
    /// Every unit instance on every machine
    ListUnits,
    /// A unit's output, from the machine that runs it
    Journal {
        unit: String,
        /// Keep printing new lines
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines to show
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// The machine to read it from (global units run on several)
        #[arg(long)]
        machine: Option<String>,
    },
}

#[derive(clap::Args, Clone, Copy)]
pub struct Wait {
    /// Return at once instead of waiting for the units to reach the state
    #[arg(long)]
    no_block: bool,
    /// How long to wait, seconds
    #[arg(long, default_value_t = 60)]
    block_timeout: u64,
}

fn unit_path(name: &str) -> String {
    format!("/v1/units/{}", percent_encode(name))
}

/// Unit names from arguments: files are submitted and named by their file name; globs
/// (`web@*.service`) match the submitted units.
fn resolve(c: &Client, args: &[String], submit_files: bool) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut all: Option<Vec<String>> = None;
    for a in args {
        let p = Path::new(a);
        if submit_files && p.is_file() {
            out.push(submit_file(c, p)?);
            continue;
        }
        if a.contains(['*', '?', '[']) {
            let pattern = glob::Pattern::new(a).with_context(|| format!("invalid glob {a:?}"))?;
            let names = match &all {
                Some(n) => n,
                None => all.insert(list_names(c)?),
            };
            let matched: Vec<String> = names
                .iter()
                .filter(|n| pattern.matches(n))
                .cloned()
                .collect();
            if matched.is_empty() {
                bail!("no unit matches {a:?}");
            }
            out.extend(matched);
            continue;
        }
        out.push(a.clone());
    }
    Ok(out)
}

fn list_names(c: &Client) -> anyhow::Result<Vec<String>> {
    let v = c.json("GET", "/v1/units", None)?;
    Ok(v.as_array()
        .map(|a| a.iter().map(|u| s(u, "name")).collect())
        .unwrap_or_default())
}

fn submit_file(c: &Client, path: &Path) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_string();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read unit file {}", path.display()))?;
    let v = c.json(
        "POST",
        "/v1/units",
        Some(&json!({"name": name, "text": text})),
    )?;
    if v.get("unchanged") != Some(&Value::Bool(true)) {
        out!("Unit {name} submitted");
    }
    Ok(name)
}

fn set_desired(c: &Client, name: &str, desired: &str) -> anyhow::Result<()> {
    c.json(
        "PUT",
        &format!("{}/desired", unit_path(name)),
        Some(&json!({ "desired": desired })),
    )?;
    Ok(())
}

/// What a unit looks like while waiting.
enum Progress {
    Done(String),
    Failed(String),
    Waiting,
}

fn progress(u: &Value, desired: &str) -> Progress {
    let hash = s(u, "hash");
    let machine = s(u, "machine");
    let reason = s(u, "reason");
    let states: Vec<&Value> = u
        .get("states")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let on = |m: &str| states.iter().find(|st| s(st, "machine") == m).copied();
    match desired {
        "launched" | "loaded" => {
            if machine == "-" || machine.is_empty() {
                if reason != "-" && !reason.is_empty() {
                    return Progress::Failed(format!("cannot be placed: {reason}"));
                }
                // A global unit has no placement: any state of this text counts.
                if let Some(st) = states.iter().find(|st| s(st, "hash") == hash) {
                    return match (desired, s(st, "active").as_str()) {
                        ("launched", "active") | ("loaded", _) => Progress::Done(s(st, "machine")),
                        ("launched", "failed") => Progress::Failed(format!(
                            "failed on {}: {}",
                            s(st, "machine"),
                            st.get("error")
                                .and_then(|e| e.as_str())
                                .unwrap_or("no reason given")
                        )),
                        _ => Progress::Waiting,
                    };
                }
                return Progress::Waiting;
            }
            let Some(st) = on(&machine) else {
                return Progress::Waiting;
            };
            if s(st, "hash") != hash {
                return Progress::Waiting;
            }
            let active = s(st, "active");
            let sub = s(st, "sub");
            if desired == "loaded" {
                return if sub == "dead" || active == "inactive" {
                    Progress::Done(machine)
                } else {
                    Progress::Waiting
                };
            }
            match active.as_str() {
                "active" => Progress::Done(machine),
                "failed" => Progress::Failed(format!(
                    "failed on {machine}: {}",
                    st.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no reason given")
                )),
                _ if sub == "auto-restart" => Progress::Failed(format!(
                    "failing on {machine} (restarting): {}",
                    st.get("error")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no reason given")
                )),
                _ => Progress::Waiting,
            }
        }
        _ => {
            // inactive: no machine may still run it.
            if states
                .iter()
                .any(|st| s(st, "load") == "loaded" && s(st, "active") != "inactive")
                || (machine != "-" && !machine.is_empty())
            {
                Progress::Waiting
            } else {
                Progress::Done(String::new())
            }
        }
    }
}

fn wait_for(
    c: &Client,
    names: &[String],
    desired: &str,
    w: Wait,
    verb: &str,
) -> anyhow::Result<()> {
    if w.no_block {
        for n in names {
            out!("Triggered unit {n} {verb}");
        }
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(w.block_timeout);
    let mut pending: Vec<String> = names.to_vec();
    let mut failed = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for n in pending {
            let u = c.json("GET", &unit_path(&n), None)?;
            match progress(&u, desired) {
                Progress::Done(m) if desired == "launched" => {
                    out!("Unit {n} launched on {m}")
                }
                Progress::Done(m) if verb == "loaded" && !m.is_empty() => {
                    out!("Unit {n} loaded on {m}")
                }
                Progress::Done(_) => out!("Unit {n} {verb}"),
                Progress::Failed(why) => failed.push(format!("{n}: {why}")),
                Progress::Waiting => still.push(n),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} s waiting for {} to be {desired}",
                w.block_timeout,
                pending.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

pub fn run(c: &Client, json_out: bool, cmd: UnitCmd) -> anyhow::Result<()> {
    match cmd {
        UnitCmd::Submit { files } => {
            for f in files {
                submit_file(c, Path::new(&f))?;
            }
        }
        UnitCmd::Load { units, wait } => change(c, &units, "loaded", wait, "loaded")?,
        UnitCmd::Start { units, wait } => change(c, &units, "launched", wait, "started")?,
        UnitCmd::Stop { units, wait } => change(c, &units, "loaded", wait, "stopped")?,
        UnitCmd::Unload { units, wait } => change(c, &units, "inactive", wait, "unloaded")?,
        UnitCmd::Destroy { units } => {
            for n in resolve(c, &units, false)? {
                c.json("DELETE", &unit_path(&n), None)?;
                out!("Destroyed {n}");
            }
        }
        UnitCmd::Cat { unit } => {
            let u = c.json("GET", &unit_path(&unit), None)?;
            if json_out {
                print_json(&u);
            } else {
                out_part!("{}", u.get("text").and_then(|t| t.as_str()).unwrap_or(""));
            }
        }
        UnitCmd::Status { units, lines } => {
            for n in resolve(c, &units, false)? {
                status(c, &n, lines, json_out)?;
            }
        }
        UnitCmd::ListUnitFiles => list_unit_files(c, json_out)?,
        UnitCmd::ListUnits => list_units(c, json_out)?,
        UnitCmd::Journal {
            unit,
            follow,
            lines,
            machine,
        } => {
            let mut target = format!("{}/journal?lines={lines}", unit_path(&unit));
            if follow {
                target.push_str("&follow=true");
            }
            if let Some(m) = machine {
                target.push_str(&format!("&machine={}", percent_encode(&m)));
            }
            c.stream(&target, |line| {
                out!("{line}");
                true
            })?;
        }
    }
    Ok(())
}

fn change(c: &Client, args: &[String], desired: &str, w: Wait, verb: &str) -> anyhow::Result<()> {
    let submit = desired != "inactive";
    let names = resolve(c, args, submit)?;
    if names.len() == 1 {
        set_desired(c, &names[0], desired)?;
    } else {
        // Many units: each batch changes atomically, in one registry transaction.
        for batch in names.chunks(1_000) {
            c.json(
                "PUT",
                "/v1/units",
                Some(&json!({ "names": batch, "desired": desired })),
            )?;
        }
    }
    wait_for(c, &names, desired, w, verb)
}

fn active_text(st: &Value) -> String {
    format!("{} ({})", s(st, "active"), s(st, "sub"))
}

fn status(c: &Client, name: &str, lines: usize, json_out: bool) -> anyhow::Result<()> {
    let u = c.json("GET", &unit_path(name), None)?;
    if json_out {
        print_json(&u);
        return Ok(());
    }
    let desc = u
        .get("description")
        .and_then(|d| d.as_str())
        .map(|d| format!(" - {d}"))
        .unwrap_or_default();
    out!("● {name}{desc}");
    out!("   Desired: {}", s(&u, "desired"));
    let reason = s(&u, "reason");
    if reason != "-" && !reason.is_empty() {
        out!("   Not placed: {reason}");
    }
    let states = u
        .get("states")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if states.is_empty() {
        out!("   Active: inactive (not on any machine)");
    }
    for st in &states {
        out!("   Machine: {}", s(st, "machine"));
        out!("    Active: {}", active_text(st));
        if let Some(pid) = st.get("pid").and_then(|p| p.as_u64()) {
            out!("  Main PID: {pid}");
        }
        out!("  Restarts: {}", s(st, "restarts"));
        if let Some(code) = st.get("exit_code").and_then(|p| p.as_i64()) {
            out!(" Last exit: status {code}");
        }
        if let Some(sig) = st.get("exit_signal").and_then(|p| p.as_i64()) {
            out!(" Last exit: signal {sig}");
        }
        if let Some(e) = st.get("error").and_then(|e| e.as_str()) {
            out!("     Error: {e}");
        }
        if let Some(p) = st.get("pulling").and_then(|e| e.as_str()) {
            out!("     Image: {p}");
        }
    }
    if lines > 0 && !states.is_empty() {
        out!();
        let target = format!("{}/journal?lines={lines}", unit_path(name));
        if let Err(e) = c.stream(&target, |line| {
            out!("{line}");
            true
        }) {
            out!("(journal unavailable: {e})");
        }
    }
    Ok(())
}

/// GETs a JSON list and prints it (as JSON, or as a table with one row per element).
fn print_list(
    c: &Client,
    path: &str,
    json_out: bool,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    let v = c.json("GET", path, None)?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(row)
        .collect();
    table(headers, &rows);
    Ok(())
}

fn list_unit_files(c: &Client, json_out: bool) -> anyhow::Result<()> {
    print_list(
        c,
        "/v1/units",
        json_out,
        &["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
        |u| {
            let states = u.get("states").and_then(|x| x.as_array());
            let state = match states.map(|a| a.as_slice()).unwrap_or_default() {
                [] => "inactive".to_string(),
                [one] if s(one, "active") == "active" => "launched".to_string(),
                [one] => s(one, "load"),
                many => format!(
                    "launched on {}",
                    many.iter().filter(|x| s(x, "active") == "active").count()
                ),
            };
            let mut target = s(u, "machine");
            if target.is_empty() {
                target = "-".into();
            }
            let hash = s(u, "hash");
            vec![
                s(u, "name"),
                hash.chars().take(7).collect(),
                s(u, "desired"),
                state,
                target,
            ]
        },
    )
}

fn list_units(c: &Client, json_out: bool) -> anyhow::Result<()> {
    print_list(
        c,
        "/v1/unit-states",
        json_out,
        &["UNIT", "MACHINE", "ACTIVE", "SUB"],
        |st| {
            vec![
                s(st, "unit"),
                format!("{}/{}", s(st, "machine"), s(st, "addr")),
                s(st, "active"),
                s(st, "sub"),
            ]
        },
    )
}
