//! Running `berth`, as podman runs runc: one short-lived child process per operation, its
//! end seen through a pidfd in the event loop (nothing here blocks). Errors come from
//! berth's JSON log (`--log FILE --log-format json`), since a created container's stdio is
//! its journal fifo.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where berth keeps the agent's containers and how to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Berth {
    pub binary: PathBuf,
    /// berth's `--root`: the agent's own state directory, apart from the host's /run/berth.
    pub root: PathBuf,
}

/// One berth operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        bundle: PathBuf,
        pid_file: PathBuf,
    },
    Start,
    Kill {
        signal: String,
    },
    Delete,
    /// `berth exec ID CMD...` (health checks).
    Exec {
        args: Vec<String>,
    },
}

impl Berth {
    /// The arguments of `op` on container `id`, logging errors to `log` (pure).
    pub fn args(&self, op: &Op, id: &str, log: &Path) -> Vec<String> {
        let mut a = vec![
            "--root".to_string(),
            self.root.display().to_string(),
            "--log".to_string(),
            log.display().to_string(),
            "--log-format".to_string(),
            "json".to_string(),
        ];
        match op {
            Op::Create { bundle, pid_file } => a.extend([
                "create".to_string(),
                "--bundle".to_string(),
                bundle.display().to_string(),
                "--pid-file".to_string(),
                pid_file.display().to_string(),
                id.to_string(),
            ]),
            Op::Start => a.extend(["start".to_string(), id.to_string()]),
            Op::Kill { signal } => a.extend([
                "kill".to_string(),
                "--all".to_string(),
                id.to_string(),
                signal.clone(),
            ]),
            Op::Delete => a.extend(["delete".to_string(), "--force".to_string(), id.to_string()]),
            Op::Exec { args } => {
                a.extend(["exec".to_string(), id.to_string()]);
                a.extend(args.iter().cloned());
            }
        }
        a
    }

    /// Spawns `op`. `stdio` is the container's stdout/stderr for `create` (its journal fifo);
    /// other operations get /dev/null.
    pub fn spawn(
        &self,
        op: &Op,
        id: &str,
        log: &Path,
        stdio: Option<&OwnedFd>,
    ) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.binary);
        super::sys::unblock_signals_in_child(&mut cmd);
        cmd.args(self.args(op, id, log)).stdin(Stdio::null());
        match stdio {
            Some(fd) => {
                cmd.stdout(Stdio::from(fd.try_clone()?));
                cmd.stderr(Stdio::from(fd.try_clone()?));
            }
            None => {
                cmd.stdout(Stdio::null());
                cmd.stderr(Stdio::null());
            }
        }
        cmd.spawn()
    }
}

/// The last error berth wrote to its JSON log since byte `from`, else `fallback`.
pub fn last_error(log: &Path, from: u64, fallback: &str) -> String {
    let Ok(mut f) = File::open(log) else {
        return fallback.to_string();
    };
    use std::io::{Seek, SeekFrom};
    if f.seek(SeekFrom::Start(from)).is_err() {
        return fallback.to_string();
    }
    let mut last = None;
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["level"] == "error" {
                if let Some(msg) = v["msg"].as_str() {
                    last = Some(msg.to_string());
                }
            }
        }
    }
    last.map(|m| crate::agent::printable(&m, 600))
        .unwrap_or_else(|| fallback.to_string())
}

/// The size of a file (0 if absent): where to start reading new log lines.
pub fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Reads init's pid from berth's `--pid-file`.
pub fn read_pid(pid_file: &Path) -> Result<u32, String> {
    let s = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read pid file {}: {e}", pid_file.display()))?;
    s.trim()
        .parse()
        .map_err(|_| format!("pid file {} holds {:?}", pid_file.display(), s.trim()))
}

/// A container id berth accepts (runc's rule: `[A-Za-z0-9_+.-]`) made from a unit name,
/// unique per name: the name with other characters replaced, plus 8 hex digits of its hash.
pub fn container_id(unit: &str) -> String {
    let clean: String = unit
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("{clean}-{:08x}", crate::config::node_id(unit) & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_runc_contract() {
        let b = Berth {
            binary: "/usr/bin/berth".into(),
            root: "/run/berth/agent/containers".into(),
        };
        let log = Path::new("/l.json");
        let a = b.args(
            &Op::Create {
                bundle: "/b".into(),
                pid_file: "/p".into(),
            },
            "web",
            log,
        );
        assert_eq!(
            a.join(" "),
            "--root /run/berth/agent/containers --log /l.json --log-format json create --bundle /b --pid-file /p web"
        );
        assert_eq!(
            b.args(
                &Op::Kill {
                    signal: "SIGTERM".into()
                },
                "web",
                log
            )[6..]
                .join(" "),
            "kill --all web SIGTERM"
        );
        assert_eq!(
            b.args(&Op::Delete, "web", log)[6..].join(" "),
            "delete --force web"
        );
    }

    #[test]
    fn container_ids_are_valid_and_distinct() {
        let a = container_id("web@1.service");
        let b = container_id("web_1.service");
        assert!(a.starts_with("web_1.service-"));
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c)));
    }

    #[test]
    fn last_error_reads_berth_json_log_from_an_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"old\"}\n{\"level\":\"error\",\"msg\":\"mount /x: EPERM\"}\n",
        )
        .expect("write");
        assert_eq!(last_error(&log, 0, "?"), "mount /x: EPERM");
        assert_eq!(last_error(&log, log_len(&log), "exit 1"), "exit 1");
    }
}
