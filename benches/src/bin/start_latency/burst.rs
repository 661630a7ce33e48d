//! Burst starts: `n` containers created and started by `callers` parallel callers (as
//! an orchestrator bringing up many units at once), then deleted. Per runtime and
//! round: the wall time from the first create to the last start gives containers per
//! second; each container's create+start time is kept for its percentiles. Runtimes
//! take turns round by round, as in the rest of the bench.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{Runtime, Spawn};

/// What one runtime did over all rounds.
pub struct BurstResult {
    pub name: &'static str,
    /// Containers per second of each round.
    pub rates: Vec<f64>,
    /// Create+start time of every container of every round.
    pub each: Vec<Duration>,
}

/// One round for one runtime: containers `prefix-0..n` from `bundle`, running
/// `sleep`, created and started by `callers` threads, then force-deleted (untimed).
/// Returns the round's wall time and each container's create+start time.
fn round(
    rt: &Runtime,
    bundle: &str,
    prefix: &str,
    n: usize,
    callers: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let next = AtomicUsize::new(0);
    let made = Mutex::new(Vec::with_capacity(n));
    let times = Mutex::new(Vec::with_capacity(n));
    let failure = Mutex::new(None);
    let begin = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let id = format!("{prefix}-{i}");
                let t0 = Instant::now();
                let created = rt.measure_as(&["create", "--bundle", bundle, &id], Spawn::TimeOnly);
                if created.is_ok() {
                    if let Ok(mut m) = made.lock() {
                        m.push(id.clone());
                    }
                }
                match created.and_then(|_| rt.measure_as(&["start", &id], Spawn::TimeOnly)) {
                    Ok(_) => {
                        if let Ok(mut t) = times.lock() {
                            t.push(t0.elapsed());
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        // Stop handing out containers: this round is lost.
                        next.store(n, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    let wall = begin.elapsed();
    let made = made.into_inner().unwrap_or_default();
    delete_all(rt, &made, callers);
    if let Some(e) = failure.into_inner().ok().flatten() {
        bail!("{e:#}");
    }
    Ok((wall, times.into_inner().unwrap_or_default()))
}

/// Force-deletes `ids` with `callers` threads.
fn delete_all(rt: &Runtime, ids: &[String], callers: usize) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return };
                rt.quiet(&["delete", "--force", id]);
            });
        }
    });
}

/// `rounds` burst rounds for every runtime in turn. A runtime whose round fails is
/// left out with a note.
pub fn run(
    runtimes: &[Runtime],
    bundle: &str,
    n: usize,
    callers: usize,
    rounds: usize,
) -> Vec<BurstResult> {
    let mut out: Vec<BurstResult> = runtimes
        .iter()
        .map(|r| BurstResult {
            name: r.name,
            rates: Vec::new(),
            each: Vec::new(),
        })
        .collect();
    let mut failed = vec![false; runtimes.len()];
    for r in 0..rounds {
        for (i, rt) in runtimes.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let prefix = format!("burst-{}-{}-{r}", rt.name, std::process::id());
            match round(rt, bundle, &prefix, n, callers) {
                Ok((wall, each)) => {
                    out[i].rates.push(n as f64 / wall.as_secs_f64());
                    out[i].each.extend(each);
                }
                Err(e) => {
                    eprintln!("note: burst with {} failed, left out: {e:#}", rt.name);
                    failed[i] = true;
                }
            }
        }
    }
    out.into_iter()
        .zip(failed)
        .filter(|(_, f)| !f)
        .map(|(o, _)| o)
        .collect()
}

/// The burst table, rates against `reference`'s.
pub fn render(results: &[BurstResult], n: usize, callers: usize, reference: &str) -> String {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let pct = |v: &[Duration], q: f64| {
        let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let idx = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(idx).copied().unwrap_or(f64::NAN)
    };
    let base = results
        .iter()
        .find(|r| r.name == reference)
        .map(|r| median(&r.rates));
    let mut s = format!(
        "\n### burst: {n} containers (`sleep`) created and started by {callers} parallel callers, then deleted\n\n\
         | runtime | containers/s (median of rounds) | rate vs {reference} | create+start p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n"
    );
    for r in results {
        let rate = median(&r.rates);
        let ratio = base
            .map(|b| format!("{:.2}x", rate / b))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "| {} | {:.1} | {ratio} | {:.2} | {:.2} |\n",
            r.name,
            rate,
            pct(&r.each, 0.5),
            pct(&r.each, 0.99)
        ));
    }
    s
}
