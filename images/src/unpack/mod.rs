//! Layer unpacking: a (possibly compressed) tar stream applied to a root
//! directory, safely (see [`apply`]), with the uncompressed stream's digest
//! (the diff_id) computed on the way and its size bounded.
//!
//! Two modes: [`WhiteoutMode::Flatten`] applies layers on top of each other
//! into one rootfs (whiteouts delete), [`WhiteoutMode::Overlay`] unpacks one
//! layer into its own directory for use as an overlayfs lowerdir (whiteouts
//! become 0/0 character devices, opaque markers `trusted.overlay.opaque`).

mod apply;
pub mod entry;

pub use apply::{list_dir, remove_all};

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::errno::Errno;

use crate::digest::{Algorithm, Digest, HashingReader};
use entry::{Meta, Node};

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    Flatten,
    Overlay,
}

/// Default bound on one layer's uncompressed size: 64 GiB.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

/// Options for one layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub mode: WhiteoutMode,
    /// Set owners from the tar (needs CAP_CHOWN); off when not root.
    pub chown: bool,
    /// Largest uncompressed stream accepted (decompression bombs).
    pub max_size: u64,
}

impl UnpackOptions {
    pub fn new(mode: WhiteoutMode) -> UnpackOptions {
        UnpackOptions {
            mode,
            chown: nix::unistd::geteuid().is_root(),
            max_size: DEFAULT_MAX_LAYER_SIZE,
        }
    }
}

/// Errors of layer unpacking. Every entry-level error names the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry `{entry}` refused: {problem}")]
    Hostile { entry: String, problem: String },
    #[error("layer entry `{entry}`: {op}: {errno}")]
    Fs {
        entry: String,
        op: &'static str,
        errno: Errno,
    },
    #[error("layer entry `{entry}`: setting xattr `{name}`: {errno}")]
    Xattr {
        entry: String,
        name: String,
        errno: Errno,
    },
    #[error("layer entry `{entry}`: unsupported tar entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("reading layer tar: {source}")]
    Tar { source: io::Error },
    #[error("decompressing layer: {source}")]
    Decompress { source: io::Error },
    #[error(
        "layer is larger than the limit of {limit} bytes uncompressed (a decompression bomb?)"
    )]
    TooLarge { limit: u64 },
    #[error("opening target directory {path}: {errno}")]
    Root { path: PathBuf, errno: Errno },
    #[error(
        "layer diff_id mismatch: config says {expected}, uncompressed content hashes to {actual}"
    )]
    DiffId { expected: Digest, actual: Digest },
}

/// What was unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub size: u64,
    /// Directories created only as parents of entries, without an entry of
    /// their own (sorted). In a layer directory their metadata should come
    /// from the layers below (see `import::commit_image`).
    pub implicit_dirs: Vec<Vec<u8>>,
}

/// Compression of a layer stream, sniffed from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Pads a stream that ends mid-block with zeros up to the next 512-byte
/// boundary: some tools write layers without the end-of-archive blocks,
/// and a few stop right after the last file's data.
struct PadToBlock<R> {
    inner: R,
    pos: u64,
    pad: u64,
    eof: bool,
}

impl<R: Read> Read for PadToBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.eof {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            self.eof = true;
            self.pad = (512 - self.pos % 512) % 512;
        }
        let n = buf
            .len()
            .min(usize::try_from(self.pad).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.pad -= n as u64;
        Ok(n)
    }
}

/// A reader fed by a producer thread through a channel of chunks.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    off: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.off == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.off = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.off);
        buf[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

const CHUNK: usize = 512 * 1024;

/// The uncompressed stream of a layer blob (compression sniffed).
fn decoder<'a, R: Read + 'a>(blob: R) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut br = BufReader::with_capacity(256 * 1024, blob);
    let head = br
        .fill_buf()
        .map_err(|source| UnpackError::Decompress { source })?;
    Ok(match sniff(head) {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|source| UnpackError::Decompress { source })?,
        ),
    })
}

