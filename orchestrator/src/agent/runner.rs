//! The agent's IO side, one part of berthd's event loop: it owns the unit instances of this
//! machine, the `berth` child processes and pidfds, the journal fifos, the worker pool and
//! the fence file, and returns [`Out`] effects (registry writes, journal lines) for the loop
//! to route. Every token it registers is at or above [`TOKEN_BASE`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::fcntl::Flock;

use super::berth::{self, Berth, Op};
use super::instance::{Effect, ExitStatus, Instance, Phase, Want};
use super::journal::Journal;
use super::reconcile::{self, Action, Held, Placement};
use super::sys;
use super::watchdog::{self, DeadlineFile};
use super::work::{Done, JobKind, Pool};
use crate::fence::{FenceConfig, RunLease};
use crate::keyspace::{self, ScheduleRecord, StateRecord, UnitRecord};
use crate::registry::Registry;
use crate::schedule::{self, MachineInput, MachineStatus, UnitInput};
use crate::unit::{self, MachineContext, Unit};

/// The agent's tokens start here (the daemon's own stay far below).
pub const TOKEN_BASE: usize = 1 << 40;
/// A start is begun only if the run lease has at least this much left.
const START_SLACK: Duration = Duration::from_millis(500);
/// Most heartbeats in flight at once.
const MAX_BEATS_IN_FLIGHT: u32 = 4;

/// The agent's settings (from berthd's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub machine: String,
    pub metadata: BTreeMap<String, String>,
    /// The address services are registered at.
    pub node_ip: IpAddr,
    pub berth: PathBuf,
    /// State of the agent: `containers/` (berth's root), `units/<id>/`, the fence file, locks.
    pub run_dir: PathBuf,
    pub image_store: PathBuf,
    pub journal_dir: PathBuf,
    pub journal_max: u64,
    /// registries.conf (mirrors, insecure registries) for pulling units' images.
    pub registries_conf: PathBuf,
    /// Containers' cgroups are `<cgroup_parent>/<container id>`.
    pub cgroup_parent: String,
    pub fence: FenceConfig,
    /// CNI configs, plugins and state; the containers' resolver.
    pub network: crate::network::NetworkConfig,
}

/// What the agent asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Put `key` under this node's lease, and again after a new lease.
    Own { key: String, value: String },
    /// Delete a key this node owned.
    Disown { key: String },
    /// New journal lines of `unit` (for followers).
    Journal { unit: String, lines: Vec<String> },
}

/// What a registered descriptor is.
enum Source {
    /// A `berth` invocation.
    Child {
        unit: String,
        generation: u64,
        op: Op,
        child: Child,
        pidfd: OwnedFd,
        log_from: u64,
    },
    /// A container's init.
    Init {
        unit: String,
        generation: u64,
        pid: u32,
        pidfd: OwnedFd,
    },
    /// A journal fifo's read end.
    Fifo { unit: String },
}

/// One unit held on this machine.
pub(super) struct Slot {
    pub unit: Arc<Unit>,
    pub cid: String,
    pub generation: u64,
    pub inst: Instance,
    pub dir: PathBuf,
    pub journal: Journal,
    pub fifo: Option<(Token, File)>,
    /// The last state written (so only changes are written), and when.
    pub reported: Option<StateRecord>,
    pub reported_at: u64,
    /// Last health check: passed?
    pub healthy: Option<bool>,
    pub health_running: bool,
    pub next_health: u64,
    /// The container's address on its CNI network (while attached).
    pub ip: Option<IpAddr>,
}

impl Slot {
    pub(super) fn new(
        cfg: &AgentConfig,
        unit: Arc<Unit>,
        cid: String,
        generation: u64,
        inst: Instance,
        dir: PathBuf,
    ) -> Slot {
        Slot {
            journal: Journal::new(&cfg.journal_dir, unit.name.as_str(), cfg.journal_max),
            unit,
            cid,
            generation,
            inst,
            dir,
            fifo: None,
            reported: None,
            reported_at: 0,
            healthy: None,
            health_running: false,
            next_health: 0,
            ip: None,
        }
    }
}

