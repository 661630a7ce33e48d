//! `berth image ...`: import, ls, inspect, rm, unpack and run, on top of the
//! berth-images crate. `image run` prepares an overlay snapshot and a
//! bundle, then re-executes berth itself (`berth --root R run --bundle B
//! NAME`) as a child: image code never reaches into runtime internals, and
//! no container is ever forked from this (possibly multithreaded) process.

mod login;
mod net;
mod pull;
mod push;
mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_images::progress::{Bars, Progress, Quiet};
use berth_images::store::{ImageRecord, Store};
use berth_images::{bundle, import};

use crate::cli::GlobalOpts;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Image store directory.
    #[arg(
        long,
        env = "BERTH_STORE",
        default_value = "/var/lib/berth",
        global = true
    )]
    pub store: PathBuf,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory, oci-archive or docker-archive.
    Import(ImportArgs),
    /// Pull an image from a registry (OCI distribution API v2).
    Pull(pull::PullArgs),
    /// Push a stored image to a registry (OCI distribution API v2).
    Push(push::PushArgs),
    /// Store credentials for a registry (password from stdin).
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(login::LogoutArgs),
    /// List stored images.
    Ls(LsArgs),
    /// Print an image's record, manifest and config as JSON.
    Inspect {
        /// Image reference (name:tag, name@sha256:..., or a digest prefix).
        reference: String,
    },
    /// Remove an image reference and free the layers nothing else uses.
    Rm {
        /// Image reference.
        reference: String,
    },
    /// Unpack an image into a runtime bundle: DIR/config.json + DIR/rootfs.
    Unpack {
        /// Image reference.
        reference: String,
        /// Bundle directory (must not exist, or be empty).
        dir: PathBuf,
    },
    /// Run a container from an image (overlay snapshot + berth run).
    Run(run::RunArgs),
    /// Remove the snapshots `image run` kept (no --rm) of containers that
    /// no longer exist in --root, then free unreferenced layers and blobs
    /// and the partial downloads of interrupted pulls.
    Prune,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The image: a layout directory, an oci-archive or a docker-archive.
    pub path: PathBuf,
    /// Reference to store the image under (also picks it in the source).
    #[arg(long)]
    pub name: Option<String>,
    /// Largest uncompressed layer accepted (e.g. 512m, 64g; default 32g).
    #[arg(long = "max-layer-size", env = "BERTH_MAX_LAYER_SIZE")]
    pub max_layer_size: Option<String>,
    /// Largest ratio of a layer's uncompressed to compressed size (default
    /// 100; layers up to 1 GiB uncompressed are accepted whatever their ratio).
    #[arg(long = "max-layer-ratio", env = "BERTH_MAX_LAYER_RATIO")]
    pub max_layer_ratio: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Output format: table or json.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Runs an `image` subcommand and returns the exit code. Its error line is
/// escaped once more as a whole (images' strings are escaped where they are
/// quoted; this also covers causes, such as parser errors, that quote input).
pub fn run(global: &GlobalOpts, args: ImageArgs) -> anyhow::Result<i32> {
    run_command(global, args)
        .map_err(|e| anyhow::anyhow!(berth_images::escape::line(&crate::cli::error_line(&e))))
}

fn run_command(global: &GlobalOpts, args: ImageArgs) -> anyhow::Result<i32> {
    let store = Store::open(&args.store)?;
    match args.command {
        ImageCommand::Import(a) => import_cmd(&store, a),
        ImageCommand::Pull(a) => pull::run(&store, a),
        ImageCommand::Push(a) => push::run(&store, a),
        ImageCommand::Login(a) => login::login(a),
        ImageCommand::Logout(a) => login::logout(a),
        ImageCommand::Ls(a) => ls(&store, &a),
        ImageCommand::Inspect { reference } => inspect(&store, &reference),
        ImageCommand::Rm { reference } => rm(&store, &reference),
        ImageCommand::Unpack { reference, dir } => unpack(&store, &reference, &dir),
        ImageCommand::Run(a) => run::run(global, &store, a),
        ImageCommand::Prune => prune(global, &store),
    }
}