/// Hashes a layer blob's uncompressed stream (bounded by `max_size`) and
/// checks it against `expected`, unpacking nothing.
pub fn verify_diff_id<R: Read>(
    blob: R,
    max_size: u64,
    expected: &Digest,
) -> Result<u64, UnpackError> {
    let mut hr = HashingReader::new(decoder(blob)?, Algorithm::Sha256, max_size);
    if let Err(e) = crate::digest::copy_big(&mut hr, &mut io::sink()) {
        return Err(if hr.exceeded() {
            UnpackError::TooLarge { limit: max_size }
        } else {
            UnpackError::Decompress { source: e }
        });
    }
    let (actual, size) = hr
        .finish()
        .map_err(|source| UnpackError::Decompress { source })?;
    if &actual != expected {
        return Err(UnpackError::DiffId {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(size)
}

/// Decompresses (by sniffing), hashes and bounds `blob` on this thread,
/// sending chunks of the uncompressed stream to `tx`.
fn produce<R: Read>(
    blob: R,
    max_size: u64,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Result<Option<Unpacked>, UnpackError> {
    let stream = decoder(blob)?;
    let mut hr = HashingReader::new(stream, Algorithm::Sha256, max_size);
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match hr.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let err = if hr.exceeded() {
                        UnpackError::TooLarge { limit: max_size }
                    } else {
                        UnpackError::Decompress {
                            source: io::Error::new(e.kind(), e.to_string()),
                        }
                    };
                    let _ = tx.send(Err(io::Error::other(err.to_string())));
                    return Err(err);
                }
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if tx.send(Ok(chunk)).is_err() {
            // The consumer stopped (it failed): its error is the one to report.
            return Ok(None);
        }
    }
    let (diff_id, size) = hr
        .finish()
        .map_err(|source| UnpackError::Decompress { source })?;
    Ok(Some(Unpacked {
        diff_id,
        size,
        implicit_dirs: Vec::new(),
    }))
}

/// Unpacks one layer blob (tar, tar+gzip or tar+zstd) into `root`.
/// Decompression and hashing run on a second thread, in parallel with the
/// filesystem work. When `expected` is given the diff_id must match.
pub fn unpack_layer<R: Read + Send>(
    blob: R,
    root: &Path,
    opts: &UnpackOptions,
    expected: Option<&Digest>,
) -> Result<Unpacked, UnpackError> {
    let mut applier = apply::Applier::new(root, opts.mode, opts.chown)?;
    let (tx, rx) = mpsc::sync_channel(8);
    let max_size = opts.max_size;
    let (applied, produced) = std::thread::scope(|s| {
        let producer = s.spawn(move || produce(blob, max_size, tx));
        let reader = ChannelReader {
            rx,
            cur: Vec::new(),
            off: 0,
            done: false,
        };
        let mut archive = tar::Archive::new(PadToBlock {
            inner: reader,
            pos: 0,
            pad: 0,
            eof: false,
        });
        let applied = apply_entries(&mut archive, &mut applier);
        let mut rest = archive.into_inner();
        if applied.is_ok() {
            // Hash everything after the end-of-archive blocks too.
            let _ = io::copy(&mut rest, &mut io::sink());
        }
        drop(rest);
        let produced = producer.join();
        (applied, produced)
    });
    let produced = match produced {
        Ok(r) => r,
        Err(_) => {
            return Err(UnpackError::Decompress {
                source: io::Error::other("decompression thread panicked"),
            })
        }
    };
    // A producer failure (bomb, corrupt stream) explains a consumer failure.
    let mut unpacked = match (applied, produced) {
        (_, Err(e)) => return Err(e),
        (Err(e), _) => return Err(e),
        (Ok(()), Ok(Some(u))) => u,
        (Ok(()), Ok(None)) => {
            return Err(UnpackError::Decompress {
                source: io::Error::other("layer stream ended early"),
            })
        }
    };
    unpacked.implicit_dirs = applier.finish()?;
    if let Some(expected) = expected {
        if &unpacked.diff_id != expected {
            return Err(UnpackError::DiffId {
                expected: expected.clone(),
                actual: unpacked.diff_id,
            });
        }
    }
    Ok(unpacked)
}

fn apply_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    applier: &mut apply::Applier,
) -> Result<(), UnpackError> {
    let entries = archive
        .entries()
        .map_err(|source| UnpackError::Tar { source })?;
    for e in entries {
        let mut e = e.map_err(|source| UnpackError::Tar { source })?;
        let raw = e.path_bytes().into_owned();
        let shown = entry::display(&raw);
        let (node, meta) = describe(&mut e, &shown)?;
        applier.apply(&raw, node, &meta, &mut e)?;
    }
    Ok(())
}

/// Reads an entry's header (and PAX records) into what to create.
fn describe<R: Read>(e: &mut tar::Entry<'_, R>, shown: &str) -> Result<(Node, Meta), UnpackError> {
    let tar_err = |source: io::Error| UnpackError::Tar {
        source: io::Error::new(source.kind(), format!("entry `{shown}`: {source}")),
    };
    let h = e.header();
    let mode = h.mode().map_err(tar_err)? & 0o7777;
    let uid = u32::try_from(h.uid().map_err(tar_err)?).map_err(|_| UnpackError::Hostile {
        entry: shown.to_string(),
        problem: "uid out of range".into(),
    })?;
    let gid = u32::try_from(h.gid().map_err(tar_err)?).map_err(|_| UnpackError::Hostile {
        entry: shown.to_string(),
        problem: "gid out of range".into(),
    })?;
    let mut mtime_sec = i64::try_from(h.mtime().map_err(tar_err)?).unwrap_or(i64::MAX);
    let mut mtime_nsec = 0;
    let et = h.entry_type();
    let dev = || -> Result<(u32, u32), UnpackError> {
        Ok((
            h.device_major().map_err(tar_err)?.unwrap_or(0),
            h.device_minor().map_err(tar_err)?.unwrap_or(0),
        ))
    };
    let node = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous => Node::File,
        tar::EntryType::Directory => Node::Dir,
        tar::EntryType::Symlink => Node::Symlink(
            e.link_name_bytes()
                .ok_or_else(|| UnpackError::Hostile {
                    entry: shown.to_string(),
                    problem: "symlink without a target".into(),
                })?
                .into_owned(),
        ),
        tar::EntryType::Link => {
            let target = e.link_name_bytes().ok_or_else(|| UnpackError::Hostile {
                entry: shown.to_string(),
                problem: "hard link without a target".into(),
            })?;
            let comps = entry::normalize(&target).map_err(|p| UnpackError::Hostile {
                entry: shown.to_string(),
                problem: format!("hard link target `{}`: {p}", entry::display(&target)),
            })?;
            Node::Hardlink(comps.into_iter().map(<[u8]>::to_vec).collect())
        }
        tar::EntryType::Char => {
            let (a, b) = dev()?;
            Node::Char(a, b)
        }
        tar::EntryType::Block => {
            let (a, b) = dev()?;
            Node::Block(a, b)
        }
        tar::EntryType::Fifo => Node::Fifo,
        other => {
            return Err(UnpackError::Unsupported {
                entry: shown.to_string(),
                kind: format!("{other:?}"),
            })
        }
    };
    let mut xattrs = BTreeMap::new();
    if let Some(pax) = e.pax_extensions().map_err(tar_err)? {
        for ext in pax {
            let ext = ext.map_err(tar_err)?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(name.to_vec(), ext.value_bytes().to_vec());
            } else if key == b"mtime" {
                if let Some((s, n)) = entry::parse_pax_time(ext.value_bytes()) {
                    mtime_sec = s;
                    mtime_nsec = n;
                }
            }
        }
    }
    Ok((
        node,
        Meta {
            mode,
            uid,
            gid,
            mtime_sec,
            mtime_nsec,
            xattrs,
        },
    ))
}

#[cfg(test)]
mod tests;
