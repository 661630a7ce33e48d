//! The Raft driver: a raft-rs `RawNode` over a [`LogStore`], applying committed entries to the
//! [`Registry`]. IO-free: the caller ticks it, steps received messages into it and sends the
//! messages [`Node::begin_ready`] and [`Node::process_ready`] return. Ready handling follows
//! raft-rs' documented order: a leader's messages may leave first (`begin_ready`); then apply a
//! received snapshot, apply committed entries, persist entries and hard state (one fsync), hand
//! out the messages that needed them durable, advance, apply what became committed.

use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

use super::snapfile;
use super::store::{Batch, LogStore};
use super::RaftError;
use crate::registry::{Command, Event, Outcome, Registry};

/// A registry command with who proposed it, so the proposing node can answer its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Raft id of the node whose client asked (0: nobody waits).
    pub origin: u64,
    /// Request number on that node.
    pub req: u64,
    pub cmd: Command,
}

/// Carried in a conf change entry's context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfContext {
    pub origin: u64,
    pub req: u64,
    pub name: String,
    pub addr: String,
}

/// Something the local replica applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Command {
        index: u64,
        origin: u64,
        req: u64,
        cmd: Command,
        outcome: Outcome,
    },
    Conf {
        index: u64,
        ctx: ConfContext,
        result: Result<ConfState, String>,
    },
}

/// What one round of Ready handling produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send (everything they depend on is already durable).
    pub messages: Vec<Message>,
    pub applied: Vec<Applied>,
    /// Registry events in apply order.
    pub events: Vec<Event>,
    /// A snapshot replaced the registry (watchers must resynchronise from its history).
    pub snapshot_installed: bool,
}

/// Raft timing and snapshot settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_every: u64,
    /// Where snapshot files go (written on a thread); None keeps snapshots inline and
    /// takes them synchronously (the scenario tests' in-memory stores).
    pub snapshot_dir: Option<std::path::PathBuf>,
}

pub struct Node {
    raw: RawNode<LogStore>,
    /// A Ready whose early messages were handed out by [`Node::begin_ready`].
    started: Option<raft::Ready>,
    registry: Registry,
    conf: ConfState,
    applied: u64,
    snapshot_every: u64,
    snapshot_dir: Option<std::path::PathBuf>,
    writer: snapfile::Writer,
}

/// The snapshot every initial voter starts from: index 1, the voters, an empty registry. Being a
/// snapshot (not a log entry), it also reaches nodes that join later, with the configuration.
pub fn bootstrap_snapshot(voters: &[u64]) -> Result<Snapshot, RaftError> {
    let mut snap = Snapshot {
        data: serde_json::to_vec(&Registry::default()).map_err(RaftError::Encode)?,
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.set_conf_state(ConfState::from((voters.to_vec(), Vec::<u64>::new())));
    Ok(snap)
}

/// Forwards raft-rs' slog records to tracing (target `raft`), so `BERTHD_LOG=raft=debug` shows
/// elections and elections' reasons.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::trace!(target: "raft", "{}", record.msg())
            }
        }
        Ok(())
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

