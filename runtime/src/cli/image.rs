//! `berth image ...` (owned by the images work, issue 4).

use crate::cli::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {}

/// Runs an `image` subcommand and returns the exit code.
pub fn run(_global: &GlobalOpts, _args: ImageArgs) -> anyhow::Result<i32> {
    anyhow::bail!("berth image: not implemented yet")
}
