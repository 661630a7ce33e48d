//! podman as the reference: `podman run --rm` of busybox `true` with `--network none` and
//! on a CNI network (the caller's conflist: the same plugins berth uses) with a published
//! port. podman
//! runs with its CNI backend (`network_backend = "cni"`), runc, cgroupfs, vfs storage in a
//! temp dir, and nofile/nproc limits this VM's root may set (its defaults need
//! CAP_SYS_RESOURCE, which root lacks here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::util::{run, timed, PLUGINS};

/// The CNI network podman's containers join.
pub const NETWORK: &str = "benchnet";

pub struct Podman {
    dir: PathBuf,
}

impl Podman {
    /// podman's storage, config and the busybox image under `dir`; its network [`NETWORK`]
    /// is `conflist` (a document naming it).
    pub fn setup(dir: &Path, conflist: &str) -> Result<Self> {
        let busybox = Path::new("/usr/bin/busybox");
        if !busybox.is_file() {
            bail!("busybox missing: apt-get install busybox-static");
        }
        let rootfs = dir.join("rootfs/bin");
        std::fs::create_dir_all(&rootfs)?;
        std::fs::copy(busybox, rootfs.join("busybox"))?;
        std::os::unix::fs::symlink("busybox", rootfs.join("true"))?;
        run(Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(dir.join("rootfs.tar"))
            .arg("."))?;
        std::fs::create_dir_all(dir.join("cni"))?;
        std::fs::write(
            dir.join("cni").join(format!("{NETWORK}.conflist")),
            conflist,
        )?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{PLUGINS}\"]\nnetwork_config_dir = \"{}\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
                dir.join("cni").display()
            ),
        )?;
        let p = Podman {
            dir: dir.to_path_buf(),
        };
        run(p
            .cmd()
            .arg("import")
            .arg(dir.join("rootfs.tar"))
            .arg("localhost/berth-bench-bb"))?;
        Ok(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// `podman run --rm --network NETWORK [-p PORT:80] busybox true`, timed.
    pub fn run_true(&self, network: &str, port: Option<u16>) -> Result<Duration> {
        let mut c = self.cmd();
        c.args([
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--network",
            network,
        ]);
        if let Some(p) = port {
            c.args(["-p", &format!("{p}:80")]);
        }
        c.args(["localhost/berth-bench-bb", "/bin/true"]);
        timed(&mut c)
    }

    /// One `--network none` and one networked run in the order `i` picks (alternating):
    /// (none, networked).
    pub fn pair(&self, i: usize, port: u16) -> Result<(Duration, Duration)> {
        Ok(if i.is_multiple_of(2) {
            let n = self.run_true("none", None)?;
            (n, self.run_true(NETWORK, Some(port))?)
        } else {
            let w = self.run_true(NETWORK, Some(port))?;
            (self.run_true("none", None)?, w)
        })
    }

    /// Where the network's host-local leases go (its conflist's `dataDir`).
    pub fn ipam_dir(dir: &Path) -> PathBuf {
        dir.join("ipam")
    }

    /// IPAM leases podman's network still holds.
    pub fn leases(&self) -> usize {
        std::fs::read_dir(Self::ipam_dir(&self.dir).join(NETWORK))
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0)
    }
}
