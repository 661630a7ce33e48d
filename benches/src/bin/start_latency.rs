//! Container start latency: berth against runc and crun on the same machine, in one run.
//!
//! Run as root, against berth as it ships (static, `scripts/build-release`):
//! `cargo run --release -p berth-benches --bin start_latency -- --berth "$(./scripts/build-release)"
//! [--trials 50 --warmup 5 --only berth,runc,crun]`. Without --berth, the `berth` next to this
//! binary (target/release) is measured.
//!
//! Runtimes take turns trial by trial (interleaved), so a load change on a shared machine
//! hits them alike. Measured, per runtime, wall time from spawning the runtime's command to its exit, and
//! the peak RSS wait4(2) reports for that command (the largest of the runtime process and
//! the descendants it reaped; each such command is forked, see `measure`; the burst's are
//! spawned as std spawns them, posix_spawn, as an engine spawns its runtime):
//! The runtimes' state roots (`--root`) are on a tmpfs the bench mounts, as their
//! defaults under /run are on a usual host ([`StateTmpfs`]); the bundles are not.
//!
//! - `run` of /bin/true with pid, network, ipc, uts, mount and cgroup namespaces;
//! - `create`, `start` and `delete` timed apart;
//! - `exec` of /bin/true in a running container;
//! - `run` of /bin/true under the 315-syscall Docker-style seccomp profile from
//!   runtime/src/seccomp/testdata/docker-default.json (skipped if that file is absent).
//!
//! Baselines for context: `unshare -m -u -i -n -p -C -f --mount-proc /bin/true` (the bare
//! cost of six namespaces and an exec), and the private-mount-namespace prologue that crun
//! needs on this hybrid-cgroup host (crun 1.8 refuses a host where the controller-less
//! cgroup2 is mounted at /sys/fs/cgroup/unified, so crun runs in a private mount namespace
//! with it unmounted; that prologue is done in the forked child before exec, no extra
//! process, and its cost is included in crun's figures and shown on its own line).
//!
//! Burst (`--burst N`, default 200; 0 skips it): N containers running `sleep`, created
//! and started by `--burst-callers` (default 8) parallel callers, then deleted, for
//! `--burst-rounds` (default 3) rounds per runtime in turn: containers per second (the
//! median round) and the create+start time of each container (p50, p99); see
//! start_latency/burst.rs.
//!
//! `--cgroup2-only` measures every runtime as on a cgroup-v2-only host, the common case
//! in the field: the bench enters a private mount namespace whose /sys/fs/cgroup is the
//! unified hierarchy alone (the v1 mounts detached) once, before anything is measured,
//! and every runtime runs in it, so all three take their v2 paths (crun then needs
//! nothing else). Not per command: mounting cgroup2 waits now and then (6-33 ms here)
//! for the kernel's cgroup work left by the command before, which a v2 host never pays.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_benches::shell::first_line;
use serde_json::{json, Value};

#[path = "start_latency/burst.rs"]
mod burst;

const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Where the runtimes keep their state and the bench its per-command files: a tmpfs
/// (see [`StateTmpfs`]). Set once in `main`.
static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A tmpfs for the runtimes' state roots (`--root`), pid files and the bench's stderr
/// files, unmounted when dropped. Their defaults, /run/runc, /run/crun and /run/berth,
/// are on a tmpfs on any usual host; on ext4 (this VM's /tmp and /run), each create
/// after many deletes pays the inode allocator's scan of recently deleted inodes, which
/// took about a sixth of the CPU time of a burst, runtime and bench alike.
struct StateTmpfs(PathBuf);

impl StateTmpfs {
    fn mount(dir: &Path) -> Result<Self> {
        use nix::mount::{mount, MsFlags};
        fs::create_dir_all(dir)?;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .with_context(|| format!("mounting a tmpfs at {}", dir.display()))?;
        Ok(StateTmpfs(dir.to_path_buf()))
    }
}

