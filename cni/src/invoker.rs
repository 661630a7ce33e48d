//! The invoker: ADD, DEL, CHECK and VERSION over a plugin chain, with the attachment record
//! kept on disk around them (see [`crate::record`]) and leftovers cleaned after a crash.
//!
//! Semantics, following the CNI 1.0 spec and libcni where the spec leaves room:
//! - ADD runs the chain in order, each plugin getting the previous one's result as
//!   `prevResult`. The record is written before the first plugin runs. If a plugin fails,
//!   the whole chain is DELeted (reverse order, with the last result obtained) and the
//!   record removed, so a failed ADD leaves nothing behind; if that DEL fails too the
//!   record stays for [`Invoker::cleanup_leftovers`].
//! - DEL runs the chain in reverse with the config ADD used (from the record, not the
//!   config file, which may have changed) and the cached ADD result as `prevResult`
//!   (0.4.0+). Unlike libcni, a failing plugin does not stop the others: each gets its DEL,
//!   the first error is returned and the record stays, so the DEL is retried later.
//! - CHECK runs the chain in order with the cached result (0.4.0+; a no-op with
//!   `disableCheck`).
//!
//! Every call blocks while plugins run (each bounded by the timeout): call it from a
//! worker thread, not from an event loop. An `Invoker` is `Send + Sync` and may be shared
//! (`Arc`) by threads working on different attachments at once; calls for the same
//! attachment (network, container id, interface) must not overlap: the caller serializes
//! them (one unit's start and stop never run together).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::NetworkConfigList;
use crate::error::Error;
use crate::exec::{Invocation, PluginRunner, ProcessRunner};
use crate::plan::{self, Attachment, Command};
use crate::record::{AttachmentKey, Record, RecordStore};
use crate::result::{parse_result, CniResult, VersionInfo};

/// Where plugins and records live, and how long a plugin may run.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// Searched in order for plugin binaries; also passed as `CNI_PATH`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Attachment records (keep it on persistent storage: IPAM leases outlive reboots).
    pub state_dir: PathBuf,
    /// Per plugin run; the plugin is killed after it.
    pub timeout: Duration,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        InvokerConfig {
            plugin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            state_dir: "/var/lib/berth/cni".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Runs CNI commands; generic over the plugin runner so tests can record invocations.
#[derive(Debug, Clone)]
pub struct Invoker<R: PluginRunner = ProcessRunner> {
    runner: R,
    records: RecordStore,
    plugin_dirs: Vec<PathBuf>,
    path: String,
}

/// What [`Invoker::cleanup_leftovers`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Attachments DELeted and forgotten.
    pub removed: Vec<AttachmentKey>,
    /// Attachments of live containers, left alone.
    pub kept: Vec<AttachmentKey>,
    /// DELs that failed; their records stay for the next cleanup.
    pub failed: Vec<(AttachmentKey, Error)>,
    /// Record files that could not be read (left in place for a human).
    pub unreadable: Vec<Error>,
}

impl Invoker<ProcessRunner> {
    pub fn new(cfg: InvokerConfig) -> Self {
        let runner = ProcessRunner {
            plugin_dirs: cfg.plugin_dirs.clone(),
            timeout: cfg.timeout,
        };
        Invoker::with_runner(runner, cfg.plugin_dirs, cfg.state_dir)
    }
}

impl<R: PluginRunner> Invoker<R> {
    pub fn with_runner(runner: R, plugin_dirs: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        Invoker {
            runner,
            records: RecordStore::new(state_dir),
            plugin_dirs,
            path: plan::default_path(),
        }
    }

    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// Attaches the container to `net`; returns the chain's validated final result.
    pub fn add(&self, net: &NetworkConfigList, att: &Attachment) -> Result<CniResult, Error> {
        att.validate()?;
        let key = AttachmentKey {
            network: net.name.clone(),
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
        };
        for p in &net.plugins {
            self.runner.available(&p.plugin_type)?;
        }
        if self.records.read(&key)?.is_some() {
            return Err(Error::Attachment {
                field: "container_id",
                reason: format!(
                    "container {} already has {} on network {} (DEL it first)",
                    key.container_id, key.ifname, key.network
                ),
            });
        }
        let mut rec = Record {
            network: net.name.clone(),
            attachment: att.clone(),
            config: net.to_json(),
            result: None,
            complete: false,
        };
        self.records.write(&rec, true)?;
        match self.run_add_chain(net, att, &mut rec) {
            Ok(result) => {
                rec.result = Some(result.raw.clone());
                rec.complete = true;
                match self.records.write(&rec, false) {
                    Ok(()) => Ok(result),
                    Err(e) => Err(self.undo_add(net, &rec, e)),
                }
            }
            Err(e) => Err(self.undo_add(net, &rec, e)),
        }
    }

    fn run_add_chain(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        rec: &mut Record,
    ) -> Result<CniResult, Error> {
        let mut last: Option<CniResult> = None;
        for i in plan::order(Command::Add, net.plugins.len()) {
            let prev = last.as_ref().map(|r| &r.raw);
            let stdin = plan::plugin_stdin(net, i, prev, &att.runtime_config);
            let plugin = &net.plugins[i].plugin_type;
            let out = self.invoke(Command::Add, net, att, plugin, &stdin)?;
            let result =
                parse_result(&out, &net.cni_version).map_err(|reason| Error::BadResult {
                    plugin: plugin.clone(),
                    command: "ADD",
                    network: net.name.clone(),
                    reason,
                })?;
            // Best effort: a crash before the next write still DELs with an older result.
            rec.result = Some(result.raw.clone());
            last = Some(result);
        }
        last.ok_or_else(|| Error::Config {
            path: net.source.clone(),
            reason: "no plugins".into(),
        })
    }