pub struct Agent {
    pub(super) cfg: AgentConfig,
    pub(super) berth: Berth,
    pub(super) slots: BTreeMap<String, Slot>,
    sources: HashMap<Token, Source>,
    next_token: usize,
    next_generation: u64,
    pub(super) pool: Pool,
    /// Image pulls (shared with the worker threads), and their progress for reports.
    pub(super) pulls: Arc<super::pull::Pulls>,
    lease: RunLease,
    fence_file: DeadlineFile,
    _berthd_lock: Flock<File>,
    /// The loop's registry (a clone), for the agent's own descriptors.
    poll: mio::Registry,
    beats_in_flight: u32,
    last_beat: u64,
    /// Parsed units by (name, hash): a template and its instances share a text and hash;
    /// an unparsable text keeps its error.
    parsed: HashMap<(String, String), Result<Arc<Unit>, String>>,
    /// Units placed here but only `loaded`.
    pub(super) loaded: BTreeSet<String>,
    /// Keys this agent owns, with the value written.
    pub(super) owned: BTreeMap<String, String>,
    last_housework: u64,
    out: Vec<Out>,
    /// Fifos with more to read than one turn's budget.
    pub(super) pending_fifos: BTreeSet<String>,
    /// A slot ended: its unit may need a new instance (a replaced text).
    pub(super) reconcile_wanted: bool,
    /// CNI ADD/DEL for units' networks (shared with the worker threads).
    pub(super) invoker: Arc<berth_cni::Invoker>,
    /// Whether units' networks may be attached yet (see `netrun`).
    pub(super) net: super::netrun::NetState,
    /// `berthctl exec` runs (see `exec`).
    pub(super) execs: super::exec::Execs,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot {what} {path}: {err}")]
    Path {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("another berthd runs its agent in {0} (lock held)")]
    Busy(PathBuf),
    #[error("agent: {0}")]
    Other(String),
}

fn path_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |err| AgentError::Path {
        what,
        path: path.to_path_buf(),
        err,
    }
}

impl Agent {
    /// Opens the agent's directories (0700), takes its lock, becomes the subreaper, starts the
    /// watchdog and re-adopts the containers a previous berthd left running.
    pub fn new(
        cfg: AgentConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
        poll: &mio::Registry,
    ) -> Result<Agent, AgentError> {
        for d in [
            cfg.run_dir.clone(),
            cfg.run_dir.join("containers"),
            cfg.run_dir.join("units"),
            cfg.journal_dir.clone(),
        ] {
            create_private_dir(&d)?;
        }
        let lock_path = cfg.run_dir.join(watchdog::BERTHD_LOCK);
        let lock = watchdog::try_lock(&lock_path)
            .map_err(path_err("lock", &lock_path))?
            .ok_or_else(|| AgentError::Busy(cfg.run_dir.clone()))?;
        sys::become_subreaper()
            .map_err(|e| AgentError::Other(format!("cannot become the child subreaper: {e}")))?;
        let fence_file = DeadlineFile::open(&cfg.run_dir)
            .map_err(path_err("open the fence file in", &cfg.run_dir))?;
        let mut lease = RunLease::default();
        // The previous berthd's proof is still this machine's: keep its deadline.
        lease.inherit(fence_file.deadline());
        let execs = super::exec::Execs::new(Arc::clone(&wake));
        let pulls = Arc::new(super::pull::Pulls::new(&cfg.registries_conf));
        let pool = Pool::new(2, wake)
            .map_err(|e| AgentError::Other(format!("cannot start worker threads: {e}")))?;
        let poll = poll
            .try_clone()
            .map_err(|e| AgentError::Other(format!("cannot clone the poll registry: {e}")))?;
        let berth = Berth {
            binary: cfg.berth.clone(),
            root: cfg.run_dir.join("containers"),
        };
        let invoker = Arc::new(berth_cni::Invoker::new(berth_cni::InvokerConfig {
            plugin_dirs: cfg.network.plugin_dirs.clone(),
            state_dir: cfg.network.attachments_dir(),
            ..berth_cni::InvokerConfig::default()
        }));
        let mut agent = Agent {
            cfg,
            berth,
            slots: BTreeMap::new(),
            sources: HashMap::new(),
            next_token: TOKEN_BASE,
            next_generation: 1,
            pool,
            pulls,
            lease,
            fence_file,
            _berthd_lock: lock,
            poll,
            beats_in_flight: 0,
            last_beat: 0,
            parsed: HashMap::new(),
            loaded: BTreeSet::new(),
            owned: BTreeMap::new(),
            last_housework: 0,
            out: Vec::new(),
            pending_fifos: BTreeSet::new(),
            reconcile_wanted: false,
            invoker,
            net: Default::default(),
            execs,
        };
        agent.ensure_watchdog();
        agent.adopt_all();
        agent.sweep_networks();
        Ok(agent)
    }

