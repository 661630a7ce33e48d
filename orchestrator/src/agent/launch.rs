//! Building and removing a unit's bundle, on a worker thread: an overlay snapshot of the
//! unit's image (as `berth image run` makes one) or, for a fleet-era unit without
//! `[Container]`, a bundle whose rootfs is the host's `/` (read-only); then its config.json
//! from `unit::oci`. Also the instance record that lets a restarted berthd re-adopt the
//! container, and the journal fifo the container writes to.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_images::snapshot::{self, Prepared, SnapshotError};
use berth_images::store::Store;
use berth_images::{bundle, import};
use serde::{Deserialize, Serialize};

use super::instance::{Policy, Restart};
use super::runner::{AgentConfig, Slot};
use super::work::{Done, JobKind};
use crate::unit::{self, RestartPolicy, Unit};

/// What a restarted berthd reads to re-adopt an instance (`units/<cid>/instance.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub unit: String,
    pub cid: String,
    /// The unit text the container was made from.
    pub text: String,
    pub hash: String,
}

pub const RECORD: &str = "instance.json";
pub const FIFO: &str = "journal.fifo";

/// The supervision policy of a unit.
pub fn policy(u: &Unit) -> Policy {
    let s = &u.service;
    Policy {
        restart: match s.restart {
            RestartPolicy::No => Restart::No,
            RestartPolicy::OnFailure => Restart::OnFailure,
            RestartPolicy::Always => Restart::Always,
        },
        restart_sec: s.restart_sec,
        // "infinity": never SIGKILL; a day stands for it.
        timeout_stop: s.timeout_stop.unwrap_or(Duration::from_secs(86_400)),
        kill_signal: s.kill_signal.as_str().to_string(),
        network: super::net::NetMode::of(u).network().is_some(),
    }
}

pub(super) fn write_record(slot: &Slot) -> std::io::Result<()> {
    let rec = InstanceRecord {
        unit: slot.unit.name.as_str().to_string(),
        cid: slot.cid.clone(),
        text: slot.unit.text.clone(),
        hash: slot.unit.hash.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?;
    let tmp = slot.dir.join(format!("{RECORD}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, slot.dir.join(RECORD))
}

pub fn read_record(dir: &Path) -> Result<InstanceRecord, String> {
    let p = dir.join(RECORD);
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
}

/// The snapshot name of a container (unique in the image store, which several machines on
/// one host may share).
pub fn snapshot_name(cfg: &AgentConfig, cid: &str) -> String {
    let n = format!("unit-{}-{cid}", cfg.machine);
    n.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect()
}

/// The bundle directory of a slot: the snapshot's directory for an image unit (as `berth
/// image run`), `units/<cid>/bundle` for a host-rootfs unit.
pub(super) fn bundle_dir(cfg: &AgentConfig, slot: &Slot) -> PathBuf {
    bundle_dir_of(cfg, &slot.unit, &slot.cid, &slot.dir)
}

fn bundle_dir_of(cfg: &AgentConfig, u: &Unit, cid: &str, dir: &Path) -> PathBuf {
    match &u.container {
        Some(_) => cfg
            .image_store
            .join("containers")
            .join(snapshot_name(cfg, cid)),
        None => dir.join("bundle"),
    }
}

/// The fifo opened read-write: the container's stdout and stderr.
pub(super) fn open_fifo_rdwr(slot: &Slot) -> Result<OwnedFd, String> {
    let p = slot.dir.join(FIFO);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .map(OwnedFd::from)
        .map_err(|e| format!("cannot open the journal fifo {}: {e}", p.display()))
}

/// Keeps only the capabilities berthd's own bounding set has: a fleet-era root unit gets
/// "every capability" as systemd gives a root service every capability it holds; one the
/// machine's root lacks (a host or VM may withhold some) would make the start fail.
fn clamp_capabilities(config: &mut serde_json::Value) {
    let Ok(held) = caps::read(None, caps::CapSet::Bounding) else {
        return;
    };
    let held: std::collections::HashSet<String> = held.iter().map(|c| c.to_string()).collect();
    let Some(sets) = config["process"]["capabilities"].as_object_mut() else {
        return;
    };
    for list in sets.values_mut() {
        if let Some(a) = list.as_array_mut() {
            a.retain(|c| c.as_str().is_some_and(|c| held.contains(c)));
        }
    }
}

/// This process's hard limit of an rlimit named as in config.json (`RLIMIT_NOFILE`).
fn own_hard_limit(name: &str) -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let r = match name {
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => return None,
    };
    getrlimit(r).ok().map(|(_, hard)| hard)
}

/// Most bytes read from one environment file.
const MAX_ENV_FILE: u64 = 1 << 20;

fn read_env_file(path: &str, optional: bool) -> Result<String, String> {
    use std::io::Read;
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut s = String::new();
            f.take(MAX_ENV_FILE + 1)
                .read_to_string(&mut s)
                .map_err(|e| format!("EnvironmentFile {path}: {e}"))?;
            if s.len() as u64 > MAX_ENV_FILE {
                return Err(format!("EnvironmentFile {path} is larger than 1 MiB"));
            }
            Ok(s)
        }
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("EnvironmentFile {path}: {e}")),
    }
}

