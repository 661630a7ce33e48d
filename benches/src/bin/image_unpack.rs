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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

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
    for (tool, package) in [
        ("umoci", "umoci"),
        ("tar", "tar"),
        ("zcat", "gzip"),
        ("runc", "runc"),
    ] {
        which(tool)
            .with_context(|| format!("`{tool}` is missing: apt-get install -y {package}"))?;
    }
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
    print_machine(berth)?;

    println!("\n== building the image with umoci ==");
    let built = build_image(w, opts)?;
    println!(
        "layer: {} files, {:.1} MB uncompressed, {:.1} MB gzip ({})",
        built.files,
        built.tar_bytes as f64 / 1e6,
        built.blob_bytes as f64 / 1e6,
        built.blob.display()
    );

    let layout = built.layout.display().to_string();
    let image = format!("{layout}:big");
    let blob = built.blob.display().to_string();
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
        "GNU tar -xzf",
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
        "berth run (prepared bundle)",
    );
    println!(
        "\ntarget: berth import + unpack faster than GNU tar -xzf; image run within 2x of run"
    );
    Ok(())
}

/// One benchmarked command: its samples and what it ran.
struct Row {
    name: String,
    command: String,
    /// Run untimed before each sample (clearing the previous output).
    setup: String,
    samples: Vec<Duration>,
    error: Option<String>,
}

impl Row {
    fn new(name: &str, command: &str, setup: &str) -> Row {
        Row {
            name: name.to_string(),
            command: command.to_string(),
            setup: setup.to_string(),
            samples: Vec::new(),
            error: None,
        }
    }

    fn median(&self) -> Option<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s.get(s.len() / 2).copied()
    }
}

/// Runs every row's `setup` (untimed) then `command` (timed), one row after the other in
/// rounds, so that load changes on the machine hit every tool alike. Round 0 is a warm-up.
/// A failing command is recorded in its row, not fatal, so the other figures still print.
fn measure_interleaved(rows: &[Row], runs: usize) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|r| Row::new(&r.name, &r.command, &r.setup))
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    println!("each round runs, in order: {}", names.join(" | "));
    for round in 0..=runs {
        print!("round {round}/{runs}:");
        for row in rows.iter_mut().filter(|r| r.error.is_none()) {
            sh(&row.setup)?;
            let start = Instant::now();
            let out = Command::new("sh")
                .arg("-c")
                .arg(&row.command)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("run sh")?;
            let took = start.elapsed();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                row.error = Some(format!("{}: {err}", out.status));
                print!(" [{} FAILED]", row.name);
                continue;
            }
            if round > 0 {
                row.samples.push(took);
            }
            print!(" {:.3}s", took.as_secs_f64());
            std::io::stdout().flush()?;
        }
        println!();
    }
    Ok(rows)
}

fn print_table(title: &str, rows: &[Row], baseline: &str) {
    let base = rows
        .iter()
        .find(|r| r.name == baseline)
        .and_then(Row::median);
    println!("\n{title}");
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "", "median", "min", "max", "ratio"
    );
    for row in rows {
        match (row.median(), &row.error) {
            (Some(median), None) => {
                let min = row.samples.iter().min().copied().unwrap_or_default();
                let max = row.samples.iter().max().copied().unwrap_or_default();
                let ratio = base
                    .map(|b| format!("{:.2}x", median.as_secs_f64() / b.as_secs_f64()))
                    .unwrap_or_else(|| "-".to_string());
                println!(
                    "{:<40} {:>9.3}s {:>9.3}s {:>9.3}s {:>10}",
                    row.name,
                    median.as_secs_f64(),
                    min.as_secs_f64(),
                    max.as_secs_f64(),
                    ratio
                );
            }
            (_, err) => println!(
                "{:<40} failed: {}",
                row.name,
                err.as_deref().unwrap_or("no samples")
            ),
        }
    }
    println!("(ratio: median / median of `{baseline}`, lower is faster)");
    println!("commands:");
    for row in rows {
        println!("  {}: {}", row.name, row.command);
    }
}

struct BuiltImage {
    layout: PathBuf,
    blob: PathBuf,
    files: usize,
    tar_bytes: u64,
    blob_bytes: u64,
}