impl Drop for StateTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[derive(Clone)]
struct Runtime {
    name: &'static str,
    bin: PathBuf,
    /// What runs in the forked child before the runtime is exec'd.
    prologue: Prologue,
    root: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prologue {
    None,
    /// A private mount namespace without the cgroup2 mount (crun on hybrid hosts).
    NoUnified,
}

struct Sample {
    wall: Duration,
    maxrss_kib: i64,
}

/// How a measured command is spawned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spawn {
    /// Forked, for its own peak RSS (see [`measure`]).
    Rss,
    /// However std spawns it (posix_spawn's vfork unless there is a prologue), as an
    /// engine spawns its runtime; its ru_maxrss is not its own. For the burst.
    TimeOnly,
}

/// Spawns `cmd` (optionally after the private-mount prologue) and waits for it with
/// wait4, returning its wall time and peak RSS; fails with its stderr if it fails.
fn measure(cmd: &mut Command, prologue: Prologue, spawn: Spawn) -> Result<Sample> {
    // stderr to a file, not a pipe: a detached container inherits it and would hold a
    // pipe open forever.
    let mut err_file = match STATE_DIR.get() {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .context("temp file for stderr")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file.try_clone()?);
    // SAFETY: only async-signal-safe syscalls (unshare, mount, umount2) run in the
    // forked child before exec; they change nothing in the parent.
    unsafe {
        match prologue {
            // A pre_exec hook makes std fork instead of posix_spawn's vfork: a vfork
            // child execs from this process's memory, and exec records that memory's
            // peak RSS as the child's own (ru_maxrss), which hid every runtime's real
            // figure under this bench's. Forked, the child starts with a copy of only
            // this process's anonymous pages (about 1.4 MiB), as with the prologues.
            Prologue::None if spawn == Spawn::Rss => {
                cmd.pre_exec(|| Ok(()));
            }
            Prologue::None => {}
            // crun on a hybrid host: no cgroup2 mount at all.
            Prologue::NoUnified => {
                cmd.pre_exec(|| private_mounts(c"/sys/fs/cgroup/unified", None));
            }
        }
    }
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct that wait4 fills in; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child with valid pointers to locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc != pid {
        bail!("wait4 {pid}: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        use std::io::{Read, Seek};
        let mut stderr = String::new();
        let _ = err_file
            .rewind()
            .and_then(|_| err_file.read_to_string(&mut stderr));
        bail!(
            "{cmd:?} failed (wait status {status:#x}): {}",
            stderr.trim()
        );
    }
    Ok(Sample {
        wall,
        maxrss_kib: usage.ru_maxrss,
    })
}

/// A private mount namespace with `detach` (and everything under it) unmounted and,
/// when `cgroup2_at` is set, the cgroup2 hierarchy mounted there instead. Runs in the
/// forked child before exec, or (`--cgroup2-only`) in the bench itself at its start.
fn private_mounts(detach: &CStr, cgroup2_at: Option<&CStr>) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain syscalls on NUL-terminated strings that outlive them.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(err());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err());
        }
        if libc::umount2(detach.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(err());
        }
        if let Some(at) = cgroup2_at {
            if libc::mount(
                c"cgroup2".as_ptr(),
                at.as_ptr(),
                c"cgroup2".as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
        }
    }
    Ok(())
}

impl Runtime {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    fn measure(&self, args: &[&str]) -> Result<Sample> {
        self.measure_as(args, Spawn::Rss)
    }

    fn measure_as(&self, args: &[&str], spawn: Spawn) -> Result<Sample> {
        measure(&mut self.command(args), self.prologue, spawn)
            .with_context(|| format!("{} {}", self.name, args.join(" ")))
    }

    fn quiet(&self, args: &[&str]) {
        let mut cmd = self.command(args);
        let _ = measure(&mut cmd, self.prologue, Spawn::TimeOnly);
    }
}

/// Running containers that are force-deleted when this is dropped.
struct Sleepers(Vec<(Runtime, String)>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for (rt, id) in &self.0 {
            rt.quiet(&["delete", "--force", id]);
        }
    }
}

