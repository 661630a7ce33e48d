//! Runtime bundles from images: config.json generated from the image config
//! as `umoci unpack` does (Env, Entrypoint + Cmd, WorkingDir, ExposedPorts and
//! Labels as annotations) on top of `runc spec`'s defaults (mounts, namespaces,
//! capabilities, masked and read-only paths). A User that names a user or
//! group (not numbers) is resolved through the image's /etc/passwd and
//! /etc/group, read inside the rootfs only as small regular files reached
//! without symlinks; numeric users read nothing. Generation is pure; only
//! [`read_user_db`] and [`write_config`] touch the filesystem.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;
use serde_json::{json, Value};

use crate::manifest::ImageConfig;

/// Errors of bundle generation.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("user `{}` not found in the image's /etc/passwd", crate::escape::text(.0))]
    UnknownUser(String),
    #[error("group `{}` not found in the image's /etc/group", crate::escape::text(.0))]
    UnknownGroup(String),
    #[error("invalid user `{}`: want user, uid, user:group or uid:gid", crate::escape::text(.0))]
    BadUser(String),
    #[error("the image has no Entrypoint or Cmd; give a command")]
    NoCommand,
    #[error("invalid environment variable `{}`: want KEY=VALUE", crate::escape::text(.0))]
    BadEnv(String),
    #[error("working directory `{}` must be absolute", crate::escape::text(.0))]
    BadCwd(String),
    #[error("invalid memory size `{0}`: want a number with an optional b, k, m, g or t suffix (e.g. 64m)")]
    BadMemory(String),
    #[error("{path} is {what}: berth reads only a regular file there")]
    NotRegular { path: String, what: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooBig { path: String, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Network setting of `image run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// A new, empty network namespace (only loopback).
    None,
    /// The host's network namespace (no netns entry).
    Host,
}

/// Overrides from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Overrides {
    /// Replaces the image's Cmd (the Entrypoint stays).
    pub cmd: Option<Vec<String>>,
    /// KEY=VALUE, added or replacing the image's.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// Bytes.
    pub memory: Option<i64>,
    pub net: Net,
    pub hostname: String,
    pub terminal: bool,
    /// Used when the image has no Entrypoint/Cmd and none is given (umoci
    /// unpack writes runc spec's `["sh"]`); empty makes that an error.
    pub fallback_args: Vec<String>,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            cmd: None,
            env: Vec::new(),
            cwd: None,
            user: None,
            memory: None,
            net: Net::None,
            hostname: "berth".into(),
            terminal: false,
            fallback_args: Vec::new(),
        }
    }
}

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// A group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The image's users and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The process identity a User string resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Resolves `user`, `uid`, `user:group`, `uid:gid` (empty = root) like
/// runc's GetExecUser: a numeric uid missing from passwd is allowed (gid
/// 0), a name must exist; supplementary groups come from /etc/group.
pub fn resolve_user(spec: &str, db: &UserDb) -> Result<ExecUser, BundleError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() && g.is_some() || g == Some("") {
        return Err(BundleError::BadUser(spec.to_string()));
    }
    let entry = if u.is_empty() {
        db.users.iter().find(|e| e.uid == 0)
    } else if let Ok(uid) = u.parse::<u32>() {
        db.users.iter().find(|e| e.uid == uid)
    } else {
        Some(
            db.users
                .iter()
                .find(|e| e.name == u)
                .ok_or_else(|| BundleError::UnknownUser(u.to_string()))?,
        )
    };
    let uid = match (entry, u.parse::<u32>()) {
        (Some(e), _) => e.uid,
        (None, Ok(n)) => n,
        (None, Err(_)) => 0,
    };
    let mut gid = entry.map_or(0, |e| e.gid);
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                db.groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| BundleError::UnknownGroup(g.to_string()))?
                    .gid
            }
        };
    }
    let mut additional = Vec::new();
    if let Some(e) = entry {
        for grp in &db.groups {
            if grp.members.iter().any(|m| m == &e.name)
                && grp.gid != gid
                && !additional.contains(&grp.gid)
            {
                additional.push(grp.gid);
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids: additional,
        home: entry.map_or_else(
            || if uid == 0 { "/root" } else { "/" }.to_string(),
            |e| {
                if e.home.is_empty() {
                    "/".into()
                } else {
                    e.home.clone()
                }
            },
        ),
    })
}

/// Parses runc/docker-style sizes: `1024`, `512k`, `64m`, `1g`, `64MB`.
pub fn parse_memory(s: &str) -> Result<i64, BundleError> {
    let bad = || BundleError::BadMemory(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n <= 0.0 {
        return Err(bad());
    }
    let v = n * mult as f64;
    if v >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as i64)
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// The mounts runc's default spec starts with, before /sys (which differs between a
/// rootless spec and the others). Shared with `berth spec`.
pub fn base_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ]
}

/// /sys as a non-rootless default spec mounts it.
pub fn sysfs_mount() -> Value {
    json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
           "options": ["nosuid", "noexec", "nodev", "ro"]})
}

/// runc's default maskedPaths and readonlyPaths. Shared with `berth spec`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn merge_env(image: &[String], extra: &[String]) -> Result<Vec<String>, BundleError> {
    let mut out: Vec<String> = image.to_vec();
    for e in extra {
        let Some((k, _)) = e.split_once('=') else {
            return Err(BundleError::BadEnv(e.clone()));
        };
        if k.is_empty() {
            return Err(BundleError::BadEnv(e.clone()));
        }
        out.retain(|x| x.split_once('=').map_or(x.as_str(), |(xk, _)| xk) != k);
        out.push(e.clone());
    }
    Ok(out)
}

/// The runtime config for an image with overrides (pure).
pub fn generate(
    config: &ImageConfig,
    users: &UserDb,
    ov: &Overrides,
) -> Result<Value, BundleError> {
    let exec = config.config.clone().unwrap_or_default();
    let mut args: Vec<String> = exec.entrypoint.clone().unwrap_or_default();
    match &ov.cmd {
        Some(cmd) => args.extend(cmd.iter().cloned()),
        None => args.extend(exec.cmd.clone().unwrap_or_default()),
    }
    if args.is_empty() {
        if ov.fallback_args.is_empty() {
            return Err(BundleError::NoCommand);
        }
        args = ov.fallback_args.clone();
    }
    let user = resolve_user(&user_spec(config, ov), users)?;
    let mut env = merge_env(exec.env.as_deref().unwrap_or(&[]), &ov.env)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if ov.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = ov
        .cwd
        .clone()
        .or(exec.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(BundleError::BadCwd(cwd));
    }
    let mut annotations = BTreeMap::new();
    if let Some(labels) = &exec.labels {
        for (k, v) in labels {
            annotations.insert(k.clone(), v.clone());
        }
    }
    if let Some(ports) = &exec.exposed_ports {
        annotations.insert(
            "org.opencontainers.image.exposedPorts".to_string(),
            ports.keys().cloned().collect::<Vec<_>>().join(","),
        );
    }
    annotations.insert("org.opencontainers.image.os".into(), config.os.clone());
    annotations.insert(
        "org.opencontainers.image.architecture".into(),
        config.architecture.clone(),
    );
    if let Some(a) = &config.author {
        annotations.insert("org.opencontainers.image.author".into(), a.clone());
    }
    if let Some(c) = &config.created {
        annotations.insert("org.opencontainers.image.created".into(), c.clone());
    }
    if let Some(s) = &exec.stop_signal {
        annotations.insert("org.opencontainers.image.stopSignal".into(), s.clone());
    }
    let mut namespaces = vec![json!({"type": "pid"})];
    if ov.net == Net::None {
        namespaces.push(json!({"type": "network"}));
    }
    namespaces.extend([
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ]);
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(m) = ov.memory {
        resources["memory"] = json!({ "limit": m });
    }
    let mut user_json = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    let mut mounts = base_mounts();
    mounts.push(sysfs_mount());
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": ov.terminal,
            "user": user_json,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": ov.hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

/// The largest /etc/passwd or /etc/group read from an image.
const MAX_DB: u64 = 4 << 20;

/// Whether resolving `spec` (`user`, `uid`, `user:group`, `uid:gid`) needs
/// the image's /etc/passwd and /etc/group: only when it names a user or a
/// group that is not a number. Numeric and empty users are taken as they
/// are (gid 0 unless given, no supplementary groups, HOME `/root` for uid 0
/// and `/` otherwise), so most images never have those files read at all.
pub fn needs_user_db(spec: &str) -> bool {
    spec.split(':')
        .any(|part| !part.is_empty() && part.parse::<u32>().is_err())
}

/// The user a bundle's process runs as: the override, else the image's.
pub fn user_spec(config: &ImageConfig, ov: &Overrides) -> String {
    ov.user
        .clone()
        .or_else(|| config.config.as_ref().and_then(|c| c.user.clone()))
        .unwrap_or_default()
}

/// Reads `rel` (a path inside the image) when it is a regular file of at
/// most [`MAX_DB`] bytes, reached without any symlink; Ok(None) when it is
/// missing. The file is first opened with O_PATH (which opens no device and
/// never blocks on a FIFO) and checked with fstat; only then is that very
/// inode opened for reading, through its /proc/self/fd link.
fn read_small_file_in_root(rootfs: &Path, rel: &str) -> Result<Option<Vec<u8>>, BundleError> {
    let shown = format!("the image's /{rel}");
    let io_err = |source| BundleError::Io {
        path: shown.clone(),
        source,
    };
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| BundleError::Io {
        path: rootfs.display().to_string(),
        source: e.into(),
    })?;
    let fd = match crate::sys::open_in_root(root.as_fd(), Path::new(rel), OFlag::O_PATH, true) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(BundleError::NotRegular {
                path: shown,
                what: "a symlink (or reached through one)",
            })
        }
        Err(e) => return Err(io_err(e.into())),
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io_err(e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(BundleError::NotRegular {
            path: shown,
            what: "not a regular file",
        });
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_DB {
        return Err(BundleError::TooBig {
            path: shown,
            limit: MAX_DB,
        });
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&proc_path)
        .map_err(io_err)?;
    let mut data = Vec::new();
    file.take(MAX_DB + 1)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    if data.len() as u64 > MAX_DB {
        return Err(BundleError::TooBig {
            path: shown,
            limit: MAX_DB,
        });
    }
    Ok(Some(data))
}

/// Reads the image's /etc/passwd and /etc/group from `rootfs` when `spec`
/// needs them ([`needs_user_db`]); an empty database otherwise. Each file
/// must be a regular file of at most 4 MiB reached without symlinks.
pub fn read_user_db(rootfs: &Path, spec: &str) -> Result<UserDb, BundleError> {
    if !needs_user_db(spec) {
        return Ok(UserDb::default());
    }
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    Ok(UserDb {
        users: read_small_file_in_root(rootfs, "etc/passwd")?
            .map(|b| parse_passwd(&text(b)))
            .unwrap_or_default(),
        groups: read_small_file_in_root(rootfs, "etc/group")?
            .map(|b| parse_group(&text(b)))
            .unwrap_or_default(),
    })
}

/// Writes `dir/config.json`.
pub fn write_config(dir: &Path, config: &Value) -> Result<(), BundleError> {
    let p = dir.join("config.json");
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| BundleError::Io {
        path: p.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    crate::store::write_replace(&p, &bytes, false).map_err(|source| BundleError::Io {
        path: p.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
