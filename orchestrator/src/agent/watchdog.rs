//! The node's watchdog: one small process per node (not per container) that kills the
//! agent's containers when the machine's run lease (see [`crate::fence`]) has run out, also
//! when berthd is dead, hung or cut off from the quorum.
//!
//! berthd writes the lease's deadline (CLOCK_BOOTTIME milliseconds) into `RUN_DIR/fence`
//! every time it changes; the watchdog reads it every [`WATCHDOG_POLL`]. Once it has passed,
//! the watchdog runs `berth kill --all ID SIGKILL` for every container in the agent's berth
//! root, as often as it finds one alive. It survives berthd restarts (a restarted berthd
//! finds it through its lock) and exits on its own once berthd is gone, the deadline has
//! passed and no container is left.
//!
//! The deadline is stored with its bitwise complement, so a torn read (the file is
//! rewritten in place while the watchdog reads it) is noticed and read again.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use super::sys::boottime_ms;
use crate::fence::WATCHDOG_POLL;

pub const FENCE_FILE: &str = "fence";
pub const WATCHDOG_LOCK: &str = "watchdog.lock";
pub const BERTHD_LOCK: &str = "berthd.lock";

/// berthd's handle on the deadline file.
#[derive(Debug)]
pub struct DeadlineFile {
    file: File,
    written: u64,
}

fn encode(deadline_ms: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&deadline_ms.to_le_bytes());
    b[8..].copy_from_slice(&(!deadline_ms).to_le_bytes());
    b
}

/// Decodes a deadline; None for a torn or foreign content.
pub fn decode(b: &[u8]) -> Option<u64> {
    let a = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let c = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    (a == !c).then_some(a)
}

impl DeadlineFile {
    /// Opens (creating, mode 0600) `run_dir/fence`. A new berthd keeps the deadline a
    /// previous one wrote, until it confirms a lease of its own.
    pub fn open(run_dir: &Path) -> std::io::Result<DeadlineFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(run_dir.join(FENCE_FILE))?;
        let mut b = [0u8; 16];
        let written = match file.read_at(&mut b, 0) {
            Ok(16) => decode(&b).unwrap_or(0),
            _ => 0,
        };
        Ok(DeadlineFile { file, written })
    }

    /// The deadline on file.
    pub fn deadline(&self) -> u64 {
        self.written
    }

    /// Writes a new deadline (boot-time milliseconds) if it differs.
    pub fn set(&mut self, deadline_ms: u64) -> std::io::Result<()> {
        if deadline_ms == self.written {
            return Ok(());
        }
        self.file.write_all_at(&encode(deadline_ms), 0)?;
        self.written = deadline_ms;
        Ok(())
    }
}

/// Reads the deadline file, retrying a torn read; None if it cannot be read.
pub fn read_deadline(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    for _ in 0..3 {
        let mut b = [0u8; 16];
        if let Ok(16) = f.read_at(&mut b, 0) {
            if let Some(d) = decode(&b) {
                return Some(d);
            }
        }
    }
    None
}

/// Takes an exclusive lock on `path` without waiting; None if someone holds it.
pub fn try_lock(path: &Path) -> std::io::Result<Option<Flock<File>>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// What the watchdog needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub run_dir: PathBuf,
    pub berth: PathBuf,
    pub root: PathBuf,
}

impl Settings {
    /// `berthd watchdog` arguments.
    pub fn args(&self) -> Vec<String> {
        vec![
            "watchdog".into(),
            "--run-dir".into(),
            self.run_dir.display().to_string(),
            "--berth".into(),
            self.berth.display().to_string(),
            "--root".into(),
            self.root.display().to_string(),
        ]
    }

    /// Parses what [`Settings::args`] made (after the `watchdog` word).
    pub fn parse(args: &[String]) -> Result<Settings, String> {
        let mut run_dir = None;
        let mut berth = None;
        let mut root = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("berthd watchdog: {flag} needs a value"))?;
            match flag.as_str() {
                "--run-dir" => run_dir = Some(PathBuf::from(value)),
                "--berth" => berth = Some(PathBuf::from(value)),
                "--root" => root = Some(PathBuf::from(value)),
                other => return Err(format!("berthd watchdog: unknown flag {other}")),
            }
        }
        Ok(Settings {
            run_dir: run_dir.ok_or("berthd watchdog: --run-dir is required")?,
            berth: berth.ok_or("berthd watchdog: --berth is required")?,
            root: root.ok_or("berthd watchdog: --root is required")?,
        })
    }
}