/// Picks files from /usr (all of /usr/include, then /usr/share, in name order, skipping
/// files over 8 MB) up to the file and size budget, adds what `/usr/bin/true` needs to run,
/// and makes a one-layer image of them with umoci.
fn build_image(w: &Path, opts: &Options) -> Result<BuiltImage> {
    let mut picked: Vec<PathBuf> = Vec::new();
    let mut bytes = 0u64;
    let budget = opts.megabytes * 1_000_000;
    for top in ["/usr/include", "/usr/share"] {
        collect(Path::new(top), &mut picked, &mut bytes, opts.files, budget)?;
    }
    let files = picked.len();
    let list = w.join("files.txt");
    let mut text = String::new();
    for p in &picked {
        text.push_str(
            p.to_str()
                .context("non-utf-8 path under /usr")?
                .trim_start_matches('/'),
        );
        text.push('\n');
    }
    // What the `true` container needs, wherever the loader and libc live.
    let ldd = sh_output("ldd /usr/bin/true")?;
    text.push_str("usr/bin/true\n");
    for word in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        // Both the name the binary asks for (its directory resolved, e.g. /lib64 ->
        // /usr/lib64, keeping a final symlink) and the file it finally points to.
        let path = Path::new(word);
        let dir = fs::canonicalize(path.parent().context("lib path")?)?;
        let named = dir.join(path.file_name().context("lib name")?);
        for p in [named, fs::canonicalize(path)?] {
            text.push_str(p.to_str().context("lib path")?.trim_start_matches('/'));
            text.push('\n');
        }
    }
    fs::write(&list, text)?;

    let layout = w.join("layout");
    let bundle = w.join("build");
    let (l, b) = (layout.display(), bundle.display());
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:big && umoci unpack --image {l}:big {b}"
    ))?;
    sh(&format!(
        "tar -C / -cf - --no-recursion -T {list} | tar -C {b}/rootfs -xf - && \
         cd {b}/rootfs && ln -s usr/bin bin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && \
         ln -s usr/sbin sbin && mkdir -p proc sys dev tmp etc && chmod 1777 tmp",
        list = list.display()
    ))?;
    sh(&format!(
        "umoci repack --image {l}:big {b} && umoci config --image {l}:big --config.cmd /usr/bin/true \
         && rm -rf {b}"
    ))?;
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json has no manifest")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&layout, mdigest)?)?)?;
    let ldigest = manifest["layers"][0]["digest"]
        .as_str()
        .context("manifest has no layer")?;
    let blob = blob_path(&layout, ldigest)?;
    let blob_bytes = fs::metadata(&blob)?.len();
    let tar_bytes = sh_output(&format!("zcat {} | wc -c", blob.display()))?
        .trim()
        .parse()
        .context("wc -c output")?;
    Ok(BuiltImage {
        layout,
        blob,
        files,
        tar_bytes,
        blob_bytes,
    })
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unexpected digest {digest}"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// Adds regular files under `dir` (name order, depth first) while within the budgets.
fn collect(
    dir: &Path,
    picked: &mut Vec<PathBuf>,
    bytes: &mut u64,
    max_files: usize,
    max_bytes: u64,
) -> Result<()> {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => return Ok(()),
    };
    entries.sort();
    for path in entries {
        if picked.len() >= max_files || *bytes >= max_bytes {
            return Ok(());
        }
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            collect(&path, picked, bytes, max_files, max_bytes)?;
        } else if (meta.is_file() && meta.len() <= 8_000_000) || meta.file_type().is_symlink() {
            *bytes += meta.len();
            picked.push(path);
        }
    }
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

fn print_machine(berth: &Path) -> Result<()> {
    println!("== machine and tools ==");
    let cpu = fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    println!("cpu: {cpu}, {} cores", sh_output("nproc")?.trim());
    println!("kernel: {}", sh_output("uname -r")?.trim());
    let mem = fs::read_to_string("/proc/meminfo")?;
    println!("memory: {}", mem.lines().next().unwrap_or("").trim());
    println!("work dir: tmpfs (/dev/shm)");
    for cmd in [
        "umoci --version",
        "tar --version | head -1",
        "gzip --version | head -1",
        "runc --version | head -1",
    ] {
        println!("{}", sh_output(cmd)?.trim());
    }
    println!(
        "berth: {} ({})",
        sh_output(&format!("{} --version", berth.display()))?.trim(),
        berth.display()
    );
    Ok(())
}

/// The release `berth` next to this binary, or `BERTH_BIN`.
fn berth_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("berth");
    if !path.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p berth --bins` \
             (or set BERTH_BIN)",
            path.display()
        );
    }
    Ok(path)
}

fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("{tool} not on PATH"))
}

fn sh(script: &str) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .with_context(|| format!("run `{script}`"))?;
    if !status.success() {
        bail!("`{script}` failed: {status}");
    }
    Ok(())
}

fn sh_output(script: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run `{script}`"))?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lazily unmounts whatever a failed run left mounted under `dir` (overlay snapshots).
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
