//! The cluster network in the loop. On the leader: subnet allocation (planned from the
//! replica with `network::plan_subnets`, one compare-and-swap transaction in flight). On
//! every node that runs an agent: its own conflist and host-gw routes (`network::node_plan`),
//! applied by a worker thread of its own, and the agent told when its cluster network is
//! ready. Re-planned when `/network/` or `/machines/` keys change and every
//! [`RESYNC_EVERY`] (routes someone else removed come back).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Daemon, Internal, Responder};
use crate::keyspace::{self, MachineRecord};
use crate::network::apply::{apply_plan, Applied};
use crate::network::replan::Replan;
use crate::network::{
    node_plan, parse_allocations, plan_subnets, subnet_members, Allocated, NetworkConfig, NodePlan,
    SUBNET_PREFIX,
};
use crate::registry::{Event, Outcome};

/// How often the node's plan is applied again even if nothing changed.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How often the leader checks the allocations even if nothing changed (members joining
/// the Raft configuration are not registry events).
const ALLOCATE_EVERY: Duration = Duration::from_secs(1);

/// The cluster network's state in the daemon.
pub(super) struct ClusterNet {
    cfg: NetworkConfig,
    /// Registry keys the subnet allocation depends on changed (the leader's pass).
    dirty: bool,
    /// A subnet transaction is being committed.
    alloc_in_flight: bool,
    last_alloc: Option<Instant>,
    /// Applies node plans (None on a node without an agent: no conflist, no routes).
    worker: Option<Worker>,
    /// When this node's plan is handed to the worker.
    replan: Replan,
}

struct Worker {
    jobs: Sender<NodePlan>,
    done: Receiver<Applied>,
}

