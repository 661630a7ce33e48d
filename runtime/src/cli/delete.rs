//! `berth delete <id>`.

use super::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Kill a running container first.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The container id.
    pub id: String,
}

pub fn run(g: &GlobalOpts, a: DeleteArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    crate::container::ops::delete(&g.root, &a.id, a.force)?;
    Ok(0)
}
