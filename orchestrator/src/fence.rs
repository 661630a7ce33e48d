//! At most once: the timing rules that keep a unit from running on two machines at a time.
//!
//! A machine may run its units only while it can prove it reaches the Raft quorum; the leader
//! moves a machine's units only after that proof must have run out. Both sides use only
//! their own monotonic clock and the committed log; no clock is compared across hosts.
//!
//! # The argument
//! - Machine X's agent proposes `Heartbeat{X}` every [`FenceConfig::beat`], noting its local
//!   time `p` at proposal. When X applies that entry it is committed (a quorum stored it), and
//!   X may run units until `p + run_for` ([`RunLease`]). Stale beats (proposed long ago,
//!   committed late) extend nothing, because the deadline counts from `p`, not from the apply.
//! - When X's deadline passes, its units are killed (SIGKILL through `berth kill --all`) by the
//!   agent in berthd and, independently, by the node's watchdog process, which reads the
//!   deadline from a file (so it also holds when berthd is dead or hung; see
//!   `agent::watchdog`). The watchdog polls every [`WATCHDOG_POLL`].
//! - Every node notes the local time `a` at which it applied X's latest heartbeat
//!   ([`Liveness`]); a node that has not applied one since it started uses its start time.
//!   Because an entry is applied only after it committed, and it committed after X proposed
//!   it, `a` is later in real time than `p`. The leader moves X's units only when its own clock
//!   shows `a + run_for + margin` passed. So X's units are dead before they are placed
//!   elsewhere, provided `margin` covers: the watchdog's poll interval, the time SIGKILL takes
//!   to end the container's processes, and the drift between the two hosts' clock *rates*
//!   over `run_for` (NTP keeps rates within 500 ppm: under 2 ms over 2 s). A new leader needs
//!   nothing handed over: its own apply times (or its start time) are just as conservative.
//! - The same bound covers berthd dying alone on a live host (its containers outlive it for
//!   at most `run_for` so a quick restart re-adopts them; after that the watchdog kills them)
//!   and a host cut off from the quorum (its beats stop committing, so its deadline is not
//!   extended).
//!
//! With the defaults (beat 250 ms, run_for 2,000 ms, margin 400 ms) the units of a killed
//! machine are placed elsewhere 2.15–2.4 s after its last committed beat.

use std::collections::HashMap;
use std::time::Duration;

/// How often the watchdog reads the deadline file.
pub const WATCHDOG_POLL: Duration = Duration::from_millis(50);

/// Timing of the at-most-once rule; identical on every node of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceConfig {
    /// How often an agent proposes a heartbeat.
    pub beat: Duration,
    /// How long after proposing a committed heartbeat an agent may run its units.
    pub run_for: Duration,
    /// What the leader waits on top of `run_for` before moving a machine's units.
    pub margin: Duration,
}

impl Default for FenceConfig {
    fn default() -> Self {
        FenceConfig {
            beat: Duration::from_millis(250),
            run_for: Duration::from_millis(2_000),
            margin: Duration::from_millis(400),
        }
    }
}

impl FenceConfig {
    /// Checks the relations the argument above needs.
    pub fn validate(&self) -> Result<(), String> {
        if self.beat.is_zero() || self.run_for < self.beat * 4 {
            return Err(format!(
                "the unit run lease ({} ms) must be at least 4 heartbeats ({} ms each)",
                self.run_for.as_millis(),
                self.beat.as_millis()
            ));
        }
        let floor = WATCHDOG_POLL * 2 + Duration::from_millis(100);
        if self.margin < floor {
            return Err(format!(
                "the rescheduling margin ({} ms) must be at least {} ms (watchdog poll, kill time, clock drift)",
                self.margin.as_millis(),
                floor.as_millis()
            ));
        }
        Ok(())
    }

    /// How long after a machine's last applied heartbeat its units may be moved.
    pub fn move_after(&self) -> Duration {
        self.run_for + self.margin
    }
}

/// The agent's side: until when this machine may run units. Times are milliseconds on the
/// local monotonic clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLease {
    deadline_ms: u64,
}

impl RunLease {
    /// A heartbeat proposed at `proposed_ms` was applied (so committed).
    pub fn confirmed(&mut self, proposed_ms: u64, cfg: &FenceConfig) {
        let d = proposed_ms.saturating_add(cfg.run_for.as_millis() as u64);
        self.deadline_ms = self.deadline_ms.max(d);
    }

    /// Takes over a deadline proved by a previous run of berthd on this machine (read back
    /// from the fence file): the proof is the machine's, not the process's.
    pub fn inherit(&mut self, deadline_ms: u64) {
        self.deadline_ms = self.deadline_ms.max(deadline_ms);
    }

    /// The deadline (0: never confirmed).
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Whether units may run at `now_ms`.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }

    /// Whether a unit may be started at `now_ms`: the lease must still have `slack` to run,
    /// so a start is not begun just before a kill.
    pub fn may_start_at(&self, now_ms: u64, slack: Duration) -> bool {
        now_ms.saturating_add(slack.as_millis() as u64) < self.deadline_ms
    }
}

/// Where a machine stands for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Beating: may take new units.
    Live,
    /// Silent for longer than `run_for` but not yet `run_for + margin`: takes nothing new and
    /// keeps what it has (it may still be running it).
    Held,
    /// Silent for longer than `run_for + margin`: its units are certainly stopped; move them.
    Gone,
}

