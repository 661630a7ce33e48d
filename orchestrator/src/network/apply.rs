//! Applying a node's [`NodePlan`] (IO, for a worker thread): its cluster network's conflist
//! written atomically (or removed when the node has no subnet), then its host-gw routes
//! synced with `ip route`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::conflist::{node_conflist, NodeNetwork};
use super::node::NodePlan;
use super::route_io::RouteTable;
use super::NetworkConfig;

/// What applying a plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The conflist is in place for this subnet (the cluster network can be used).
    pub ready: bool,
    /// Everything that went wrong (the rest was still done).
    pub errors: Vec<String>,
}

/// Writes the conflist for `plan.subnet` and syncs the routes.
pub fn apply_plan(cfg: &NetworkConfig, plan: &NodePlan) -> Applied {
    let mut errors = Vec::new();
    let path = cfg.cluster_conflist();
    let ready = match plan.subnet {
        Some(subnet) => {
            let mut n = NodeNetwork::new(subnet, cfg.subnets.cluster);
            n.ipam_dir = Some(cfg.ipam_dir());
            let text = format!("{:#}\n", node_conflist(&n));
            match write_if_changed(&path, text.as_bytes()) {
                Ok(()) => true,
                Err(e) => {
                    errors.push(e);
                    false
                }
            }
        }
        None => {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "no subnet: cluster network config removed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove {}: {e}", path.display())),
            }
            false
        }
    };
    if let Err(errs) = RouteTable::default().sync(&plan.routes) {
        errors.extend(errs.into_iter().map(|e| e.to_string()));
    }
    Applied { ready, errors }
}

/// Writes `bytes` to `path` through a temp file and a rename (readers never see a partial
/// config), unless the file already holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("write {}: {e}", path.display())
    })?;
    tracing::info!(path = %path.display(), "cluster network config written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_is_written_once_and_parses() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("net.d").join("10-berth.conflist");
        write_if_changed(&p, b"{}").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"{}");
        let mtime = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_if_changed(&p, b"{}").expect("same");
        assert_eq!(
            std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime"),
            mtime,
            "unchanged content is not rewritten"
        );
        assert_eq!(
            std::fs::read_dir(p.parent().expect("dir"))
                .expect("ls")
                .count(),
            1
        );
    }
}
