//! Multi-node `berthd` tests: real daemons in their own network namespaces on a test
//! bridge, killed, restarted and partitioned; every assertion is on what the nodes report
//! through their API. Run as root after `cargo build -p berth-orchestrator --bins`.

use std::time::Duration;

use berth_tests::cluster::{wait_until, PATIENCE};

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
    let pairs = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
    for (a, b) in pairs {
        assert!(reach(a, b), "{a} -> {b} before any partition");
    }

    net.link_down(0);
    for (a, b) in pairs {
        assert_eq!(
            reach(a, b),
            a != 0 && b != 0,
            "{a} -> {b} with 0's link down"
        );
    }
    net.link_up(0);
    wait_until("0's link back", PATIENCE, || {
        if reach(0, 1) {
            Ok(())
        } else {
            Err("no".into())
        }
    });

    net.partition(&[&[0], &[1, 2]]);
    for (a, b) in pairs {
        assert_eq!(
            reach(a, b),
            a != 0 && b != 0,
            "{a} -> {b} with 0 partitioned off"
        );
    }
    net.heal();
    for (a, b) in pairs {
        assert!(reach(a, b), "{a} -> {b} after healing");
    }
}