/// This machine's memory and task limits, for `MemoryMax=N%` and `TasksMax=N%`.
fn host_limits() -> unit::oci::HostLimits {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb * 1024);
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let pids_max = match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        _ => 32_768,
    };
    unit::oci::HostLimits {
        memory_bytes,
        pids_max,
    }
}

/// Everything `unit::oci` needs from the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub cgroups_path: String,
}

/// Builds a bundle on a worker thread.
pub struct PrepareJob {
    unit: Arc<Unit>,
    pulls: Arc<super::pull::Pulls>,
    generation: u64,
    bundle: PathBuf,
    store: PathBuf,
    snapshot: String,
    machine: Machine,
    /// The network namespace to join (a unit on a CNI network; made by the attach job).
    netns: Option<String>,
    /// The containers' resolver (berthd's DNS), for a unit on a CNI network.
    dns: Option<std::net::IpAddr>,
}

impl PrepareJob {
    pub(super) fn new(
        cfg: &AgentConfig,
        slot: &Slot,
        pulls: &Arc<super::pull::Pulls>,
    ) -> PrepareJob {
        PrepareJob {
            unit: Arc::clone(&slot.unit),
            pulls: Arc::clone(pulls),
            generation: slot.generation,
            bundle: bundle_dir(cfg, slot),
            store: cfg.image_store.clone(),
            snapshot: snapshot_name(cfg, &slot.cid),
            machine: Machine {
                name: cfg.machine.clone(),
                cgroups_path: format!("{}/{}", cfg.cgroup_parent.trim_end_matches('/'), slot.cid),
            },
            netns: slot.inst.policy.network.then(|| {
                super::net::netns_path(&cfg.run_dir, &slot.cid)
                    .display()
                    .to_string()
            }),
            dns: cfg.network.container_dns,
        }
    }

    pub fn run(self) -> Done {
        let result = match &self.unit.container {
            Some(c) => self.prepare_image(&c.image),
            None => self.prepare_host(),
        };
        Done {
            unit: self.unit.name.as_str().to_string(),
            generation: self.generation,
            kind: JobKind::Prepare,
            result,
            ip: None,
        }
    }

