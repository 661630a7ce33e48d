//! Idmapped binds (`idmap`, `ridmap`, or a mount's own uidMappings/gidMappings; runc
//! 1.2). Made by `create` itself before the clone, because marking a mount idmapped
//! needs privilege over the filesystem that init, inside a user namespace, no longer
//! has: the bind is cloned detached, given its flags and its idmapping from a user
//! namespace made with the mount's mappings, and init inherits the descriptor and
//! only attaches it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::spec::{IdMap, MountPlan, Plan};
use crate::sys::mountfd::{self, Attrs, MOUNT_ATTR_IDMAP};

/// For each of the plan's mounts, its prepared idmapped tree (`None` for the others).
pub fn prepare(plan: &Plan) -> Result<Vec<Option<OwnedFd>>, String> {
    plan.mounts
        .iter()
        .map(|m| match &m.idmap {
            None => Ok(None),
            Some(_) => prepare_one(m)
                .map(Some)
                .map_err(|e| format!("idmapped mount at {}: {e}", m.destination.display())),
        })
        .collect()
}

fn prepare_one(m: &MountPlan) -> std::io::Result<OwnedFd> {
    let Some(idmap) = &m.idmap else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let text = |maps: &[IdMap]| {
        crate::sys::userns::map_text(maps.iter().map(|x| (x.container_id, x.host_id, x.size)))
    };
    let userns = crate::sys::userns::with_maps(&text(&idmap.uid), &text(&idmap.gid))?;
    let tree = mountfd::clone_tree(
        libc::AT_FDCWD,
        Path::new(&m.source),
        m.flags & libc::MS_REC != 0,
    )?;
    super::mounts::dress(&tree, m)?;
    let attrs = Attrs {
        set: MOUNT_ATTR_IDMAP,
        userns: Some(std::os::fd::AsRawFd::as_raw_fd(&userns)),
        ..Attrs::default()
    };
    mountfd::set_attrs(tree.as_fd(), idmap.recursive, attrs)?;
    Ok(tree)
}
