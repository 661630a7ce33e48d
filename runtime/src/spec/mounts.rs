//! config.json's mounts -> [`MountPlan`]s: kind, source, flags, recursive attributes,
//! runc's extensions (tmpcopyup, idmap, ridmap), each option checked against what the
//! mount can take; pure except for the existence check of bind sources.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde::Deserialize;

use super::mount_options::{self, Extension};
use super::{invalid, IdMap, IdmapPlan, MountKind, MountPlan, SpecError, REMOUNT_FLAGS};

/// A mount's own uidMappings and gidMappings (runtime-spec 1.1; the spec type in use
/// does not carry them, so they are read from config.json alongside it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountIdmaps {
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    mounts: Option<Vec<RawMount>>,
}

#[derive(Deserialize, Default)]
struct RawMount {
    #[serde(default, rename = "uidMappings")]
    uid: Option<Vec<RawIdMap>>,
    #[serde(default, rename = "gidMappings")]
    gid: Option<Vec<RawIdMap>>,
}

#[derive(Deserialize)]
struct RawIdMap {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

/// Each mount's mappings, in the order of config.json's mounts.
pub fn mount_idmaps(bytes: &[u8]) -> Result<Vec<MountIdmaps>, (String, String)> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|e| ("mounts[].uidMappings".to_string(), e.to_string()))?;
    let conv = |v: Option<Vec<RawIdMap>>| -> Vec<IdMap> {
        v.unwrap_or_default()
            .into_iter()
            .map(|m| IdMap {
                container_id: m.container_id,
                host_id: m.host_id,
                size: m.size,
            })
            .collect()
    };
    Ok(raw
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| MountIdmaps {
            uid: conv(m.uid),
            gid: conv(m.gid),
        })
        .collect())
}

/// Plans every mount. `container_maps`: the container's own uid/gid mappings when it
/// has a new user namespace (an idmap mount without mappings of its own takes them).
pub fn plan_mounts(
    spec: &Spec,
    idmaps: &[MountIdmaps],
    bundle: &Path,
    container_maps: Option<(Vec<IdMap>, Vec<IdMap>)>,
) -> Result<Vec<MountPlan>, SpecError> {
    spec.mounts()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let own = idmaps.get(i).cloned().unwrap_or_default();
            plan_mount(i, m, bundle, own, container_maps.as_ref())
        })
        .collect()
}

fn plan_mount(
    i: usize,
    m: &oci_spec::runtime::Mount,
    bundle: &Path,
    own: MountIdmaps,
    container_maps: Option<&(Vec<IdMap>, Vec<IdMap>)>,
) -> Result<MountPlan, SpecError> {
    let field = format!("mounts[{i}]");
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(invalid(
            format!("{field}.destination"),
            format!("{} is not an absolute path", dest.display()),
        ));
    }
    let opts = mount_options::parse(m.options().as_deref().unwrap_or(&[]));
    let fstype = m.typ().clone().unwrap_or_default();
    let is_bind = opts.flags & libc::MS_BIND != 0 || fstype == "bind";
    let kind = kind_of(is_bind, &fstype, &field, dest)?;
    let refuse = |what: String| invalid(format!("{field}.options"), what);
    if is_bind {
        if let Some(o) = opts.data.first() {
            return Err(refuse(format!(
                "option {o:?} of the bind mount at {} is not one berth knows (a bind mount takes no filesystem options)",
                dest.display()
            )));
        }
    }
    let tmpcopyup = opts.extensions.contains(&Extension::TmpCopyUp);
    if tmpcopyup && fstype != "tmpfs" {
        return Err(refuse(format!(
            "tmpcopyup applies to tmpfs mounts only, not to {} ({})",
            dest.display(),
            if is_bind { "bind" } else { &fstype }
        )));
    }
    let idmap = plan_idmap(&opts, is_bind, own, container_maps, &field, dest)?;
    let source = source_of(kind, m, bundle, &field)?;
    let mut flags = opts.flags;
    if is_bind {
        flags |= libc::MS_BIND;
    }
    // A bind mount ignores most flags on the first call; they are set after.
    let remount_flags = (is_bind && flags & REMOUNT_FLAGS != 0).then_some(flags & REMOUNT_FLAGS);
    Ok(MountPlan {
        kind,
        source,
        destination: dest.clone(),
        fstype,
        flags,
        remount_flags,
        propagation: opts.propagation,
        rec_set: opts.rec_set,
        rec_clear: opts.rec_clear,
        tmpcopyup,
        idmap,
        data: opts.data.join(","),
    })
}

fn kind_of(is_bind: bool, fstype: &str, field: &str, dest: &Path) -> Result<MountKind, SpecError> {
    if is_bind {
        return Ok(MountKind::Bind);
    }
    Ok(match fstype {
        "proc" => MountKind::Proc,
        "sysfs" => MountKind::Sysfs,
        "cgroup" | "cgroup2" => MountKind::Cgroup,
        "devpts" => MountKind::Devpts,
        "" => {
            return Err(invalid(
                format!("{field}.type"),
                format!(
                    "missing for {} (and it is not a bind mount)",
                    dest.display()
                ),
            ))
        }
        _ => MountKind::Other,
    })
}

/// A bind's source as an absolute host path (relative ones are the bundle's), checked
/// to exist; other mounts' sources are names for the filesystem.
fn source_of(
    kind: MountKind,
    m: &oci_spec::runtime::Mount,
    bundle: &Path,
    field: &str,
) -> Result<String, SpecError> {
    let raw = m.source().clone().unwrap_or_default();
    if kind != MountKind::Bind {
        return Ok(raw.to_string_lossy().into_owned());
    }
    let src = if raw.is_absolute() {
        raw
    } else {
        bundle.join(raw)
    };
    if std::fs::symlink_metadata(&src).is_err() {
        return Err(invalid(
            format!("{field}.source"),
            format!("bind source {} does not exist", src.display()),
        ));
    }
    Ok(src.to_string_lossy().into_owned())
}

/// An idmapped bind (runc 1.2): `idmap`/`ridmap`, or mappings of the mount's own. The
/// mappings are the mount's, else the container's user namespace's.
fn plan_idmap(
    opts: &mount_options::ParsedOptions,
    is_bind: bool,
    own: MountIdmaps,
    container_maps: Option<&(Vec<IdMap>, Vec<IdMap>)>,
    field: &str,
    dest: &Path,
) -> Result<Option<IdmapPlan>, SpecError> {
    let asked = opts.extensions.iter().find_map(|e| match e {
        Extension::Idmap { recursive } => Some(*recursive),
        _ => None,
    });
    let has_own = !own.uid.is_empty() || !own.gid.is_empty();
    if asked.is_none() && !has_own {
        return Ok(None);
    }
    if !is_bind {
        return Err(invalid(
            format!("{field}.options"),
            format!(
                "idmap applies to bind mounts only, not to {}",
                dest.display()
            ),
        ));
    }
    let (uid, gid) = if has_own {
        (own.uid, own.gid)
    } else if let Some((u, g)) = container_maps {
        (u.clone(), g.clone())
    } else {
        return Err(invalid(
            format!("{field}.uidMappings"),
            format!(
                "the idmapped mount at {} has no mappings, and the container no user namespace to take them from",
                dest.display()
            ),
        ));
    };
    if uid.is_empty() || gid.is_empty() {
        return Err(invalid(
            format!("{field}.uidMappings"),
            format!(
                "the idmapped mount at {} needs both uidMappings and gidMappings",
                dest.display()
            ),
        ));
    }
    Ok(Some(IdmapPlan {
        recursive: asked.unwrap_or(false),
        uid,
        gid,
    }))
}
