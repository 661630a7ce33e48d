//! `berth kill <id> [SIGNAL]`.

use super::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Send the signal to every process in the container.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// Signal name (KILL or SIGKILL) or number; default SIGTERM.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(g: &GlobalOpts, a: KillArgs) -> anyhow::Result<i32> {
    crate::container::validate_id(&a.id)?;
    let Some(sig) = crate::signals::parse(&a.signal) else {
        anyhow::bail!("unknown signal {:?}", a.signal);
    };
    crate::container::ops::kill(&g.root, &a.id, sig, a.all)?;
    Ok(0)
}
