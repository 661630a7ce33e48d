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
mod header;
pub mod resolve;
pub mod sparse;

pub use apply::{list_dir, remove_all};
pub use resolve::{LowerDirs, LowerView};

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::errno::Errno;

use crate::digest::{Algorithm, Digest, HashingReader};

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    Flatten,
    Overlay,
}

/// Default absolute bound on one layer's uncompressed size: 32 GiB (the
/// largest layers of real images, CUDA and ML stacks, are a few GiB).
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 32 << 30;

/// Bounds on a layer's uncompressed size, against decompression bombs: at
/// most `max`, and at most `ratio` times its compressed size, though never
/// less than `floor` (small layers of zero-filled files compress well
/// beyond any ratio). Both are known before the first byte is read, and
/// decompression stops as soon as the bound is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    pub max: u64,
    pub ratio: u64,
    pub floor: u64,
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits {
            max: DEFAULT_MAX_LAYER_SIZE,
            ratio: 100,
            floor: 1 << 30,
        }
    }
}

impl SizeLimits {
    /// The uncompressed bound for a blob of `compressed` bytes.
    pub fn for_blob(&self, compressed: u64) -> u64 {
        self.max
            .min(self.floor.max(compressed.saturating_mul(self.ratio)))
    }

    /// Refuses, before reading it, a blob whose compressed size alone is
    /// past the absolute bound.
    pub fn check_compressed(&self, compressed: u64) -> Result<(), UnpackError> {
        if compressed > self.max {
            return Err(UnpackError::TooLarge { limit: self.max });
        }
        Ok(())
    }
}

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

/// Which entry of a layer an error is about: its name (escaped and
/// truncated: it comes from the image) and where its header starts in the
/// uncompressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAt {
    pub entry: String,
    pub offset: Option<u64>,
}

impl std::fmt::Display for EntryAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "`{}` (header at byte {o})", self.entry),
            None => write!(f, "`{}`", self.entry),
        }
    }
}

/// An io::Error from the tar reader, its text escaped (it may quote header
/// bytes).
fn escaped(e: &io::Error) -> String {
    crate::escape::text(&e.to_string())
}

/// Errors of layer unpacking. Every entry-level error names the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {at} refused: {problem}")]
    Hostile { at: EntryAt, problem: String },
    #[error("layer entry {at}: {op}: {errno}")]
    Fs {
        at: EntryAt,
        op: &'static str,
        errno: Errno,
    },
    #[error("layer entry {at}: setting xattr `{name}`: {errno}")]
    Xattr {
        at: EntryAt,
        name: String,
        errno: Errno,
    },
    #[error("layer entry {at}: unsupported tar entry type {kind}")]
    Unsupported { at: EntryAt, kind: String },
    // The io::Errors below are not `source`s: their text may quote header
    // bytes, and is shown only escaped, through these messages.
    #[error("reading layer entry {}: {}", at.as_ref().map_or_else(|| "?".to_string(), ToString::to_string), escaped(.error))]
    Tar {
        at: Option<EntryAt>,
        error: io::Error,
    },
    #[error("reading the layer tar at byte {offset}{}: {}", after.as_ref().map_or_else(String::new, |a| format!(" (after entry {a})")), escaped(.error))]
    Stream {
        offset: u64,
        after: Option<EntryAt>,
        error: io::Error,
    },
    #[error("the layer tar has a single zero block at byte {offset} followed by more data (an end-of-archive marker is two zero blocks; Go's archive/tar refuses this)")]
    HiddenAfterEnd { offset: u64 },
    #[error("decompressing layer: {}", escaped(.error))]
    Decompress { error: io::Error },
    #[error(
        "layer is larger than the limit of {limit} bytes uncompressed (a decompression bomb? see --max-layer-size and --max-layer-ratio)"
    )]
    TooLarge { limit: u64 },
    #[error("opening target directory {path}: {errno}")]
    Root { path: PathBuf, errno: Errno },
    #[error("the layers below: {0}")]
    Lower(String),
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
    /// Bytes handed to the tar reader so far (for error offsets).
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for PadToBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.eof {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                self.read.set(self.pos);
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
        .map_err(|source| UnpackError::Decompress { error: source })?;
    Ok(match sniff(head) {
        Compression::None => Box::new(br),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|source| UnpackError::Decompress { error: source })?,
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
            UnpackError::Decompress { error: e }
        });
    }
    let (actual, size) = hr
        .finish()
        .map_err(|source| UnpackError::Decompress { error: source })?;
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
                            error: io::Error::new(e.kind(), e.to_string()),
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
        .map_err(|source| UnpackError::Decompress { error: source })?;
    Ok(Some(Unpacked {
        diff_id,
        size,
        implicit_dirs: Vec::new(),
    }))
}

