//! config.json -> [`Plan`]: loading, validation and translation, all pure except for
//! the existence checks of the rootfs and bind sources.

pub mod default;
pub mod mount_options;
mod mounts;
pub mod plan;
pub mod rlimits;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, Spec};

pub use plan::*;

/// A config.json problem; every variant names the field or the path.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {field}: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The mount flags a bind mount takes only from a remount (MS_BIND|MS_REMOUNT).
pub const REMOUNT_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

pub use mounts::MountIdmaps;

/// Reads and parses `<bundle>/config.json`, naming the offending field on error.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    load_with_idmaps(bundle).map(|(spec, _)| spec)
}

/// [`load`], with each mount's uidMappings/gidMappings (for [`plan_with`]).
pub fn load_with_idmaps(bundle: &Path) -> Result<(Spec, Vec<MountIdmaps>), SpecError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let spec = parse(&bytes).map_err(|(field, message)| SpecError::Parse {
        path: path.clone(),
        field,
        message,
    })?;
    let maps = mounts::mount_idmaps(&bytes).map_err(|(field, message)| SpecError::Parse {
        path,
        field,
        message,
    })?;
    Ok((spec, maps))
}

/// Parses config.json bytes; the error is (field path, message).
pub fn parse(bytes: &[u8]) -> Result<Spec, (String, String)> {
    // The plain parser decides; the path-tracking one (several times the code, which
    // every container start would page in) runs only to name the field of a failure.
    // It never turns a refusal into a success: trailing bytes, or nesting past
    // serde_json's limit in a field it ignores, are refused with serde_json's message.
    let strict = match serde_json::from_slice(bytes) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let named: Result<Spec, _> = serde_path_to_error::deserialize(&mut *de);
    match named {
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." {
                "config.json".to_string()
            } else {
                field
            };
            Err((field, e.into_inner().to_string()))
        }
        Ok(_) => Err(("config.json".to_string(), strict.to_string())),
    }
}

/// Checks the spec and translates it into a plan. `bundle` must be absolute.
pub fn plan(spec: &Spec, bundle: &Path) -> Result<Plan, SpecError> {
    plan_with(spec, &[], bundle)
}

/// [`plan`] with each mount's own uidMappings/gidMappings (runtime-spec 1.1, which
/// the spec type does not carry: see [`mounts::mount_idmaps`]).
pub fn plan_with(
    spec: &Spec,
    mount_idmaps: &[MountIdmaps],
    bundle: &Path,
) -> Result<Plan, SpecError> {
    check_version(spec.version())?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing: a container needs a root filesystem"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(invalid(
            "root.path",
            format!(
                "rootfs {} does not exist or is not a directory",
                rootfs.display()
            ),
        ));
    }
    check_no_symlink(&rootfs, root.path(), bundle)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing: berth runs Linux containers only"))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: nothing to run"))?;

    let namespaces = plan_namespaces(linux.namespaces().as_deref().unwrap_or(&[]))?;
    if !namespaces.has(NsKind::Mount) {
        return Err(invalid(
            "linux.namespaces",
            "a mount namespace is required (berth never changes the host's mounts)",
        ));
    }
    let map = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
        v.as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|m| IdMap {
                container_id: m.container_id(),
                host_id: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    let uid_mappings = map(linux.uid_mappings());
    let gid_mappings = map(linux.gid_mappings());
    if namespaces.creates(NsKind::User) {
        if uid_mappings.is_empty() || gid_mappings.is_empty() {
            return Err(invalid(
                "linux.uidMappings",
                "a new user namespace needs both uidMappings and gidMappings",
            ));
        }
    } else if !uid_mappings.is_empty() || !gid_mappings.is_empty() {
        return Err(invalid(
            "linux.uidMappings",
            "mappings are given but no new user namespace is requested",
        ));
    }

    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !namespaces.has(NsKind::Uts) {
        return Err(invalid(
            "hostname",
            "cannot set a hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !namespaces.has(NsKind::Uts) {
        return Err(invalid(
            "domainname",
            "cannot set a domainname without a private UTS namespace",
        ));
    }

    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => libc::MS_SLAVE | libc::MS_REC,
        Some(v) => mount_options::rootfs_propagation(v).ok_or_else(|| {
            invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {v:?} (expected shared, slave, private or unbindable, optionally r-prefixed)"),
            )
        })?,
    };

    let container_maps =
        (namespaces.creates(NsKind::User)).then(|| (uid_mappings.clone(), gid_mappings.clone()));
    let mounts = mounts::plan_mounts(spec, mount_idmaps, bundle, container_maps)?;

    let devices = linux
        .devices()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("linux.devices[{i}]");
            if !d.path().is_absolute() {
                return Err(invalid(field + ".path", "must be an absolute path"));
            }
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => 'p',
                LinuxDeviceType::A => {
                    return Err(invalid(field + ".type", "\"a\" is not a device node type"))
                }
            };
            if d.major() < 0 || d.minor() < 0 {
                return Err(invalid(field, "major and minor must not be negative"));
            }
            Ok(DevicePlan {
                path: d.path().clone(),
                kind,
                major: d.major() as u64,
                minor: d.minor() as u64,
                mode: d.file_mode().unwrap_or(0o666) & 0o7777,
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let abs_list = |field: &str, v: &Option<Vec<String>>| -> Result<Vec<PathBuf>, SpecError> {
        v.as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|p| {
                if p.starts_with('/') {
                    Ok(PathBuf::from(p))
                } else {
                    Err(invalid(field, format!("{p:?} is not an absolute path")))
                }
            })
            .collect()
    };
    let masked_paths = abs_list("linux.maskedPaths", linux.masked_paths())?;
    let readonly_paths = abs_list("linux.readonlyPaths", linux.readonly_paths())?;

    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    sysctl.sort();
    for (k, _) in &sysctl {
        check_sysctl(k, &namespaces)?;
    }

    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(invalid(
            "linux.mountLabel",
            "SELinux labels are not supported by berth (the host has no SELinux support enabled for containers)",
        ));
    }

    let process = plan_process(process)?;
    if let Some(h) = spec.hooks() {
        check_hooks(h)?;
    }

    let annotations = spec
        .annotations()
        .as_ref()
        .map(|a| {
            let mut v: Vec<_> = a.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort();
            v
        })
        .unwrap_or_default();

    Ok(Plan {
        oci_version: spec.version().clone(),
        bundle: bundle.to_path_buf(),
        rootfs,
        root_readonly: root.readonly().unwrap_or(false),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        namespaces,
        uid_mappings,
        gid_mappings,
        rootfs_propagation,
        mounts,
        devices,
        masked_paths,
        readonly_paths,
        sysctl,
        process,
        cgroups_path: linux.cgroups_path().clone(),
        annotations,
        resources: linux.resources().clone(),
        seccomp: linux.seccomp().clone(),
        hooks: spec.hooks().clone(),
    })
}

