//! One unit's container on this machine, as a state machine (pure: events and the time in,
//! effects out; the agent's IO side performs the effects and feeds back their results).
//!
//! ```text
//!            want Run                 ok               ok (pid)            ok
//!   Idle ----------------> Preparing ----> Creating ---------> Starting ----> Running
//!                             | err          | err                | err         | exit
//!                             v              v                    v             v
//!                       (failure) ------> Deleting (container) <---------- Exited
//!                                            |
//!               restart policy says again    |   stop wanted / no restart
//!            +-------------------------------+---------------------------+
//!            v                                                           v
//!     Backoff (RestartSec, doubled per consecutive failure)        Cleaning (snapshot, network)
//!            | time up, lease valid                                      |
//!            +--> Creating                                Done (stop) / Failed / Inactive
//! ```
//! Preparing runs two jobs at once when the unit is on a CNI network: the bundle
//! ([`Effect::Prepare`]) and the network ([`Effect::Attach`]: its namespace and the CNI
//! ADD); Creating begins when both are done, and a failure of either fails the start once
//! both have finished. The bundle lives until the instance is removed, and the network as
//! long as the container may run again: a restart reuses both (the container keeps its
//! address), a run that ended for good (`Inactive`, `Failed`: no restart coming) gives the
//! network back first (Cleaning, [`Effect::Detach`]: no lease, veth or port rules held for a
//! container that is gone); removal's Cleaning removes what is left at once
//! ([`Effect::Cleanup`], [`Effect::Detach`]). Nothing of the network is on the path of a
//! kill: it is attached before the container exists and detached after it is deleted.
//!
//! Stopping a running container: `KillSignal`, then SIGKILL after `TimeoutStopSec`; a fence
//! kill (the machine lost the quorum) is SIGKILL at once and is not counted as a failure.

use std::time::Duration;

/// `Restart=` of the unit's `[Service]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    #[default]
    No,
    OnFailure,
    Always,
}

/// How the unit's container is supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub restart: Restart,
    pub restart_sec: Duration,
    pub timeout_stop: Duration,
    /// Signal name as `berth kill` takes it (`SIGTERM`).
    pub kill_signal: String,
    /// The container joins a CNI network, attached before it is created.
    pub network: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart: Restart::No,
            restart_sec: Duration::from_millis(100),
            timeout_stop: Duration::from_secs(10),
            kill_signal: "SIGTERM".into(),
            network: false,
        }
    }
}

/// Longest wait between restarts, whatever the backoff says (unless `RestartSec` is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the consecutive-failure count.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// How a container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Re-adopted after a berthd restart: not our child, so the status is unknown.
    Unknown,
}

impl ExitStatus {
    fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    pub fn describe(&self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exited with status {c}"),
            ExitStatus::Signal(s) => format!("killed by signal {s}"),
            ExitStatus::Unknown => "exited (status unknown: adopted after a berthd restart)".into(),
        }
    }
}

/// What the agent wants of this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Run,
    /// Stop and remove everything (container, snapshot); the instance then ends.
    Remove,
}

/// Where the instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Preparing,
    Creating,
    Starting {
        pid: u32,
    },
    Running {
        pid: u32,
    },
    Stopping {
        pid: u32,
        sigkill_at: u64,
        killed: bool,
    },
    /// The container exists in the `stopped` state, or its removal is under way.
    Deleting,
    Backoff {
        until: u64,
    },
    Cleaning,
    /// Will not run again until wanted again (Restart= said no, or start failed).
    Failed,
    /// Ended cleanly and Restart= said no.
    Inactive,
    /// Everything removed (after `Want::Remove`).
    Done,
}

