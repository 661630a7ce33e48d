//! `berth pause <id>` and `berth resume <id>`: the cgroup freezer.

use super::GlobalOpts;
use crate::cgroups::resources;
use crate::container::{ContainerDir, ContainerError, Status};

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The container id.
    pub id: String,
}

pub fn pause(g: &GlobalOpts, a: PauseArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let dir = ContainerDir::open(&g.root, &a.id)?;
    let state = dir.load()?;
    let status = state.status(&dir.path);
    if status != Status::Running && status != Status::Created {
        return Err(ContainerError::BadStatus {
            action: "pause",
            id: a.id,
            status,
        }
        .into());
    }
    resources::freeze(&state.cgroup)
        .map_err(|e| anyhow::anyhow!("pausing container {}: {e}", a.id))?;
    Ok(0)
}

pub fn resume(g: &GlobalOpts, a: PauseArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let dir = ContainerDir::open(&g.root, &a.id)?;
    let state = dir.load()?;
    let status = state.status(&dir.path);
    if status != Status::Paused {
        return Err(ContainerError::BadStatus {
            action: "resume",
            id: a.id,
            status,
        }
        .into());
    }
    resources::thaw(&state.cgroup)
        .map_err(|e| anyhow::anyhow!("resuming container {}: {e}", a.id))?;
    Ok(0)
}
