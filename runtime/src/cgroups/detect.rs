//! Deciding v1, v2 or hybrid from a mountinfo file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CgroupError, Layout};

/// Reads /proc/self/mountinfo and decides the layout.
pub fn detect() -> Result<Layout, CgroupError> {
    detect_from_mountinfo(Path::new("/proc/self/mountinfo"))
}

/// Reads the given mountinfo file and decides the layout.
pub fn detect_from_mountinfo(path: &Path) -> Result<Layout, CgroupError> {
    // procfs reports size 0, so read_to_string would start at 32 bytes and double its
    // way up (eight reads here): start with room for a typical host's mount table.
    let mut text = String::with_capacity(16 * 1024);
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text))
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse_layout(&text).ok_or_else(|| CgroupError::NoCgroupFs {
        mountinfo: path.to_path_buf(),
    })
}

/// Where hosts mount their cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Pure decision from mountinfo text: v1 controllers, a cgroup2 mount, or both. When
/// any hierarchy is mounted at or under /sys/fs/cgroup, only those count: a host's
/// table may also hold copies elsewhere (a container's /sys/fs/cgroup seen through
/// shared propagation, a bind into some rootfs), which must not turn a v2-only host
/// into a hybrid one. Among several mounts of one hierarchy, the shortest path wins.
pub fn parse_layout(mountinfo: &str) -> Option<Layout> {
    let all = hierarchy_mounts(mountinfo);
    let standard = all.iter().any(|(_, mp)| mp.starts_with(CGROUP_ROOT));
    let mut controllers: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unified: Option<PathBuf> = None;
    for (kind, mountpoint) in all {
        if standard && !mountpoint.starts_with(CGROUP_ROOT) {
            continue;
        }
        let better = |cur: &PathBuf| mountpoint.as_os_str().len() < cur.as_os_str().len();
        match kind {
            Hierarchy::Unified => {
                if unified.as_ref().is_none_or(better) {
                    unified = Some(mountpoint);
                }
            }
            Hierarchy::V1(names) => {
                for name in names {
                    let slot = controllers
                        .entry(name)
                        .or_insert_with(|| mountpoint.clone());
                    if better(slot) {
                        *slot = mountpoint.clone();
                    }
                }
            }
        }
    }
    match (controllers.is_empty(), unified) {
        (true, None) => None,
        (true, Some(mount)) => Some(Layout::V2 { mount }),
        (false, None) => Some(Layout::V1 { controllers }),
        (false, Some(unified)) => Some(Layout::Hybrid {
            controllers,
            unified,
        }),
    }
}

/// A cgroup filesystem mount: the unified hierarchy, or a v1 one with its controllers.
enum Hierarchy {
    Unified,
    V1(Vec<String>),
}

/// Every cgroup and cgroup2 mount of a hierarchy's root, in table order.
fn hierarchy_mounts(mountinfo: &str) -> Vec<(Hierarchy, PathBuf)> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // mountinfo: id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        // Only hierarchies mounted at their root are usable for creating cgroups.
        if pre[3] != "/" {
            continue;
        }
        let mountpoint = PathBuf::from(unescape(pre[4]));
        match post[0] {
            "cgroup2" => found.push((Hierarchy::Unified, mountpoint)),
            "cgroup" => {
                let names = post[2]
                    .split(',')
                    .filter(|opt| {
                        !matches!(
                            *opt,
                            "rw" | "ro"
                                | "relatime"
                                | "noatime"
                                | "nosuid"
                                | "nodev"
                                | "noexec"
                                | "clone_children"
                                | "xattr"
                                | "nsdelegate"
                                | "noprefix"
                                | "favordynmods"
                        ) && !opt.starts_with("release_agent=")
                    })
                    .map(str::to_string)
                    .collect();
                found.push((Hierarchy::V1(names), mountpoint));
            }
            _ => {}
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        let l = parse_layout(HYBRID).unwrap();
        let Layout::Hybrid {
            controllers,
            unified,
        } = l
        else {
            panic!("expected hybrid, got {l:?}")
        };
        assert_eq!(unified, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            controllers["memory"],
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            controllers["name=systemd"],
            PathBuf::from("/sys/fs/cgroup/systemd")
        );
        assert!(!controllers.contains_key("xattr"));
    }

    #[test]
    fn pure_v2_host() {
        let l = parse_layout(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        )
        .unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                mount: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn combined_v1_controllers() {
        let l = parse_layout(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        )
        .unwrap();
        let Layout::V1 { controllers } = l else {
            panic!()
        };
        assert_eq!(controllers["cpu"], controllers["cpuacct"]);
    }

    #[test]
    fn no_cgroups() {
        assert!(parse_layout("22 1 0:5 / /proc rw - proc proc rw\n").is_none());
    }

    /// A v2-only host whose table also shows a container's v1 hierarchies (copies
    /// under some rootfs, reached by shared propagation) is still v2-only; and where
    /// the standard place has several, the shortest path wins.
    #[test]
    fn copies_outside_sys_fs_cgroup_do_not_count() {
        let table = "\
192 191 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw
52 51 0:29 / /tmp/b/rootfs/sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
53 51 0:38 / /tmp/b/rootfs/sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_layout(table),
            Some(Layout::V2 {
                mount: "/sys/fs/cgroup".into()
            })
        );
        let hybrid_with_copies = format!(
            "52 51 0:29 / /sys/fs/cgroup/x/rootfs/sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n{HYBRID}"
        );
        let Some(Layout::Hybrid { controllers, .. }) = parse_layout(&hybrid_with_copies) else {
            panic!("hybrid expected")
        };
        assert_eq!(controllers["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        // No hierarchy in the standard place: the others are all there is.
        let Some(Layout::V1 { controllers }) =
            parse_layout("32 31 0:29 / /cg/cpu rw - cgroup cgroup rw,cpu\n")
        else {
            panic!("v1 expected")
        };
        assert_eq!(controllers["cpu"], PathBuf::from("/cg/cpu"));
    }

    #[test]
    fn bind_mounted_subtree_ignored() {
        assert!(parse_layout("41 31 0:38 /sub /x rw - cgroup2 cgroup2 rw\n").is_none());
    }
}
