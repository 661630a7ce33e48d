//! The agent's side of units' networks: when a unit may attach (after the start-up sweep,
//! and for the cluster network once this machine's subnet has a conflist), and the attach
//! and detach jobs submitted to the worker pool (see [`super::net`]).

use berth_cni::AttachmentKey;

use super::net::{self, AttachJob, DetachJob, NetMode, SweepJob, IFNAME};
use super::runner::{Agent, Slot};
use crate::network::CLUSTER_NETWORK;

/// What the agent knows of the networks' readiness.
#[derive(Debug, Clone, Default)]
pub struct NetState {
    /// The start-up sweep of leftovers is done.
    pub swept: bool,
    /// This machine's cluster network config is written (the daemon says so).
    pub cluster_ready: bool,
}

impl Agent {
    /// Starts the sweep of a previous berthd's leftovers (after re-adoption, before any
    /// attach: units wait for it).
    pub(super) fn sweep_networks(&mut self) {
        let keep = self
            .slots
            .values()
            .filter(|s| s.inst.policy.network)
            .map(|s| s.cid.clone())
            .collect();
        let job = SweepJob {
            invoker: self.invoker.clone(),
            netns_dir: self.cfg.run_dir.join("netns"),
            keep,
        };
        self.pool.submit(move || job.run());
    }

    pub(super) fn swept(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => tracing::info!("network leftovers checked"),
            // Attachments whose DEL failed keep their record and are retried next start.
            Err(e) => tracing::warn!("network leftovers not all removed: {e}"),
        }
        self.net.swept = true;
    }

    /// The daemon wrote (or lost) this machine's cluster network config.
    pub fn set_cluster_network(&mut self, ready: bool) {
        if self.net.cluster_ready != ready {
            tracing::info!(ready, "cluster network");
        }
        self.net.cluster_ready = ready;
    }

    /// Why a unit cannot attach its network yet (None: it can, or needs none).
    pub(super) fn net_wait(&self, slot: &Slot) -> Option<&'static str> {
        if !slot.inst.policy.network || slot.inst.is_attached() {
            return None;
        }
        if !self.net.swept {
            return Some("waiting for the cleanup of earlier network attachments");
        }
        let cluster = NetMode::of(&slot.unit).network() == Some(CLUSTER_NETWORK);
        if cluster && !self.net.cluster_ready {
            return Some("waiting for this machine's cluster network (no subnet allocated yet)");
        }
        None
    }

    /// Whether `slot` may begin a start now: the run lease, and its network ready.
    pub(super) fn may_start_slot(&self, slot: &Slot, now: u64) -> bool {
        self.may_start(now) && self.net_wait(slot).is_none()
    }

    fn attachment_key(slot: &Slot) -> Option<AttachmentKey> {
        Some(AttachmentKey {
            network: NetMode::of(&slot.unit).network()?.to_string(),
            container_id: slot.cid.clone(),
            ifname: IFNAME.into(),
        })
    }

    pub(super) fn attach(&mut self, unit: &str) {
        let Some(slot) = self.slots.get(unit) else {
            return;
        };
        let Some(network) = NetMode::of(&slot.unit).network().map(str::to_string) else {
            return;
        };
        let job = AttachJob {
            unit: unit.to_string(),
            generation: slot.generation,
            invoker: self.invoker.clone(),
            conf_dir: self.cfg.network.conf_dir.clone(),
            network,
            cid: slot.cid.clone(),
            netns: net::netns_path(&self.cfg.run_dir, &slot.cid),
            ports: net::port_mappings(&slot.unit),
        };
        self.pool.submit(move || job.run());
    }

    pub(super) fn detach(&mut self, unit: &str) {
        let Some(slot) = self.slots.get(unit) else {
            return;
        };
        let Some(key) = Self::attachment_key(slot) else {
            return;
        };
        let job = DetachJob {
            unit: unit.to_string(),
            generation: slot.generation,
            invoker: self.invoker.clone(),
            key,
            netns: net::netns_path(&self.cfg.run_dir, &slot.cid),
        };
        self.pool.submit(move || job.run());
    }

    /// A re-adopted container keeps its attachment: its address comes from the record.
    pub(super) fn readopt_network(&mut self, unit: &str) {
        let Some(slot) = self.slots.get(unit) else {
            return;
        };
        let Some(key) = Self::attachment_key(slot) else {
            return;
        };
        let ip = net::recorded_ip(&self.invoker, &key);
        if ip.is_none() {
            tracing::warn!(%unit, "re-adopted without a recorded network address");
        }
        if let Some(s) = self.slots.get_mut(unit) {
            s.ip = ip;
        }
    }
}
