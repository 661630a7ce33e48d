//! Layer blobs of a pull, read by the layer jobs as they arrive: each
//! download is written to the store's partial file for its digest
//! ([`crate::store::work`]) and handed to the job's unpack at the same
//! time, so a layer is unpacked while it downloads, not after.
//!
//! - A partial file left by an earlier pull (killed, or cut off) is read
//!   back first, then the rest is asked for with `Range: bytes=N-`. A
//!   registry that answers with the whole blob (200) instead restarts the
//!   partial file from byte 0; a 206 must start exactly at N.
//! - A connection that breaks midway is asked again from the byte reached,
//!   up to [`RECONNECTS`] times (a 200 then has its first bytes skipped).
//! - Size and digest are checked on every byte, including the ones read
//!   back: more bytes than the descriptor says fail at once, and the digest
//!   at the end. A blob proven wrong loses its partial file; a download
//!   that only broke keeps it for the next pull; a complete blob is renamed
//!   into `blobs/` (pinned by the pull's work area until it is committed).
//! - A blob another pull is downloading right now is downloaded again into
//!   a file of this pull's work area, not waited for (see
//!   [`BlobAt::Busy`]).

use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::client::{Client, RegistryError};
use crate::digest::{Digest, Hasher, VerifyError};
use crate::import::commit::{BlobSource, BlobStream, LayerJob};
use crate::import::ImportError;
use crate::progress::Progress;
use crate::store::{BlobAt, Partial, Store, StoreError, Work};

/// How often a broken blob download is asked again within one pull.
pub const RECONNECTS: u32 = 2;
/// How much more of a blob is read after its layer job failed, to tell a
/// wrong blob (digest) from a bad image.
const DRAIN_AFTER_FAILURE: u64 = 1 << 20;

/// The blobs of one pull: stored ones read from the store, the others
/// downloaded (see the module doc).
pub struct Downloads<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub work: &'a Work,
    pub progress: &'a dyn Progress,
}

impl BlobSource for Downloads<'_> {
    fn open(&self, job: &LayerJob) -> Result<Box<dyn BlobStream + '_>, ImportError> {
        let partial = match self.store.open_partial(&job.desc.digest)? {
            BlobAt::Stored => {
                return crate::import::stored_stream(self.store, job, self.progress);
            }
            BlobAt::Partial(p) => p,
            BlobAt::Busy => Partial::private(&self.work.fresh_dir("blob-")?)?,
        };
        Ok(Box::new(Download::start(self, partial, job)?))
    }

    fn scratch(&self) -> Result<PathBuf, ImportError> {
        Ok(self.work.fresh_dir("layer-")?)
    }
}

/// Why a download stopped.
enum Failure {
    /// The network or the registry: the partial file stays for a resume.
    Broke(RegistryError),
    /// The bytes are not the blob: the partial file goes.
    Wrong(StoreError),
}

/// One blob being downloaded (see the module doc).
struct Download<'a> {
    client: &'a Client,
    store: &'a Store,
    partial: Option<Partial>,
    digest: Digest,
    size: u64,
    body: Option<Box<dyn Read + Send>>,
    /// Bytes handed to the reader (and hashed) so far.
    pos: u64,
    /// Bytes in the partial file.
    have: u64,
    /// Bytes of the current body to drop (a registry that ignored Range).
    skip: u64,
    hasher: Hasher,
    reconnects: u32,
    failure: Option<Failure>,
    id: String,
    progress: &'a dyn Progress,
}