    /// A fleet-era unit: the host's `/`, bound (recursively, as a slave so nothing
    /// propagates back) on `bundle/rootfs`; berth makes it read-only (`root.readonly`).
    fn prepare_host(&self) -> Result<(), String> {
        let spec = self.unit.service.user.clone().unwrap_or_default();
        let users = bundle::read_user_db(Path::new("/"), &spec).map_err(|e| e.to_string())?;
        let env = self.env_files()?;
        let mut config = unit::oci::runtime_config(
            &self.unit,
            unit::oci::Root::Host { users: &users },
            &self.oci_context(&env, None),
        )
        .map_err(|e| e.to_string())?;
        self.finish_config(&mut config);
        config["root"]["path"] = serde_json::json!("rootfs");
        config["root"]["readonly"] = serde_json::json!(true);
        let rootfs = self.bundle.join("rootfs");
        // A bundle left by a crash midway is replaced.
        let _ = remove_host_bundle(&self.bundle);
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| format!("create {}: {e}", rootfs.display()))?;
        let result = bind_host_root(&rootfs)
            .and_then(|()| bundle::write_config(&self.bundle, &config).map_err(|e| e.to_string()));
        if result.is_err() {
            let _ = remove_host_bundle(&self.bundle);
        }
        result
    }

    fn oci_context<'a>(
        &'a self,
        env_files: &'a [String],
        resolv_conf: Option<&'a str>,
    ) -> unit::oci::OciContext<'a> {
        unit::oci::OciContext {
            hostname: &self.machine.name,
            netns_path: self.netns.as_deref(),
            resolv_conf,
            host: host_limits(),
            env_files,
        }
    }

    /// Writes the container's resolv.conf into the bundle (a unit on a CNI network);
    /// returns its path for the bind mount.
    fn write_resolv_conf(&self, dir: &Path) -> Result<Option<String>, String> {
        if self.netns.is_none() {
            return Ok(None);
        }
        let p = dir.join("resolv.conf");
        let text = super::net::resolv_conf(self.dns, &super::net::host_resolv_conf());
        std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        Ok(Some(p.display().to_string()))
    }

    /// What berthd adds to the unit's translation: the container's cgroup; and rlimits
    /// kept within berthd's own hard limits (raising a hard limit needs CAP_SYS_RESOURCE,
    /// which a host may not grant root; systemd caps them the same way).
    fn finish_config(&self, config: &mut serde_json::Value) {
        config["linux"]["cgroupsPath"] = serde_json::json!(self.machine.cgroups_path);
        clamp_capabilities(config);
        if let Some(limits) = config["process"]["rlimits"].as_array_mut() {
            for l in limits {
                let Some(max) = l["type"].as_str().and_then(own_hard_limit) else {
                    continue;
                };
                for k in ["hard", "soft"] {
                    if l[k].as_u64().is_some_and(|v| v > max) {
                        l[k] = serde_json::json!(max);
                    }
                }
            }
        }
    }

    /// The unit's `EnvironmentFile=`s, read from this machine (bounded; a missing optional
    /// one is empty).
    fn env_files(&self) -> Result<Vec<String>, String> {
        let files: Vec<(String, bool)> = match &self.unit.container {
            Some(c) => c
                .environment_files
                .iter()
                .map(|p| (p.clone(), false))
                .collect(),
            None => self
                .unit
                .service
                .environment_files
                .iter()
                .map(|f| (f.path.clone(), f.optional))
                .collect(),
        };
        files
            .into_iter()
            .map(|(path, optional)| read_env_file(&path, optional))
            .collect()
    }

    fn prepare_image(&self, reference: &str) -> Result<(), String> {
        let store = Store::open(&self.store)
            .map_err(|e| format!("image store {}: {e}", self.store.display()))?;
        // From the store, or pulled (the store's own lock is taken by the pull).
        let image = self
            .pulls
            .image(&store, reference, self.unit.name.as_str())?;
        let (image, snap, prepared) = {
            let lock = store.lock().map_err(|e| e.to_string())?;
            // A snapshot left by a crash midway is replaced.
            let _ = snapshot::remove(&store, &lock, &self.snapshot);
            // No owner: the agent removes its snapshots itself; `reap` leaves them alone
            // across berthd restarts.
            let opts = snapshot::SnapshotOptions {
                overlay: snapshot::overlay_available(),
                owner: None,
                remove_with_owner: false,
                runtime_root: None,
            };
            let (snap, prepared) = snapshot::prepare(&store, &lock, &self.snapshot, &image, &opts)
                .map_err(|e| e.to_string())?;
            (image, snap, prepared)
        };
        let result = (|| -> Result<(), String> {
            match prepared {
                Prepared::Overlay(m) => match m.perform() {
                    Ok(()) => {}
                    Err(SnapshotError::Mount {
                        errno: nix::errno::Errno::ENODEV,
                        ..
                    }) => snapshot::fill_copy(&store, &snap, &image).map_err(|e| e.to_string())?,
                    Err(e) => return Err(e.to_string()),
                },
                Prepared::Copy => {
                    snapshot::fill_copy(&store, &snap, &image).map_err(|e| e.to_string())?
                }
            }
            let (_, config) =
                import::load_manifest(&store, &image.manifest).map_err(|e| e.to_string())?;
            let spec = self
                .unit
                .container
                .as_ref()
                .and_then(|c| c.user.clone())
                .or_else(|| config.config.as_ref().and_then(|c| c.user.clone()))
                .unwrap_or_default();
            let users = bundle::read_user_db(&snap.rootfs, &spec).map_err(|e| e.to_string())?;
            let env = self.env_files()?;
            let resolv = self.write_resolv_conf(&snap.dir)?;
            let mut value = unit::oci::runtime_config(
                &self.unit,
                unit::oci::Root::Image {
                    config: &config,
                    users: &users,
                },
                &self.oci_context(&env, resolv.as_deref()),
            )
            .map_err(|e| e.to_string())?;
            self.finish_config(&mut value);
            bundle::write_config(&snap.dir, &value).map_err(|e| e.to_string())
        })();
        if result.is_err() {
            if let Ok(lock) = store.lock() {
                let _ = snapshot::remove(&store, &lock, &self.snapshot);
            }
        }
        result
    }
}