/// Work for the IO side. Each finishes with the matching `Instance` method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Build the bundle (snapshot, config.json, log fifo) -> [`Instance::prepared`].
    Prepare,
    /// Make the network namespace and run the CNI ADD -> [`Instance::attached`].
    Attach,
    /// `berth create` -> [`Instance::created`].
    Create,
    /// `berth start` -> [`Instance::started`].
    Start,
    /// Watch init's pid (pidfd) -> [`Instance::exited`].
    Watch { pid: u32 },
    /// `berth kill --all ID SIGNAL` (fire and forget; the exit comes through the pidfd).
    Signal { signal: String },
    /// `berth delete --force ID` -> [`Instance::deleted`].
    Delete,
    /// Remove the snapshot and bundle -> [`Instance::cleaned`].
    Cleanup,
    /// CNI DEL and remove the network namespace -> [`Instance::detached`].
    Detach,
    /// The reported state changed.
    Report,
}

/// One unit's container.
#[derive(Debug, Clone)]
pub struct Instance {
    pub policy: Policy,
    phase: Phase,
    want: Want,
    /// The bundle exists (prepared and not cleaned up).
    prepared: bool,
    /// A container exists in berth's state (created and not yet deleted).
    container: bool,
    /// The network is attached (added and not yet deleted).
    attached: bool,
    /// Jobs under way in Preparing or Cleaning, and the first error one of them returned.
    jobs: setup::Jobs,
    /// Where Cleaning ends when its jobs succeed: Done (removal), or Inactive / Failed (a
    /// run that ended gave its network back).
    after_cleaning: Phase,
    restarts: u32,
    failures: u32,
    started_at: u64,
    last_exit: Option<ExitStatus>,
    /// The last run (or start attempt) failed.
    last_failed: bool,
    /// The stop under way ends a failed start (`berth start` failed), not a requested stop.
    stop_is_failure: bool,
    error: Option<String>,
    /// The current stop was asked by the fence (not counted as a failure, restarted later).
    fenced: bool,
    since_ms: u64,
}

/// The reported state (systemd's names: ActiveState and SubState).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub active: &'static str,
    pub sub: &'static str,
    pub pid: Option<u32>,
    pub exit: Option<ExitStatus>,
    pub restarts: u32,
    pub error: Option<String>,
    pub since_ms: u64,
}

impl Instance {
    pub fn new(policy: Policy, now: u64) -> Self {
        Instance {
            policy,
            phase: Phase::Idle,
            want: Want::Run,
            prepared: false,
            container: false,
            attached: false,
            jobs: setup::Jobs::default(),
            after_cleaning: Phase::Done,
            restarts: 0,
            failures: 0,
            started_at: 0,
            last_exit: None,
            last_failed: false,
            stop_is_failure: false,
            error: None,
            fenced: false,
            since_ms: now,
        }
    }