impl<'a> Download<'a> {
    fn start(
        src: &Downloads<'a>,
        partial: Partial,
        job: &LayerJob,
    ) -> Result<Download<'a>, ImportError> {
        let d = &job.desc;
        let io_err = |e| ImportError::Store(src.store_io(partial.path(), e));
        let mut have = partial.file().metadata().map_err(io_err)?.len();
        if have > d.size {
            partial.file().set_len(0).map_err(io_err)?;
            have = 0;
        }
        let body = if have < d.size {
            let b = src
                .client
                .blob_from(&d.digest, have)
                .map_err(|e| ImportError::Fetch(Box::new(e)))?;
            if b.start != have {
                tracing::info!(digest = %d.digest, have, "the registry ignored Range: the blob restarts");
                partial.file().set_len(0).map_err(io_err)?;
                have = 0;
            }
            Some(b.reader)
        } else {
            None
        };
        let id = d.digest.short().to_string();
        let what = if have > 0 { "resuming" } else { "downloading" };
        src.progress.start(&id, what, d.size);
        src.progress.advance(&id, have);
        Ok(Download {
            client: src.client,
            store: src.store,
            partial: Some(partial),
            digest: d.digest.clone(),
            size: d.size,
            body,
            pos: 0,
            have,
            skip: 0,
            hasher: Hasher::new(d.digest.algorithm()),
            reconnects: 0,
            failure: None,
            id,
            progress: src.progress,
        })
    }

    fn fail(&mut self, f: Failure) -> io::Error {
        let text = match &f {
            Failure::Broke(e) => e.to_string(),
            Failure::Wrong(e) => e.to_string(),
        };
        self.failure.get_or_insert(f);
        io::Error::other(text)
    }

    fn broke(&self, reason: String) -> Failure {
        Failure::Broke(self.client.failed(
            &format!("blob {}", self.digest),
            format!("{reason} at byte {} of {}", self.pos, self.size),
        ))
    }

    /// Asks for the rest again after a break; false when out of tries.
    fn reconnect(&mut self, reason: &str) -> bool {
        if self.reconnects >= RECONNECTS {
            return false;
        }
        self.reconnects += 1;
        tracing::info!(digest = %self.digest, at = self.pos, reason, "asking for the rest of a blob again");
        match self.client.blob_from(&self.digest, self.pos) {
            Ok(b) => {
                self.skip = self.pos - b.start.min(self.pos);
                self.body = Some(b.reader);
                true
            }
            Err(e) => {
                self.failure.get_or_insert(Failure::Broke(e));
                false
            }
        }
    }

    /// Reads the partial file's bytes back (they count, and hash, again).
    fn replay(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.have - self.pos).unwrap_or(usize::MAX));
        let Some(p) = &self.partial else {
            return Ok(0);
        };
        let n = p.file().read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            let path = p.path().to_path_buf();
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "partial file shrank");
            return Err(self.fail(Failure::Wrong(self.store_io(&path, e))));
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn store_io(&self, path: &std::path::Path, e: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }

    /// Takes `data` (fresh from the network) into the file and the hash.
    fn take(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.pos + data.len() as u64;
        if end > self.size {
            let e = StoreError::Verify {
                store: self.store.root().to_path_buf(),
                source: VerifyError::Size {
                    digest: self.digest.clone(),
                    expected: self.size,
                    actual: end,
                },
            };
            return Err(self.fail(Failure::Wrong(e)));
        }
        if let Some(p) = &self.partial {
            if let Err(e) = p.file().write_all_at(data, self.pos) {
                let path = p.path().to_path_buf();
                return Err(self.fail(Failure::Broke(self.client.failed(
                    &format!("blob {}", self.digest),
                    format!("writing {}: {e}", path.display()),
                ))));
            }
        }
        self.hasher.update(data);
        self.pos = end;
        self.have = end;
        self.progress.advance(&self.id, data.len() as u64);
        Ok(())
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("the download failed"));
        }
        if self.pos < self.have {
            return self.replay(buf);
        }
        if buf.is_empty() || self.pos == self.size && self.body.is_none() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            let reason = match body.read(buf) {
                Ok(0) if self.pos >= self.size => return Ok(0),
                Ok(0) => "the connection ended early".to_string(),
                Ok(n) => {
                    let k = usize::try_from(self.skip).unwrap_or(usize::MAX).min(n);
                    self.skip -= k as u64;
                    if k == n {
                        continue;
                    }
                    buf.copy_within(k..n, 0);
                    self.take(&buf[..n - k])?;
                    return Ok(n - k);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => crate::escape::text(&e.to_string()),
            };
            if !self.reconnect(&reason) {
                let f = self.broke(reason);
                return Err(self.fail(f));
            }
        }
    }
}

impl Download<'_> {
    /// Reads on without a consumer, at most `limit` bytes.
    fn drain(&mut self, limit: u64) {
        let mut buf = vec![0u8; 64 << 10];
        let mut read = 0u64;
        while read < limit {
            match self.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n as u64,
            }
        }
    }
}

impl BlobStream for Download<'_> {
    fn finish(mut self: Box<Self>, job_ok: bool) -> Result<(), ImportError> {
        self.drain(if job_ok {
            u64::MAX
        } else {
            DRAIN_AFTER_FAILURE
        });
        let Some(partial) = self.partial.take() else {
            return Ok(());
        };
        match self.failure.take() {
            Some(Failure::Broke(e)) => return Err(ImportError::Fetch(Box::new(e))),
            Some(Failure::Wrong(e)) => {
                partial.discard();
                return Err(e.into());
            }
            None => {}
        }
        if self.pos < self.size {
            // The job failed before the blob's end: a bad image, not a
            // download to resume.
            partial.discard();
            return Ok(());
        }
        let actual =
            std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm())).finish();
        if actual != self.digest {
            partial.discard();
            return Err(StoreError::Verify {
                store: self.store.root().to_path_buf(),
                source: VerifyError::Digest {
                    expected: self.digest.clone(),
                    actual,
                },
            }
            .into());
        }
        partial.complete(self.store, &self.digest)?;
        self.progress.finish(&self.id, "downloaded");
        Ok(())
    }
}

impl Downloads<'_> {
    fn store_io(&self, path: &std::path::Path, e: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}
