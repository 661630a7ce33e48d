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

/// Pure decision from mountinfo text: v1 controllers, a cgroup2 mount, or both.
pub fn parse_layout(mountinfo: &str) -> Option<Layout> {
    let mut controllers: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unified: Option<PathBuf> = None;
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
            "cgroup2" if unified.is_none() => unified = Some(mountpoint),
            "cgroup" => {
                for opt in post[2].split(',') {
                    let name = match opt {
                        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"
                        | "clone_children" | "xattr" | "nsdelegate" | "noprefix"
                        | "favordynmods" => continue,
                        o if o.starts_with("release_agent=") => continue,
                        o => o,
                    };
                    controllers
                        .entry(name.to_string())
                        .or_insert(mountpoint.clone());
                }
            }
            _ => {}
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

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
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

    #[test]
    fn bind_mounted_subtree_ignored() {
        assert!(parse_layout("41 31 0:38 /sub /x rw - cgroup2 cgroup2 rw\n").is_none());
    }
}