/// Unpacks one layer blob (tar, tar+gzip or tar+zstd) into `root`.
/// Decompression and hashing run on a second thread, in parallel with the
/// filesystem work. When `expected` is given the diff_id must match.
/// `lower` (overlay mode): the layers below, so that parent symlinks they
/// hold are followed (see [`resolve`]).
pub fn unpack_layer<R: Read + Send>(
    blob: R,
    root: &Path,
    opts: &UnpackOptions,
    expected: Option<&Digest>,
) -> Result<Unpacked, UnpackError> {
    unpack_layer_over(blob, root, opts, expected, None)
}

/// [`unpack_layer`] with the layers below it (see [`resolve::LowerView`]).
pub fn unpack_layer_over<R: Read + Send>(
    blob: R,
    root: &Path,
    opts: &UnpackOptions,
    expected: Option<&Digest>,
    lower: Option<&dyn LowerView>,
) -> Result<Unpacked, UnpackError> {
    let mut applier = apply::Applier::new(root, opts.mode, opts.chown, lower)?;
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
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut archive = tar::Archive::new(PadToBlock {
            inner: reader,
            pos: 0,
            pad: 0,
            eof: false,
            read: read.clone(),
        });
        let applied = apply_entries(&mut archive, &mut applier, &read);
        let mut rest = archive.into_inner();
        let applied = applied.and_then(|()| after_end(&mut rest, read.get()));
        drop(rest);
        let produced = producer.join();
        (applied, produced)
    });
    let produced = match produced {
        Ok(r) => r,
        Err(_) => {
            return Err(UnpackError::Decompress {
                error: io::Error::other("decompression thread panicked"),
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
                error: io::Error::other("layer stream ended early"),
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

/// After the tar reader stopped at a zero block: the next block must be
/// zero too (or the stream end), as Go's archive/tar requires; then the
/// rest is read so the whole stream is hashed.
fn after_end<R: Read>(rest: &mut R, offset: u64) -> Result<(), UnpackError> {
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match rest.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(UnpackError::Stream {
                    offset,
                    after: None,
                    error: source,
                })
            }
        }
    }
    if block[..got].iter().any(|&b| b != 0) {
        return Err(UnpackError::HiddenAfterEnd {
            offset: offset.saturating_sub(512),
        });
    }
    let _ = io::copy(rest, &mut io::sink());
    Ok(())
}

fn apply_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    applier: &mut apply::Applier<'_>,
    read: &std::cell::Cell<u64>,
) -> Result<(), UnpackError> {
    let mut last: Option<EntryAt> = None;
    let stream_err = |last: &Option<EntryAt>, source| UnpackError::Stream {
        offset: read.get(),
        after: last.clone(),
        error: source,
    };
    let entries = archive
        .entries()
        .map_err(|source| stream_err(&last, source))?;
    for e in entries {
        let mut e = e.map_err(|source| stream_err(&last, source))?;
        let at = EntryAt {
            entry: entry::display(&e.path_bytes()),
            offset: Some(e.raw_header_position()),
        };
        let described = header::describe(&mut e, &at)?;
        if let header::Described::Entry { name, node, meta } = described {
            let at = EntryAt {
                entry: entry::display(&name),
                ..at
            };
            applier.apply(&at, &name, node, &meta, &mut e)?;
            last = Some(at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod rules;
#[cfg(test)]
mod tar_compat;
#[cfg(test)]
mod tests;
