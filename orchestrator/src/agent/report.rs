//! What the agent tells the cluster: each unit's state under `/state/<machine>/<unit>` (with
//! its container's network and address while attached), and each published port of a
//! running (and, with `HealthCmd=`, healthy) unit as a service under
//! `/services/<name>/<machine>/<unit>:<port>`: the machine's address and host port, and for
//! a container on a CNI network also its own address and container port. Both are written
//! under the node's lease, so they vanish with the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::berth::Op;
use super::instance::{ExitStatus, Phase};
use super::runner::{Agent, Out};
use crate::api::routes::Service;
use crate::keyspace::{self, StateRecord, UnitRecord};
use crate::unit::Protocol;

fn unix_ms(boot_ms: u64, now_boot: u64) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    wall.saturating_sub(now_boot.saturating_sub(boot_ms))
}

impl Agent {
    /// Writes what changed: state records and service registrations.
    pub(super) fn report(&mut self, now: u64) {
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        let mut states = Vec::new();
        for (name, slot) in &self.slots {
            let st = slot.inst.status();
            let (exit_code, exit_signal) = match st.exit {
                Some(ExitStatus::Code(c)) => (Some(c), None),
                Some(ExitStatus::Signal(s)) => (None, Some(s)),
                _ => (None, None),
            };
            let rec = StateRecord {
                unit: name.clone(),
                machine: self.cfg.machine.clone(),
                hash: slot.unit.hash.clone(),
                active: st.active.to_string(),
                sub: st.sub.to_string(),
                load: "loaded".into(),
                pid: st.pid,
                exit_code,
                exit_signal,
                restarts: st.restarts,
                since: unix_ms(st.since_ms, now),
                error: st.error.or_else(|| {
                    let idle = *slot.inst.phase() == Phase::Idle;
                    idle.then(|| self.net_wait(slot).map(str::to_string))
                        .flatten()
                }),
                network: slot.ip.and(
                    super::net::NetMode::of(&slot.unit)
                        .network()
                        .map(str::to_string),
                ),
                ip: slot.ip.map(|ip| ip.to_string()),
                pulling: self.pulls.progress_of(name),
            };
            states.push(rec);
            let serving = slot.inst.running_pid().is_some()
                && match slot.unit.container.as_ref().and_then(|c| c.health.as_ref()) {
                    Some(_) => slot.healthy == Some(true),
                    None => true,
                };
            if !serving {
                continue;
            }
            let Some(c) = &slot.unit.container else {
                continue;
            };
            for p in &c.publish_ports {
                let svc = slot.unit.service_name().to_string();
                let instance = format!("{name}:{}", p.host_port);
                let mut meta = BTreeMap::new();
                meta.insert("unit".to_string(), name.clone());
                meta.insert("container_port".to_string(), p.container_port.to_string());
                let proto = match p.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                meta.insert("protocol".to_string(), proto.to_string());
                let s = Service {
                    name: svc.clone(),
                    machine: self.cfg.machine.clone(),
                    instance: instance.clone(),
                    ip: p.ip.unwrap_or(self.cfg.node_ip).to_string(),
                    port: p.host_port,
                    meta,
                    container_ip: slot.ip.map(|ip| ip.to_string()),
                    container_port: slot.ip.map(|_| p.container_port),
                };
                if let Ok(v) = serde_json::to_string(&s) {
                    wanted.insert(
                        format!(
                            "{}{svc}/{}/{instance}",
                            keyspace::SERVICES,
                            self.cfg.machine
                        ),
                        v,
                    );
                }
            }
        }
        for rec in states {
            let key = keyspace::state_key(&self.cfg.machine, &rec.unit);
            let Some(slot) = self.slots.get(&rec.unit) else {
                continue;
            };
            let same = slot.reported.as_ref().is_some_and(|r| *r == rec);
            // A pull's progress alone is written at most once a second.
            let only_progress = slot.reported.as_ref().is_some_and(|r| {
                r.pulling.is_some()
                    && rec.pulling.is_some()
                    && StateRecord {
                        pulling: None,
                        ..r.clone()
                    } == StateRecord {
                        pulling: None,
                        ..rec.clone()
                    }
            });
            if same || (only_progress && now.saturating_sub(slot.reported_at) < 1_000) {
                continue;
            }
            if let Ok(v) = serde_json::to_string(&rec) {
                self.own(key, v);
            }
            if let Some(s) = self.slots.get_mut(&rec.unit) {
                s.reported = Some(rec);
                s.reported_at = now;
            }
        }
        self.sync_services(wanted);
    }

