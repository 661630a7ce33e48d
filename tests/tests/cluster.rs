//! Multi-node `berthd` tests: real daemons in their own network namespaces on a test
//! bridge, killed, restarted and partitioned; every assertion is on what the nodes report
//! through their API. Run as root after `cargo build -p berth-orchestrator --bins`.
//! One test binary; the cases live in tests/tests/cluster/ by concern.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_tests::cluster::{wait_until, Cluster, KeyState, PATIENCE};

#[path = "cluster/api.rs"]
mod api;
#[path = "cluster/attack.rs"]
mod attack;
#[path = "cluster/dns.rs"]
mod dns;
#[path = "cluster/hygiene.rs"]
mod hygiene;
#[path = "cluster/leader.rs"]
mod leader;
#[path = "cluster/limits.rs"]
mod limits;
#[path = "cluster/membership.rs"]
mod membership;
#[path = "cluster/partition.rs"]
mod partition;
#[path = "cluster/remote.rs"]
mod remote;
#[path = "cluster/snapshots.rs"]
mod snapshots;

/// Puts `key=value` through node `k`, retrying until acknowledged (a retry may follow an
/// unacknowledged attempt that committed anyway, which is harmless: the value is the same).
fn put_acked(c: &Cluster, k: usize, key: &str, value: &str) -> u64 {
    wait_until(
        &format!("PUT {key} via {} acknowledged", c.node(k).name),
        PATIENCE,
        || c.node(k).put(key, value),
    )
}

/// Waits until every node in `among` reports exactly the same keys under `prefix` with the
/// same values and revisions, and returns that state.
fn wait_converged(c: &Cluster, among: &[usize], prefix: &str) -> BTreeMap<String, KeyState> {
    wait_until(
        &format!("nodes {among:?} to converge under {prefix}"),
        PATIENCE,
        || {
            let first = c.node(among[0]).range(prefix)?;
            for &k in &among[1..] {
                let other = c.node(k).range(prefix)?;
                if other != first {
                    return Err(format!(
                        "{} and {} differ: {first:?} vs {other:?}",
                        c.node(among[0]).name,
                        c.node(k).name
                    ));
                }
            }
            Ok(first)
        },
    )
}

#[test]
fn harness_partitions_cut_and_heal_the_test_network() {
    use berth_tests::cluster::Net;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    let mut net = Net::create();
    for _ in 0..3 {
        net.add_slot();
    }
    let listeners: Vec<TcpListener> = (0..3)
        .map(|k| {
            let ip = net.slot(k).ip;
            net.in_netns(k, || TcpListener::bind((ip, 9000)).expect("bind in netns"))
        })
        .collect();
    let reach = |from: usize, to: usize| -> bool {
        let addr = SocketAddr::from((net.slot(to).ip, 9000));
        let ok = net.in_netns(from, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
        });
        if ok {
            // Drain the accepted connection so the backlog never fills.
            listeners[to].set_nonblocking(true).expect("nonblocking");
            while listeners[to].accept().is_ok() {}
        }
        ok
    };
    // Reachable pairs are polled (a loaded machine can be slow to ARP and accept); a pair
    // that must be cut off is asserted on one attempt.
    let expect = |a: usize, b: usize, reachable: bool, when: &str| {
        if reachable {
            wait_until(&format!("{a} -> {b} {when}"), PATIENCE, || {
                if reach(a, b) {
                    Ok(())
                } else {
                    Err("no connection".into())
                }
            });
        } else {
            assert!(!reach(a, b), "{a} -> {b} connected {when}");
        }
    };
    let pairs = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
    for (a, b) in pairs {
        expect(a, b, true, "before any partition");
    }
    net.link_down(0);
    for (a, b) in pairs {
        expect(a, b, a != 0 && b != 0, "with 0's link down");
    }
    net.link_up(0);
    for (a, b) in pairs {
        expect(a, b, true, "after 0's link is back up");
    }
    net.partition(&[&[0], &[1, 2]]);
    for (a, b) in pairs {
        expect(a, b, a != 0 && b != 0, "with 0 partitioned off");
    }
    net.heal();
    for (a, b) in pairs {
        expect(a, b, true, "after healing");
    }
}

/// A JSON call on node `k` retried until it answers 2xx (409 "change in progress" and 503
/// are transient while the cluster settles).
fn call_ok(
    c: &Cluster,
    k: usize,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    wait_until(
        &format!("{method} {target} on {}", c.node(k).name),
        PATIENCE,
        || match c.node(k).call(method, target, body) {
            Ok(r) if r.ok() => Ok(r.json()),
            Ok(r) => Err(format!("{} {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        },
    )
}
