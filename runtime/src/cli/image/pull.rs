//! `berth image pull REF`: over the distribution API into the store (see
//! `berth_images::registry`). Progress bars on a terminal, plain lines
//! otherwise, nothing with --quiet. The registry flags are shared with
//! `push`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use berth_images::progress::{Bars, Lines, Progress, Quiet};
use berth_images::registry::{self, config, PullOptions, RegistryOptions};
use berth_images::store::Store;

/// How to reach registries (pull and push).
#[derive(Debug, clap::Args)]
pub struct RegistryFlags {
    /// Plain HTTP for this registry (else only registries listed as insecure
    /// in registries.conf).
    #[arg(long)]
    pub insecure: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// registries.conf (insecure registries, mirrors).
    #[arg(long = "registries-conf", env = "BERTH_REGISTRIES_CONF", default_value = config::REGISTRIES_CONF)]
    pub registries_conf: PathBuf,
    /// Auth file to read credentials from (default: the containers/docker conventions).
    #[arg(long = "authfile", env = "REGISTRY_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Directory of per-registry CAs and client certificates (certs.d layout).
    #[arg(long = "cert-dir", default_value = config::CERTS_DIR)]
    pub certs_dir: PathBuf,
}

impl RegistryFlags {
    /// The registry options these flags give.
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let mut o = PullOptions::for_node(&self.registries_conf)?.registry;
        o.insecure = self.insecure;
        o.certs_dir = self.certs_dir.clone();
        if let Some(f) = &self.auth_file {
            o.auth_files = vec![f.clone()];
        }
        Ok(o)
    }

    /// Progress bars on a terminal, plain lines otherwise, none with --quiet.
    pub fn progress(&self) -> Box<dyn Progress> {
        if self.quiet {
            Box::new(Quiet)
        } else if std::io::stderr().is_terminal() {
            Box::new(Bars::new())
        } else {
            Box::new(Lines)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image reference: [docker://][host[:port]/]path[:tag][@digest].
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(store: &Store, a: PullArgs) -> anyhow::Result<i32> {
    let opts = PullOptions {
        registry: a.registry.options()?,
        ..PullOptions::default()
    };
    let progress = a.registry.progress();
    let rec = registry::pull(store, &a.reference, &opts, progress.as_ref())
        .with_context(|| format!("pulling {}", berth_images::escape::text(&a.reference)))?;
    println!("{} {}", rec.reference, rec.manifest);
    Ok(0)
}
