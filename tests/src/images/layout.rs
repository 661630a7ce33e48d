//! Hand-made OCI image layouts and tar layers, including entries no honest tool writes.
//!
//! [`RawTar`] writes headers byte for byte, bypassing the `tar` crate's path checks, so a
//! test can put `../`, absolute names and links to host files into a layer.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A tar stream assembled from raw headers.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for RawTar {
    fn default() -> Self {
        Self::new()
    }
}

impl RawTar {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        let raw = name.as_bytes();
        assert!(
            raw.len() <= 100,
            "raw tar name longer than 100 bytes: {name}"
        );
        header.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(size);
        header
    }

    fn append(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("append to in-memory tar");
        self
    }

    /// A directory entry.
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let header = Self::header(tar::EntryType::Directory, name, mode, 0);
        self.append(header, &[])
    }

    /// A regular file entry with `data` as content.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let header = Self::header(tar::EntryType::Regular, name, mode, data.len() as u64);
        self.append(header, data)
    }

    /// A symlink `name -> target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    /// A hard link `name` to the earlier entry (or hostile path) `target`.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    /// A FIFO.
    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        let header = Self::header(tar::EntryType::Fifo, name, mode, 0);
        self.append(header, &[])
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(tar::EntryType::Char, name, 0o644, 0);
        header.set_device_major(major).expect("ustar device major");
        header.set_device_minor(minor).expect("ustar device minor");
        self.append(header, &[])
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut header = Self::header(kind, name, 0o777, 0);
        let raw = target.as_bytes();
        assert!(raw.len() <= 100, "raw link target longer than 100 bytes");
        header.as_old_mut().linkname[..raw.len()].copy_from_slice(raw);
        self.append(header, &[])
    }

    /// A header with any typeflag byte, a raw name (at most 100 bytes), the size field
    /// `size` and `data` (padded to a block): for entries no honest tool writes.
    pub fn typed(&mut self, typeflag: u8, name: &[u8], size: u64, data: &[u8]) -> &mut Self {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(size);
        header.as_mut_bytes()[156] = typeflag;
        header.set_cksum();
        self.raw_bytes(header.as_bytes());
        self.raw_bytes(data);
        let pad = (512 - data.len() % 512) % 512;
        self.raw_bytes(&vec![0u8; pad])
    }

    /// A PAX extended header (`x`) with `records`, in order, for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let len = key.len() + value.len() + 3;
            let mut n = len + 1;
            while n != len + n.to_string().len() {
                n = len + n.to_string().len();
            }
            body.extend_from_slice(format!("{n} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.typed(b'x', b"PaxHeaders/entry", body.len() as u64, &body.clone())
    }

    /// A GNU long-name header (`L`) naming the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        self.typed(b'L', b"././@LongLink", data.len() as u64, &data.clone())
    }

    /// Bytes appended as they are (headers, garbage, zero blocks).
    pub fn raw_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.builder.get_mut().extend_from_slice(bytes);
        self
    }

    /// The archive without end-of-archive blocks (truncated or hand-ended streams).
    pub fn into_raw(self) -> Vec<u8> {
        let mut b = self.builder;
        std::mem::take(b.get_mut())
    }

    /// The finished archive, with its end-of-archive blocks.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish in-memory tar")
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// `tar` compressed this way.
    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).expect("gzip in memory");
                enc.finish().expect("gzip in memory")
            }
            Compression::Zstd => zstd::encode_all(tar, 1).expect("zstd in memory"),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer as the manifest and config describe it.