/// Waits until `pid` has exited (gone or a zombie) so `delete` finds it stopped.
fn wait_exit(pid: i32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return Ok(()),
            Ok(stat) => {
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                if state == Some(Some('Z')) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("container init {pid} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

struct Stats {
    median: f64,
    p90: f64,
    p99: f64,
    peak_rss_mib: f64,
}

fn stats(samples: &[Sample]) -> Stats {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.wall.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let idx = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(idx).copied().unwrap_or(f64::NAN)
    };
    let peak = samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
    Stats {
        median: pick(0.5),
        p90: pick(0.9),
        p99: pick(0.99),
        peak_rss_mib: peak as f64 / 1024.0,
    }
}

struct Options {
    trials: usize,
    warmup: usize,
    berth: PathBuf,
    only: Vec<String>,
    cgroup2_only: bool,
    burst: usize,
    burst_callers: usize,
    burst_rounds: usize,
}

fn parse_options() -> Result<Options> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut opts = Options {
        trials: 50,
        warmup: 5,
        berth: exe.with_file_name("berth"),
        only: vec!["berth".into(), "runc".into(), "crun".into()],
        cgroup2_only: false,
        burst: 200,
        burst_callers: 8,
        burst_rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--trials" => opts.trials = value()?.parse().context("--trials")?,
            "--warmup" => opts.warmup = value()?.parse().context("--warmup")?,
            "--berth" => opts.berth = PathBuf::from(value()?),
            "--only" => opts.only = value()?.split(',').map(String::from).collect(),
            "--cgroup2-only" => opts.cgroup2_only = true,
            "--burst" => opts.burst = value()?.parse().context("--burst")?,
            "--burst-callers" => opts.burst_callers = value()?.parse().context("--burst-callers")?,
            "--burst-rounds" => opts.burst_rounds = value()?.parse().context("--burst-rounds")?,
            other => bail!("unknown argument {other:?} (known: --trials N --warmup N --berth PATH --only a,b,c --cgroup2-only --burst N --burst-callers N --burst-rounds N)"),
        }
    }
    if opts.trials == 0 {
        bail!("--trials must be at least 1");
    }
    if opts.burst > 0 && (opts.burst_callers == 0 || opts.burst_rounds == 0) {
        bail!("--burst-callers and --burst-rounds must be at least 1");
    }
    Ok(opts)
}

