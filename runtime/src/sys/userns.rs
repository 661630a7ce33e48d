//! A user namespace with given mappings, held by a descriptor: for idmapped mounts,
//! which take their idmapping from a user namespace (mount_setattr MOUNT_ATTR_IDMAP).

use std::io::{self, Read};
use std::os::fd::OwnedFd;

use super::clone::Forked;

/// A new user namespace with `uid_map` and `gid_map` (the text of /proc/<pid>/uid_map
/// and gid_map). A child is cloned into it only to hold it while the maps are written
/// and the namespace opened; it is reaped before this returns. Only from a
/// single-threaded process.
pub fn with_maps(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    match super::clone::fork_into_cgroup(libc::CLONE_NEWUSER, None)? {
        Forked::Child => {
            drop(hold_w);
            // Waits for the parent to close its end, then leaves.
            let _ = std::fs::File::from(hold_r).read(&mut [0u8; 1]);
            super::exit_now(0)
        }
        Forked::Parent { pid, .. } => {
            drop(hold_r);
            let result = (|| {
                std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
                std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
                super::fs::open(
                    std::path::Path::new(&format!("/proc/{pid}/ns/user")),
                    libc::O_RDONLY,
                )
            })();
            drop(hold_w);
            let _ = super::wait(pid);
            result
        }
    }
}

/// /proc/<pid>/uid_map text for mappings (container id, host id, size).
pub fn map_text(maps: impl IntoIterator<Item = (u32, u32, u32)>) -> String {
    maps.into_iter()
        .map(|(c, h, n)| format!("{c} {h} {n}\n"))
        .collect()
}
