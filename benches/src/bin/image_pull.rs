//! Image pull benchmark: `berth image pull` of the image benches' 20,000-file image (split
//! into a few gzip layers, about 300 MB uncompressed) from a local docker-registry into a
//! cold store, against `podman pull` (into its own overlay storage) and `skopeo copy` to an
//! OCI layout followed by `umoci unpack`, all in the same interleaved rounds.
//!
//! Run by hand as root (not in CI), after `./scripts/install-deps bench`:
//!
//! ```text
//! cargo run --release -p berth-benches --bin image_pull -- \
//!     --berth "$(./scripts/build-release)" [--runs N --files N --mb N --layers N]
//! ```
//!
//! Everything (the registry's storage, every store, every tool's temporary files through
//! `TMPDIR`) is on tmpfs (/dev/shm), so the disk does not dominate; the registry is plain
//! HTTP on loopback and each tool is told it is insecure. "Cold" means an empty destination
//! store before each sample (removed untimed); the registry's files stay in the page cache
//! for every tool alike. At the end, the rootfs that berth unpacks and the one umoci
//! unpacks are compared by file count and bytes, so the rows are known to do the same work.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_benches::interleave::{measure_interleaved, print_table, Row};
use berth_benches::shell::{
    berth_binary, print_machine, require_tools, sh, sh_output, unmount_under,
};
use berth_benches::usr_image::{build_image, Budget};
use berth_tests::images::registry::{Registry, Setup};

struct Options {
    runs: usize,
    budget: Budget,
    berth: Option<PathBuf>,
}

fn parse_options() -> Result<Options> {
    let mut opts = Options {
        runs: 5,
        budget: Budget {
            files: 20_000,
            megabytes: 315,
            layers: 4,
        },
        berth: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        if flag == "--berth" {
            opts.berth = Some(PathBuf::from(value));
            continue;
        }
        let parsed: u64 = value
            .parse()
            .with_context(|| format!("{flag}: `{value}` is not a number"))?;
        match flag.as_str() {
            "--runs" => opts.runs = parsed.max(1) as usize,
            "--files" => opts.budget.files = parsed as usize,
            "--mb" => opts.budget.megabytes = parsed,
            "--layers" => opts.budget.layers = parsed.max(1) as usize,
            other => {
                bail!("unknown option `{other}` (known: --berth, --runs, --files, --mb, --layers)")
            }
        }
    }
    Ok(opts)
}

fn main() -> Result<()> {
    let opts = parse_options()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("run this benchmark as root (stores keep owners; podman's storage needs root)");
    }
    require_tools(&[
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("umoci", "umoci"),
        ("podman", "podman"),
        ("tar", "tar"),
        ("zcat", "gzip"),
    ])?;
    let berth = match &opts.berth {
        Some(path) => path.clone(),
        None => berth_binary()?,
    };
    let work = tempfile::Builder::new()
        .prefix("berth-bench-pull-")
        .tempdir_in("/dev/shm")
        .context("create a work dir on tmpfs /dev/shm")?;
    let w = work.path();
    let result = run_all(&opts, &berth, w);
    unmount_under(w);
    result
}

/// The paths every row works in.
struct Paths {
    podman_root: String,
    podman_run: String,
    store: String,
    out: String,
    tmp: String,
}

impl Paths {
    fn new(w: &Path) -> Paths {
        let s = |p: &str| w.join(p).display().to_string();
        Paths {
            podman_root: s("podman/root"),
            podman_run: s("podman/run"),
            store: s("store"),
            out: s("out"),
            tmp: s("tmp"),
        }
    }

    fn podman(&self) -> String {
        format!(
            "TMPDIR={} podman --root {} --runroot {} --storage-driver overlay \
             --events-backend file",
            self.tmp, self.podman_root, self.podman_run
        )
    }

    /// Untimed before each sample: no store, no output, an empty TMPDIR.
    fn clean(&self) -> String {
        let Paths {
            podman_root,
            podman_run,
            store,
            out,
            tmp,
        } = self;
        format!(
            "for m in $(grep -o ' {podman_root}[^ ]*' /proc/self/mountinfo | sort -r); do \
             umount -l $m; done; rm -rf {podman_root} {podman_run} {store} {out} {tmp} && \
             mkdir -p {out} {tmp}"
        )
    }
}

fn run_all(opts: &Options, berth: &Path, w: &Path) -> Result<()> {
    print_machine(
        berth,
        &[
            "docker-registry --version",
            "podman --version",
            "skopeo --version",
            "umoci --version",
        ],
    )?;

    println!("\n== building the image with umoci ==");
    let built = build_image(w, &opts.budget)?;
    println!("image: {}", built.describe());
    let reg = Registry::start(Setup {
        parent_dir: Some(w.to_path_buf()),
        ..Setup::default()
    });
    reg.push_layout(&built.layout, "big", "bench/big:1", w);
    let image = format!("{}/bench/big:1", reg.addr);
    println!("pushed with skopeo to docker-registry on {image} (plain HTTP, storage on tmpfs)");

    let p = Paths::new(w);
    let clean = p.clean();
    let berth = format!(
        "TMPDIR={} {} image --store {}",
        p.tmp,
        berth.display(),
        p.store
    );
    let out = &p.out;
    let berth_pull = format!("{berth} pull --insecure --quiet {image}");
    let skopeo = format!(
        "TMPDIR={} skopeo copy --quiet --src-tls-verify=false docker://{image} oci:{out}/layout:big",
        p.tmp
    );
    let rows = measure_interleaved(
        &[
            Row::new(
                "podman pull",
                &format!("{} pull --quiet --tls-verify=false {image}", p.podman()),
                &clean,
            ),
            Row::new(
                "skopeo copy + umoci unpack",
                &format!("{skopeo} && umoci unpack --image {out}/layout:big {out}/bundle"),
                &clean,
            ),
            Row::new("skopeo copy alone", &skopeo, &clean),
            Row::new("berth image pull", &berth_pull, &clean),
            Row::new(
                "berth image pull + unpack",
                &format!("{berth_pull} && {berth} unpack {image} {out}/bundle"),
                &clean,
            ),
        ],
        opts.runs,
    )?;
    print_table(
        "pull from a local registry into a cold store (tmpfs)",
        &rows,
        &["podman pull", "skopeo copy + umoci unpack"],
    );
    println!("\ntarget: berth image pull at most 0.5x podman pull");
    same_work(&p, &berth_pull, &berth, &skopeo, &image)?;
    sh(&clean)
}

/// Unpacks the image once with berth and once with skopeo + umoci and prints both trees'
/// file counts and bytes; fails when they differ.
fn same_work(p: &Paths, berth_pull: &str, berth: &str, skopeo: &str, image: &str) -> Result<()> {
    let out = &p.out;
    sh(&p.clean())?;
    sh(&format!(
        "{berth_pull} && {berth} unpack {image} {out}/berth && {skopeo} && \
         umoci unpack --image {out}/layout:big {out}/umoci"
    ))?;
    let measure = |dir: &str| {
        sh_output(&format!(
            "cd {out}/{dir}/rootfs && echo $(find . | wc -l) entries, \
             $(find . -type f -printf '%s\\n' | awk '{{s+=$1}} END {{print s}}') bytes"
        ))
    };
    let (b, u) = (measure("berth")?, measure("umoci")?);
    println!("rootfs by berth: {}; by umoci: {}", b.trim(), u.trim());
    if b != u {
        bail!("berth and umoci unpacked different trees");
    }
    Ok(())
}