/// Every node's record of when it applied each machine's latest heartbeat (local monotonic
/// milliseconds). Used by whichever node is the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// When this process started: the apply time assumed for machines not heard from since.
    started_ms: u64,
    applied: HashMap<String, u64>,
}

impl Liveness {
    pub fn new(started_ms: u64) -> Self {
        Liveness {
            started_ms,
            applied: HashMap::new(),
        }
    }

    /// This node applied `machine`'s heartbeat at `now_ms`.
    pub fn beat_applied(&mut self, machine: &str, now_ms: u64) {
        let e = self.applied.entry(machine.to_string()).or_insert(now_ms);
        *e = (*e).max(now_ms);
    }

    /// The machine was removed for good; forget it.
    pub fn forget(&mut self, machine: &str) {
        self.applied.remove(machine);
    }

    /// Every machine heard from since this process started.
    pub fn machines(&self) -> impl Iterator<Item = String> + '_ {
        self.applied.keys().cloned()
    }

    /// When `machine` last proved itself (or this process's start).
    pub fn last_beat_ms(&self, machine: &str) -> u64 {
        self.applied
            .get(machine)
            .copied()
            .unwrap_or(self.started_ms)
    }

    /// Classifies `machine` at `now_ms`.
    pub fn standing(&self, machine: &str, now_ms: u64, cfg: &FenceConfig) -> Standing {
        let silent = now_ms.saturating_sub(self.last_beat_ms(machine));
        if silent <= cfg.run_for.as_millis() as u64 {
            Standing::Live
        } else if silent <= cfg.move_after().as_millis() as u64 {
            Standing::Held
        } else {
            Standing::Gone
        }
    }

    /// The earliest time at which some machine's standing changes (for the leader's timer).
    pub fn next_change_ms(
        &self,
        machines: &[String],
        now_ms: u64,
        cfg: &FenceConfig,
    ) -> Option<u64> {
        let run = cfg.run_for.as_millis() as u64;
        let mv = cfg.move_after().as_millis() as u64;
        machines
            .iter()
            .flat_map(|m| {
                let b = self.last_beat_ms(m);
                [b + run + 1, b + mv + 1]
            })
            .filter(|t| *t > now_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FenceConfig {
        FenceConfig::default()
    }

    #[test]
    fn run_lease_counts_from_the_proposal_not_the_apply() {
        let mut l = RunLease::default();
        assert!(!l.valid_at(0));
        // Proposed at 1000, applied much later: the lease ends at 3000 regardless.
        l.confirmed(1_000, &cfg());
        assert!(l.valid_at(2_999));
        assert!(!l.valid_at(3_000));
        // An older beat confirmed later never shortens or extends past a newer one.
        l.confirmed(500, &cfg());
        assert_eq!(l.deadline_ms(), 3_000);
        assert!(l.may_start_at(2_000, Duration::from_millis(500)));
        assert!(!l.may_start_at(2_600, Duration::from_millis(500)));
    }

    #[test]
    fn machines_are_held_then_gone_after_run_for_plus_margin() {
        let mut v = Liveness::new(0);
        v.beat_applied("a", 10_000);
        let c = cfg();
        assert_eq!(v.standing("a", 12_000, &c), Standing::Live);
        assert_eq!(v.standing("a", 12_001, &c), Standing::Held);
        assert_eq!(v.standing("a", 12_400, &c), Standing::Held);
        assert_eq!(v.standing("a", 12_401, &c), Standing::Gone);
        // Never heard of since start: counted from the start.
        assert_eq!(v.standing("b", 2_000, &c), Standing::Live);
        assert_eq!(v.standing("b", 2_401, &c), Standing::Gone);
        assert_eq!(v.next_change_ms(&["a".into()], 12_100, &c), Some(12_401));
    }

    /// The safety property over a simulated timeline: whatever the delays between a
    /// heartbeat's proposal, its commit and each node's apply, the machine's lease has ended
    /// before any node (as leader) may move its units.
    #[test]
    fn a_lease_always_ends_before_any_node_may_move_the_units() {
        let c = cfg();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..10_000 {
            let mut lease = RunLease::default();
            let mut nodes = [Liveness::new(0), Liveness::new(0), Liveness::new(0)];
            let mut t = 0;
            for _ in 0..rand(20) + 1 {
                t += c.beat.as_millis() as u64;
                let proposed = t;
                let committed = proposed + rand(3_000); // arbitrary commit delay
                for n in nodes.iter_mut() {
                    n.beat_applied("x", committed + rand(500)); // applied after commit
                }
                lease.confirmed(proposed, &c);
            }
            // The first moment any node sees "x" as gone is after the lease's end.
            for n in &nodes {
                let first_gone = n.last_beat_ms("x") + c.move_after().as_millis() as u64 + 1;
                assert!(first_gone > lease.deadline_ms());
            }
        }
    }

    #[test]
    fn config_relations_are_checked() {
        assert!(cfg().validate().is_ok());
        let bad = FenceConfig {
            run_for: Duration::from_millis(500),
            ..cfg()
        };
        assert!(bad.validate().is_err());
        let bad = FenceConfig {
            margin: Duration::from_millis(50),
            ..cfg()
        };
        assert!(bad.validate().is_err());
    }
}
