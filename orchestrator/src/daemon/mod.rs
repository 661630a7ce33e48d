//! berthd's one mio event loop. It owns the UDP socket (SWIM), the TCP listener and peer links
//! (Raft frames), the unix API socket (HTTP), a signalfd and every timer, and feeds the IO-free
//! cores (foca, raft-rs, the registry) bytes and time. Disk writes (redb, fsync) happen
//! synchronously inside Ready handling, before any message that depends on them is sent.

mod api;
mod api_conn;
mod cluster;
mod conn;
mod dns;
mod duties;
mod exec;
mod link;
mod netpart;
mod peers;
mod remote;
mod units;
mod units_api;
mod views;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, UdpSocket, UnixListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{node_id, Config};
use crate::membership::{Ident, Swim, Timer};
use crate::raft::disk::Disk;
use crate::raft::store::LogStore;
use crate::raft::{Node, NodeConfig};
use crate::registry::lease_clock::LeaseClock;

use conn::Conn;

const UDP: Token = Token(0);
const PEER_LISTEN: Token = Token(1);
const API_LISTEN: Token = Token(2);
const SIGNALS: Token = Token(3);
const REMOTE_API_LISTEN: Token = Token(4);
/// Woken by worker threads (the agent's jobs) through the one `mio::Waker`.
const WAKER: Token = Token(5);
const FIRST_CONN: usize = 16;

