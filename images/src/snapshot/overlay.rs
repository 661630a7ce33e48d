//! The overlay mount of a snapshot: its options, pure, and performing it. Options that fit
//! mount(2)'s page go through mount(2); longer ones (about 40 store layers and up) through
//! the new mount API, one `lowerdir+` per layer (Linux 6.8+), or where the kernel lacks
//! that, through mount(2) again with each layer named by a short descriptor path
//! (`/proc/self/fd/N`, held open for the call: about 19 bytes a layer, so the 127 layers
//! of the largest real images fit), as containers/storage names layers by short links.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::SnapshotError;

/// A mount to perform (as containerd's snapshotters return them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub fstype: String,
    pub source: String,
    pub target: PathBuf,
    pub options: Vec<String>,
    /// The lower layers, top first, for the new mount API when the options
    /// do not fit mount(2)'s one page.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Mount {
    /// Performs the mount (needs CAP_SYS_ADMIN): with mount(2) when its
    /// options fit a page, else through the new mount API with one
    /// `lowerdir+` per layer, else (a kernel before 6.8) by descriptor paths;
    /// the error says how many layers were too many for all three.
    pub fn perform(&self) -> Result<(), SnapshotError> {
        let data = self.options.join(",");
        if data.len() <= MAX_MOUNT_DATA {
            return crate::sys::mount_overlay(&self.target, &data).map_err(|e| self.failed(e));
        }
        match crate::sys::mount_overlay_layers(&self.target, &self.lowers, &self.upper, &self.work)
        {
            Ok(()) => Ok(()),
            Err(Errno::EINVAL | Errno::ENOSYS) => self.perform_by_descriptors(),
            Err(errno) => Err(self.failed(errno)),
        }
    }

    /// mount(2) with each lower layer named `/proc/self/fd/N` by a
    /// descriptor opened (O_PATH) for the call; overlayfs resolves the paths
    /// when mounting and keeps the layers, not the descriptors.
    pub(crate) fn perform_by_descriptors(&self) -> Result<(), SnapshotError> {
        let mut fds = Vec::with_capacity(self.lowers.len());
        for l in &self.lowers {
            let dir = File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(l)
                .map_err(|source| SnapshotError::Io {
                    path: l.clone(),
                    source,
                })?;
            fds.push(dir);
        }
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let data = descriptor_options(&raw, &self.upper, &self.work);
        if data.len() > MAX_MOUNT_DATA {
            return Err(SnapshotError::TooManyLayers {
                len: data.len(),
                max: MAX_MOUNT_DATA,
                layers: self.lowers.len(),
            });
        }
        let done = crate::sys::mount_overlay(&self.target, &data).map_err(|e| self.failed(e));
        drop(fds);
        done
    }

    fn failed(&self, errno: Errno) -> SnapshotError {
        SnapshotError::Mount {
            target: self.target.clone(),
            errno,
        }
    }
}

/// Overlay options naming the lower layers (top first) by the descriptors
/// `fds` of this process, pure.
fn descriptor_options(fds: &[i32], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = fds.iter().map(|fd| format!("/proc/self/fd/{fd}")).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Page size: the kernel's limit on mount option data.
const MAX_MOUNT_DATA: usize = 4095;

/// The overlay mount for `lowers` (top layer first), pure.
pub fn overlay_mount(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<Mount, SnapshotError> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') || s.contains('\n') {
            return Err(SnapshotError::BadPath {
                path: p.to_path_buf(),
            });
        }
    }
    let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let options = vec![
        format!("lowerdir={}", lower.join(":")),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    Ok(Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        target: target.to_path_buf(),
        options,
        lowers: lowers.to_vec(),
        upper: upper.to_path_buf(),
        work: work.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn overlay_mount_puts_top_layer_first() {
        let lowers = vec![
            PathBuf::from("/s/layers/top"),
            PathBuf::from("/s/layers/base"),
        ];
        let m = overlay_mount(
            &lowers,
            Path::new("/s/c/upper"),
            Path::new("/s/c/work"),
            Path::new("/s/c/rootfs"),
        )
        .unwrap();
        assert_eq!(m.fstype, "overlay");
        assert_eq!(
            m.options,
            vec![
                "lowerdir=/s/layers/top:/s/layers/base".to_string(),
                "upperdir=/s/c/upper".into(),
                "workdir=/s/c/work".into()
            ]
        );
        assert_eq!(m.target, PathBuf::from("/s/c/rootfs"));
    }

    #[test]
    fn overlay_mount_refuses_unsafe_paths_and_overlong_options() {
        let bad = vec![PathBuf::from("/a,b")];
        assert!(matches!(
            overlay_mount(&bad, Path::new("/u"), Path::new("/w"), Path::new("/t")),
            Err(SnapshotError::BadPath { .. })
        ));
    }

    #[test]
    fn descriptor_options_are_short() {
        let o = descriptor_options(&[12, 3], Path::new("/s/u"), Path::new("/s/w"));
        assert_eq!(
            o,
            "lowerdir=/proc/self/fd/12:/proc/self/fd/3,upperdir=/s/u,workdir=/s/w"
        );
        // 127 layers at three-digit descriptors, beside store-length upper and work paths.
        let fds: Vec<i32> = (900..1027).collect();
        let long = PathBuf::from(format!("/{}", "d".repeat(200)));
        assert!(descriptor_options(&fds, &long, &long).len() <= MAX_MOUNT_DATA);
    }

    /// `n` layers with store-length paths (far past mount(2)'s page of
    /// options, which held about 40) mounted by `perform`: each layer's own
    /// file shows, and the top layer wins.
    fn mount_layers(n: usize, perform: fn(&Mount) -> Result<(), SnapshotError>) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mounting overlayfs needs root"
        );
        let tmp = tempfile::tempdir().unwrap();
        let lowers: Vec<PathBuf> = (0..n)
            .map(|i| {
                let d = tmp.path().join(format!("{i:064}"));
                fs::create_dir(&d).unwrap();
                fs::write(d.join(format!("l{i}")), format!("{i}")).unwrap();
                fs::write(d.join("top"), format!("{i}")).unwrap();
                d
            })
            .rev()
            .collect();
        let (u, w, t) = (
            tmp.path().join("u"),
            tmp.path().join("w"),
            tmp.path().join("t"),
        );
        for d in [&u, &w, &t] {
            fs::create_dir(d).unwrap();
        }
        let m = overlay_mount(&lowers, &u, &w, &t).unwrap();
        assert!(m.options.join(",").len() > MAX_MOUNT_DATA);
        perform(&m).unwrap();
        let seen: Vec<_> = (0..n)
            .map(|i| fs::read_to_string(t.join(format!("l{i}"))))
            .collect();
        let top = fs::read_to_string(t.join("top"));
        crate::sys::unmount(&t).unwrap();
        for (i, s) in seen.into_iter().enumerate() {
            assert_eq!(s.unwrap(), i.to_string());
        }
        assert_eq!(top.unwrap(), (n - 1).to_string(), "the top layer wins");
    }

    #[test]
    fn a_hundred_layers_mount() {
        mount_layers(100, Mount::perform);
    }

    /// The path of kernels before 6.8 (no `lowerdir+`), taken here directly.
    #[test]
    fn a_hundred_and_twenty_seven_layers_mount_by_descriptors() {
        mount_layers(127, Mount::perform_by_descriptors);
    }
}