/// Writes a bundle (busybox rootfs, config.json from `runc spec` or berth's) at `dir`.
fn make_bundle(dir: &Path, spec_from: &Path, seccomp: Option<&Value>) -> Result<()> {
    berth_tests::runtime::make_busybox_rootfs(&dir.join("rootfs"));
    let out = Command::new(spec_from)
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .context("spec")?;
    if !out.status.success() {
        bail!(
            "{} spec: {}",
            spec_from.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/true"]);
    config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
        {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
    ]);
    if let Some(profile) = seccomp {
        config["linux"]["seccomp"] = profile.clone();
    }
    fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

struct Table {
    title: String,
    rows: Vec<(String, Stats)>,
}

/// One table; ratios are against the `reference` runtime's row, or, for tables without
/// that row (the baselines), against `fallback` (the reference's `run` median).
fn render(table: &Table, reference: &str, fallback: Option<f64>) -> String {
    let mut out = format!("\n### {}\n\n| runtime | median ms | p90 ms | p99 ms | vs {reference} | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|\n", table.title);
    let base = table
        .rows
        .iter()
        .find(|(n, _)| n == reference)
        .map(|(_, s)| s.median)
        .or(fallback);
    for (name, s) in &table.rows {
        let ratio = base
            .map(|b| format!("{:.2}x", s.median / b))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| {name} | {:.2} | {:.2} | {:.2} | {ratio} | {:.1} |",
            s.median, s.p90, s.p99, s.peak_rss_mib
        );
    }
    out
}

/// Samples per runtime: one list per phase of a trial.
type Samples = Vec<(String, Vec<Vec<Sample>>)>;

/// Runs `trial` for every runtime in turn, trial after trial, so that load changes on a
/// shared machine hit every runtime alike. The first `warmup` rounds are discarded. A
/// runtime whose trial fails is dropped from this section with a note.
fn interleave(
    runtimes: &[Runtime],
    opts: &Options,
    section: &str,
    mut trial: impl FnMut(&Runtime) -> Result<Vec<Sample>>,
) -> Samples {
    let mut out: Samples = runtimes
        .iter()
        .map(|r| (r.name.to_string(), Vec::new()))
        .collect();
    let mut failed = vec![false; runtimes.len()];
    for round in 0..opts.warmup + opts.trials {
        for (i, rt) in runtimes.iter().enumerate() {
            if failed[i] {
                continue;
            }
            match trial(rt) {
                Ok(phases) => {
                    if round < opts.warmup {
                        continue;
                    }
                    let slots = &mut out[i].1;
                    slots.resize_with(phases.len(), Vec::new);
                    for (slot, sample) in slots.iter_mut().zip(phases) {
                        slot.push(sample);
                    }
                }
                Err(e) => {
                    eprintln!("note: {section} with {} failed, left out: {e:#}", rt.name);
                    failed[i] = true;
                }
            }
        }
    }
    out.into_iter()
        .zip(failed)
        .filter(|(_, f)| !f)
        .map(|(o, _)| o)
        .collect()
}

fn table(title: &str, samples: &Samples, phase: usize) -> Table {
    Table {
        title: title.to_string(),
        rows: samples
            .iter()
            .filter_map(|(name, phases)| phases.get(phase).map(|s| (name.clone(), stats(s))))
            .collect(),
    }
}

fn main() -> Result<()> {
    let opts = parse_options()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("start_latency must run as root (it creates containers)");
    }
    if opts.cgroup2_only {
        // Before any thread, tmpfs or runtime exists: they all live in this namespace.
        private_mounts(c"/sys/fs/cgroup", Some(c"/sys/fs/cgroup"))
            .context("--cgroup2-only: a private mount namespace with cgroup2 at /sys/fs/cgroup")?;
    }
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let state_dir = work.path().join("run");
    let _state_tmpfs = StateTmpfs::mount(&state_dir)?;
    let _ = STATE_DIR.set(state_dir.clone());
    let hybrid = Path::new(UNIFIED).join("cgroup.controllers").exists();

    let mut runtimes = Vec::new();
    for name in &opts.only {
        let (name, bin, private): (&'static str, Option<PathBuf>, bool) = match name.as_str() {
            "berth" => (
                "berth",
                Some(opts.berth.clone()).filter(|p| p.is_file()),
                false,
            ),
            "runc" => ("runc", berth_benches::shell::which("runc").ok(), false),
            "crun" => ("crun", berth_benches::shell::which("crun").ok(), hybrid),
            other => bail!("unknown runtime {other:?}"),
        };
        match bin {
            Some(bin) => {
                let prologue = if private && !opts.cgroup2_only {
                    Prologue::NoUnified
                } else {
                    Prologue::None
                };
                runtimes.push(Runtime {
                    name,
                    bin,
                    prologue,
                    root: state_dir.join(format!("root-{name}")),
                })
            }
            None if name == "berth" => eprintln!(
                "note: berth not found at {} (build it: ./scripts/build-release, and pass --berth PATH)",
                opts.berth.display()
            ),
            None => eprintln!("note: {name} not installed (apt-get install -y {name}); skipped"),
        }
    }
    // One config for every runtime: runc's default spec (ociVersion 1.0.2-dev, which crun
    // 1.8 accepts), else the first runtime's.
    let spec_from = berth_benches::shell::which("runc")
        .ok()
        .or_else(|| runtimes.first().map(|r| r.bin.clone()))
        .context("no runtime to measure")?;

    let bundle = work.path().join("bundle");
    make_bundle(&bundle, &spec_from, None)?;
    let profile_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/src/seccomp/testdata/docker-default.json");
    let profile: Option<Value> = match fs::read_to_string(&profile_path) {
        Ok(text) => {
            Some(serde_json::from_str(&text).with_context(|| profile_path.display().to_string())?)
        }
        Err(_) => None,
    };
    let seccomp_bundle = work.path().join("bundle-seccomp");
    if let Some(p) = &profile {
        make_bundle(&seccomp_bundle, &spec_from, Some(p))?;
    }
    let bundle_s = bundle.to_str().context("utf-8 path")?.to_string();
    let seccomp_s = seccomp_bundle.to_str().context("utf-8 path")?.to_string();

    let mut tables = Vec::new();
    let total = opts.warmup + opts.trials;
    let mut counter = 0u64;
    let mut next_id = |prefix: &str| {
        counter += 1;
        format!("bench-{prefix}-{}-{counter}", std::process::id())
    };

    eprintln!(
        "measuring {} (trials {}, warm-ups {})...",
        runtimes
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", "),
        opts.trials,
        opts.warmup
    );
    // 1. run /bin/true
    let run = interleave(&runtimes, &opts, "run", |rt| {
        let id = next_id("run");
        Ok(vec![rt.measure(&["run", "--bundle", &bundle_s, &id])?])
    });
    tables.push(table(
        "`run` /bin/true, six namespaces incl. network",
        &run,
        0,
    ));

    // 2. create / start / delete apart
    let csd = interleave(&runtimes, &opts, "create/start/delete", |rt| {
        let id = next_id("csd");
        let pid_file = state_dir.join(format!("{id}.pid"));
        let pid_s = pid_file.to_str().context("utf-8")?.to_string();
        let c = rt.measure(&["create", "--pid-file", &pid_s, "--bundle", &bundle_s, &id])?;
        let pid: i32 = fs::read_to_string(&pid_file)?
            .trim()
            .parse()
            .context("pid file")?;
        let s = rt.measure(&["start", &id])?;
        wait_exit(pid)?;
        let d = rt.measure(&["delete", &id])?;
        Ok(vec![c, s, d])
    });
    for (phase, name) in ["create", "start", "delete"].iter().enumerate() {
        tables.push(table(&format!("`{name}` alone (/bin/true)"), &csd, phase));
    }

    // 3. exec /bin/true into a running container (one per runtime, set up first)
    let sleeper = work.path().join("bundle-sleep");
    make_bundle(&sleeper, &spec_from, None)?;
    let path = sleeper.join("config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    config["process"]["args"] = json!(["sleep", "100000"]);
    fs::write(&path, config.to_string())?;
    let sleeper_s = sleeper.to_str().context("utf-8")?.to_string();
    // Deleted when this goes out of scope, even if the bench fails on the way.
    let mut sleepers = Sleepers(Vec::new());
    for rt in &runtimes {
        let id = next_id("exec");
        match rt.measure(&["run", "-d", "--bundle", &sleeper_s, &id]) {
            Ok(_) => sleepers.0.push((rt.clone(), id)),
            Err(e) => eprintln!("note: exec with {} left out: {e:#}", rt.name),
        }
    }
    let exec = interleave(&runtimes, &opts, "exec", |rt| {
        let id = sleepers
            .0
            .iter()
            .find(|(r, _)| r.name == rt.name)
            .map(|(_, id)| id.clone())
            .context("no running container for exec")?;
        Ok(vec![rt.measure(&["exec", &id, "/bin/true"])?])
    });
    drop(sleepers);
    tables.push(table("`exec` /bin/true into a running container", &exec, 0));

    // 3b. burst starts (sleeping containers from the same bundle)
    let bursts = if opts.burst > 0 {
        eprintln!(
            "burst: {} containers by {} callers, {} rounds...",
            opts.burst, opts.burst_callers, opts.burst_rounds
        );
        burst::run(
            &runtimes,
            &sleeper_s,
            opts.burst,
            opts.burst_callers,
            opts.burst_rounds,
        )
    } else {
        Vec::new()
    };

    // 4. run under the Docker-style seccomp profile
    if let Some(p) = &profile {
        let names: usize = p["syscalls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["names"].as_array())
                    .map(Vec::len)
                    .sum()
            })
            .unwrap_or(0);
        let sec = interleave(&runtimes, &opts, "seccomp run", |rt| {
            let id = next_id("sec");
            Ok(vec![rt.measure(&["run", "--bundle", &seccomp_s, &id])?])
        });
        tables.push(table(
            &format!("`run` /bin/true with a {names}-name seccomp profile"),
            &sec,
            0,
        ));
    } else {
        eprintln!(
            "note: {} not found; seccomp section skipped",
            profile_path.display()
        );
    }

    // 5. baselines
    let mut t = Table {
        title: "baselines (no runtime; ratio against the reference's `run`)".into(),
        rows: vec![],
    };
    let mut samples = Vec::new();
    for i in 0..total {
        let s = measure(
            Command::new("unshare").args([
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-C",
                "-f",
                "--mount-proc",
                "/bin/true",
            ]),
            Prologue::None,
            Spawn::Rss,
        )?;
        if i >= opts.warmup {
            samples.push(s);
        }
    }
    t.rows.push((
        "unshare -m -u -i -n -p -C -f --mount-proc /bin/true".into(),
        stats(&samples),
    ));
    let prologue = if runtimes.iter().any(|r| r.prologue == Prologue::NoUnified) {
        Some((
            Prologue::NoUnified,
            "crun's prologue (private mount ns, umount unified) + /bin/true",
        ))
    } else {
        None
    };
    if let Some((prologue, label)) = prologue {
        let mut samples = Vec::new();
        for i in 0..total {
            let s = measure(&mut Command::new("/bin/true"), prologue, Spawn::Rss)?;
            if i >= opts.warmup {
                samples.push(s);
            }
        }
        t.rows.push((label.into(), stats(&samples)));
    }
    tables.push(t);

    // Report
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("## Container start latency\n");
    println!(
        "command: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "trials: {} after {} warm-ups; wall time per command; peak RSS from wait4(2)",
        opts.trials, opts.warmup
    );
    println!("kernel: {}", first_line(Command::new("uname").arg("-r")));
    println!("cpu: {cpu} ({cores} cores)");
    println!("state: every runtime's --root, the pid files and the bench's stderr files on a tmpfs, as /run is on a usual host; bundles under {}", std::env::temp_dir().display());
    println!(
        "cgroups: {}",
        if opts.cgroup2_only {
            "cgroup2 alone at /sys/fs/cgroup (--cgroup2-only, below)"
        } else if hybrid {
            "hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified)"
        } else {
            "v1 or v2"
        }
    );
    for rt in &runtimes {
        println!(
            "{}: {} ({})",
            rt.name,
            first_line(Command::new(&rt.bin).arg("--version")),
            rt.bin.display()
        );
    }
    if opts.cgroup2_only {
        println!("--cgroup2-only: the bench entered a private mount namespace whose /sys/fs/cgroup is the cgroup2 hierarchy alone (v1 mounts detached) before measuring, and every runtime runs in it, as on a v2-only host (the controllers stay bound to v1 here: no limits are set)");
    } else if runtimes.iter().any(|r| r.prologue == Prologue::NoUnified) {
        println!("crun runs in a private mount namespace with {UNIFIED} unmounted (crun 1.8 refuses hybrid hosts); that prologue is included in its times");
    }
    let reference = if runtimes.iter().any(|r| r.name == "crun") {
        "crun"
    } else {
        "runc"
    };
    let reference_run = tables
        .first()
        .and_then(|t| t.rows.iter().find(|(n, _)| n == reference))
        .map(|(_, s)| s.median);
    for table in &tables {
        print!("{}", render(table, reference, reference_run));
    }
    if !bursts.is_empty() {
        print!(
            "{}",
            burst::render(&bursts, opts.burst, opts.burst_callers, reference)
        );
    }
    Ok(())
}
