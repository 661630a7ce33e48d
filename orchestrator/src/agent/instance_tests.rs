//! Scenario tests of the instance state machine: each step's effects and phase.

use super::*;

fn policy(restart: Restart) -> Policy {
    Policy {
        restart,
        restart_sec: Duration::from_millis(100),
        timeout_stop: Duration::from_millis(1_000),
        kill_signal: "SIGTERM".into(),
        network: false,
    }
}

fn networked(restart: Restart) -> Policy {
    Policy {
        network: true,
        ..policy(restart)
    }
}

fn without_reports(e: Vec<Effect>) -> Vec<Effect> {
    e.into_iter().filter(|e| *e != Effect::Report).collect()
}

/// Runs an instance up to Running with pid 42 at time 0; returns it.
fn running(restart: Restart) -> Instance {
    let mut i = Instance::new(policy(restart), 0);
    assert_eq!(without_reports(i.run(true, 0)), vec![Effect::Prepare]);
    assert_eq!(without_reports(i.prepared(Ok(()), 0)), vec![Effect::Create]);
    assert_eq!(
        without_reports(i.created(Ok(42), 0)),
        vec![Effect::Watch { pid: 42 }, Effect::Start]
    );
    assert_eq!(without_reports(i.started(Ok(()), 0)), vec![]);
    assert_eq!(i.phase(), &Phase::Running { pid: 42 });
    assert_eq!(i.status().active, "active");
    i
}

#[test]
fn start_run_stop_and_remove() {
    let mut i = running(Restart::No);
    assert_eq!(
        without_reports(i.remove(100)),
        vec![Effect::Signal {
            signal: "SIGTERM".into()
        }]
    );
    assert_eq!(i.status().sub, "stop-sigterm");
    assert_eq!(i.next_timer(), Some(1_100));
    assert!(i.tick(true, 1_099).is_empty());
    assert_eq!(
        without_reports(i.tick(true, 1_100)),
        vec![Effect::Signal {
            signal: "SIGKILL".into()
        }]
    );
    assert_eq!(i.status().sub, "stop-sigkill");
    assert_eq!(
        without_reports(i.exited(ExitStatus::Signal(9), 1_150)),
        vec![Effect::Delete]
    );
    assert_eq!(
        without_reports(i.deleted(Ok(()), 1_160)),
        vec![Effect::Cleanup]
    );
    assert!(!i.is_done());
    i.cleaned(Ok(()), 1_170);
    assert!(i.is_done());
    // A requested stop is not a failure.
    assert_eq!(i.status().error, None);
}

#[test]
fn on_failure_restarts_with_doubling_backoff_reusing_the_bundle() {
    let mut i = running(Restart::OnFailure);
    assert_eq!(
        without_reports(i.exited(ExitStatus::Code(3), 500)),
        vec![Effect::Delete]
    );
    i.deleted(Ok(()), 500);
    assert_eq!(i.phase(), &Phase::Backoff { until: 600 });
    assert_eq!(i.status().sub, "auto-restart");
    assert_eq!(i.status().error.as_deref(), Some("exited with status 3"));
    assert!(i.tick(true, 599).is_empty());
    // The lease does not allow a start: wait.
    assert!(i.tick(false, 600).is_empty());
    assert_eq!(without_reports(i.tick(true, 600)), vec![Effect::Create]);
    i.created(Ok(43), 600);
    i.started(Ok(()), 600);
    i.exited(ExitStatus::Code(3), 700);
    i.deleted(Ok(()), 700);
    // Second consecutive failure: 200 ms.
    assert_eq!(i.phase(), &Phase::Backoff { until: 900 });
    assert_eq!(i.status().restarts, 2);
}

#[test]
fn a_long_run_resets_the_backoff() {
    let mut i = running(Restart::OnFailure);
    for t in [100, 2_000] {
        i.exited(ExitStatus::Code(1), t);
        i.deleted(Ok(()), t);
        i.tick(true, t + 1_000);
        i.created(Ok(50), t + 1_000);
        i.started(Ok(()), t + 1_000);
    }
    // Runs 60 s, then fails: the first step again.
    i.exited(ExitStatus::Code(1), 61_400);
    i.deleted(Ok(()), 61_400);
    assert_eq!(i.phase(), &Phase::Backoff { until: 61_500 });
}