impl Node {
    /// Starts from what `store` holds; when it is blank and `bootstrap` lists voters, first
    /// writes the bootstrap snapshot.
    pub fn new(
        cfg: &NodeConfig,
        mut store: LogStore,
        bootstrap: &[u64],
    ) -> Result<Self, RaftError> {
        if store.is_blank() && !bootstrap.is_empty() {
            store.persist(Batch {
                snapshot: Some(bootstrap_snapshot(bootstrap)?),
                ..Batch::default()
            })?;
        }
        let snap = store.latest_snapshot().clone();
        let registry = decode_registry(&snap, cfg.snapshot_dir.as_deref())?;
        if let (Some(dir), Some(r)) = (&cfg.snapshot_dir, snapfile::decode_ref(&snap.data)) {
            // Leftovers of a crash during a write or a transfer.
            snapfile::cleanup_at_start(dir, &r.file);
        }
        let conf = snap.get_metadata().get_conf_state().clone();
        let applied = snap.get_metadata().index;
        let rcfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 16 << 20,
            ..raft::Config::default()
        };
        rcfg.validate().map_err(RaftError::Raft)?;
        let raw = RawNode::new(&rcfg, store, &logger()).map_err(RaftError::Raft)?;
        Ok(Self {
            raw,
            started: None,
            registry,
            conf,
            applied,
            snapshot_every: cfg.snapshot_every.max(1),
            snapshot_dir: cfg.snapshot_dir.clone(),
            writer: snapfile::Writer::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configuration as of the last applied entry.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The known leader's id, 0 when none.
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// True while a configuration change is proposed but not yet applied.
    pub fn has_pending_conf(&self) -> bool {
        self.raw.raft.has_pending_conf()
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    pub fn step(&mut self, msg: Message) -> Result<(), RaftError> {
        self.raw.step(msg).map_err(RaftError::Raft)
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Hands leadership to the most up-to-date other voter (graceful shutdown); false when
    /// this node is not the leader or has no other voter.
    pub fn transfer_to_best_voter(&mut self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let me = self.id();
        let best = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && self.conf.voters.contains(id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        match best {
            Some(id) => {
                self.raw.transfer_leader(id);
                true
            }
            None => false,
        }
    }

    /// The link to the leader broke (its process died, most likely): stop honouring its lease,
    /// so this follower grants pre-votes at once, and campaign in this node's turn (see
    /// [`link_lost_wait`]) instead of after a whole election timeout. Liveness only; safety
    /// is Raft's as usual.
    pub fn leader_link_lost(&mut self, peer: u64) {
        let voters: Vec<u64> = self.conf.voters.clone();
        let r = &mut self.raw.raft;
        if r.state == StateRole::Follower && r.leader_id == peer && r.leader_id != 0 {
            let et = r.election_timeout();
            let jitter = rand::random::<u32>() as usize;
            let wait = link_lost_wait(&voters, r.id, peer, et, jitter);
            r.election_elapsed = r.election_elapsed.max(et);
            // raft-rs campaigns once election_elapsed reaches the randomized timeout, which
            // must lie in [et, 2 et): this node's turn, counted from now.
            let due = (r.election_elapsed + wait).clamp(et, 2 * et - 1);
            r.set_randomized_election_timeout(due);
        }
    }

    /// Reports what became of a `MsgSnapshot` this node handed out; the transport must report
    /// every one. Finish once it is handed to a live link (if the link loses it after all, the
    /// leader's probing finds the gap and sends another), Failure when it cannot be sent.
    /// raft-rs sends that peer nothing while its snapshot is outstanding: unreported, one lost
    /// reply from the follower would stall it for good.
    pub fn report_snapshot(&mut self, id: u64, status: raft::SnapshotStatus) {
        self.raw.report_snapshot(id, status);
    }

    /// Proposes a registry command. A follower forwards it to the leader it knows (raft-rs
    /// proposal forwarding); with no known leader it is dropped (an error).
    pub fn propose(&mut self, p: &Proposal) -> Result<(), RaftError> {
        let data = serde_json::to_vec(p).map_err(RaftError::Encode)?;
        self.raw.propose(Vec::new(), data).map_err(RaftError::Raft)
    }

    /// Proposes a configuration change (forwarded like [`Node::propose`]); the leader takes one
    /// at a time.
    pub fn propose_conf(&mut self, ctx: &ConfContext, cc: ConfChangeV2) -> Result<(), RaftError> {
        if self.is_leader() && self.has_pending_conf() {
            return Err(RaftError::ConfPending);
        }
        let context = serde_json::to_vec(ctx).map_err(RaftError::Encode)?;
        self.raw
            .propose_conf_change(context, cc)
            .map_err(RaftError::Raft)
    }

    /// Starts handling a Ready and returns the messages that may be sent before its entries
    /// are durable (a leader's appends and heartbeats). Finish with [`Node::process_ready`].
    pub fn begin_ready(&mut self) -> Vec<Message> {
        if self.started.is_some() || !self.raw.has_ready() {
            return Vec::new();
        }
        let mut rd = self.raw.ready();
        let early = rd.take_messages();
        self.started = Some(rd);
        early
    }

    /// Handles one Ready (the one [`Node::begin_ready`] started, or a new one), if any.
    pub fn process_ready(&mut self) -> Result<Output, RaftError> {
        let mut out = Output::default();
        let mut rd = match self.started.take() {
            Some(rd) => rd,
            None if self.raw.has_ready() => self.raw.ready(),
            None => return Ok(out),
        };
        out.messages.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.registry = decode_registry(&snap, self.snapshot_dir.as_deref())?;
            self.conf = snap.get_metadata().get_conf_state().clone();
            self.applied = snap.get_metadata().index;
            self.raw.mut_store().persist(Batch {
                snapshot: Some(snap.clone()),
                ..Batch::default()
            })?;
            if let (Some(dir), Some(r)) = (&self.snapshot_dir, snapfile::decode_ref(&snap.data)) {
                snapfile::cleanup(dir, &r.file);
            }
            out.snapshot_installed = true;
        }
        self.apply_entries(rd.take_committed_entries(), &mut out)?;
        let batch = Batch {
            snapshot: None,
            entries: rd.take_entries(),
            hard_state: rd.hs().cloned(),
        };
        self.raw.mut_store().persist(batch)?;
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            // Not fsynced on its own: a lower commit index after a crash is safe (it is
            // learned again); it is written with the next hard state.
            self.raw.mut_store().note_commit(commit);
        }
        out.messages.extend(light.take_messages());
        self.apply_entries(light.take_committed_entries(), &mut out)?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(out)
    }

    fn apply_entries(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
        out: &mut Output,
    ) -> Result<(), RaftError> {
        for e in entries {
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        continue; // a new leader's empty entry
                    }
                    let p: Proposal = match serde_json::from_slice(&e.data) {
                        Ok(p) => p,
                        Err(err) => {
                            // Every replica skips the same entry the same way.
                            tracing::error!(index = e.index, "skipping undecodable entry: {err}");
                            continue;
                        }
                    };
                    let (outcome, events) = self.registry.apply(&p.cmd);
                    out.events.extend(events);
                    out.applied.push(Applied::Command {
                        index: e.index,
                        origin: p.origin,
                        req: p.req,
                        cmd: p.cmd,
                        outcome,
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let ctx: ConfContext = serde_json::from_slice(&e.context).unwrap_or_default();
                    let result = if e.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::decode(e.data.as_slice())
                            .map_err(|err| err.to_string())
                            .and_then(|cc| {
                                self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                            })
                    } else {
                        ConfChangeV2::decode(e.data.as_slice())
                            .map_err(|err| err.to_string())
                            .and_then(|cc| {
                                self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                            })
                    };
                    if let Ok(cs) = &result {
                        self.conf = cs.clone();
                    }
                    out.applied.push(Applied::Conf {
                        index: e.index,
                        ctx,
                        result,
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes a snapshot when `snapshot_every` entries were applied since the last one (or a
    /// peer needs a fresher one): inline and at once for in-memory stores; otherwise an O(1)
    /// clone of the registry is written to a file by a thread, and the log is compacted when
    /// that is done (a later call picks the result up).
    fn maybe_compact(&mut self) -> Result<(), RaftError> {
        if let Some(done) = self.writer.poll() {
            self.finish_snapshot(done)?;
        }
        if self.writer.busy() {
            return Ok(());
        }
        let snap_index = self.raw.store().latest_snapshot().get_metadata().index;
        let wanted = self.raw.store().take_snapshot_wanted() && self.applied > snap_index;
        if !wanted && self.applied < snap_index + self.snapshot_every {
            return Ok(());
        }
        let applied = self.applied;
        let conf = self.conf.clone();
        match &self.snapshot_dir {
            Some(dir) => {
                self.writer
                    .start(dir.clone(), applied, conf, self.registry.clone());
            }
            None => {
                let data = serde_json::to_vec(&self.registry).map_err(RaftError::Encode)?;
                self.raw.mut_store().compact(applied, conf, data)?;
                tracing::debug!(
                    index = applied,
                    "took a registry snapshot and compacted the log"
                );
            }
        }
        Ok(())
    }

    /// The writer thread finished: compact the log up to its snapshot.
    fn finish_snapshot(&mut self, done: snapfile::Written) -> Result<(), RaftError> {
        let r = match done.result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(index = done.index, "snapshot not written (will retry): {e}");
                return Ok(());
            }
        };
        let current = self.raw.store().latest_snapshot().get_metadata().index;
        if done.index <= current {
            // A snapshot from the leader got here first; this one is stale.
            if let Some(dir) = &self.snapshot_dir {
                let _ = std::fs::remove_file(dir.join(&r.file));
            }
            return Ok(());
        }
        let keep = r.file.clone();
        self.raw
            .mut_store()
            .compact(done.index, done.conf, snapfile::encode_ref(&r))?;
        if let Some(dir) = &self.snapshot_dir {
            snapfile::cleanup(dir, &keep);
        }
        tracing::debug!(
            index = done.index,
            bytes = r.size,
            "registry snapshot written; log compacted"
        );
        Ok(())
    }

    /// True while a snapshot is being written (tests).
    pub fn snapshot_in_progress(&self) -> bool {
        self.writer.busy()
    }

    /// Read access to the store (tests).
    pub fn store(&self) -> &LogStore {
        self.raw.store()
    }
}

/// Ticks a follower that lost its link to the leader waits before it campaigns. The voters
/// other than the lost leader take turns in the order of their ids, `2/5` of an election
/// timeout apart (100 ms by default), with a jitter of up to a tenth of one inside the turn:
/// two survivors drawing the same moment would split the vote, and a split costs a whole
/// randomized election timeout (250-500 ms by default) before anyone tries again. A node
/// that cannot win (its log is behind) is refused and the next in turn wins.
pub fn link_lost_wait(
    voters: &[u64],
    me: u64,
    lost: u64,
    election_tick: usize,
    jitter: usize,
) -> usize {
    let mut order: Vec<u64> = voters.iter().copied().filter(|v| *v != lost).collect();
    order.sort_unstable();
    let rank = order.iter().position(|v| *v == me).unwrap_or(order.len());
    let turn = (election_tick * 2 / 5).max(2);
    let spread = (election_tick / 10).max(1);
    rank * turn + jitter % spread
}

fn decode_registry(snap: &Snapshot, dir: Option<&std::path::Path>) -> Result<Registry, RaftError> {
    if snap.get_metadata().index == 0 {
        return Ok(Registry::default());
    }
    Ok(snapfile::read(dir, &snap.data)?)
}
