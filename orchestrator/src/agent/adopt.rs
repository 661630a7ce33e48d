//! Re-adopting what a previous berthd left: containers that still run are supervised again
//! (pidfd, journal fifo), anything else is deleted and its bundle removed. Runs once at
//! start-up, before the loop, so it may block on `berth state`/`delete`.

use std::process::{Command, Stdio};
use std::sync::Arc;

use super::instance::Instance;
use super::launch;
use super::runner::{Agent, Slot};
use crate::unit::{self, MachineContext};

impl Agent {
    pub(super) fn adopt_all(&mut self) {
        let units_dir = self.cfg.run_dir.join("units");
        let Ok(entries) = std::fs::read_dir(&units_dir) else {
            return;
        };
        for e in entries.flatten() {
            let dir = e.path();
            if let Err(err) = self.adopt_one(&dir) {
                tracing::warn!(dir = %dir.display(), "not re-adopted: {err}");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    fn adopt_one(&mut self, dir: &std::path::Path) -> Result<(), String> {
        let rec = launch::read_record(dir)?;
        let ctx = MachineContext {
            machine_id: self.cfg.machine.clone(),
            hostname: self.cfg.machine.clone(),
        };
        let u = unit::parse_unit_on(&rec.unit, &rec.text, &ctx).map_err(|e| e.to_string())?;
        let state = self.berth_state(&rec.cid);
        let pid = match &state {
            Some(v) if v["status"] == "running" => {
                v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
            }
            _ => None,
        };
        let Some(pid) = pid else {
            if state.is_some() {
                let _ = Command::new(&self.berth.binary)
                    .arg("--root")
                    .arg(&self.berth.root)
                    .args(["delete", "--force", &rec.cid])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            launch::remove_bundle_now(&self.cfg, &u, &rec.cid, dir)?;
            return Err(format!("container {} is not running; cleaned up", rec.cid));
        };
        let now = Self::now();
        let (inst, effects) = Instance::adopted(launch::policy(&u), pid, 0, now);
        let generation = self.generation();
        let name = rec.unit.clone();
        self.slots.insert(
            name.clone(),
            Slot::new(
                &self.cfg,
                Arc::new(u),
                rec.cid.clone(),
                generation,
                inst,
                dir.to_path_buf(),
            ),
        );
        if let Err(e) = self.open_fifo(&name) {
            tracing::warn!(unit = %name, "{e}");
        }
        self.readopt_network(&name);
        tracing::info!(unit = %name, pid, cid = %rec.cid, "re-adopted a running container");
        self.apply(&name, effects);
        Ok(())
    }

    /// `berth state ID` as JSON, or None if berth does not know the container.
    fn berth_state(&self, cid: &str) -> Option<serde_json::Value> {
        let out = Command::new(&self.berth.binary)
            .arg("--root")
            .arg(&self.berth.root)
            .args(["state", cid])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}