/// How often leader duties, self-registration and timeouts are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// TTL of each node's own lease (its /machines key and services live under it).
pub const NODE_LEASE_TTL_MS: u64 = 10_000;
/// How often a node keeps its own lease alive.
const KEEPALIVE_EVERY: Duration = Duration::from_millis(2_000);
/// How long a write may wait to be applied before the client gets a 503.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot {what} {path}: {err}")]
    Path {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot bind {what} on {addr}: {err}")]
    Bind {
        what: &'static str,
        addr: String,
        err: std::io::Error,
    },
    #[error("event loop: {0}")]
    Poll(std::io::Error),
    #[error("signals: {0}")]
    Signals(nix::Error),
    #[error(transparent)]
    Raft(#[from] crate::raft::RaftError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Disk(#[from] crate::raft::disk::DiskError),
    #[error(transparent)]
    Private(#[from] crate::private_files::PrivateFileError),
    #[error(transparent)]
    Credentials(#[from] crate::tls::LoadError),
    #[error("this node has no Raft state and nothing to start from: give --bootstrap (listing this node) or --join")]
    NothingToJoin,
}

/// Who waits for a proposal.
#[derive(Debug, Clone)]
enum Responder {
    /// An API client on this connection; `kind` shapes the JSON answer.
    Client { token: Token, kind: ReplyKind },
    /// The daemon itself.
    Internal(Internal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplyKind {
    /// A registry write: the outcome as JSON.
    Registry,
    /// A configuration change: the new voters and learners.
    Conf,
    /// A unit submit (a registry write that creates `/units/NAME`): losing the race to a
    /// submit of the same content (a client retrying a write whose answer it lost to a
    /// leader change) answers "unchanged", as a submit of an existing identical unit does.
    UnitSubmit { name: String, hash: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    Grant,
    KeepAlive(u64),
    Fire,
    /// The agent's heartbeat, proposed at this boot-time millisecond.
    Beat(u64),
    /// The leader's schedule transaction.
    Schedule,
    /// The agent's state and service writes.
    Report,
    /// The leader's subnet allocation transaction.
    Subnets,
}

struct Pending {
    responder: Responder,
    deadline: Instant,
    /// The leader when it was proposed: if leadership moves, the answer is "retry" (as etcd's
    /// "leader changed") instead of a wait for an entry the old leader may never have shared.
    leader: u64,
}

/// The node's own lease, under which /machines/<name> and its services live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelfLease {
    None,
    Granting,
    Held {
        id: u64,
        last_keepalive: Instant,
        inflight: bool,
    },
}

/// A foca timer in the heap, ordered by due time and insertion only.
struct TimerSlot(Timer<Ident>);
impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[derive(Default)]
struct Metrics {
    api_requests: u64,
    api_errors: u64,
    proposals: u64,
    applied: u64,
    bad_frames: u64,
    bad_datagrams: u64,
    leader_changes: u64,
    peer_connects: u64,
}

pub(crate) struct Daemon {
    cfg: Config,
    id: u64,
    poll: Poll,
    udp: UdpSocket,
    peer_listener: TcpListener,
    api_listener: UnixListener,
    signals: SignalFd,
    node: Node,
    swim: Swim,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    timer_seq: u64,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    peer_out: HashMap<u64, Token>,
    peer_retry: HashMap<u64, Instant>,
    /// Raft id -> (name, peer address)
    book: HashMap<u64, (String, SocketAddr)>,
    pending: HashMap<u64, Pending>,
    next_req: u64,
    lease_clock: LeaseClock,
    start: Instant,
    self_lease: SelfLease,
    /// Services registered through this node: key -> value (re-put under a new lease).
    my_services: std::collections::BTreeMap<String, String>,
    /// Members SWIM declared down, with when, for the leader to revoke their leases.
    down: HashMap<String, Instant>,
    last_leader: u64,
    was_leader: bool,
    last_conf_attempt: Option<Instant>,
    last_announce: Option<Instant>,
    last_book_refresh: Option<Instant>,
    next_tick: Instant,
    next_housekeeping: Instant,
    last_warn: Option<Instant>,
    metrics: Metrics,
    /// Peer links with Raft messages queued but not yet written (see flush_peers).
    unflushed: Vec<Token>,
    /// Link failures and snapshot results to report to raft-rs once no Ready is in flight.
    reports: Vec<(u64, Option<raft::SnapshotStatus>)>,
    /// Leaders whose link broke, for raft once no Ready is in flight.
    leader_links_lost: Vec<u64>,
    /// Set on SIGTERM/SIGINT: exit once leadership is handed over or at this time.
    stop_deadline: Option<Instant>,
    /// Peer TLS and the gossip key ring; None with --insecure.
    security: Option<crate::tls::Security>,
    /// Listeners resting after accept(2) ran out of descriptors.
    accept_gate: conn::AcceptGate,
    /// The remote API listener (`--api-listen`, TLS with client certificates).
    remote_api: Option<TcpListener>,
    /// Shared by every part whose worker threads wake the loop.
    _waker: std::sync::Arc<mio::Waker>,
    /// Runs this machine's units (None with --no-agent).
    agent: Option<crate::agent::Agent>,
    /// When each machine's heartbeat was applied here (the leader's at-most-once clock).
    liveness: crate::fence::Liveness,
    /// The leader's scheduling state.
    sched: units::SchedState,
    /// Registry events touched units, schedule or machines: reconcile the agent.
    units_dirty: bool,
    /// An agent report failed: write everything owned again.
    report_retry: bool,
    /// API clients following a unit's journal.
    journal_followers: HashMap<String, Vec<Token>>,
    /// Journals relayed from other nodes to our API clients, by request id.
    remote_reads: HashMap<u64, remote::RemoteRead>,
    next_remote_id: u64,
    /// Other nodes' clients following journals of units here.
    remote_followers: HashMap<String, Vec<remote::RemoteFollower>>,
    /// Subnet allocation (leader), this node's conflist and routes.
    cluster_net: netpart::ClusterNet,
    /// DNS for the registry's services (None: off).
    dns: Option<dns::DnsServer>,
    /// `berthctl exec`s in flight (here or relayed).
    execs: exec::ExecState,
}

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

impl Daemon {
    pub(crate) fn new(cfg: Config) -> Result<Self, DaemonError> {
        let id = node_id(&cfg.name);
        let security = load_security(&cfg)?;
        // Sockets first: a taken port must not leave a data directory behind.
        let poll = Poll::new().map_err(DaemonError::Poll)?;
        let mut udp = UdpSocket::bind(cfg.listen).map_err(|err| DaemonError::Bind {
            what: "UDP (SWIM)",
            addr: cfg.listen.to_string(),
            err,
        })?;
        let mut peer_listener = TcpListener::bind(cfg.listen).map_err(|err| DaemonError::Bind {
            what: "TCP (Raft)",
            addr: cfg.listen.to_string(),
            err,
        })?;
        let mut remote_api = match cfg.api_listen {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|err| DaemonError::Bind {
                what: "TCP (remote API)",
                addr: addr.to_string(),
                err,
            })?),
            None => None,
        };
        let dir = cfg.state_dir();
        let db_path = dir.join("raft.redb");
        let voters: Vec<u64> = if cfg.is_bootstrap_voter() {
            cfg.bootstrap.iter().map(|(n, _)| node_id(n)).collect()
        } else {
            Vec::new()
        };
        if !db_path.exists() && voters.is_empty() && cfg.join.is_none() && cfg.bootstrap.is_empty()
        {
            return Err(DaemonError::NothingToJoin);
        }
        // The topmost directory this start would create, to remove if it fails.
        let mut created = None;
        let mut probe = dir.as_path();
        while !probe.exists() {
            created = Some(probe.to_path_buf());
            match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            }
        }
        let opened = Self::open_node(&cfg, id, &dir, &db_path, &voters)
            .and_then(|node| bind_api(&cfg.socket).map(|api| (node, api)));
        let (node, mut api_listener) = match opened {
            Ok(v) => v,
            Err(e) => {
                if let Some(top) = created {
                    // Leave nothing behind for a node that never started.
                    let _ = std::fs::remove_dir_all(top);
                }
                return Err(e);
            }
        };
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().map_err(DaemonError::Signals)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(DaemonError::Signals)?;
        let reg = poll.registry();
        reg.register(&mut udp, UDP, Interest::READABLE)
            .map_err(DaemonError::Poll)?;
        reg.register(&mut peer_listener, PEER_LISTEN, Interest::READABLE)
            .map_err(DaemonError::Poll)?;
        reg.register(&mut api_listener, API_LISTEN, Interest::READABLE)
            .map_err(DaemonError::Poll)?;
        if let Some(l) = remote_api.as_mut() {
            reg.register(l, REMOTE_API_LISTEN, Interest::READABLE)
                .map_err(DaemonError::Poll)?;
        }
        reg.register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(DaemonError::Poll)?;

        let waker = std::sync::Arc::new(
            mio::Waker::new(poll.registry(), WAKER).map_err(DaemonError::Poll)?,
        );
        let w = std::sync::Arc::clone(&waker);
        let wake: std::sync::Arc<dyn Fn() + Send + Sync> = std::sync::Arc::new(move || {
            let _ = w.wake();
        });
        let dns = Self::bind_dns(&cfg.network, poll.registry())?;
        let cluster_net = netpart::ClusterNet::new(
            cfg.network.clone(),
            cfg.agent.is_some(),
            std::sync::Arc::clone(&wake),
        )
        .map_err(|e| {
            DaemonError::Agent(crate::agent::AgentError::Other(format!(
                "cannot start the cluster network thread: {e}"
            )))
        })?;
        let agent = match cfg.agent.clone() {
            Some(acfg) => Some(crate::agent::Agent::new(acfg, wake, poll.registry())?),
            None => None,
        };
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let ident = Ident {
            addr: cfg.advertise,
            name: cfg.name.clone(),
            meta: cfg.metadata.clone(),
            boot,
        };
        let swim = Swim::new(
            ident,
            &cfg.cluster_id,
            rand::random(),
            security.as_ref().map(|s| s.ring.clone()),
        );
        let mut book = HashMap::new();
        for (name, addr) in &cfg.bootstrap {
            book.insert(node_id(name), (name.clone(), *addr));
        }
        book.insert(id, (cfg.name.clone(), cfg.advertise));
        let now = Instant::now();
        tracing::info!(
            name = %cfg.name, id, cluster = %cfg.cluster_id, listen = %cfg.listen,
            advertise = %cfg.advertise, socket = %cfg.socket.display(),
            "berthd starting"
        );
        Ok(Self {
            id,
            poll,
            udp,
            peer_listener,
            api_listener,
            signals,
            node,
            swim,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            peer_out: HashMap::new(),
            peer_retry: HashMap::new(),
            book,
            pending: HashMap::new(),
            // Request numbers must not repeat across restarts: an entry proposed by a previous
            // run may still commit and must not answer a new request.
            next_req: rand::random::<u64>() >> 2,
            lease_clock: LeaseClock::default(),
            start: now,
            self_lease: SelfLease::None,
            my_services: Default::default(),
            down: HashMap::new(),
            last_leader: 0,
            was_leader: false,
            last_conf_attempt: None,
            last_announce: None,
            last_book_refresh: None,
            next_tick: now + Duration::from_millis(cfg.timing.tick_ms),
            next_housekeeping: now,
            last_warn: None,
            metrics: Metrics::default(),
            unflushed: Vec::new(),
            reports: Vec::new(),
            leader_links_lost: Vec::new(),
            stop_deadline: None,
            security,
            accept_gate: conn::AcceptGate::default(),
            remote_api,
            _waker: waker,
            agent,
            liveness: crate::fence::Liveness::new(crate::agent::sys::boottime_ms()),
            sched: units::SchedState::default(),
            units_dirty: true,
            report_retry: false,
            journal_followers: HashMap::new(),
            remote_reads: HashMap::new(),
            next_remote_id: 1,
            remote_followers: HashMap::new(),
            cluster_net,
            dns,
            execs: exec::ExecState::default(),
            cfg,
        })
    }

    fn open_node(
        cfg: &Config,
        id: u64,
        dir: &std::path::Path,
        db_path: &std::path::Path,
        voters: &[u64],
    ) -> Result<Node, DaemonError> {
        crate::private_files::create_dir(dir)?;
        let store = LogStore::open(Disk::open(db_path)?)?;
        Ok(Node::new(
            &NodeConfig {
                id,
                election_tick: cfg.timing.election_ticks,
                heartbeat_tick: cfg.timing.heartbeat_ticks,
                snapshot_every: cfg.snapshot_every,
                snapshot_dir: Some(dir.to_path_buf()),
            },
            store,
            voters,
        )?)
    }

    /// Runs until SIGTERM/SIGINT.
    pub(crate) fn run(mut self) -> Result<(), DaemonError> {
        let result = self.event_loop();
        self.shutdown();
        result
    }

    fn event_loop(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(256);
        // Replay the log recovered from disk before anything else.
        self.drive()?;
        loop {
            if let Some(deadline) = self.stop_deadline {
                // A leader that is stopping waits (briefly) for its successor to take over.
                if !self.node.is_leader() || Instant::now() >= deadline {
                    return Ok(());
                }
            }
            let now = Instant::now();
            let mut deadline = self.next_tick.min(self.next_housekeeping);
            if let Some(Reverse((t, _, _))) = self.timers.peek() {
                deadline = deadline.min(*t);
            }
            let timeout = deadline.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(DaemonError::Poll(e));
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.on_udp(),
                    PEER_LISTEN => self.accept_peers(),
                    API_LISTEN => self.accept_api(),
                    REMOTE_API_LISTEN => self.accept_remote_api(),
                    SIGNALS => self.on_signal(),
                    WAKER => {
                        if let Some(a) = self.agent.as_mut() {
                            a.on_wake();
                        }
                        self.network_wake();
                        self.route_execs();
                    }
                    t if dns::is_dns_token(t) => self.on_dns(t),
                    t if t.0 >= crate::agent::TOKEN_BASE => {
                        if let Some(a) = self.agent.as_mut() {
                            a.on_ready(t);
                        }
                    }
                    t => self.on_conn(t, ev.is_readable(), ev.is_writable()),
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.tick_raft(now);
            if now >= self.next_housekeeping {
                self.next_housekeeping = now + HOUSEKEEPING;
                self.housekeeping(now);
            }
            self.drive()?;
            self.run_agent();
            self.dns_turn(None);
            self.flush_swim();
        }
    }

    fn tick_raft(&mut self, now: Instant) {
        let tick = Duration::from_millis(self.cfg.timing.tick_ms);
        let mut n = 0;
        while now >= self.next_tick {
            self.node.tick();
            self.next_tick += tick;
            n += 1;
            if n >= 2 {
                // The loop stalled: do not fire a burst of ticks (that would look like a
                // silent leader to this follower); resume ticking from now.
                self.next_tick = now + tick;
                break;
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, TimerSlot(t)))) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.swim.handle_timer(t) {
                tracing::debug!("swim timer: {e}");
            }
        }
        self.flush_swim();
    }

    fn on_signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            tracing::info!(
                signal = info.ssi_signo,
                "signal received: leaving the cluster"
            );
            if self.stop_deadline.is_none() {
                if self.node.transfer_to_best_voter() {
                    tracing::info!("handing leadership over before exiting");
                }
                self.stop_deadline = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn shutdown(&mut self) {
        if let Err(e) = self.swim.leave() {
            tracing::warn!("swim leave: {e}");
        }
        self.flush_swim();
        // Give peer links a moment to drain (a leaving leader's last heartbeats).
        for conn in self.conns.values_mut() {
            if let Conn::Peer(p) = conn {
                let _ = p.wbuf.flush(&mut p.wire.writer(&mut p.stream));
                let _ = p.wire.flush(&mut p.stream);
            }
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        tracing::info!("berthd stopped");
    }

    fn alloc_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// Logs a warning at most once a second (bad input from the network must not flood logs).
    fn warn_limited(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_warn = Some(now);
            tracing::warn!("{msg}");
        } else {
            tracing::debug!("{msg}");
        }
    }

    fn now_ms(&self) -> u64 {
        now_ms(self.start)
    }
}

fn bind_api(path: &std::path::Path) -> Result<UnixListener, DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|err| DaemonError::Path {
            what: "create socket directory",
            path: parent.to_path_buf(),
            err,
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            // A socket left by a previous run; if a live daemon answers on it, refuse.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::Bind {
                    what: "API socket (another berthd is listening)",
                    addr: path.display().to_string(),
                    err: std::io::Error::from(std::io::ErrorKind::AddrInUse),
                });
            }
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path).map_err(|err| DaemonError::Bind {
        what: "API socket",
        addr: path.display().to_string(),
        err,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|err| {
        DaemonError::Path {
            what: "chmod 0600",
            path: path.to_path_buf(),
            err,
        }
    })?;
    Ok(listener)
}

/// Loads the node's credentials, or says loudly that there are none (`--insecure`).
fn load_security(cfg: &Config) -> Result<Option<crate::tls::Security>, DaemonError> {
    match &cfg.security {
        crate::config::Security::Credentials(dir) => {
            let sec = crate::tls::load(dir, &cfg.state_dir(), &cfg.name, &cfg.cluster_id)?;
            tracing::info!(
                credentials = %dir.display(),
                gossip_keys = sec.ring.fingerprints().len(),
                "peers: TLS 1.3 with certificates from the cluster CA; gossip sealed"
            );
            Ok(Some(sec))
        }
        crate::config::Security::Insecure => {
            for _ in 0..3 {
                tracing::error!(
                    "INSECURE: --insecure given: peer links and gossip are NOT authenticated or encrypted; anyone who can reach port {} and knows the cluster ID can join, read the registry and break Raft",
                    cfg.listen.port()
                );
            }
            Ok(None)
        }
    }
}

/// Entry point used by the berthd binary.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    Daemon::new(cfg)?.run()
}
