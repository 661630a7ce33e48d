//! When berthd members wrote registry snapshots during the bulk run: a thread lists each
//! member's state directory every 10 ms and notes when a new `snap-*.json` appears (the file
//! is renamed into place once written; log compaction follows). The bulk run then reports
//! its worst put near a snapshot apart from the worst put overall.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A put counts as "during compaction" when it overlaps this window around the moment a
/// member's new snapshot file appeared: its writing before (a 13 MB registry is serialised
/// and fsynced in well under that), the log trimming after (256 entries per write).
pub const BEFORE: Duration = Duration::from_millis(500);
pub const AFTER: Duration = Duration::from_millis(500);

pub struct SnapWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn snap_files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("snap-") && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

impl SnapWatch {
    /// Watches `dirs` (none: nothing is watched, as for etcd).
    pub fn start(dirs: Vec<PathBuf>) -> SnapWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = (!dirs.is_empty()).then(|| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut known: Vec<BTreeSet<String>> = dirs.iter().map(|d| snap_files(d)).collect();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    for (dir, known) in dirs.iter().zip(known.iter_mut()) {
                        let now = snap_files(dir);
                        if now.difference(known).next().is_some() {
                            if let Ok(mut s) = seen.lock() {
                                s.push(Instant::now());
                            }
                        }
                        *known = now;
                    }
                }
            })
        });
        SnapWatch { stop, seen, thread }
    }

    /// Stops watching; the moments new snapshot files appeared, if anything was watched.
    pub fn finish(mut self) -> Option<Vec<Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        let _ = thread.join();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        Some(seen)
    }
}

/// The latencies of the puts (start, ms) that overlap a window around a snapshot.
pub fn near(puts: &[(Instant, f64)], snaps: &[Instant]) -> Vec<f64> {
    puts.iter()
        .filter(|(at, ms)| {
            let end = *at + Duration::from_secs_f64(ms / 1000.0);
            snaps
                .iter()
                .any(|s| end + BEFORE >= *s && *at <= *s + AFTER)
        })
        .map(|(_, ms)| *ms)
        .collect()
}

/// Milliseconds from the nearest snapshot's appearance to `at` (negative: before it).
pub fn offset_ms(at: Instant, snaps: &[Instant]) -> Option<f64> {
    snaps
        .iter()
        .map(|s| {
            if at >= *s {
                at.duration_since(*s).as_secs_f64() * 1000.0
            } else {
                -(s.duration_since(at).as_secs_f64() * 1000.0)
            }
        })
        .min_by(|a, b| a.abs().total_cmp(&b.abs()))
}
