//! `berth spec`: writes a default config.json (refuses to overwrite one).

use std::path::PathBuf;

use anyhow::Context;

use super::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Path to the bundle directory.
    #[arg(long, short = 'b')]
    pub bundle: Option<PathBuf>,
    /// A spec for a rootless container (user namespace with the caller's ids).
    #[arg(long)]
    pub rootless: bool,
}

pub fn run(_g: &GlobalOpts, a: SpecArgs) -> anyhow::Result<i32> {
    let dir = a.bundle.unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        anyhow::bail!("File {} exists. Remove it first", path.display());
    }
    let v = crate::spec::default::default_spec(
        a.rootless,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&v, &mut ser).context("serializing spec")?;
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}