fn progress() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Quiet)
    }
}

fn import_cmd(store: &Store, a: ImportArgs) -> anyhow::Result<i32> {
    let mut opts = import::ImportOptions::default();
    if let Some(n) = &a.name {
        opts.name = Some(n.parse().with_context(|| format!("--name {n}"))?);
    }
    if let Some(s) = &a.max_layer_size {
        opts.limits.max = bundle::parse_memory(s)
            .with_context(|| "--max-layer-size")?
            .try_into()
            .context("--max-layer-size")?;
    }
    if let Some(r) = a.max_layer_ratio {
        opts.limits.ratio = r;
    }
    let p = progress();
    let record = import::import(store, &a.path, &opts, p.as_ref())
        .with_context(|| format!("importing {}", a.path.display()))?;
    println!("{} {}", record.reference, record.manifest);
    Ok(0)
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// The `image ls` table.
pub fn table(images: &[ImageRecord]) -> String {
    let w = images
        .iter()
        .map(|i| i.reference.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = format!(
        "{:<w$}  {:<12}  {:<14}  {:>6}  {:>8}\n",
        "REFERENCE", "DIGEST", "PLATFORM", "LAYERS", "SIZE"
    );
    for i in images {
        out.push_str(&format!(
            "{:<w$}  {:<12}  {:<14}  {:>6}  {:>8}\n",
            i.reference,
            i.manifest.short(),
            i.platform,
            i.layers.len(),
            human(i.size())
        ));
    }
    out
}

fn ls(store: &Store, a: &LsArgs) -> anyhow::Result<i32> {
    let images = store.images()?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&images)?);
    } else {
        print!("{}", table(&images));
    }
    Ok(0)
}

