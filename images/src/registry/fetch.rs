//! The pull side of a [`Client`]: manifests and blobs, tried on the
//! endpoints in order (mirrors, then the registry) until one answers, blobs
//! first from where the manifest came; and blobs from an offset with
//! `Range` for resumed downloads.

use std::io::Read;
use std::sync::atomic::Ordering;

use ureq::http::{Method, Response};
use ureq::Body;

use super::client::{Call, Client, Endpoint, Payload, RegistryError, MAX_MANIFEST};
use crate::digest::Digest;
use crate::escape;

/// A blob's body from some offset on.
pub struct BlobBody {
    pub reader: Box<dyn Read + Send>,
    /// Where the body starts in the blob: the offset asked for when the
    /// registry honoured `Range` (206), else 0 (a 200 with the whole blob).
    pub start: u64,
}

impl Client {
    fn get(
        &self,
        ep: &Endpoint,
        path: &str,
        headers: Vec<(&'static str, String)>,
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        self.send(
            ep,
            &Call {
                method: Method::GET,
                url: self.repo_url(ep, path),
                headers,
                body: Payload::None,
                scope: self.scope(),
                what,
            },
        )
    }

    /// Tries the endpoints until one answers `ok` statuses: the one that
    /// served this client's last manifest first (an image's blobs come from
    /// where its manifest came from), then the others in order.
    fn get_any(
        &self,
        path: &str,
        headers: &[(&'static str, String)],
        ok: &[u16],
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let mut last = None;
        let first = self.preferred.load(Ordering::Relaxed);
        let order = std::iter::once(first).chain((0..self.endpoints.len()).filter(|&i| i != first));
        for i in order {
            let Some(ep) = self.endpoints.get(i) else {
                continue;
            };
            match self.get(ep, path, headers.to_vec(), what) {
                Ok(resp) if ok.contains(&resp.status().as_u16()) => {
                    if path.starts_with("manifests/") {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Ok(resp) => last = Some(self.status_error(what, resp, Some(&ep.host))),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| self.failed(what, "no endpoint")))
    }

    /// The manifest or index for a tag or digest: its bytes and media type.
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), RegistryError> {
        use crate::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
        let what = format!("manifest {}", escape::text(reference));
        let accept = format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_LIST}, {DOCKER_MANIFEST}");
        let resp = self.get_any(
            &format!("manifests/{reference}"),
            &[("Accept", accept)],
            &[200],
            &what,
        )?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(self.failed(
                &what,
                format!(
                    "schema 1 manifests ({}) are not supported",
                    escape::text(&media_type)
                ),
            ));
        }
        let body = self.read_small(resp, MAX_MANIFEST, &what)?;
        Ok((body, media_type))
    }

    /// Reads a whole small body (manifests, configs), refusing more than
    /// `max` bytes.
    pub(crate) fn read_small(
        &self,
        resp: Response<Body>,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.failed(what, escape::text(&e.to_string())))?;
        if body.len() as u64 > max {
            return Err(self.failed(what, format!("larger than {max} bytes")));
        }
        Ok(body)
    }

    /// A small blob (a config) read whole, at most `max` bytes; the caller
    /// checks its digest.
    pub fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest}");
        let resp = self.get_any(&format!("blobs/{digest}"), &[], &[200], &what)?;
        self.read_small(resp, max, &what)
    }

    /// A blob's body, as a reader (the caller verifies size and digest).
    pub fn blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, RegistryError> {
        Ok(self.blob_from(digest, 0)?.reader)
    }

    /// A blob's body from byte `offset` on (`Range: bytes=offset-`). A
    /// registry may ignore the range and send the whole blob: see
    /// [`BlobBody::start`]. A 206 must start exactly at `offset`.
    pub fn blob_from(&self, digest: &Digest, offset: u64) -> Result<BlobBody, RegistryError> {
        let what = format!("blob {digest}");
        let headers = if offset > 0 {
            vec![("Range", format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let resp = self.get_any(&format!("blobs/{digest}"), &headers, &[200, 206], &what)?;
        let start = if resp.status().as_u16() == 206 {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match content_range_start(range) {
                Some(s) if s == offset => s,
                _ => {
                    return Err(self.failed(
                        &what,
                        format!(
                            "asked for bytes from {offset}, the registry sent the range `{}`",
                            escape::text(range)
                        ),
                    ))
                }
            }
        } else {
            0
        };
        Ok(BlobBody {
            reader: Box::new(resp.into_body().into_reader()),
            start,
        })
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
pub(crate) fn content_range_start(header: &str) -> Option<u64> {
    let rest = header.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start(""), None);
    }
}