#[test]
fn restart_policies_decide_after_a_clean_exit_and_a_failure() {
    let mut i = running(Restart::OnFailure);
    i.exited(ExitStatus::Code(0), 10);
    i.deleted(Ok(()), 10);
    assert_eq!(i.phase(), &Phase::Inactive);
    assert_eq!(i.status().active, "inactive");

    let mut i = running(Restart::Always);
    i.exited(ExitStatus::Code(0), 10);
    i.deleted(Ok(()), 10);
    assert!(matches!(i.phase(), Phase::Backoff { .. }));

    let mut i = running(Restart::No);
    i.exited(ExitStatus::Signal(11), 10);
    i.deleted(Ok(()), 10);
    assert_eq!(i.phase(), &Phase::Failed);
    assert_eq!(i.status().active, "failed");
    assert_eq!(i.status().error.as_deref(), Some("killed by signal 11"));
    // Wanted again (e.g. `berthctl start` after a fix): starts over.
    assert_eq!(without_reports(i.run(true, 20)), vec![Effect::Create]);
}

#[test]
fn a_clean_exit_after_failures_is_not_a_failure() {
    let mut i = running(Restart::OnFailure);
    i.exited(ExitStatus::Code(1), 10);
    i.deleted(Ok(()), 10);
    i.tick(true, 200);
    i.created(Ok(44), 200);
    i.started(Ok(()), 200);
    i.exited(ExitStatus::Code(0), 300);
    i.deleted(Ok(()), 300);
    assert_eq!(i.phase(), &Phase::Inactive);
    assert_eq!(i.status().error, None);
}

#[test]
fn failed_preparation_and_create_are_reported_and_cleaned_up() {
    let mut i = Instance::new(policy(Restart::No), 0);
    i.run(true, 0);
    assert_eq!(
        without_reports(i.prepared(Err("image web:1 not found".into()), 5)),
        vec![]
    );
    assert_eq!(i.phase(), &Phase::Failed);
    assert_eq!(
        i.status().error.as_deref(),
        Some("preparing the bundle: image web:1 not found")
    );

    let mut i = Instance::new(policy(Restart::OnFailure), 0);
    i.run(true, 0);
    i.prepared(Ok(()), 0);
    // create fails: the (maybe half-made) container is deleted, then a retry after backoff.
    assert_eq!(
        without_reports(i.created(Err("bad config".into()), 1)),
        vec![Effect::Delete]
    );
    i.deleted(Ok(()), 2);
    assert_eq!(i.phase(), &Phase::Backoff { until: 102 });
    assert_eq!(
        i.status().error.as_deref(),
        Some("berth create: bad config")
    );
}

#[test]
fn a_failed_start_kills_init_and_counts_as_a_failure() {
    let mut i = Instance::new(policy(Restart::No), 0);
    i.run(true, 0);
    i.prepared(Ok(()), 0);
    i.created(Ok(7), 0);
    assert_eq!(
        without_reports(i.started(Err("exec failed".into()), 1)),
        vec![Effect::Signal {
            signal: "SIGKILL".into()
        }]
    );
    i.exited(ExitStatus::Signal(9), 2);
    i.deleted(Ok(()), 3);
    assert_eq!(i.phase(), &Phase::Failed);
    assert_eq!(
        i.status().error.as_deref(),
        Some("berth start: exec failed")
    );
}

#[test]
fn fence_kills_at_once_and_restarts_when_the_lease_is_back() {
    let mut i = running(Restart::No);
    assert_eq!(
        without_reports(i.fence(50)),
        vec![Effect::Signal {
            signal: "SIGKILL".into()
        }]
    );
    i.exited(ExitStatus::Signal(9), 60);
    i.deleted(Ok(()), 61);
    assert!(matches!(i.phase(), Phase::Backoff { .. }));
    assert!(i.tick(false, 5_000).is_empty());
    assert_eq!(without_reports(i.tick(true, 5_001)), vec![Effect::Create]);
    // Not a failure, even with Restart=no.
    assert_eq!(i.status().error, None);
}

#[test]
fn removal_during_each_start_step_ends_with_nothing_left() {
    // During preparation.
    let mut i = Instance::new(policy(Restart::Always), 0);
    i.run(true, 0);
    assert!(i.remove(1).is_empty());
    assert_eq!(
        without_reports(i.prepared(Ok(()), 2)),
        vec![Effect::Cleanup]
    );
    i.cleaned(Ok(()), 3);
    assert!(i.is_done());

    // During create.
    let mut i = Instance::new(policy(Restart::Always), 0);
    i.run(true, 0);
    i.prepared(Ok(()), 0);
    i.remove(1);
    assert_eq!(
        without_reports(i.created(Ok(9), 2)),
        vec![Effect::Watch { pid: 9 }, Effect::Delete]
    );
    assert!(i.exited(ExitStatus::Signal(9), 3).is_empty());
    assert_eq!(without_reports(i.deleted(Ok(()), 4)), vec![Effect::Cleanup]);
    i.cleaned(Ok(()), 5);
    assert!(i.is_done());

    // During backoff.
    let mut i = running(Restart::Always);
    i.exited(ExitStatus::Code(1), 1);
    i.deleted(Ok(()), 1);
    assert_eq!(without_reports(i.remove(2)), vec![Effect::Cleanup]);
}