impl ClusterNet {
    pub(super) fn new(
        cfg: NetworkConfig,
        with_agent: bool,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<ClusterNet> {
        let worker = if with_agent {
            Some(Worker::start(cfg.clone(), wake)?)
        } else {
            None
        };
        Ok(ClusterNet {
            cfg,
            dirty: true,
            alloc_in_flight: false,
            last_alloc: None,
            worker,
            replan: Replan::new(RESYNC_EVERY),
        })
    }
}

impl Worker {
    fn start(cfg: NetworkConfig, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Worker> {
        let (jobs_tx, jobs_rx) = channel::<NodePlan>();
        let (done_tx, done_rx) = channel::<Applied>();
        std::thread::Builder::new()
            .name("cluster-net".into())
            .spawn(move || {
                for plan in jobs_rx {
                    if done_tx.send(apply_plan(&cfg, &plan)).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(Worker {
            jobs: jobs_tx,
            done: done_rx,
        })
    }
}

impl Daemon {
    /// Registry events that change what the network plans are made from.
    pub(super) fn note_network_events(&mut self, events: &[Event]) {
        if events
            .iter()
            .any(|e| e.key.starts_with("/network/") || e.key.starts_with(keyspace::MACHINES))
        {
            self.cluster_net.dirty = true;
            self.cluster_net.replan.changed();
        }
    }

    /// From housekeeping: the leader's allocation pass, every node's plan.
    pub(super) fn network_housekeeping(&mut self, now: Instant) {
        if self.node.is_leader() {
            self.allocate_subnets(now);
        }
        self.plan_node(now);
        self.cluster_net.dirty = false;
    }

    /// The worker finished applying a plan (the loop was woken).
    pub(super) fn network_wake(&mut self) {
        let Some(w) = &self.cluster_net.worker else {
            return;
        };
        let results: Vec<Applied> = w.done.try_iter().collect();
        for r in results {
            for e in &r.errors {
                tracing::warn!("cluster network: {e}");
            }
            // After errors: tried again at the next housekeeping.
            self.cluster_net.replan.applied(r.errors.is_empty());
            if let Some(agent) = self.agent.as_mut() {
                agent.set_cluster_network(r.ready);
            }
        }
    }

    pub(super) fn on_subnets_applied(&mut self, result: &Result<Outcome, String>) {
        self.cluster_net.alloc_in_flight = false;
        match result {
            Ok(Outcome::Txn { .. }) => {}
            Ok(Outcome::Failed { error }) => {
                tracing::info!("subnet allocation lost a race ({error}); planning again");
                self.cluster_net.last_alloc = None;
            }
            other => {
                tracing::debug!("subnet allocation not applied: {other:?}");
                self.cluster_net.last_alloc = None;
            }
        }
    }

    fn allocations(&self) -> Vec<Allocated> {
        self.node
            .registry()
            .range(SUBNET_PREFIX)
            .into_iter()
            .filter_map(|kv| Allocated::from_kv(&kv.key, &kv.value, kv.mod_revision))
            .collect()
    }

    fn allocate_subnets(&mut self, now: Instant) {
        let net = &self.cluster_net;
        let due = net
            .last_alloc
            .is_none_or(|t| now.duration_since(t) >= ALLOCATE_EVERY);
        if net.alloc_in_flight || !(net.dirty || due) {
            return;
        }
        self.cluster_net.last_alloc = Some(now);
        let allocated = self.allocations();
        let agents: BTreeSet<String> = self
            .node
            .registry()
            .range(keyspace::MACHINES)
            .into_iter()
            .filter_map(|kv| keyspace::decode::<MachineRecord>(&kv.value))
            .filter(|m| m.agent)
            .map(|m| m.name)
            .collect();
        let conf = self.node.conf();
        let ids: BTreeSet<u64> = conf.voters.iter().chain(&conf.learners).copied().collect();
        let members = subnet_members(&ids, &agents, &allocated);
        let plan = plan_subnets(&self.cluster_net.cfg.subnets, &allocated, &members);
        for r in &plan.replaced {
            tracing::warn!("subnet allocation replaced: {r}");
        }
        if !plan.unallocated.is_empty() {
            tracing::error!(machines = ?plan.unallocated, range = %self.cluster_net.cfg.subnets.cluster,
                "the cluster range has no free subnet for these machines");
        }
        let Some(cmd) = plan.to_txn(&allocated) else {
            return;
        };
        for w in &plan.writes {
            tracing::info!(write = ?w, "subnet allocation");
        }
        match self.propose(cmd, Responder::Internal(Internal::Subnets)) {
            Ok(_) => self.cluster_net.alloc_in_flight = true,
            Err(e) => tracing::debug!("subnet allocation not proposed: {e}"),
        }
    }

    /// The machines' addresses: their records, else what the peer book knows.
    fn machine_addrs(&self) -> BTreeMap<String, IpAddr> {
        let mut addrs: BTreeMap<String, IpAddr> = self
            .book
            .values()
            .map(|(n, a)| (n.clone(), a.ip()))
            .collect();
        for kv in self.node.registry().range(keyspace::MACHINES) {
            if let Some(m) = keyspace::decode::<MachineRecord>(&kv.value) {
                addrs.insert(m.name, m.addr.ip());
            }
        }
        addrs
    }

    fn plan_node(&mut self, now: Instant) {
        if self.cluster_net.worker.is_none() || !self.cluster_net.replan.due(now) {
            return;
        }
        let mut addrs = self.machine_addrs();
        addrs.insert(self.cfg.name.clone(), self.cfg.advertise.ip());
        let allocations = parse_allocations(&self.allocations());
        let plan = node_plan(&self.cfg.name, &allocations, &addrs);
        let Some(next) = self.cluster_net.replan.offer(now, plan) else {
            return;
        };
        let Some(w) = &self.cluster_net.worker else {
            return;
        };
        if next.new {
            tracing::info!(subnet = ?next.plan.subnet, routes = next.plan.routes.len(), "cluster network plan");
        }
        if w.jobs.send(next.plan).is_err() {
            self.cluster_net.replan.not_sent();
        }
    }
}

impl Daemon {
    /// A snapshot replaced the registry: every plan is made again from it.
    pub(super) fn note_snapshot_installed(&mut self) {
        self.cluster_net.dirty = true;
        self.cluster_net.replan.changed();
        self.mark_dns_stale();
    }
}
