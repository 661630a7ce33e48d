//! Which mount holds a path, from mountinfo text (pure).

use std::path::{Path, PathBuf};

use crate::cgroups::detect::unescape;

/// The mount point of the mount holding `path` (the longest mount point at or above
/// it) and whether that mount is shared, from mountinfo text.
pub fn mount_holding(mountinfo: &str, path: &Path) -> Option<(PathBuf, bool)> {
    let mut best: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = fields.get(4).map(|m| PathBuf::from(unescape(m))) else {
            continue;
        };
        if !path.starts_with(&mp) {
            continue;
        }
        let shared = fields[6..].iter().any(|f| f.starts_with("shared:"));
        // Later lines win at equal length: they are stacked on top.
        if best
            .as_ref()
            .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mp, shared));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_holding_a_path() {
        let info = "\
22 1 8:1 / / rw shared:1 - ext4 /dev/vda rw
30 22 0:40 / /tmp rw shared:5 - tmpfs tmpfs rw
31 22 0:41 / /tmpx rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_holding(info, Path::new("/tmp/b/rootfs")),
            Some((PathBuf::from("/tmp"), true))
        );
        assert_eq!(
            mount_holding(info, Path::new("/srv/rootfs")),
            Some((PathBuf::from("/"), true))
        );
        assert_eq!(
            mount_holding(info, Path::new("/tmpx/r")),
            Some((PathBuf::from("/tmpx"), false))
        );
    }
}
