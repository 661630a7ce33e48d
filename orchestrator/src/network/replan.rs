//! When a node hands its cluster-network plan to the worker that applies it (pure): after
//! the registry keys the plan is made from changed, after a failed apply, and every
//! `resync` (routes someone else removed come back); never while the worker is still
//! applying the previous plan. A change seen while the worker is busy is kept and planned
//! once it is done.

use std::time::{Duration, Instant};

use super::node::NodePlan;

#[derive(Debug)]
pub struct Replan {
    resync: Duration,
    /// What plans are made from changed since the last plan was made.
    changed: bool,
    /// The worker is applying a plan.
    busy: bool,
    /// The plan last handed to the worker, and when.
    sent: Option<(NodePlan, Instant)>,
}

/// A plan to hand to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub plan: NodePlan,
    /// It differs from the previous one (worth a log line).
    pub new: bool,
}

impl Replan {
    /// Plans at the first chance (nothing was applied yet).
    pub fn new(resync: Duration) -> Self {
        Replan {
            resync,
            changed: true,
            busy: false,
            sent: None,
        }
    }

    /// What plans are made from changed.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// Whether a plan should be made now.
    pub fn due(&self, now: Instant) -> bool {
        !self.busy && (self.changed || self.stale(now))
    }

    fn stale(&self, now: Instant) -> bool {
        self.sent
            .as_ref()
            .is_none_or(|(_, at)| now.duration_since(*at) >= self.resync)
    }

    /// The plan made because [`Replan::due`] said so: what to hand to the worker, unless
    /// it is the one applied last and no resync is due. The caller hands it over and
    /// reports the outcome with [`Replan::applied`] (or [`Replan::not_sent`]).
    pub fn offer(&mut self, now: Instant, plan: NodePlan) -> Option<Send> {
        if self.busy {
            return None;
        }
        self.changed = false;
        let same = self.sent.as_ref().is_some_and(|(p, _)| *p == plan);
        if same && !self.stale(now) {
            return None;
        }
        self.busy = true;
        self.sent = Some((plan.clone(), now));
        Some(Send { plan, new: !same })
    }

    /// The worker finished the plan; `ok`: without errors (else it is tried again at the
    /// next chance).
    pub fn applied(&mut self, ok: bool) {
        self.busy = false;
        if !ok {
            self.sent = None;
        }
    }

    /// The plan [`Replan::next`] returned could not be handed over.
    pub fn not_sent(&mut self) {
        self.applied(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::HostRoute;

    fn plan(n: u8) -> NodePlan {
        NodePlan {
            subnet: Some(format!("10.88.{n}.0/24").parse().unwrap()),
            routes: vec![HostRoute {
                dst: "10.88.200.0/24".parse().unwrap(),
                via: [10, 0, 0, n].into(),
            }],
        }
    }

    const RESYNC: Duration = Duration::from_secs(30);

    /// What the daemon does at each housekeeping: a plan if one is due.
    fn next(r: &mut Replan, now: Instant, make: impl FnOnce() -> NodePlan) -> Option<Send> {
        r.due(now).then(|| r.offer(now, make())).flatten()
    }

    #[test]
    fn a_change_while_the_worker_is_busy_is_planned_when_it_is_done() {
        let t0 = Instant::now();
        let mut r = Replan::new(RESYNC);
        assert_eq!(next(&mut r, t0, || plan(1)).map(|s| s.plan), Some(plan(1)));
        // An allocation arrives while the first plan is applied: nothing is handed over
        // yet, and the plan is not even made.
        r.changed();
        assert_eq!(next(&mut r, t0, || panic!("planned while busy")), None);
        assert_eq!(next(&mut r, t0, || panic!("planned while busy")), None);
        r.applied(true);
        // Once the worker is done, well before the resync, the change is planned.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            next(&mut r, t1, || plan(2)),
            Some(Send {
                plan: plan(2),
                new: true
            })
        );
    }

    #[test]
    fn an_unchanged_plan_is_not_applied_again_until_the_resync() {
        let t0 = Instant::now();
        let mut r = Replan::new(RESYNC);
        assert!(next(&mut r, t0, || plan(1)).is_some());
        r.applied(true);
        assert_eq!(next(&mut r, t0, || panic!("nothing changed")), None);
        r.changed();
        assert_eq!(next(&mut r, t0 + Duration::from_secs(1), || plan(1)), None);
        let later = t0 + RESYNC;
        assert_eq!(
            next(&mut r, later, || plan(1)),
            Some(Send {
                plan: plan(1),
                new: false
            })
        );
    }

    #[test]
    fn a_failed_apply_or_handover_is_tried_again_at_the_next_chance() {
        let t0 = Instant::now();
        let mut r = Replan::new(RESYNC);
        assert!(next(&mut r, t0, || plan(1)).is_some());
        r.applied(false);
        assert!(
            next(&mut r, t0, || plan(1)).is_some(),
            "after a failed apply"
        );
        r.not_sent();
        assert!(
            next(&mut r, t0, || plan(1)).is_some(),
            "after a failed handover"
        );
    }
}
