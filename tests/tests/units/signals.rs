//! A unit's processes start with no signal blocked: berthd blocks SIGTERM and SIGINT for
//! its signalfd, and a child inherits its parent's mask through fork and exec, so without
//! care the container's program (and what `berthctl exec` runs) could not receive the
//! stop's SIGTERM and every stop ended with SIGKILL after TimeoutStopSec.

use super::*;

/// `SigBlk` of `/proc/<pid>/status`-style text.
fn blocked(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no SigBlk in {status}"))
}

#[test]
fn a_units_program_gets_the_stops_sigterm_and_exec_blocks_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_with_web(tmp.path());
    let f = unit_file(
        tmp.path(),
        "sig.service",
        "[Container]\nImage=web:1\nExec=sh -c 'trap \"echo got TERM; exit 0\" TERM; echo ready; while :; do sleep 1 & wait; done'\nNetwork=none\n\n[Service]\nTimeoutStopSec=3s\n\n[X-Fleet]\nMachineMetadata=slot=1\n",
    );
    ctl(&c, 0, &["start", f.to_str().expect("utf-8")]);
    let pid = wait_until("sig to run", UNIT_PATIENCE, || {
        let states = c.node(0).unit_states()?;
        states
            .iter()
            .find(|s| s["unit"] == "sig.service" && s["active"] == "active")
            .and_then(|s| s["pid"].as_u64())
            .ok_or(format!("{states:?}"))
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(blocked(&status), "0000000000000000", "the unit's init");
    let out = c.berthctl(
        2,
        &["exec", "sig.service", "--", "cat", "/proc/self/status"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        blocked(&String::from_utf8_lossy(&out.stdout)),
        "0000000000000000",
        "a berthctl exec"
    );
    wait_until("the trap to be set", UNIT_PATIENCE, || {
        let log = ctl(&c, 0, &["journal", "-n", "20", "sig.service"]);
        log.contains("ready").then_some(()).ok_or(log)
    });

    ctl(&c, 0, &["stop", "sig.service"]);
    let state = wait_until("sig to stop", UNIT_PATIENCE, || {
        let states = c.node(0).unit_states()?;
        states
            .iter()
            .find(|s| s["unit"] == "sig.service" && s["active"] != "active")
            .filter(|s| s["active"] != "deactivating")
            .cloned()
            .ok_or(format!("{states:?}"))
    });
    let log = ctl(&c, 0, &["journal", "-n", "20", "sig.service"]);
    assert!(log.contains("got TERM"), "the program saw SIGTERM: {log}");
    assert!(state.get("exit_signal").is_none(), "no SIGKILL: {state}");
}