/// Removes a bundle on a worker thread.
pub struct CleanupJob {
    unit: String,
    generation: u64,
    image: bool,
    bundle: PathBuf,
    store: PathBuf,
    snapshot: String,
}

impl CleanupJob {
    pub(super) fn new(cfg: &AgentConfig, slot: &Slot) -> CleanupJob {
        CleanupJob {
            unit: slot.unit.name.as_str().to_string(),
            generation: slot.generation,
            image: slot.unit.container.is_some(),
            bundle: bundle_dir(cfg, slot),
            store: cfg.image_store.clone(),
            snapshot: snapshot_name(cfg, &slot.cid),
        }
    }

    pub fn run(self) -> Done {
        let result = if self.image {
            Store::open(&self.store)
                .map_err(|e| e.to_string())
                .and_then(|store| {
                    let lock = store.lock().map_err(|e| e.to_string())?;
                    snapshot::remove(&store, &lock, &self.snapshot).map_err(|e| e.to_string())
                })
        } else {
            remove_host_bundle(&self.bundle)
        };
        Done {
            unit: self.unit,
            generation: self.generation,
            kind: JobKind::Cleanup,
            result,
            ip: None,
        }
    }
}

/// Removes a bundle synchronously (start-up cleanup of what a previous berthd left).
pub fn remove_bundle_now(cfg: &AgentConfig, u: &Unit, cid: &str, dir: &Path) -> Result<(), String> {
    let job = CleanupJob {
        unit: u.name.as_str().to_string(),
        generation: 0,
        image: u.container.is_some(),
        bundle: bundle_dir_of(cfg, u, cid, dir),
        store: cfg.image_store.clone(),
        snapshot: snapshot_name(cfg, cid),
    };
    job.run().result
}

/// `mount --rbind / ROOTFS; mount --make-rprivate ROOTFS`, then every mount of that tree
/// read-only: the unit sees the host as it is at start, read-only all the way down, and
/// nothing can write (or delete) host files through the bind (`rm -rf` of a run dir with
/// a bundle still mounted meets EROFS, not the host).
fn bind_host_root(rootfs: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    mount(
        Some("/"),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting / on {}: {e}", rootfs.display()))?;
    let confined = mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making {} private: {e}", rootfs.display()))
    .and_then(|()| {
        super::sys::make_tree_readonly(rootfs)
            .map_err(|e| format!("making {} read-only: {e}", rootfs.display()))
    });
    if confined.is_err() {
        let _ = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH);
    }
    confined
}

/// Detaches the host-root bind (if mounted) and removes the bundle. Never deletes through
/// a mount: if the bind cannot be detached, the bundle stays and the error says why.
fn remove_host_bundle(bundle: &Path) -> Result<(), String> {
    let rootfs = bundle.join("rootfs");
    if rootfs.exists() {
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("unmounting {}: {e}", rootfs.display())),
        }
        // Only an empty directory is removed: remove_dir fails on anything still mounted.
        if let Err(e) = std::fs::remove_dir(&rootfs) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(format!("removing {}: {e}", rootfs.display()));
            }
        }
    }
    match std::fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", bundle.display())),
    }
}