/// Starts the watchdog if none runs for `s.run_dir` (checked through its lock). The child
/// gets a session of its own, so a signal to berthd's process group does not reach it.
pub fn ensure_running(s: &Settings) -> std::io::Result<bool> {
    if try_lock(&s.run_dir.join(WATCHDOG_LOCK))?.is_none() {
        return Ok(false); // one runs
    }
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(s.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()?;
    Ok(true)
}

/// The containers in berth's root that are not stopped, as `berth list` reports them.
fn live_containers(s: &Settings) -> Result<Vec<String>, String> {
    let out = Command::new(&s.berth)
        .arg("--root")
        .arg(&s.root)
        .args(["list", "--format", "json"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("running {} list: {e}", s.berth.display()))?;
    if !out.status.success() {
        return Err(format!("{} list failed: {}", s.berth.display(), out.status));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} list output: {e}", s.berth.display()))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] != "stopped")
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// `berthd watchdog ...`: runs until berthd is gone and nothing is left to kill.
pub fn main(args: &[String]) -> i32 {
    let s = match Settings::parse(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let _lock = match try_lock(&s.run_dir.join(WATCHDOG_LOCK)) {
        Ok(Some(l)) => l,
        Ok(None) => return 0, // another watchdog runs
        Err(e) => {
            eprintln!("berthd watchdog: lock in {}: {e}", s.run_dir.display());
            return 1;
        }
    };
    let fence = s.run_dir.join(FENCE_FILE);
    let mut last_complaint = 0;
    loop {
        std::thread::sleep(WATCHDOG_POLL);
        let now = boottime_ms();
        // An unreadable deadline counts as expired: fail safe.
        let expired = read_deadline(&fence).is_none_or(|d| now >= d);
        if !expired {
            continue;
        }
        let live = match live_containers(&s) {
            Ok(l) => l,
            Err(e) => {
                if now.saturating_sub(last_complaint) > 10_000 {
                    eprintln!("berthd watchdog: {e}");
                    last_complaint = now;
                }
                continue;
            }
        };
        for id in &live {
            let _ = Command::new(&s.berth)
                .arg("--root")
                .arg(&s.root)
                .args(["kill", "--all", id, "SIGKILL"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let berthd_gone = matches!(try_lock(&s.run_dir.join(BERTHD_LOCK)), Ok(Some(_)));
        if live.is_empty() && berthd_gone {
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_trip_and_torn_content_is_refused() {
        let d = 123_456_789;
        assert_eq!(decode(&encode(d)), Some(d));
        let mut torn = encode(d);
        torn[3] ^= 1;
        assert_eq!(decode(&torn), None);
        assert_eq!(decode(&[0u8; 16]), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = DeadlineFile::open(dir.path()).expect("open");
        assert_eq!(f.deadline(), 0);
        f.set(d).expect("set");
        assert_eq!(read_deadline(&dir.path().join(FENCE_FILE)), Some(d));
        // A restarted berthd sees the deadline its predecessor wrote.
        assert_eq!(
            DeadlineFile::open(dir.path()).expect("reopen").deadline(),
            d
        );
    }

    #[test]
    fn settings_round_trip_and_locks_exclude() {
        let s = Settings {
            run_dir: "/run/berth/agent".into(),
            berth: "/usr/bin/berth".into(),
            root: "/run/berth/agent/containers".into(),
        };
        let args = s.args();
        let back = Settings::parse(&args[1..]).expect("parse");
        assert_eq!(back.root, s.root);
        assert!(Settings::parse(&["--run-dir".into()]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("l");
        let held = try_lock(&p).expect("lock");
        assert!(held.is_some());
        assert!(try_lock(&p).expect("lock").is_none());
        drop(held);
        assert!(try_lock(&p).expect("lock").is_some());
    }
}
