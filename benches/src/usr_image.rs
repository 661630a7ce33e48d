//! The image benches' test image: files copied out of /usr (all of /usr/include, then
//! /usr/share, in name order, skipping files over 8 MB) up to a file and size budget, plus
//! what `/usr/bin/true` needs to run, made into an OCI layout by umoci as `LAYOUT:big`,
//! in one gzip layer or split (by file order) into several.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::shell::{sh, sh_output};

/// What to put in the image.
pub struct Budget {
    pub files: usize,
    pub megabytes: u64,
    /// Layers (at least 1): the picked files in this many consecutive groups.
    pub layers: usize,
}

pub struct BuiltImage {
    pub layout: PathBuf,
    /// The layer blobs, bottom first.
    pub blobs: Vec<PathBuf>,
    pub files: usize,
    /// Uncompressed (tar) bytes of all layers.
    pub tar_bytes: u64,
    /// Compressed bytes of all layers.
    pub blob_bytes: u64,
}

impl BuiltImage {
    pub fn describe(&self) -> String {
        format!(
            "{} files in {} layer(s), {:.1} MB uncompressed, {:.1} MB gzip",
            self.files,
            self.blobs.len(),
            self.tar_bytes as f64 / 1e6,
            self.blob_bytes as f64 / 1e6,
        )
    }
}

/// Builds the image in `w/layout` (working in `w`).
pub fn build_image(w: &Path, budget: &Budget) -> Result<BuiltImage> {
    let mut picked: Vec<PathBuf> = Vec::new();
    let mut bytes = 0u64;
    let max_bytes = budget.megabytes * 1_000_000;
    for top in ["/usr/include", "/usr/share"] {
        collect(
            Path::new(top),
            &mut picked,
            &mut bytes,
            budget.files,
            max_bytes,
        )?;
    }
    let files = picked.len();
    let layers = budget.layers.max(1);
    let per_layer = files.div_ceil(layers).max(1);
    let mut lists = Vec::new();
    for (i, group) in picked.chunks(per_layer).enumerate() {
        let mut text = if i == 0 { true_files()? } else { String::new() };
        for p in group {
            text.push_str(
                p.to_str()
                    .context("non-utf-8 path under /usr")?
                    .trim_start_matches('/'),
            );
            text.push('\n');
        }
        let list = w.join(format!("files-{i}.txt"));
        fs::write(&list, text)?;
        lists.push(list);
    }

    let layout = w.join("layout");
    let bundle = w.join("build");
    let (l, b) = (layout.display(), bundle.display());
    sh(&format!(
        "umoci init --layout {l} && umoci new --image {l}:big && umoci unpack --image {l}:big {b}"
    ))?;
    for (i, list) in lists.iter().enumerate() {
        sh(&format!(
            "tar -C / -cf - --no-recursion -T {list} | tar -C {b}/rootfs -xf -",
            list = list.display()
        ))?;
        if i == 0 {
            sh(&format!(
                "cd {b}/rootfs && ln -s usr/bin bin && ln -s usr/lib lib && \
                 ln -s usr/lib64 lib64 && ln -s usr/sbin sbin && mkdir -p proc sys dev tmp etc \
                 && chmod 1777 tmp"
            ))?;
        }
        sh(&format!(
            "umoci repack --refresh-bundle --image {l}:big {b}"
        ))?;
    }
    sh(&format!(
        "umoci config --image {l}:big --config.cmd /usr/bin/true && rm -rf {b}"
    ))?;
    let blobs = layer_blobs(&layout)?;
    let mut blob_bytes = 0;
    let mut tar_bytes = 0;
    for blob in &blobs {
        blob_bytes += fs::metadata(blob)?.len();
        tar_bytes += sh_output(&format!("zcat {} | wc -c", blob.display()))?
            .trim()
            .parse::<u64>()
            .context("wc -c output")?;
    }
    Ok(BuiltImage {
        layout,
        blobs,
        files,
        tar_bytes,
        blob_bytes,
    })
}

/// The file list of what the `true` container needs, wherever the loader and libc live.
fn true_files() -> Result<String> {
    let ldd = sh_output("ldd /usr/bin/true")?;
    let mut text = String::from("usr/bin/true\n");
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
    Ok(text)
}

/// The layer blobs of the layout's only manifest, bottom first.
fn layer_blobs(layout: &Path) -> Result<Vec<PathBuf>> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json has no manifest")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(layout, mdigest)?)?)?;
    manifest["layers"]
        .as_array()
        .context("manifest has no layers")?
        .iter()
        .map(|l| {
            blob_path(
                layout,
                l["digest"].as_str().context("layer without digest")?,
            )
        })
        .collect()
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unexpected digest {digest}"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// Adds regular files and symlinks under `dir` (name order, depth first) while within
/// the budgets.
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
