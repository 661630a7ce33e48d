//! Image unpack benchmark: Berth's import + unpack against `umoci unpack`, `umoci raw
//! unpack`, GNU `tar -xzf` and `zcat` of the same gzip layer, and warm-cache
//! `berth image run IMAGE true` against `berth run` on a prepared bundle.
//!
//! Run by hand as root (not in CI):
//!
//! ```text
//! cargo build --release -p berth --bins
//! cargo run --release -p berth-benches --bin image_unpack [-- --runs N --files N --mb N]
//! ```
//!
//! It builds its image itself with umoci from files copied out of /usr (about 20k files,
//! a few hundred MB, one gzip layer), and works on tmpfs (/dev/shm) so the disk does not
//! dominate. Every figure is the median of N runs; the page cache is warm for all tools.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use berth_benches::interleave::{measure_interleaved, print_table, Row};
use berth_benches::shell::{berth_binary, print_machine, require_tools, sh, unmount_under};
use berth_benches::usr_image::{build_image, Budget};

struct Options {
    runs: usize,
    files: usize,
    megabytes: u64,
}

fn parse_options() -> Result<Options> {
    let mut opts = Options {
        runs: 5,
        files: 20_000,
        megabytes: 315,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let parsed: u64 = value
            .parse()
            .with_context(|| format!("{flag}: `{value}` is not a number"))?;
        match flag.as_str() {
            "--runs" => opts.runs = parsed.max(1) as usize,
            "--files" => opts.files = parsed as usize,
            "--mb" => opts.megabytes = parsed,
            other => bail!("unknown option `{other}` (known: --runs, --files, --mb)"),
        }
    }
    Ok(opts)
}

fn main() -> Result<()> {
    let opts = parse_options()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("run this benchmark as root (it unpacks images with owners and runs containers)");
    }
    require_tools(&[
        ("umoci", "umoci"),
        ("tar", "tar"),
        ("zcat", "gzip"),
        ("runc", "runc"),
    ])?;
    let berth = berth_binary()?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/dev/shm")
        .context("create a work dir on tmpfs /dev/shm")?;
    let w = work.path();
    let result = run_all(&opts, &berth, w);
    unmount_under(w);
    result
}

fn run_all(opts: &Options, berth: &Path, w: &Path) -> Result<()> {
    print_machine(
        berth,
        &[
            "umoci --version",
            "tar --version | head -1",
            "gzip --version | head -1",
            "runc --version | head -1",
        ],
    )?;

    println!("\n== building the image with umoci ==");
    let built = build_image(
        w,
        &Budget {
            files: opts.files,
            megabytes: opts.megabytes,
            layers: 1,
        },
    )?;
    let blob_path = built.blobs.first().context("the image has no layer")?;
    println!("layer: {} ({})", built.describe(), blob_path.display());

    let layout = built.layout.display().to_string();
    let image = format!("{layout}:big");
    let blob = blob_path.display().to_string();
    let out = w.join("out");
    let outs = out.display().to_string();
    let store = w.join("store");
    let stores = store.display().to_string();
    let root = w.join("runtime-root");
    fs::create_dir_all(&root)?;
    let roots = root.display().to_string();
    let berths = berth.display().to_string();

    // Warm the page cache for every tool alike.
    sh(&format!("cat {blob} > /dev/null"))?;

    let cleanup_out = format!("rm -rf {outs} {stores}");
    let mkdir_out = format!("rm -rf {outs} {stores} && mkdir -p {outs}");
    let rows = measure_interleaved(
        &[
            Row::new(
                "zcat (decompression alone)",
                &format!("zcat {blob} > /dev/null"),
                "true",
            ),
            Row::new(
                "GNU tar -xzf",
                &format!("tar -xzf {blob} -C {outs}"),
                &mkdir_out,
            ),
            Row::new(
                "umoci raw unpack",
                &format!("umoci raw unpack --image {image} {outs}"),
                &cleanup_out,
            ),
            Row::new(
                "umoci unpack",
                &format!("umoci unpack --image {image} {outs}"),
                &cleanup_out,
            ),
            Row::new(
                "berth image import + unpack",
                &format!(
                    "{berths} image --store {stores} import {layout} --name big:1 && \
                     {berths} image --store {stores} unpack big:1 {outs}"
                ),
                &cleanup_out,
            ),
            Row::new(
                "berth image import alone",
                &format!("{berths} image --store {stores} import {layout} --name big:1"),
                &cleanup_out,
            ),
        ],
        opts.runs,
    )?;
    print_table(
        "unpack of one gzip layer (tmpfs, warm cache)",
        &rows,
        &["GNU tar -xzf"],
    );

    println!("\n== container start: image run vs run on a prepared bundle ==");
    sh(&format!(
        "rm -rf {stores} && {berths} image --store {stores} import {layout} --name big:1"
    ))?;
    let bundle = w.join("bundle");
    let bundles = bundle.display().to_string();
    sh(&format!(
        "{berths} image --store {stores} unpack big:1 {bundles}"
    ))?;
    prepare_bundle(&bundle)?;
    let counter = w.join("counter");
    let counters = counter.display().to_string();
    fs::write(&counter, "0")?;
    let next_name = format!("n=$(( $(cat {counters}) + 1 )); echo $n > {counters}");
    let starts = measure_interleaved(
        &[
            Row::new(
                "berth run (prepared bundle)",
                &format!("{next_name}; {berths} --root {roots} run --bundle {bundles} bench-$n"),
                "true",
            ),
            Row::new(
                "berth image run --rm IMAGE true",
                &format!(
                    "{berths} --root {roots} image --store {stores} run --rm --net host big:1 \
                     /usr/bin/true"
                ),
                "true",
            ),
            Row::new(
                "runc run (prepared bundle, reference)",
                &format!("{next_name}; runc --root {roots}/runc run --bundle {bundles} rbench-$n"),
                "true",
            ),
        ],
        opts.runs * 4,
    )?;
    print_table(
        "start and run `true` (warm cache)",
        &starts,
        &["berth run (prepared bundle)"],
    );
    println!(
        "\ntarget: berth import + unpack faster than GNU tar -xzf; image run within 2x of run"
    );
    Ok(())
}

/// Makes the unpacked bundle run `/usr/bin/true` without a terminal or network namespace
/// changes, like `image run --net host` does.
fn prepare_bundle(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    config["process"]["args"] = serde_json::json!(["/usr/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