#[derive(Debug, Clone)]
pub struct LayerDesc {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// An OCI image layout being written by hand (`oci-layout`, `index.json`, `blobs/sha256`).
pub struct OciLayout {
    pub dir: PathBuf,
    layers: Vec<LayerDesc>,
    manifests: Vec<Value>,
}

impl OciLayout {
    /// Creates the layout skeleton in `dir`.
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout dirs");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        Self {
            dir: dir.to_path_buf(),
            layers: Vec::new(),
            manifests: Vec::new(),
        }
    }

    /// Path of the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Stores `bytes` as a blob and returns its digest and size.
    pub fn blob(&self, bytes: &[u8]) -> (String, u64) {
        let digest = digest_of(bytes);
        fs::write(self.blob_path(&digest), bytes).expect("write blob");
        (digest, bytes.len() as u64)
    }

    /// Adds a layer made of `tar`, compressed as asked; returns its descriptor.
    pub fn add_layer(&mut self, tar: &[u8], compression: Compression) -> LayerDesc {
        let (digest, size) = self.blob(&compression.compress(tar));
        let desc = LayerDesc {
            digest,
            diff_id: digest_of(tar),
            size,
            media_type: compression.media_type().to_string(),
        };
        self.layers.push(desc.clone());
        desc
    }

    /// Adds a layer whose blob is already in place (written by another tool).
    pub fn add_layer_desc(&mut self, desc: LayerDesc) {
        self.layers.push(desc);
    }

    /// Writes config and manifest for the layers added so far, tagged `tag` in index.json.
    /// `config` is the image config's `config` object (Env, Cmd, ...). Layers are reset so
    /// another image can be added to the same layout.
    pub fn tag(&mut self, tag: &str, config: Value) -> String {
        let (digest, size) = self.manifest(crate::images::host_arch(), config);
        self.manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        self.write_index(&index);
        digest
    }

    /// Writes config and manifest blobs for the layers added so far (then resets them), for
    /// an image of architecture `arch`; returns the manifest's digest and size. index.json
    /// is left alone.
    pub fn manifest(&mut self, arch: &str, config: Value) -> (String, u64) {
        let layers = std::mem::take(&mut self.layers);
        let image_config = json!({
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        });
        let config_bytes = serde_json::to_vec(&image_config).expect("serialize config");
        let (config_digest, config_size) = self.blob(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        self.blob(&serde_json::to_vec(&manifest).expect("serialize manifest"))
    }

    /// Replaces index.json with `index`.
    pub fn write_index(&self, index: &Value) {
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(index).expect("serialize index"),
        )
        .expect("write index.json");
    }

    /// The config blob's digest of the manifest `manifest_digest`.
    pub fn config_digest(&self, manifest_digest: &str) -> String {
        let manifest: Value =
            serde_json::from_slice(&fs::read(self.blob_path(manifest_digest)).expect("manifest"))
                .expect("manifest JSON");
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string()
    }
}

/// `len` bytes that do not compress (xorshift from `seed`), for layers big enough to be
/// caught midway.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A layer holding the host's static /bin/busybox as `bin/busybox` with `applets` linked
/// to it (`bin/<applet> -> busybox`), for images that run a command. Panics with the
/// package to install when /bin/busybox is missing.
pub fn busybox_layer(applets: &[&str]) -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!(
            "/bin/busybox ({e}) is required: install it with `apt-get install -y busybox-static`"
        )
    });
    let mut tar = RawTar::new();
    tar.dir("bin/", 0o755).file("bin/busybox", 0o755, &busybox);
    for applet in applets {
        tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.finish()
}

/// A zstd-compressed layer holding one file of `size` zero bytes, made without holding the
/// tar in memory: returns the compressed blob and the tar's digest (the diff_id).
pub fn zero_file_layer_zstd(size: u64) -> (Vec<u8>, String) {
    struct Hashing<W: Write> {
        inner: W,
        hash: Sha256,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(b)?;
            self.hash.update(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    let mut w = Hashing {
        inner: enc,
        hash: Sha256::new(),
    };
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").expect("tar path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    w.write_all(header.as_bytes()).expect("write header");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).expect("write zeros");
        left -= n as u64;
    }
    let pad = ((512 - size % 512) % 512) as usize + 1024;
    w.write_all(&vec![0u8; pad]).expect("write end blocks");
    let diff_id = format!("sha256:{}", hex::encode(w.hash.finalize()));
    (w.inner.finish().expect("finish zstd"), diff_id)
}
