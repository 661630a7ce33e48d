//! Scheduler planning throughput: `schedule::plan` placing 10,000 units on 1,000 machines
//! (pure CPU, no registry: the replicated write path is measured by the cluster bench).
//!
//! ```text
//! cargo run --release -p berth-benches --bin schedule [-- --runs N]
//! ```
//!
//! The cluster: machines with `region` (3 values) and `disk` (2) metadata; units: 6,000
//! without constraints, 1,000 with one metadata key, 1,000 with two keys (one an OR), 1,000
//! template instances that conflict with each other (`Conflicts=web@*.service`), 500
//! `MachineOf` followers, 400 `MachineID` pins and 100 that no machine can take. Each run
//! plans from an empty schedule (9,900 placements); a second figure plans after 20 of the
//! machines died (their ~200 units move). Figures are medians of the runs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_orchestrator::schedule::{
    plan, Change, DesiredState, Input, MachineInput, MachineStatus, Placement, UnitInput,
};
use berth_orchestrator::unit::{parse_unit, Unit};

fn units() -> Result<Vec<Unit>> {
    let mut specs: Vec<(String, String)> = Vec::new();
    for i in 0..6000 {
        specs.push((format!("u{i:05}.service"), String::new()));
    }
    for i in 0..1000 {
        specs.push((
            format!("eu{i:04}.service"),
            "MachineMetadata=region=eu".into(),
        ));
        specs.push((
            format!("fast{i:04}.service"),
            "MachineMetadata=region=eu region=us\nMachineMetadata=disk=ssd".into(),
        ));
        specs.push((format!("web@{i}.service"), "Conflicts=web@*.service".into()));
    }
    for i in 0..500 {
        specs.push((
            format!("side{i:04}.service"),
            format!("MachineOf=u{i:05}.service"),
        ));
    }
    for i in 0..400 {
        specs.push((
            format!("pin{i:04}.service"),
            format!("MachineID=m{:04}", (i * 7) % 1000),
        ));
    }
    for i in 0..100 {
        specs.push((
            format!("mars{i:03}.service"),
            "MachineMetadata=region=mars".into(),
        ));
    }
    specs
        .iter()
        .map(|(name, fleet)| {
            let text = format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{fleet}\n");
            parse_unit(name, &text).with_context(|| format!("parsing {name}"))
        })
        .collect()
}

fn machines() -> Vec<(String, BTreeMap<String, String>)> {
    (0..1000)
        .map(|i| {
            let md = [
                ("region", ["eu", "us", "ap"][i % 3]),
                ("disk", ["ssd", "hdd"][i % 2]),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            (format!("m{i:04}"), md)
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let mut runs = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--runs" => runs = args.next().context("--runs needs a value")?.parse()?,
            other => bail!("unknown flag {other} (usage: schedule [--runs N])"),
        }
    }
    let units = units()?;
    let inputs: Vec<UnitInput<'_>> = units
        .iter()
        .map(|u| UnitInput::of(u, DesiredState::Launched))
        .collect();
    let machines = machines();
    let live: Vec<MachineInput<'_>> = machines
        .iter()
        .map(|(n, md)| MachineInput {
            name: n,
            metadata: md,
            status: MachineStatus::Live,
        })
        .collect();
    let empty = HashMap::new();

    let mut times = Vec::new();
    let mut placed_schedule = HashMap::new();
    let mut placements = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&Input {
            units: &inputs,
            machines: &live,
            schedule: &empty,
        });
        times.push(start.elapsed());
        placements = p.changes.len();
        placed_schedule = p
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Place { unit, machine } => Some((
                    unit.clone(),
                    Placement {
                        machine: machine.clone(),
                        mod_revision: 1,
                    },
                )),
                _ => None,
            })
            .collect();
    }
    let t = median(times);
    println!(
        "initial plan: {placements} placements of {} units on {} machines: median {:.1} ms over {runs} runs = {:.0} placements/s",
        units.len(),
        live.len(),
        t.as_secs_f64() * 1e3,
        placements as f64 / t.as_secs_f64()
    );

    let survivors: Vec<MachineInput<'_>> = live
        .iter()
        .copied()
        .filter(|m| !m.name.ends_with("00") && !m.name.ends_with("50"))
        .collect();
    let mut times = Vec::new();
    let mut moved = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&Input {
            units: &inputs,
            machines: &survivors,
            schedule: &placed_schedule,
        });
        times.push(start.elapsed());
        moved = p.changes.len();
    }
    let t = median(times);
    println!(
        "after {} machines died: {moved} changes, median {:.1} ms over {runs} runs (a plan reads all {} scheduled units)",
        live.len() - survivors.len(),
        t.as_secs_f64() * 1e3,
        placed_schedule.len()
    );
    Ok(())
}
