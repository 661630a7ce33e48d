//! `berth start <id>`.

use super::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The container id.
    pub id: String,
}

pub fn run(g: &GlobalOpts, a: StartArgs) -> anyhow::Result<i32> {
    crate::container::ops::start(&g.root, &a.id)?;
    Ok(0)
}