#[test]
fn a_run_request_without_the_lease_waits() {
    let mut i = Instance::new(policy(Restart::No), 0);
    assert!(i.run(false, 0).is_empty());
    assert_eq!(i.phase(), &Phase::Idle);
    assert!(i.tick(false, 5).is_empty());
    // The lease arrives: the next tick starts it.
    assert_eq!(without_reports(i.tick(true, 10)), vec![Effect::Prepare]);
}

#[test]
fn an_adopted_container_is_watched_and_follows_its_policy() {
    let (mut i, effects) = Instance::adopted(policy(Restart::OnFailure), 77, 2, 0);
    assert_eq!(effects, vec![Effect::Watch { pid: 77 }, Effect::Report]);
    assert_eq!(i.running_pid(), Some(77));
    i.exited(ExitStatus::Unknown, 10);
    i.deleted(Ok(()), 11);
    assert!(matches!(i.phase(), Phase::Backoff { .. }));
    assert_eq!(i.status().restarts, 3);
}

#[test]
fn a_failed_delete_is_retried_and_reported() {
    let mut i = running(Restart::No);
    i.exited(ExitStatus::Code(0), 1);
    assert_eq!(
        without_reports(i.deleted(Err("busy".into()), 2)),
        vec![Effect::Delete]
    );
    assert_eq!(i.status().error.as_deref(), Some("berth delete: busy"));
}

/// Runs a networked instance up to Running with pid 42 at time 0.
fn running_networked(restart: Restart) -> Instance {
    let mut i = Instance::new(networked(restart), 0);
    assert_eq!(
        without_reports(i.run(true, 0)),
        vec![Effect::Prepare, Effect::Attach]
    );
    i.attached(Ok(()), 0);
    i.prepared(Ok(()), 0);
    i.created(Ok(42), 0);
    i.started(Ok(()), 0);
    assert_eq!(i.phase(), &Phase::Running { pid: 42 });
    i
}

#[test]
fn bundle_and_network_are_prepared_at_once_and_create_waits_for_both() {
    for network_first in [true, false] {
        let mut i = Instance::new(networked(Restart::No), 0);
        assert_eq!(
            without_reports(i.run(true, 0)),
            vec![Effect::Prepare, Effect::Attach]
        );
        assert_eq!(i.status().sub, "start");
        let first = if network_first {
            i.attached(Ok(()), 1)
        } else {
            i.prepared(Ok(()), 1)
        };
        assert_eq!(
            without_reports(first),
            vec![],
            "the other job is still running"
        );
        assert_eq!(i.phase(), &Phase::Preparing);
        let second = if network_first {
            i.prepared(Ok(()), 2)
        } else {
            i.attached(Ok(()), 2)
        };
        assert_eq!(without_reports(second), vec![Effect::Create]);
    }
}

#[test]
fn a_failed_attach_fails_the_start_once_the_bundle_is_done_and_a_retry_attaches_only() {
    let mut i = Instance::new(networked(Restart::OnFailure), 0);
    i.run(true, 0);
    assert_eq!(
        without_reports(i.attached(Err("plugin bridge: ADD failed".into()), 1)),
        vec![]
    );
    assert_eq!(i.phase(), &Phase::Preparing, "the bundle job still runs");
    assert_eq!(without_reports(i.prepared(Ok(()), 2)), vec![]);
    assert_eq!(i.phase(), &Phase::Backoff { until: 102 });
    assert_eq!(
        i.status().error.as_deref(),
        Some("network: plugin bridge: ADD failed")
    );
    // The bundle is kept: the retry only attaches.
    assert_eq!(without_reports(i.tick(true, 102)), vec![Effect::Attach]);
    assert_eq!(
        without_reports(i.attached(Ok(()), 103)),
        vec![Effect::Create]
    );

    // Both fail: the first error is reported, nothing is left to clean on removal.
    let mut i = Instance::new(networked(Restart::No), 0);
    i.run(true, 0);
    i.prepared(Err("image web:1 not found".into()), 1);
    i.attached(Err("no network berth".into()), 2);
    assert_eq!(i.phase(), &Phase::Failed);
    assert_eq!(
        i.status().error.as_deref(),
        Some("preparing the bundle: image web:1 not found")
    );
    i.remove(3);
    assert!(i.is_done());
}

#[test]
fn a_stop_kills_first_and_detaches_after_the_container_is_deleted() {
    let mut i = running_networked(Restart::No);
    assert_eq!(
        without_reports(i.remove(100)),
        vec![Effect::Signal {
            signal: "SIGTERM".into()
        }]
    );
    assert_eq!(
        without_reports(i.exited(ExitStatus::Signal(15), 110)),
        vec![Effect::Delete]
    );
    assert_eq!(
        without_reports(i.deleted(Ok(()), 120)),
        vec![Effect::Cleanup, Effect::Detach]
    );
    assert_eq!(without_reports(i.detached(Ok(()), 130)), vec![]);
    assert!(!i.is_done(), "the bundle is still being removed");
    i.cleaned(Ok(()), 140);
    assert!(i.is_done());
}