    fn sync_services(&mut self, wanted: BTreeMap<String, String>) {
        let stale: Vec<String> = self
            .owned
            .keys()
            .filter(|k| k.starts_with(keyspace::SERVICES) && !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in stale {
            self.disown(&k);
        }
        for (k, v) in wanted {
            self.own(k, v);
        }
    }

    pub(super) fn own(&mut self, key: String, value: String) {
        if self.owned.get(&key) == Some(&value) {
            return;
        }
        self.owned.insert(key.clone(), value.clone());
        self.emit(Out::Own { key, value });
    }

    pub(super) fn disown(&mut self, key: &str) {
        if self.owned.remove(key).is_some() {
            self.emit(Out::Disown {
                key: key.to_string(),
            });
        }
    }

    /// Units placed here but only loaded: reported `inactive/dead` with `load: loaded`.
    pub(super) fn report_loaded(
        &mut self,
        loaded: &BTreeSet<String>,
        units: &BTreeMap<String, UnitRecord>,
    ) {
        for name in self.loaded.clone() {
            if !loaded.contains(&name) && !self.slots.contains_key(&name) {
                self.disown(&keyspace::state_key(&self.cfg.machine, &name));
            }
        }
        for name in loaded {
            if self.slots.contains_key(name) {
                continue; // still stopping: its slot reports
            }
            let rec = StateRecord {
                unit: name.clone(),
                machine: self.cfg.machine.clone(),
                hash: units.get(name).map(|u| u.hash.clone()).unwrap_or_default(),
                active: "inactive".into(),
                sub: "dead".into(),
                load: "loaded".into(),
                ..StateRecord::default()
            };
            if let Ok(v) = serde_json::to_string(&rec) {
                self.own(keyspace::state_key(&self.cfg.machine, name), v);
            }
        }
    }

    /// Drops the slots whose instance has ended (container and bundle removed).
    pub(super) fn finish_done_slots(&mut self) {
        let done: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.inst.is_done())
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            self.drop_fifo(&name);
            if let Some(slot) = self.slots.remove(&name) {
                if let Err(e) = std::fs::remove_dir_all(&slot.dir) {
                    tracing::warn!(unit = %name, "cannot remove {}: {e}", slot.dir.display());
                }
                tracing::info!(unit = %name, "removed");
            }
            if !self.loaded.contains(&name) {
                self.disown(&keyspace::state_key(&self.cfg.machine, &name));
            }
            self.reconcile_wanted = true;
        }
    }

    /// Starts the health checks that are due (`HealthCmd=` through `berth exec`).
    pub(super) fn run_health_checks(&mut self, now: u64) {
        let mut due = Vec::new();
        for (name, slot) in self.slots.iter_mut() {
            let Some(h) = slot.unit.container.as_ref().and_then(|c| c.health.clone()) else {
                continue;
            };
            if !matches!(slot.inst.phase(), Phase::Running { .. }) {
                slot.healthy = None;
                slot.next_health = 0;
                continue;
            }
            if slot.health_running || now < slot.next_health {
                continue;
            }
            slot.health_running = true;
            slot.next_health = now + h.interval.as_millis() as u64;
            due.push((name.clone(), slot.generation, h.command));
        }
        for (name, generation, args) in due {
            self.spawn_op(&name, generation, Op::Exec { args });
        }
    }
}