fn inspect(store: &Store, reference: &str) -> anyhow::Result<i32> {
    let image = store.find(reference)?;
    let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.manifest)?)
        .with_context(|| format!("manifest {}", image.manifest))?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.config)?)
        .with_context(|| format!("config {}", image.config))?;
    let out = serde_json::json!({
        "reference": image.reference,
        "digest": image.manifest,
        "config_digest": image.config,
        "platform": image.platform,
        "created": image.created,
        "imported": image.imported,
        "size": image.size(),
        "layers": image.layers,
        "manifest": manifest,
        "config": config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

fn rm(store: &Store, reference: &str) -> anyhow::Result<i32> {
    let lock = store.lock()?;
    let (record, freed) = store.remove_image(&lock, reference)?;
    println!("untagged {}", record.reference);
    for l in &freed.layers {
        println!("deleted layer {l}");
    }
    for b in &freed.blobs {
        println!("deleted blob {b}");
    }
    Ok(0)
}

fn prune(global: &GlobalOpts, store: &Store) -> anyhow::Result<i32> {
    // Network attachments killed runs left (see `net`), before their snapshots go.
    let cni = net::CniDirs::new(store, "/etc/cni/net.d".into(), Vec::new());
    net::sweep(store, &global.root, &cni)?;
    let lock = store.lock()?;
    for r in berth_images::snapshot::reap(store, &lock)? {
        tracing::info!(?r, "cleaned up after an earlier image run");
    }
    for snap in store.snapshots()? {
        // A container the runtime still knows, or an `image run` still
        // preparing one, is left alone.
        if global.root.join(&snap.name).exists() || snap.owner.is_some_and(|o| o.alive()) {
            continue;
        }
        berth_images::snapshot::remove(store, &lock, &snap.name)?;
        println!("removed container {}", snap.name);
    }
    // Partial downloads of interrupted pulls, kept for a resume, go too.
    store.clean_partials(&lock, std::time::Duration::ZERO)?;
    let freed = store.gc(&lock)?;
    for l in &freed.layers {
        println!("deleted layer {l}");
    }
    for b in &freed.blobs {
        println!("deleted blob {b}");
    }
    Ok(0)
}

fn unpack(store: &Store, reference: &str, dir: &Path) -> anyhow::Result<i32> {
    store.find(reference)?;
    let created = match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                bail!("{}: bundle directory is not empty", dir.display());
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            true
        }
        Err(e) => return Err(e).with_context(|| dir.display().to_string()),
    };
    let r = (|| -> anyhow::Result<()> {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| rootfs.display().to_string())?;
        // Shared lock: no rm/GC may free the layers while they are copied.
        let _lock = store.lock_shared()?;
        let image = store.find(reference)?;
        import::flatten(store, &image, &rootfs)?;
        let (_, config) = import::load_manifest(store, &image.manifest)?;
        // Like `umoci unpack`: no command in the image gives runc spec's `sh`.
        let overrides = bundle::Overrides {
            fallback_args: vec!["sh".into()],
            ..Default::default()
        };
        let users = bundle::read_user_db(&rootfs, &bundle::user_spec(&config, &overrides))?;
        let value = bundle::generate(&config, &users, &overrides)?;
        bundle::write_config(dir, &value)?;
        Ok(())
    })();
    if let Err(e) = r {
        // Leave nothing behind: the directory as we found it.
        let cleanup = if created {
            std::fs::remove_dir_all(dir)
        } else {
            std::fs::remove_dir_all(dir.join("rootfs")).and_then(|_| {
                match std::fs::remove_file(dir.join("config.json")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
        };
        if let Err(c) = cleanup {
            tracing::warn!(error = %c, dir = %dir.display(), "cleaning up a failed unpack");
        }
        return Err(e.context(format!("unpacking {reference} into {}", dir.display())));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1500), "1.5kB");
        assert_eq!(human(2_500_000), "2.5MB");
    }

    #[test]
    fn cli_parses_the_documented_surface() {
        use clap::Parser;
        let argv = [
            "berth", "image", "--store", "/s", "run", "--rm", "--name", "c1", "-e", "A=1", "-e",
            "B=2", "-w", "/tmp", "--user", "1:2", "--memory", "64m", "--net", "host", "busybox",
            "sh", "-c", "echo hi",
        ];
        // berth hands everything after `image` to berth-image untouched ...
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Image(fwd) = cli.command else {
            panic!("not an image command")
        };
        let tail: Vec<std::ffi::OsString> = argv[2..].iter().map(Into::into).collect();
        assert_eq!(fwd.args, tail);
        assert!(crate::cli::Cli::try_parse_from(["berth", "image", "--help"]).is_ok());
        // ... which parses the same command line.
        let cli = crate::cli::ImageCli::try_parse_from(argv).unwrap();
        let crate::cli::ImageVerb::Image(a) = cli.command;
        assert_eq!(a.store, PathBuf::from("/s"));
        let ImageCommand::Run(r) = a.command else {
            panic!("not run")
        };
        assert!(r.rm);
        assert_eq!(r.name.as_deref(), Some("c1"));
        assert_eq!(r.env, vec!["A=1", "B=2"]);
        assert_eq!(r.workdir.as_deref(), Some("/tmp"));
        assert_eq!(r.net, "host");
        assert_eq!(r.reference, "busybox");
        assert_eq!(r.cmd, vec!["sh", "-c", "echo hi"]);
        let cli =
            crate::cli::ImageCli::try_parse_from(["berth", "image", "ls", "--format", "json"])
                .unwrap();
        let crate::cli::ImageVerb::Image(a) = cli.command;
        assert!(matches!(a.command, ImageCommand::Ls(_)));
        let cli = crate::cli::ImageCli::try_parse_from([
            "berth",
            "image",
            "run",
            "--net",
            "lab",
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "x",
        ])
        .unwrap();
        let crate::cli::ImageVerb::Image(a) = cli.command;
        let ImageCommand::Run(r) = a.command else {
            panic!("not run")
        };
        assert_eq!(r.net, "lab");
        assert_eq!(r.publish, vec!["8080:80", "53:53/udp"]);
        assert_eq!(r.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
    }
}