#[test]
fn a_fence_kill_is_immediate_and_the_restart_keeps_the_network() {
    let mut i = running_networked(Restart::No);
    assert_eq!(
        without_reports(i.fence(50)),
        vec![Effect::Signal {
            signal: "SIGKILL".into()
        }]
    );
    i.exited(ExitStatus::Signal(9), 60);
    assert_eq!(without_reports(i.deleted(Ok(()), 61)), vec![]);
    assert_eq!(without_reports(i.tick(true, 5_000)), vec![Effect::Create]);
}

#[test]
fn a_failed_detach_is_reported_and_retried_on_the_next_removal() {
    let mut i = running_networked(Restart::No);
    i.remove(1);
    i.exited(ExitStatus::Signal(15), 2);
    i.deleted(Ok(()), 3);
    i.cleaned(Ok(()), 4);
    i.detached(Err("plugin portmap: DEL failed".into()), 5);
    assert_eq!(i.phase(), &Phase::Failed);
    assert_eq!(
        i.status().error.as_deref(),
        Some("detaching the network: plugin portmap: DEL failed")
    );
    assert_eq!(without_reports(i.remove(6)), vec![Effect::Detach]);
    i.detached(Ok(()), 7);
    assert!(i.is_done());
}

#[test]
fn removal_while_preparing_a_network_removes_both_halves() {
    let mut i = Instance::new(networked(Restart::Always), 0);
    i.run(true, 0);
    assert!(i.remove(1).is_empty());
    i.prepared(Ok(()), 2);
    assert_eq!(
        without_reports(i.attached(Ok(()), 3)),
        vec![Effect::Cleanup, Effect::Detach]
    );
    i.detached(Ok(()), 4);
    i.cleaned(Ok(()), 5);
    assert!(i.is_done());

    // An adopted networked container detaches when removed too.
    let (mut i, _) = Instance::adopted(networked(Restart::No), 77, 0, 0);
    i.remove(1);
    i.exited(ExitStatus::Unknown, 2);
    assert_eq!(
        without_reports(i.deleted(Ok(()), 3)),
        vec![Effect::Cleanup, Effect::Detach]
    );
}

#[test]
fn a_run_that_ends_for_good_gives_its_network_back_and_keeps_the_bundle() {
    // A failed start (create failed after the network was attached), no restart coming.
    let mut i = Instance::new(networked(Restart::No), 0);
    i.run(true, 0);
    i.attached(Ok(()), 1);
    i.prepared(Ok(()), 1);
    assert_eq!(
        without_reports(i.created(Err("exec: no-such-program: not found".into()), 2)),
        vec![Effect::Delete]
    );
    assert_eq!(without_reports(i.deleted(Ok(()), 2)), vec![Effect::Detach]);
    assert_eq!(i.status().active, "deactivating");
    assert_eq!(without_reports(i.detached(Ok(()), 3)), vec![]);
    assert_eq!(i.phase(), &Phase::Failed);
    assert!(!i.is_attached());
    assert!(i
        .status()
        .error
        .is_some_and(|e| e.contains("no-such-program")));
    // Removal cleans the bundle only.
    assert_eq!(without_reports(i.remove(4)), vec![Effect::Cleanup]);
    i.cleaned(Ok(()), 5);
    assert!(i.is_done());

    // A clean exit with Restart=on-failure: Inactive after the DEL; a removal asked while
    // it runs removes the bundle once it is done.
    let mut i = running_networked(Restart::OnFailure);
    assert_eq!(
        without_reports(i.exited(ExitStatus::Code(0), 10)),
        vec![Effect::Delete]
    );
    assert_eq!(without_reports(i.deleted(Ok(()), 11)), vec![Effect::Detach]);
    assert!(i.remove(12).is_empty());
    assert_eq!(
        without_reports(i.detached(Ok(()), 13)),
        vec![Effect::Cleanup]
    );
    i.cleaned(Ok(()), 14);
    assert!(i.is_done());

    // Without removal: Inactive, detached.
    let mut i = running_networked(Restart::No);
    i.exited(ExitStatus::Code(0), 10);
    i.deleted(Ok(()), 11);
    i.detached(Ok(()), 12);
    assert_eq!(i.phase(), &Phase::Inactive);
    assert!(!i.is_attached());

    // A failure that restarts keeps the network (the container keeps its address).
    let mut i = running_networked(Restart::OnFailure);
    i.exited(ExitStatus::Code(1), 10);
    assert_eq!(without_reports(i.deleted(Ok(()), 11)), vec![]);
    assert!(i.is_attached());
}
