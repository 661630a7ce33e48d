//! The validated plan a container is built from: plain data, no syscalls.

use std::path::PathBuf;

/// Everything `create` needs, checked and translated from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub oci_version: String,
    pub bundle: PathBuf,
    /// Absolute path of the rootfs on the host.
    pub rootfs: PathBuf,
    pub root_readonly: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub namespaces: NamespacePlan,
    pub uid_mappings: Vec<IdMap>,
    pub gid_mappings: Vec<IdMap>,
    /// MS_* propagation flags applied to / (recursively) before the rootfs is set up.
    pub rootfs_propagation: u64,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub sysctl: Vec<(String, String)>,
    pub process: ProcessPlan,
    pub cgroups_path: Option<PathBuf>,
    pub annotations: Vec<(String, String)>,
    /// linux.resources, validated against the host's cgroup version at create time.
    pub resources: Option<oci_spec::runtime::LinuxResources>,
    /// linux.seccomp, compiled (and cached) by the parent before clone.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

impl Plan {
    /// The runtime-spec state JSON that hooks read on stdin while the container is
    /// being created or started (before state.json exists).
    pub fn hook_state(&self, id: &str, status: &str, pid: i32) -> Vec<u8> {
        let annotations: std::collections::BTreeMap<_, _> =
            self.annotations.iter().cloned().collect();
        serde_json::to_vec(&serde_json::json!({
            "ociVersion": self.oci_version,
            "id": id,
            "status": status,
            "pid": pid,
            "bundle": self.bundle,
            "annotations": annotations,
        }))
        .unwrap_or_default()
    }
}

/// Which namespaces to create and which to join by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePlan {
    /// CLONE_NEW* flags of namespaces to create.
    pub new_flags: i32,
    /// Namespaces to join, user namespace first.
    pub join: Vec<(NsKind, PathBuf)>,
}

impl NamespacePlan {
    pub fn creates(&self, kind: NsKind) -> bool {
        self.new_flags & kind.clone_flag() != 0
    }
    pub fn joins(&self, kind: NsKind) -> bool {
        self.join.iter().any(|(k, _)| *k == kind)
    }
    /// True when the container has its own namespace of this kind (new or joined).
    pub fn has(&self, kind: NsKind) -> bool {
        self.creates(kind) || self.joins(kind)
    }
}

/// The namespace kinds, one table for parsing, clone flags and `features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsKind {
    User,
    Pid,
    Network,
    Ipc,
    Uts,
    Mount,
    Cgroup,
    Time,
}

/// (kind, spec name, CLONE_NEW* flag, /proc/<pid>/ns/ name), user first: the order
/// namespaces are joined in.
pub const NAMESPACES: &[(NsKind, &str, i32, &str)] = &[
    (NsKind::User, "user", libc::CLONE_NEWUSER, "user"),
    (NsKind::Pid, "pid", libc::CLONE_NEWPID, "pid"),
    (NsKind::Network, "network", libc::CLONE_NEWNET, "net"),
    (NsKind::Ipc, "ipc", libc::CLONE_NEWIPC, "ipc"),
    (NsKind::Uts, "uts", libc::CLONE_NEWUTS, "uts"),
    (NsKind::Mount, "mount", libc::CLONE_NEWNS, "mnt"),
    (NsKind::Cgroup, "cgroup", libc::CLONE_NEWCGROUP, "cgroup"),
    (NsKind::Time, "time", libc::CLONE_NEWTIME, "time"),
];

impl NsKind {
    pub fn clone_flag(self) -> i32 {
        NAMESPACES
            .iter()
            .find(|(k, ..)| *k == self)
            .map(|(_, _, f, _)| *f)
            .unwrap_or(0)
    }
    pub fn spec_name(self) -> &'static str {
        NAMESPACES
            .iter()
            .find(|(k, ..)| *k == self)
            .map(|(_, n, _, _)| *n)
            .unwrap_or("?")
    }
    pub fn proc_name(self) -> &'static str {
        NAMESPACES
            .iter()
            .find(|(k, ..)| *k == self)
            .map(|(_, _, _, p)| *p)
            .unwrap_or("?")
    }
    pub fn from_spec_name(name: &str) -> Option<NsKind> {
        NAMESPACES
            .iter()
            .find(|(_, n, ..)| *n == name)
            .map(|(k, ..)| *k)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// What kind of filesystem a mount is, where it changes how it is performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Proc,
    Sysfs,
    Cgroup,
    Devpts,
    Other,
}

/// One mount, as it will be performed inside the container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    pub kind: MountKind,
    /// The source: an absolute host path for binds, otherwise the fs source name.
    pub source: String,
    /// Absolute destination inside the container.
    pub destination: PathBuf,
    pub fstype: String,
    /// MS_* flags for the mount call (MS_BIND|MS_REC for rbind).
    pub flags: u64,
    /// Flags to re-apply with MS_REMOUNT after a bind (ro, nosuid, ...): a bind mount
    /// ignores them on the first call.
    pub remount_flags: Option<u64>,
    /// MS_SHARED/MS_SLAVE/... (each with MS_REC as asked), applied after mounting.
    pub propagation: Vec<u64>,
    /// MOUNT_ATTR_* set and cleared on the mount and every mount below it (`rro`,
    /// `rnosuid`, ...; mount_setattr with AT_RECURSIVE).
    pub rec_set: u64,
    pub rec_clear: u64,
    /// tmpfs `tmpcopyup`: the rootfs's content at the destination is copied in.
    pub tmpcopyup: bool,
    /// An idmapped bind (`idmap`, `ridmap`, or the mount's own mappings).
    pub idmap: Option<IdmapPlan>,
    /// Options passed to the filesystem (mode=755, size=...).
    pub data: String,
}

/// An idmapped bind: the user namespace its mount takes its idmapping from is made
/// from these mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmapPlan {
    /// `ridmap`: every mount below the bind too.
    pub recursive: bool,
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
}

/// A device node to create in the container's /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    pub path: PathBuf,
    /// 'c', 'b' or 'p'.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// (RLIMIT_* resource number, soft, hard)
    pub rlimits: Vec<(u32, u64, u64)>,
    pub oom_score_adj: Option<i32>,
    pub no_new_privileges: bool,
    pub terminal: bool,
    /// process.consoleSize (rows, columns).
    pub console_size: Option<(u16, u16)>,
    /// The five capability sets; None leaves the process's own (runc: all of root's).
    pub capabilities: Option<crate::capabilities::CapsPlan>,
}