    /// After a failed ADD: DEL the whole chain and drop the record, or keep it if DEL fails.
    fn undo_add(&self, net: &NetworkConfigList, rec: &Record, add_err: Error) -> Error {
        match self.run_del_chain(net, rec) {
            Ok(()) => match self.records.remove(&rec.key()) {
                Ok(()) => add_err,
                Err(e) => Error::Rollback {
                    add: Box::new(add_err),
                    del: Box::new(e),
                },
            },
            Err(del) => {
                let _ = self.records.write(rec, false);
                Error::Rollback {
                    add: Box::new(add_err),
                    del: Box::new(del),
                }
            }
        }
    }

    /// Detaches: DELs the recorded attachment and forgets it. `Ok(false)`: nothing was
    /// recorded for `key` (already detached).
    pub fn del(&self, key: &AttachmentKey) -> Result<bool, Error> {
        let Some(rec) = self.records.read(key)? else {
            return Ok(false);
        };
        let net = self.recorded_network(&rec)?;
        self.run_del_chain(&net, &rec)?;
        self.records.remove(key)?;
        Ok(true)
    }

    fn recorded_network(&self, rec: &Record) -> Result<NetworkConfigList, Error> {
        let bytes = serde_json::to_vec(&rec.config).map_err(|e| Error::BadRecord {
            path: self.records.path(&rec.key()),
            reason: e.to_string(),
        })?;
        NetworkConfigList::from_conflist(&bytes, Some(&self.records.path(&rec.key())))
    }

    /// Every plugin gets its DEL even when one fails; the first error is returned.
    fn run_del_chain(&self, net: &NetworkConfigList, rec: &Record) -> Result<(), Error> {
        let cached = rec
            .result
            .as_ref()
            .filter(|_| plan::passes_cached_result(&net.cni_version));
        let mut first_err = None;
        for i in plan::order(Command::Del, net.plugins.len()) {
            let stdin = plan::plugin_stdin(net, i, cached, &rec.attachment.runtime_config);
            let plugin = &net.plugins[i].plugin_type;
            if let Err(e) = self.invoke(Command::Del, net, &rec.attachment, plugin, &stdin) {
                tracing::warn!(network = %net.name, container = %rec.attachment.container_id, "{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Checks a completed attachment with every plugin.
    pub fn check(&self, key: &AttachmentKey) -> Result<(), Error> {
        let rec = match self.records.read(key)? {
            Some(r) if r.complete => r,
            _ => {
                return Err(Error::NotAttached {
                    network: key.network.clone(),
                    container_id: key.container_id.clone(),
                    ifname: key.ifname.clone(),
                })
            }
        };
        let net = self.recorded_network(&rec)?;
        if !plan::passes_cached_result(&net.cni_version) {
            return Err(Error::CheckUnsupported {
                network: net.name.clone(),
                reason: format!("its cniVersion is {}", net.cni_version),
            });
        }
        if net.disable_check {
            return Ok(());
        }
        for i in plan::order(Command::Check, net.plugins.len()) {
            let stdin =
                plan::plugin_stdin(&net, i, rec.result.as_ref(), &rec.attachment.runtime_config);
            self.invoke(
                Command::Check,
                &net,
                &rec.attachment,
                &net.plugins[i].plugin_type,
                &stdin,
            )?;
        }
        Ok(())
    }

    /// Asks a plugin which versions it speaks.
    pub fn version(&self, plugin: &str) -> Result<VersionInfo, Error> {
        let inv = Invocation {
            plugin: plugin.to_string(),
            command: Command::Version,
            network: String::new(),
            env: vec![
                ("CNI_COMMAND".into(), "VERSION".into()),
                ("PATH".into(), self.path.clone()),
            ],
            stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
        };
        let out = self.runner.run(&inv)?;
        serde_json::from_slice(&out).map_err(|e| Error::BadResult {
            plugin: plugin.to_string(),
            command: "VERSION",
            network: String::new(),
            reason: e.to_string(),
        })
    }

    /// Every recorded attachment (readable ones).
    pub fn attachments(&self) -> Result<Vec<Record>, Error> {
        Ok(self.records.list()?.0)
    }

    /// DELs the attachments left by a crash: those whose container `is_alive` says is gone,
    /// and every incomplete one (an ADD that never returned, which nobody relies on).
    /// Call it at start, before the first ADD, with a predicate such as "the unit
    /// is known and its container exists".
    pub fn cleanup_leftovers(
        &self,
        mut is_alive: impl FnMut(&Record) -> bool,
    ) -> Result<CleanupReport, Error> {
        let (records, unreadable) = self.records.list()?;
        let mut report = CleanupReport {
            unreadable,
            ..Default::default()
        };
        for rec in records {
            if rec.complete && is_alive(&rec) {
                report.kept.push(rec.key());
                continue;
            }
            match self.del(&rec.key()) {
                Ok(_) => report.removed.push(rec.key()),
                Err(e) => report.failed.push((rec.key(), e)),
            }
        }
        Ok(report)
    }

    fn invoke(
        &self,
        cmd: Command,
        net: &NetworkConfigList,
        att: &Attachment,
        plugin: &str,
        stdin: &Value,
    ) -> Result<Vec<u8>, Error> {
        let inv = Invocation {
            plugin: plugin.to_string(),
            command: cmd,
            network: net.name.clone(),
            env: plan::environment(cmd, att, &self.plugin_dirs, &self.path),
            stdin: stdin.to_string().into_bytes(),
        };
        tracing::debug!(plugin, command = cmd.as_str(), network = %net.name, container = %att.container_id, "CNI");
        self.runner.run(&inv)
    }
}

#[cfg(test)]
#[path = "invoker_tests.rs"]
mod tests;
