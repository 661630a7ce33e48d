//! `berth image push REF [DEST]`: a stored image to a registry (see
//! `berth_images::registry::push`). DEST defaults to REF, which must then
//! name its registry (`host[:port]/repository:tag`).

use anyhow::Context;
use berth_images::registry::{self, PushOptions};
use berth_images::store::Store;

use super::pull::RegistryFlags;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The stored image (name:tag, name@sha256:..., or a digest prefix).
    pub reference: String,
    /// Where to push it: [docker://]host[:port]/repository[:tag|@digest]
    /// (default: REF).
    pub dest: Option<String>,
    /// Upload blobs in chunks of this size (e.g. 16m) instead of one request each.
    #[arg(long = "chunk-size")]
    pub chunk_size: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(store: &Store, a: PushArgs) -> anyhow::Result<i32> {
    let chunk_size = match &a.chunk_size {
        Some(s) => {
            let n: u64 = berth_images::bundle::parse_memory(s)
                .context("--chunk-size")?
                .try_into()
                .context("--chunk-size")?;
            anyhow::ensure!(n > 0, "--chunk-size must be more than 0");
            Some(n)
        }
        None => None,
    };
    let opts = PushOptions {
        registry: a.registry.options()?,
        chunk_size,
        ..PushOptions::default()
    };
    let progress = a.registry.progress();
    let dest = a.dest.as_deref().unwrap_or(&a.reference);
    let pushed = registry::push(
        store,
        &a.reference,
        a.dest.as_deref(),
        &opts,
        progress.as_ref(),
    )
    .with_context(|| {
        format!(
            "pushing {} to {}",
            berth_images::escape::text(&a.reference),
            berth_images::escape::text(dest)
        )
    })?;
    println!("{} {}", pushed.reference, pushed.digest);
    Ok(0)
}