/// root.path must not lead through a symlink (runc refuses one too): the rootfs berth
/// binds and pivots into is the directory config.json names, not wherever a link
/// points at create time. The bundle's own path may hold links (it is resolved first).
fn check_no_symlink(rootfs: &Path, given: &Path, bundle: &Path) -> Result<(), SpecError> {
    let base = if given.is_absolute() {
        PathBuf::from("/")
    } else {
        std::fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_path_buf())
    };
    let mut expected = base;
    for c in given.components() {
        match c {
            std::path::Component::ParentDir => {
                expected.pop();
            }
            std::path::Component::Normal(n) => expected.push(n),
            _ => {}
        }
    }
    let resolved = std::fs::canonicalize(rootfs)
        .map_err(|e| invalid("root.path", format!("resolving {}: {e}", rootfs.display())))?;
    if resolved != expected {
        return Err(invalid(
            "root.path",
            format!(
                "{} leads through a symbolic link (to {}); berth refuses it, as runc does",
                rootfs.display(),
                resolved.display()
            ),
        ));
    }
    Ok(())
}

/// Every hook's path is absolute, as the runtime-spec requires: a relative one would
/// be looked up in berth's own PATH and working directory.
fn check_hooks(hooks: &oci_spec::runtime::Hooks) -> Result<(), SpecError> {
    for kind in crate::hooks::HookKind::ALL {
        for (i, hook) in kind.of(hooks).iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(invalid(
                    format!("hooks.{}[{i}].path", kind.name()),
                    format!("{:?} is not an absolute path", hook.path()),
                ));
            }
        }
    }
    Ok(())
}

fn check_version(v: &str) -> Result<(), SpecError> {
    if v.is_empty() {
        return Err(invalid("ociVersion", "missing"));
    }
    let major = v.split('.').next().unwrap_or("");
    if major != "1" {
        return Err(invalid(
            "ociVersion",
            format!("unsupported version {v:?}: berth supports runtime-spec 1.x"),
        ));
    }
    Ok(())
}

