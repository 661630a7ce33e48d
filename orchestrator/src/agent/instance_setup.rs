//! The instance's set-up and tear-down steps, which may run two jobs at once: the bundle
//! and the network, joined before the instance moves on (see the parent module's diagram).

use super::{Effect, Instance, Phase, Want};

/// Jobs under way and the first failure among them.
#[derive(Debug, Clone, Default)]
pub(super) struct Jobs {
    bundle: bool,
    network: bool,
    error: Option<String>,
}

impl Jobs {
    fn busy(&self) -> bool {
        self.bundle || self.network
    }

    fn failed(&mut self, e: String) {
        self.error.get_or_insert(e);
    }
}

impl Instance {
    /// Starts the set-up jobs that are missing (Preparing).
    pub(super) fn start_setup(&mut self, bundle: bool, network: bool, out: &mut Vec<Effect>) {
        self.jobs = Jobs {
            bundle,
            network,
            error: None,
        };
        if bundle {
            out.push(Effect::Prepare);
        }
        if network {
            out.push(Effect::Attach);
        }
    }

    /// The bundle was built (or not; the IO side removed whatever a failed one made).
    pub fn prepared(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        self.jobs.bundle = false;
        match result {
            Ok(()) => self.prepared = true,
            Err(e) => self.jobs.failed(format!("preparing the bundle: {e}")),
        }
        self.setup_step(now)
    }

    /// The network was attached (or not; a failed attach leaves nothing behind).
    pub fn attached(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        self.jobs.network = false;
        match result {
            Ok(()) => self.attached = true,
            Err(e) => self.jobs.failed(format!("network: {e}")),
        }
        self.setup_step(now)
    }

    /// After a set-up job: wait for the other, then create, fail, or (removal wanted) end.
    fn setup_step(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.jobs.busy() || self.phase != Phase::Preparing {
            return out;
        }
        if let Some(e) = self.jobs.error.take() {
            self.failed_start(e, now, &mut out);
        } else if self.want == Want::Remove {
            self.finish(now, &mut out);
        } else {
            self.container = true;
            self.set(Phase::Creating, now, &mut out);
            out.push(Effect::Create);
        }
        out
    }

    /// The container is gone and will not run again unless asked: detaches the network
    /// (Cleaning), then `end`; the bundle stays until removal.
    pub(super) fn release_network(&mut self, end: Phase, now: u64, out: &mut Vec<Effect>) {
        if !self.attached {
            return self.set(end, now, out);
        }
        self.jobs = Jobs {
            bundle: false,
            network: true,
            error: None,
        };
        self.after_cleaning = end;
        self.set(Phase::Cleaning, now, out);
        out.push(Effect::Detach);
    }

    /// Removes what is left: the container first, then the bundle and the network at once.
    pub(super) fn finish(&mut self, now: u64, out: &mut Vec<Effect>) {
        self.after_cleaning = Phase::Done;
        if self.container {
            self.set(Phase::Deleting, now, out);
            out.push(Effect::Delete);
        } else if self.prepared || self.attached {
            self.jobs = Jobs {
                bundle: self.prepared,
                network: self.attached,
                error: None,
            };
            self.set(Phase::Cleaning, now, out);
            if self.prepared {
                out.push(Effect::Cleanup);
            }
            if self.attached {
                out.push(Effect::Detach);
            }
        } else {
            self.set(Phase::Done, now, out);
        }
    }

    /// The snapshot and bundle are removed (or could not be).
    pub fn cleaned(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        self.jobs.bundle = false;
        match result {
            Ok(()) => self.prepared = false,
            Err(e) => self.jobs.failed(format!("cleaning up: {e}")),
        }
        self.cleanup_step(now)
    }

    /// The network is detached (or its DEL failed: the attachment stays recorded, and is
    /// deleted again on the next removal request or at berthd's next start).
    pub fn detached(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        self.jobs.network = false;
        match result {
            Ok(()) => self.attached = false,
            Err(e) => self.jobs.failed(format!("detaching the network: {e}")),
        }
        self.cleanup_step(now)
    }

    fn cleanup_step(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.jobs.busy() || self.phase != Phase::Cleaning {
            return out;
        }
        let end = std::mem::replace(&mut self.after_cleaning, Phase::Done);
        match self.jobs.error.take() {
            // Removal asked while a run's network was given back: the rest goes too.
            None if self.want == Want::Remove && end != Phase::Done => self.finish(now, &mut out),
            None => self.set(end, now, &mut out),
            Some(e) => {
                // Keep the instance (and its report) so the leftover is visible; retried
                // on the next removal request.
                self.error = Some(e);
                self.set(Phase::Failed, now, &mut out);
            }
        }
        out
    }
}
