//! `berth state <id>`: the runtime-spec state JSON.

use super::GlobalOpts;
use crate::container::ContainerDir;

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The container id.
    pub id: String,
}

pub fn run(g: &GlobalOpts, a: StateArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let dir = ContainerDir::open(&g.root, &a.id)?;
    let state = dir.load()?;
    let s = state.spec_state(state.status(&dir.path));
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(0)
}
