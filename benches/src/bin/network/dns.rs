//! DNS lookup latency from a container: berthd's responder (`dns::serve_one` on a UDP
//! socket at the bridge's address) queried from inside a container's network namespace
//! attached by berth-cni, and, for comparison, from the host's side of the bridge.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_cni::{Attachment, AttachmentKey, Invoker, NetworkConfigList, PluginRunner};
use berth_orchestrator::dns::{serve_one, Endpoint, Responder, Snapshot, RECV_BUFFER};

use crate::dns_client::lookups;

/// Microseconds per lookup.
pub struct Latencies {
    pub container: Vec<f64>,
    pub host: Vec<f64>,
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::new(1);
    for i in 0..3u8 {
        s.add_endpoint(
            "web",
            Endpoint {
                ip: IpAddr::from([10, 88, 1, 10 + i]),
                port: 80,
                machine: format!("n{i}"),
                instance: format!("web{i}"),
            },
        );
    }
    s
}

/// Attaches a container namespace, serves DNS on the bridge's address, and times lookups.
pub fn lookup_latency<R: PluginRunner>(
    inv: &Invoker<R>,
    net: &NetworkConfigList,
    n: usize,
) -> Result<Latencies> {
    let path = Path::new("/run/netns").join(format!("bnb-dns-{}", std::process::id()));
    std::fs::create_dir_all("/run/netns")?;
    berth_cni::netns::create(&path)?;
    let att = Attachment {
        container_id: "dnsbench".into(),
        netns: path.clone(),
        ifname: "eth0".into(),
        args: vec![],
        runtime_config: Default::default(),
    };
    let measured = inv
        .add(net, &att)
        .map_err(anyhow::Error::from)
        .and_then(|result| {
            let gw = result
                .ips
                .first()
                .and_then(|ip| ip.gateway)
                .context("the ADD result has no gateway")?;
            serve_and_measure(SocketAddr::new(gw, 0), &path, n)
        });
    let key = AttachmentKey {
        network: net.name.clone(),
        container_id: att.container_id.clone(),
        ifname: att.ifname.clone(),
    };
    let del = inv.del(&key);
    let removed = berth_cni::netns::remove(&path);
    let lat = measured?;
    del?;
    removed?;
    Ok(lat)
}

fn serve_and_measure(bind: SocketAddr, container_ns: &Path, n: usize) -> Result<Latencies> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind DNS socket on {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let server = sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let (responder, snap) = (Responder::default(), snapshot());
        let mut buf = vec![0u8; RECV_BUFFER];
        while !flag.load(Ordering::Relaxed) {
            let _ = serve_one(&sock, &responder, &snap, &mut buf);
        }
    });
    let ns = std::fs::File::open(container_ns)?;
    let container = std::thread::spawn(move || -> Result<Vec<f64>> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        lookups(server, "web.service.berth", 3, 100, n)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    let host = lookups(server, "web.service.berth", 3, 100, n);
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    Ok(Latencies {
        container: container?,
        host: host?,
    })
}
