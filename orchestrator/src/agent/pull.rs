//! A unit's image on this machine: taken from the image store, or pulled from its registry
//! (`berth_images::registry::ensure`, with the node's registries.conf, certs.d and auth
//! files) when the store does not have it. One reference is fetched once at a time: two
//! units needing the same image wait for the same pull. While a pull runs, its progress is
//! part of the unit's reported state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_images::progress::Progress;
use berth_images::registry::{self, PullOptions};
use berth_images::store::{ImageRecord, Store, StoreError};

/// Shared by the agent (progress for reports) and its worker threads (pulls).
pub struct Pulls {
    /// registries.conf, read at each pull (an edit applies to the next pull).
    registries_conf: PathBuf,
    /// One lock per reference being fetched.
    fetching: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// unit -> a line saying how its pull goes.
    progress: Mutex<HashMap<String, String>>,
}

impl Pulls {
    pub fn new(registries_conf: &Path) -> Pulls {
        Pulls {
            registries_conf: registries_conf.to_path_buf(),
            fetching: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// The stored image `reference` (as imported or pulled before), pulling it if needed.
    /// Blocking: called from a worker thread.
    pub fn image(&self, store: &Store, reference: &str, unit: &str) -> Result<ImageRecord, String> {
        match store.find(reference) {
            Ok(rec) => return Ok(rec),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(format!("image store: {e}")),
        }
        let lock = {
            let mut map = self
                .fetching
                .lock()
                .map_err(|_| "pull bookkeeping poisoned")?;
            Arc::clone(map.entry(reference.to_string()).or_default())
        };
        let _one_at_a_time = lock.lock().map_err(|_| "pull lock poisoned")?;
        let report = UnitProgress {
            pulls: self,
            unit,
            reference,
            layers: Mutex::new(HashMap::new()),
        };
        // Another unit's pull may have brought it meanwhile.
        if let Ok(rec) = store.find(reference) {
            return Ok(rec);
        }
        let opts = PullOptions::for_node(&self.registries_conf)
            .map_err(|e| format!("{}: {e}", self.registries_conf.display()))?;
        self.set(unit, Some(format!("pulling {reference}")));
        let result = registry::ensure(store, reference, &opts, &report)
            .map_err(|e| format!("pulling {reference}: {e}"));
        self.set(unit, None);
        result
    }

    /// How the unit's pull goes, while it runs.
    pub fn progress_of(&self, unit: &str) -> Option<String> {
        self.progress.lock().ok()?.get(unit).cloned()
    }

    fn set(&self, unit: &str, line: Option<String>) {
        if let Ok(mut p) = self.progress.lock() {
            match line {
                Some(l) => {
                    p.insert(unit.to_string(), l);
                }
                None => {
                    p.remove(unit);
                }
            }
        }
    }
}

/// Sums the layers' progress into one line for the unit's state.
struct UnitProgress<'a> {
    pulls: &'a Pulls,
    unit: &'a str,
    reference: &'a str,
    /// id -> (done, total)
    layers: Mutex<HashMap<String, (u64, u64)>>,
}

impl UnitProgress<'_> {
    fn publish(&self) {
        let Ok(l) = self.layers.lock() else { return };
        let (done, total) = l
            .values()
            .fold((0u64, 0u64), |(d, t), (ld, lt)| (d + ld, t + lt));
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.pulls.set(
            self.unit,
            Some(format!(
                "pulling {}: {:.1} of {:.1} MiB",
                self.reference,
                mib(done),
                mib(total)
            )),
        );
    }
}

impl Progress for UnitProgress<'_> {
    fn start(&self, id: &str, _what: &str, total: u64) {
        if let Ok(mut l) = self.layers.lock() {
            l.insert(id.to_string(), (0, total));
        }
        self.publish();
    }

    fn advance(&self, id: &str, bytes: u64) {
        if let Ok(mut l) = self.layers.lock() {
            let e = l.entry(id.to_string()).or_insert((0, 0));
            e.0 = e.0.saturating_add(bytes);
        }
        self.publish();
    }

    fn finish(&self, id: &str, _what: &str) {
        if let Ok(mut l) = self.layers.lock() {
            if let Some(e) = l.get_mut(id) {
                e.0 = e.1.max(e.0);
            }
        }
        self.publish();
    }
}