    pub(super) fn now() -> u64 {
        sys::boottime_ms()
    }

    fn alloc_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    pub(super) fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// The effects gathered so far.
    /// Brings the reports up to date and hands over the effects gathered so far (called
    /// after every turn of the loop, so a state change is written at once).
    pub fn take_out(&mut self) -> Vec<Out> {
        self.report(Self::now());
        std::mem::take(&mut self.out)
    }

    pub(super) fn emit(&mut self, o: Out) {
        self.out.push(o);
    }

    fn ensure_watchdog(&mut self) {
        let s = watchdog::Settings {
            run_dir: self.cfg.run_dir.clone(),
            berth: self.cfg.berth.clone(),
            root: self.berth.root.clone(),
        };
        match watchdog::ensure_running(&s) {
            Ok(true) => tracing::info!(run_dir = %s.run_dir.display(), "watchdog started"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot start the watchdog: {e}"),
        }
    }

    // ---- fencing ------------------------------------------------------------------------

    /// If a heartbeat is due, the time to record as its proposal time.
    pub fn beat_due(&mut self) -> Option<u64> {
        let now = Self::now();
        let every = self.cfg.fence.beat.as_millis() as u64;
        if self.beats_in_flight >= MAX_BEATS_IN_FLIGHT || now < self.last_beat + every {
            return None;
        }
        self.last_beat = now;
        self.beats_in_flight += 1;
        Some(now)
    }

    /// The heartbeat proposed at `proposed` was applied (`ok`) or failed.
    pub fn beat_done(&mut self, proposed: u64, ok: bool) {
        self.beats_in_flight = self.beats_in_flight.saturating_sub(1);
        if ok {
            self.lease.confirmed(proposed, &self.cfg.fence);
            if let Err(e) = self.fence_file.set(self.lease.deadline_ms()) {
                tracing::error!("cannot write the fence file: {e}");
            }
        }
    }

    /// Whether this machine may run units now.
    pub fn lease_valid(&self) -> bool {
        self.lease.valid_at(Self::now())
    }

    pub(super) fn may_start(&self, now: u64) -> bool {
        self.lease.may_start_at(now, START_SLACK)
    }

    // ---- reconciling with the registry -------------------------------------------------

    fn parse(&mut self, rec: &UnitRecord) -> Result<Arc<Unit>, String> {
        let key = (rec.name.clone(), rec.hash.clone());
        if let Some(p) = self.parsed.get(&key) {
            return p.clone();
        }
        let ctx = MachineContext {
            machine_id: self.cfg.machine.clone(),
            hostname: self.cfg.machine.clone(),
        };
        let r = unit::parse_unit_on(&rec.name, &rec.text, &ctx)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if self.parsed.len() > 4096 {
            self.parsed.clear();
        }
        self.parsed.insert(key, r.clone());
        r
    }

    /// Brings the instances in line with the registry.
    pub fn reconcile(&mut self, reg: &Registry) {
        let units: BTreeMap<String, UnitRecord> = reg
            .range(keyspace::UNITS)
            .into_iter()
            .filter_map(|kv| keyspace::decode::<UnitRecord>(&kv.value))
            .map(|u| (u.name.clone(), u))
            .collect();
        let schedule: BTreeMap<String, ScheduleRecord> = reg
            .range(keyspace::SCHEDULE)
            .into_iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(keyspace::SCHEDULE)?.to_string();
                Some((name, keyspace::decode::<ScheduleRecord>(&kv.value)?))
            })
            .collect();
        let placements = self.placements(&units, &schedule);
        let targets = reconcile::targets(&self.cfg.machine, &units, &schedule, |u| {
            placements
                .get(&u.name)
                .cloned()
                .unwrap_or(Placement::NotHere)
        });
        let held: BTreeMap<String, Held> = self
            .slots
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    Held {
                        hash: s.unit.hash.clone(),
                        removing: s.inst.want() == Want::Remove,
                    },
                )
            })
            .collect();
        let now = Self::now();
        for action in reconcile::actions(&targets, &held) {
            match action {
                Action::Launch { unit, hash } => {
                    let Some(rec) = units.get(&unit).filter(|r| r.hash == hash).cloned() else {
                        continue;
                    };
                    match self.parse(&rec) {
                        Ok(parsed) => self.launch(parsed, now),
                        Err(e) => tracing::warn!(%unit, "unit cannot be parsed here: {e}"),
                    }
                }
                Action::Remove { unit } => {
                    if let Some(s) = self.slots.get_mut(&unit) {
                        let effects = s.inst.remove(now);
                        self.apply(&unit, effects);
                    }
                }
            }
        }
        let loaded: BTreeSet<String> = targets
            .iter()
            .filter(|(_, t)| !t.launch)
            .map(|(n, _)| n.clone())
            .collect();
        self.report_loaded(&loaded, &units);
        self.loaded = loaded;
    }

    /// Where each unit stands for this machine: scheduled (the leader decides), or for a
    /// `Global` unit the scheduler's own verdict for this machine (fleet's agents decided
    /// global units themselves).
    fn placements(
        &mut self,
        units: &BTreeMap<String, UnitRecord>,
        schedule: &BTreeMap<String, ScheduleRecord>,
    ) -> HashMap<String, Placement> {
        let parsed: Vec<(UnitRecord, Arc<Unit>)> = units
            .values()
            .filter_map(|r| self.parse(r).ok().map(|u| (r.clone(), u)))
            .collect();
        let inputs: Vec<UnitInput> = parsed
            .iter()
            .map(|(r, u)| UnitInput::of(u, r.desired.into()))
            .collect();
        let here: Vec<UnitInput> = inputs
            .iter()
            .filter(|u| {
                schedule
                    .get(u.name.as_str())
                    .is_some_and(|s| s.machine == self.cfg.machine)
            })
            .copied()
            .collect();
        let me = MachineInput {
            name: &self.cfg.machine,
            metadata: &self.cfg.metadata,
            status: MachineStatus::Live,
        };
        let mut out: HashMap<String, Placement> = units
            .keys()
            .map(|n| (n.clone(), Placement::NotHere))
            .collect();
        for (_, u) in &parsed {
            if !u.is_global() {
                out.insert(u.name.as_str().to_string(), Placement::Scheduled);
            }
        }
        for (name, verdict) in schedule::globals_on(&me, &here, &inputs) {
            let p = if verdict.is_ok() {
                Placement::GlobalHere
            } else {
                Placement::NotHere
            };
            out.insert(name.as_str().to_string(), p);
        }
        out
    }

    fn launch(&mut self, unit: Arc<Unit>, now: u64) {
        let name = unit.name.as_str().to_string();
        let cid = berth::container_id(&name);
        let dir = self.cfg.run_dir.join("units").join(&cid);
        if let Err(e) = create_private_dir(&dir) {
            tracing::error!(unit = %name, "{e}");
            return;
        }
        let policy = super::launch::policy(&unit);
        let generation = self.generation();
        let mut slot = Slot::new(
            &self.cfg,
            unit,
            cid,
            generation,
            Instance::new(policy, now),
            dir,
        );
        if let Err(e) = super::launch::write_record(&slot) {
            tracing::error!(unit = %name, "cannot record the instance: {e}");
        }
        let effects = slot.inst.run(self.may_start_slot(&slot, now), now);
        tracing::info!(unit = %name, cid = %slot.cid, "launching");
        self.slots.insert(name.clone(), slot);
        self.apply(&name, effects);
    }

    // ---- events from the loop ------------------------------------------------------------

    /// One of the agent's descriptors is ready.
    pub fn on_ready(&mut self, token: Token) {
        match self.sources.get(&token) {
            Some(Source::Fifo { unit }) => {
                let unit = unit.clone();
                self.drain_fifo(&unit);
            }
            Some(Source::Child { .. }) => self.child_ready(token),
            Some(Source::Init { .. }) => self.init_ready(token),
            None => {}
        }
    }

    /// Worker jobs finished (the loop was woken).
    pub fn on_wake(&mut self) {
        for d in self.pool.finished() {
            if d.kind == JobKind::Sweep {
                self.swept(d.result);
                continue;
            }
            self.job_done(d);
        }
    }

    fn job_done(&mut self, d: Done) {
        let now = Self::now();
        let Some(slot) = self.slots.get_mut(&d.unit) else {
            return;
        };
        if slot.generation != d.generation {
            return;
        }
        let effects = match d.kind {
            JobKind::Prepare => slot.inst.prepared(d.result, now),
            JobKind::Cleanup => slot.inst.cleaned(d.result, now),
            JobKind::Attach => {
                slot.ip = d.ip.filter(|_| d.result.is_ok());
                slot.inst.attached(d.result, now)
            }
            JobKind::Detach => {
                if d.result.is_ok() {
                    slot.ip = None;
                }
                slot.inst.detached(d.result, now)
            }
            JobKind::Sweep => Vec::new(), // handled in on_wake
        };
        self.apply(&d.unit, effects);
    }

    fn child_ready(&mut self, token: Token) {
        let Some(Source::Child { child, .. }) = self.sources.get_mut(&token) else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("waiting for a berth process: {e}");
                return;
            }
        };
        let Some(Source::Child {
            unit,
            generation,
            op,
            pidfd,
            log_from,
            ..
        }) = self.sources.remove(&token)
        else {
            return;
        };
        self.deregister(&pidfd);
        let result = if status.success() {
            Ok(())
        } else {
            let log = self
                .slots
                .get(&unit)
                .map(|s| s.dir.join("berth.log"))
                .unwrap_or_default();
            Err(berth::last_error(
                &log,
                log_from,
                &format!("berth {status}"),
            ))
        };
        self.op_done(&unit, generation, op, result);
    }

    fn op_done(&mut self, unit: &str, generation: u64, op: Op, result: Result<(), String>) {
        let now = Self::now();
        let Some(slot) = self.slots.get_mut(unit) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        let effects = match op {
            Op::Create { pid_file, .. } => {
                let r = result.and_then(|()| berth::read_pid(&pid_file));
                slot.inst.created(r, now)
            }
            Op::Start => slot.inst.started(result, now),
            Op::Delete => slot.inst.deleted(result, now),
            Op::Kill { signal } => {
                if let Err(e) = result {
                    tracing::debug!(%unit, %signal, "berth kill: {e}");
                }
                Vec::new()
            }
            Op::Exec { .. } => {
                slot.health_running = false;
                let ok = result.is_ok();
                if slot.healthy != Some(ok) {
                    tracing::info!(%unit, healthy = ok, "health check changed");
                    slot.healthy = Some(ok);
                }
                Vec::new()
            }
        };
        self.apply(unit, effects);
    }

    fn init_ready(&mut self, token: Token) {
        let Some(Source::Init { pidfd, .. }) = self.sources.get(&token) else {
            return;
        };
        let status = match sys::reap_pidfd(pidfd) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("waitid on a container's pidfd: {e}");
                ExitStatus::Unknown
            }
        };
        let Some(Source::Init {
            unit,
            generation,
            pid,
            pidfd,
        }) = self.sources.remove(&token)
        else {
            return;
        };
        self.deregister(&pidfd);
        self.drain_fifo(&unit);
        let now = Self::now();
        let Some(slot) = self.slots.get_mut(&unit) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        let wall = SystemTime::now();
        let _ = slot.journal.flush_partial(wall);
        if let Ok(line) = slot
            .journal
            .note(&format!("pid {pid} {}", status.describe()), wall)
        {
            self.out.push(Out::Journal {
                unit: unit.clone(),
                lines: vec![line],
            });
        }
        let Some(slot) = self.slots.get_mut(&unit) else {
            return;
        };
        let effects = slot.inst.exited(status, now);
        self.apply(&unit, effects);
    }

    /// Whether the registry should be reconciled again (an instance ended).
    pub fn wants_reconcile(&mut self) -> bool {
        std::mem::take(&mut self.reconcile_wanted)
    }

    /// Timers, the fence, health checks, reports; called from the loop's housekeeping.
    pub fn tick(&mut self) {
        let now = Self::now();
        for unit in std::mem::take(&mut self.pending_fifos) {
            self.drain_fifo(&unit);
        }
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let valid = self.lease.valid_at(now);
        for name in &names {
            let may_start = match self.slots.get(name) {
                Some(slot) => self.may_start_slot(slot, now),
                None => continue,
            };
            let Some(slot) = self.slots.get_mut(name) else {
                continue;
            };
            let mut effects = if valid {
                Vec::new()
            } else {
                match slot.inst.phase() {
                    Phase::Running { .. } | Phase::Starting { .. } => {
                        tracing::warn!(unit = %name, "run lease expired (no quorum): killing");
                        slot.inst.fence(now)
                    }
                    _ => Vec::new(),
                }
            };
            effects.extend(slot.inst.tick(may_start, now));
            self.apply(name, effects);
        }
        self.run_health_checks(now);
        self.finish_done_slots();
        self.report(now);
        if now.saturating_sub(self.last_housework) >= 1_000 {
            self.last_housework = now;
            self.ensure_watchdog();
            let tracked: BTreeSet<u32> = self
                .sources
                .values()
                .filter_map(|s| match s {
                    Source::Child { child, .. } => Some(child.id()),
                    Source::Init { pid, .. } => Some(*pid),
                    Source::Fifo { .. } => None,
                })
                .collect();
            sys::reap_orphans(&|pid| tracked.contains(&pid));
        }
    }

    /// When `tick` should run next at the latest (ms from now).
    pub fn next_timer_in(&self) -> Option<Duration> {
        let now = Self::now();
        self.slots
            .values()
            .filter_map(|s| s.inst.next_timer())
            .min()
            .map(|t| Duration::from_millis(t.saturating_sub(now)))
    }

    // ---- performing effects --------------------------------------------------------------

    pub(super) fn apply(&mut self, unit: &str, effects: Vec<Effect>) {
        for e in effects {
            self.perform(unit, e);
        }
    }

    fn perform(&mut self, unit: &str, e: Effect) {
        let now = Self::now();
        let Some(slot) = self.slots.get_mut(unit) else {
            return;
        };
        let generation = slot.generation;
        match e {
            Effect::Report => {} // `report` diffs every slot
            Effect::Prepare => {
                let job = super::launch::PrepareJob::new(&self.cfg, slot, &self.pulls);
                self.pool.submit(move || job.run());
            }
            Effect::Cleanup => {
                let job = super::launch::CleanupJob::new(&self.cfg, slot);
                self.pool.submit(move || job.run());
            }
            Effect::Attach => self.attach(unit),
            Effect::Detach => self.detach(unit),
            Effect::Create => {
                if let Err(e) = self.open_fifo(unit) {
                    let effects = match self.slots.get_mut(unit) {
                        Some(s) => s.inst.created(Err(e), now),
                        None => return,
                    };
                    return self.apply(unit, effects);
                }
                let Some(slot) = self.slots.get(unit) else {
                    return;
                };
                let op = Op::Create {
                    bundle: super::launch::bundle_dir(&self.cfg, slot),
                    pid_file: slot.dir.join("pid"),
                };
                let _ = std::fs::remove_file(slot.dir.join("pid"));
                let stdio = match super::launch::open_fifo_rdwr(slot) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let effects = match self.slots.get_mut(unit) {
                            Some(s) => s.inst.created(Err(e), now),
                            None => return,
                        };
                        return self.apply(unit, effects);
                    }
                };
                self.spawn(unit, generation, op, Some(&stdio));
            }
            Effect::Start => {
                if !self.lease.valid_at(now) {
                    let effects = slot.inst.fence(now);
                    return self.apply(unit, effects);
                }
                self.spawn(unit, generation, Op::Start, None);
            }
            Effect::Signal { signal } => self.spawn(unit, generation, Op::Kill { signal }, None),
            Effect::Delete => self.spawn(unit, generation, Op::Delete, None),
            Effect::Watch { pid } => self.watch_init(unit, generation, pid),
        }
    }

    /// Spawns a berth operation without stdio (kill, delete, exec).
    pub(super) fn spawn_op(&mut self, unit: &str, generation: u64, op: Op) {
        self.spawn(unit, generation, op, None);
    }

    /// Spawns a berth operation and watches it; a spawn failure is the operation's result.
    fn spawn(&mut self, unit: &str, generation: u64, op: Op, stdio: Option<&OwnedFd>) {
        let Some(slot) = self.slots.get(unit) else {
            return;
        };
        let log = slot.dir.join("berth.log");
        let log_from = berth::log_len(&log);
        let cid = slot.cid.clone();
        let spawned = self.berth.spawn(&op, &cid, &log, stdio).and_then(|child| {
            let pidfd = sys::pidfd_open(child.id()).map_err(std::io::Error::from)?;
            Ok((child, pidfd))
        });
        match spawned {
            Ok((child, pidfd)) => {
                let token = self.alloc_token();
                self.register(token, &pidfd);
                self.sources.insert(
                    token,
                    Source::Child {
                        unit: unit.to_string(),
                        generation,
                        op,
                        child,
                        pidfd,
                        log_from,
                    },
                );
            }
            Err(e) => {
                let msg = format!("cannot run {}: {e}", self.berth.binary.display());
                self.op_done(unit, generation, op, Err(msg));
            }
        }
    }

    fn watch_init(&mut self, unit: &str, generation: u64, pid: u32) {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => {
                let token = self.alloc_token();
                self.register(token, &pidfd);
                self.sources.insert(
                    token,
                    Source::Init {
                        unit: unit.to_string(),
                        generation,
                        pid,
                        pidfd,
                    },
                );
            }
            Err(e) => {
                // Gone before we could watch it (and reaped by someone else).
                tracing::warn!(%unit, pid, "cannot watch the container's init: {e}");
                let now = Self::now();
                if let Some(s) = self.slots.get_mut(unit) {
                    let effects = s.inst.exited(ExitStatus::Unknown, now);
                    self.apply(unit, effects);
                }
            }
        }
    }

    /// Registers a descriptor for readability with the loop (pidfds and fifos).
    pub(super) fn register(&mut self, token: Token, fd: &impl AsRawFd) {
        let r = self
            .poll
            .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE);
        if let Err(e) = r {
            tracing::error!("cannot watch a descriptor: {e}");
        }
    }

    pub(super) fn deregister(&mut self, fd: &impl AsRawFd) {
        let _ = self.poll.deregister(&mut SourceFd(&fd.as_raw_fd()));
    }

    /// Registers a journal fifo's read end.
    pub(super) fn add_fifo(&mut self, unit: &str, fifo: File) {
        let token = self.alloc_token();
        self.register(token, &fifo);
        self.sources.insert(
            token,
            Source::Fifo {
                unit: unit.to_string(),
            },
        );
        if let Some(s) = self.slots.get_mut(unit) {
            s.fifo = Some((token, fifo));
        }
    }

    /// Stops reading a slot's fifo (the slot is going away).
    pub(super) fn drop_fifo(&mut self, unit: &str) {
        let Some((token, fifo)) = self.slots.get_mut(unit).and_then(|s| s.fifo.take()) else {
            return;
        };
        self.deregister(&fifo);
        self.sources.remove(&token);
    }
}

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(path_err("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(path_err("chmod 0700", dir))
}