fn plan_namespaces(list: &[oci_spec::runtime::LinuxNamespace]) -> Result<NamespacePlan, SpecError> {
    let mut plan = NamespacePlan::default();
    let mut seen = Vec::new();
    for (i, ns) in list.iter().enumerate() {
        let typ = format!("{:?}", ns.typ()).to_lowercase();
        let kind = match ns.typ() {
            oci_spec::runtime::LinuxNamespaceType::Mount => NsKind::Mount,
            oci_spec::runtime::LinuxNamespaceType::Cgroup => NsKind::Cgroup,
            oci_spec::runtime::LinuxNamespaceType::Uts => NsKind::Uts,
            oci_spec::runtime::LinuxNamespaceType::Ipc => NsKind::Ipc,
            oci_spec::runtime::LinuxNamespaceType::User => NsKind::User,
            oci_spec::runtime::LinuxNamespaceType::Pid => NsKind::Pid,
            oci_spec::runtime::LinuxNamespaceType::Network => NsKind::Network,
            oci_spec::runtime::LinuxNamespaceType::Time => NsKind::Time,
        };
        if seen.contains(&kind) {
            return Err(invalid(
                format!("linux.namespaces[{i}]"),
                format!("namespace {typ:?} is listed twice"),
            ));
        }
        seen.push(kind);
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                if !p.is_absolute() {
                    return Err(invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{} is not an absolute path", p.display()),
                    ));
                }
                if !p.exists() {
                    return Err(invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{} does not exist", p.display()),
                    ));
                }
                plan.join.push((kind, p.clone()));
            }
            _ => plan.new_flags |= kind.clone_flag(),
        }
    }
    // Join in table order: user first, so the others are entered with its privileges.
    plan.join.sort_by_key(|(k, _)| *k);
    Ok(plan)
}

pub fn plan_process(p: &oci_spec::runtime::Process) -> Result<ProcessPlan, SpecError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid("process.args", "must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{} is not an absolute path", p.cwd().display()),
        ));
    }
    let env = p.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        if !e.contains('=') {
            return Err(invalid(
                format!("process.env[{i}]"),
                format!("{e:?} is not of the form KEY=VALUE"),
            ));
        }
    }
    let mut rlimits = Vec::new();
    let mut seen = Vec::new();
    for (i, r) in p.rlimits().as_deref().unwrap_or(&[]).iter().enumerate() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let res = rlimits::by_name(&name).ok_or_else(|| {
            invalid(
                format!("process.rlimits[{i}].type"),
                format!("unknown rlimit {name:?}"),
            )
        })?;
        if seen.contains(&res) {
            return Err(invalid(
                format!("process.rlimits[{i}].type"),
                format!("{name} is given twice"),
            ));
        }
        seen.push(res);
        if r.soft() > r.hard() {
            return Err(invalid(
                format!("process.rlimits[{i}]"),
                format!(
                    "{name}: soft limit {} is above hard limit {}",
                    r.soft(),
                    r.hard()
                ),
            ));
        }
        rlimits.push((res, r.soft(), r.hard()));
    }
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                "process.oomScoreAdj",
                format!("{adj} is outside -1000..1000"),
            ));
        }
    }
    if p.apparmor_profile()
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(invalid(
            "process.apparmorProfile",
            "AppArmor profiles are not supported by berth on this host (no AppArmor support is enabled)",
        ));
    }
    if p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid(
            "process.selinuxLabel",
            "SELinux labels are not supported by berth on this host (no SELinux support is enabled)",
        ));
    }
    let capabilities = match p.capabilities() {
        Some(c) => Some(
            crate::capabilities::CapsPlan::from_spec(c)
                .map_err(|e| invalid("process.capabilities", e.to_string()))?,
        ),
        None => None,
    };
    let user = p.user();
    check_id("process.user.uid", user.uid())?;
    check_id("process.user.gid", user.gid())?;
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    for (i, g) in additional_gids.iter().enumerate() {
        check_id(&format!("process.user.additionalGids[{i}]"), *g)?;
    }
    Ok(ProcessPlan {
        args,
        env,
        cwd: p.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
        umask: user.umask(),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
        capabilities,
    })
}

/// The highest uid or gid berth accepts, as runc: 2^31-1. Above it, 4294967295 is
/// (uid_t)-1, which setresuid/setresgid read as "leave unchanged" (the process would
/// stay root), and the kernel's own ids are signed in places.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Refuses a uid or gid above [`MAX_ID`], naming `field`.
pub fn check_id(field: &str, id: u32) -> Result<(), SpecError> {
    if id > MAX_ID {
        return Err(invalid(
            field,
            format!("{id} is above {MAX_ID}, the highest uid/gid a container may use"),
        ));
    }
    Ok(())
}

/// Only namespaced sysctls may be set, and only when the namespace is private.
fn check_sysctl(key: &str, ns: &NamespacePlan) -> Result<(), SpecError> {
    let ipc = matches!(
        key,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || key.starts_with("fs.mqueue.");
    let need = if ipc {
        NsKind::Ipc
    } else if key.starts_with("net.") {
        NsKind::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        NsKind::Uts
    } else {
        return Err(invalid(
            "linux.sysctl",
            format!(
                "{key:?} is not a namespaced sysctl; berth will not change it for the whole host"
            ),
        ));
    };
    if !ns.has(need) {
        return Err(invalid(
            "linux.sysctl",
            format!("{key:?} needs a private {} namespace", need.spec_name()),
        ));
    }
    if key.contains("..") || key.contains('/') {
        return Err(invalid(
            "linux.sysctl",
            format!("{key:?} is not a valid sysctl name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