    /// An instance found running after a berthd restart (its container and bundle exist).
    pub fn adopted(policy: Policy, pid: u32, restarts: u32, now: u64) -> (Self, Vec<Effect>) {
        let mut i = Instance::new(policy, now);
        i.prepared = true;
        i.container = true;
        i.attached = i.policy.network;
        i.restarts = restarts;
        i.started_at = now;
        i.phase = Phase::Running { pid };
        (i, vec![Effect::Watch { pid }, Effect::Report])
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn want(&self) -> Want {
        self.want
    }

    /// Whether the container's program is running (for service registration).
    pub fn running_pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid } => Some(pid),
            _ => None,
        }
    }

    /// Whether its network is attached.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Whether nothing of this instance is left (it can be dropped).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn set(&mut self, phase: Phase, now: u64, out: &mut Vec<Effect>) {
        if self.phase != phase {
            self.phase = phase;
            self.since_ms = now;
            out.push(Effect::Report);
        }
    }

    /// Asks for the unit to run (`may_start`: the machine's run lease allows a start now).
    pub fn run(&mut self, may_start: bool, now: u64) -> Vec<Effect> {
        self.want = Want::Run;
        let mut out = Vec::new();
        match self.phase {
            Phase::Idle | Phase::Failed | Phase::Inactive if may_start => {
                self.error = None;
                self.failures = 0;
                self.begin_start(now, &mut out);
            }
            Phase::Backoff { until } if may_start && now >= until => {
                self.begin_start(now, &mut out);
            }
            _ => {}
        }
        out
    }

    fn begin_start(&mut self, now: u64, out: &mut Vec<Effect>) {
        self.fenced = false;
        self.stop_is_failure = false;
        let net = self.policy.network && !self.attached;
        if self.prepared && !net {
            self.container = true;
            self.set(Phase::Creating, now, out);
            out.push(Effect::Create);
        } else {
            self.set(Phase::Preparing, now, out);
            self.start_setup(!self.prepared, net, out);
        }
    }

    /// Asks for everything to be stopped and removed.
    pub fn remove(&mut self, now: u64) -> Vec<Effect> {
        self.want = Want::Remove;
        let mut out = Vec::new();
        match self.phase.clone() {
            Phase::Running { pid } | Phase::Starting { pid } => self.begin_stop(pid, now, &mut out),
            Phase::Idle | Phase::Failed | Phase::Inactive | Phase::Backoff { .. } => {
                self.finish(now, &mut out)
            }
            // In flight: the result handlers look at `want`.
            _ => {}
        }
        out
    }

    /// The machine's run lease ran out: SIGKILL now, restart when it is valid again.
    pub fn fence(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Phase::Running { pid } | Phase::Starting { pid } | Phase::Stopping { pid, .. } =
            self.phase
        {
            self.fenced = true;
            self.kill_now(pid, now, &mut out);
        }
        out
    }

    /// SIGKILL to the container now; its exit comes through the pidfd.
    fn kill_now(&mut self, pid: u32, now: u64, out: &mut Vec<Effect>) {
        out.push(Effect::Signal {
            signal: "SIGKILL".into(),
        });
        self.set(
            Phase::Stopping {
                pid,
                sigkill_at: now,
                killed: true,
            },
            now,
            out,
        );
    }

    fn begin_stop(&mut self, pid: u32, now: u64, out: &mut Vec<Effect>) {
        out.push(Effect::Signal {
            signal: self.policy.kill_signal.clone(),
        });
        let sigkill_at = now.saturating_add(self.policy.timeout_stop.as_millis() as u64);
        self.set(
            Phase::Stopping {
                pid,
                sigkill_at,
                killed: false,
            },
            now,
            out,
        );
    }

    /// Timers: the stop timeout and the end of a backoff.
    pub fn tick(&mut self, may_start: bool, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        match self.phase {
            Phase::Stopping {
                pid,
                sigkill_at,
                killed: false,
            } if now >= sigkill_at => {
                out.push(Effect::Signal {
                    signal: "SIGKILL".into(),
                });
                self.set(
                    Phase::Stopping {
                        pid,
                        sigkill_at,
                        killed: true,
                    },
                    now,
                    &mut out,
                );
            }
            Phase::Backoff { until } if self.want == Want::Run && may_start && now >= until => {
                self.begin_start(now, &mut out)
            }
            // Wanted before the machine's run lease allowed a start.
            Phase::Idle if self.want == Want::Run && may_start => self.begin_start(now, &mut out),
            _ => {}
        }
        out
    }

    /// When the next `tick` may have something to do.
    pub fn next_timer(&self) -> Option<u64> {
        match self.phase {
            Phase::Stopping {
                sigkill_at,
                killed: false,
                ..
            } => Some(sigkill_at),
            Phase::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// `berth create` finished: init's pid, or the error.
    pub fn created(&mut self, result: Result<u32, String>, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        match result {
            Ok(pid) => {
                out.push(Effect::Watch { pid });
                if self.want == Want::Remove {
                    self.set(Phase::Deleting, now, &mut out);
                    out.push(Effect::Delete);
                } else {
                    self.set(Phase::Starting { pid }, now, &mut out);
                    out.push(Effect::Start);
                }
            }
            Err(e) => self.failed_start(format!("berth create: {e}"), now, &mut out),
        }
        out
    }

    /// `berth start` finished.
    pub fn started(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Phase::Starting { pid } = self.phase else {
            return out; // init already exited, or a stop is under way
        };
        match result {
            Ok(()) if self.want == Want::Run => {
                self.started_at = now;
                self.set(Phase::Running { pid }, now, &mut out);
            }
            Ok(()) => self.begin_stop(pid, now, &mut out),
            Err(e) => {
                self.error = Some(format!("berth start: {e}"));
                self.stop_is_failure = true;
                self.kill_now(pid, now, &mut out);
            }
        }
        out
    }

    /// A start step failed before the program ran: clean up the container, then maybe retry.
    fn failed_start(&mut self, error: String, now: u64, out: &mut Vec<Effect>) {
        self.error = Some(error);
        self.failures += 1;
        self.last_failed = true;
        if self.container {
            self.set(Phase::Deleting, now, out);
            out.push(Effect::Delete);
        } else {
            self.after_container_gone(now, out);
        }
    }

    /// Init exited (seen through its pidfd).
    pub fn exited(&mut self, status: ExitStatus, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let was_running = matches!(self.phase, Phase::Running { .. });
        let stopping = matches!(self.phase, Phase::Stopping { .. });
        match self.phase {
            Phase::Running { .. } | Phase::Starting { .. } | Phase::Stopping { .. } => {}
            _ => return out, // late news (e.g. create failed after the exit)
        }
        self.last_exit = Some(status);
        let failed = if stopping {
            self.stop_is_failure
        } else {
            !status.success() && !self.fenced
        };
        self.last_failed = failed;
        if failed {
            self.failures += 1;
            if !stopping {
                self.error = Some(status.describe());
            }
        } else if !stopping {
            self.error = None;
        }
        if was_running && now.saturating_sub(self.started_at) >= STABLE_RUN.as_millis() as u64 {
            self.failures = u32::from(failed);
        }
        self.set(Phase::Deleting, now, &mut out);
        out.push(Effect::Delete);
        out
    }

    /// `berth delete` finished: the container is gone.
    pub fn deleted(&mut self, result: Result<(), String>, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Err(e) = result {
            // The container state is unknown: retrying delete is what can help.
            self.error = Some(format!("berth delete: {e}"));
            out.push(Effect::Delete);
            return out;
        }
        self.container = false;
        self.after_container_gone(now, &mut out);
        out
    }

    fn after_container_gone(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.want == Want::Remove {
            return self.finish(now, out);
        }
        if self.fenced {
            // Restarted when the lease is valid again (tick).
            self.set(Phase::Backoff { until: now }, now, out);
            return;
        }
        let success = !self.last_failed;
        let again = match self.policy.restart {
            Restart::No => false,
            Restart::OnFailure => !success,
            Restart::Always => true,
        };
        if again {
            self.restarts += 1;
            let until = now.saturating_add(self.backoff().as_millis() as u64);
            self.set(Phase::Backoff { until }, now, out);
        } else {
            let end = if success {
                Phase::Inactive
            } else {
                Phase::Failed
            };
            self.release_network(end, now, out);
        }
    }

    /// RestartSec, doubled for each consecutive failure beyond the first, capped.
    fn backoff(&self) -> Duration {
        let base = self.policy.restart_sec;
        let steps = self.failures.saturating_sub(1).min(10);
        let d = base.saturating_mul(1 << steps);
        d.min(MAX_BACKOFF.max(base))
    }

    /// The state to report.
    pub fn status(&self) -> Status {
        let (active, sub, pid) = match &self.phase {
            Phase::Idle => ("inactive", "dead", None),
            Phase::Preparing | Phase::Creating => ("activating", "start", None),
            Phase::Starting { pid } => ("activating", "start", Some(*pid)),
            Phase::Running { pid } => ("active", "running", Some(*pid)),
            Phase::Stopping { pid, killed, .. } => (
                "deactivating",
                if *killed {
                    "stop-sigkill"
                } else {
                    "stop-sigterm"
                },
                Some(*pid),
            ),
            Phase::Deleting | Phase::Cleaning => ("deactivating", "stop-post", None),
            Phase::Backoff { .. } => ("activating", "auto-restart", None),
            Phase::Failed => ("failed", "failed", None),
            Phase::Inactive | Phase::Done => ("inactive", "dead", None),
        };
        Status {
            active,
            sub,
            pid,
            exit: self.last_exit,
            restarts: self.restarts,
            error: self.error.clone(),
            since_ms: self.since_ms,
        }
    }
}

#[path = "instance_setup.rs"]
mod setup;

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
