//! The push side of a [`Client`] (OCI distribution spec, "Push"): blob
//! existence checks (`HEAD`), cross-repository mounts (`POST
//! ?mount=&from=`), uploads in one `PUT` (monolithic) or as `PATCH` chunks
//! closed by a `PUT`, cancelling an upload (`DELETE`), and manifests
//! (`PUT`). Upload URLs come from the registry's `Location` headers; one on
//! another host than the registry gets no credentials, and a TLS registry
//! may not send the upload to plain HTTP.

use std::fs::File;

use ureq::http::{Method, Response};
use ureq::Body;

use super::client::{urlencode, Call, Client, Endpoint, Payload, RegistryError};
use crate::digest::Digest;
use crate::escape;
use crate::progress::Progress;

/// An upload session the registry opened.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Where the next request of this upload goes (absolute URL).
    location: String,
    /// `OCI-Chunk-Min-Length`: the smallest chunk the registry takes.
    pub min_chunk: Option<u64>,
}

/// What a mount request did.
#[derive(Debug)]
pub enum Mounted {
    /// The registry linked the blob from the other repository.
    Yes,
    /// It could not; it opened an ordinary upload instead.
    No(Upload),
}

/// A blob to send: `size` bytes of `file`, shown to `progress` as `id`.
pub struct BlobFile<'a> {
    pub digest: &'a Digest,
    pub file: &'a File,
    pub size: u64,
    pub progress: &'a dyn Progress,
    pub id: &'a str,
}

impl Client {
    fn origin(&self) -> Result<&Endpoint, RegistryError> {
        self.endpoints
            .last()
            .ok_or_else(|| self.failed("push", "no endpoint"))
    }

    fn call<'a>(
        &self,
        method: Method,
        url: String,
        headers: Vec<(&'static str, String)>,
        body: Payload<'a>,
        what: &'a str,
    ) -> Result<Response<Body>, RegistryError> {
        let ep = self.origin()?;
        self.send(
            ep,
            &Call {
                method,
                url,
                headers,
                body,
                scope: self.scope(),
                what,
            },
        )
    }

    /// Whether the repository has the blob (`HEAD`: 200 yes, 404 no).
    pub fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("blob {digest}");
        let url = self.repo_url(self.origin()?, &format!("blobs/{digest}"));
        let resp = self.call(Method::HEAD, url, Vec::new(), Payload::None, &what)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&what, resp, None)),
        }
    }

    /// Asks the registry to link `digest` from repository `from` of the
    /// same registry. The token needs pull on `from` as well.
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<Mounted, RegistryError> {
        let what = format!("mounting blob {digest} from {}", escape::text(from));
        let ep = self.origin()?;
        let url = self.repo_url(
            ep,
            &format!(
                "blobs/uploads/?mount={}&from={}",
                urlencode(&digest.to_string()),
                urlencode(from)
            ),
        );
        let resp = self.send(
            ep,
            &Call {
                method: Method::POST,
                url,
                headers: Vec::new(),
                body: Payload::None,
                scope: format!("{} repository:{from}:pull", self.scope()),
                what: &what,
            },
        )?;
        match resp.status().as_u16() {
            201 => Ok(Mounted::Yes),
            202 => Ok(Mounted::No(self.upload_from(ep, &resp, &what)?)),
            _ => Err(self.status_error(&what, resp, None)),
        }
    }

    /// Opens an upload session (`POST .../blobs/uploads/`: 202 + Location).
    pub fn start_upload(&self, digest: &Digest) -> Result<Upload, RegistryError> {
        let what = format!("starting the upload of blob {digest}");
        let ep = self.origin()?;
        let url = self.repo_url(ep, "blobs/uploads/");
        let resp = self.call(Method::POST, url, Vec::new(), Payload::None, &what)?;
        match resp.status().as_u16() {
            202 => self.upload_from(ep, &resp, &what),
            _ => Err(self.status_error(&what, resp, None)),
        }
    }

    fn upload_from(
        &self,
        ep: &Endpoint,
        resp: &Response<Body>,
        what: &str,
    ) -> Result<Upload, RegistryError> {
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Upload {
            location: self.location(ep, resp, what)?,
            min_chunk,
        })
    }

    /// The absolute URL of a response's `Location`.
    fn location(
        &self,
        ep: &Endpoint,
        resp: &Response<Body>,
        what: &str,
    ) -> Result<String, RegistryError> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.failed(what, "the registry sent no upload Location"))?;
        resolve_location(&ep.base(), loc).ok_or_else(|| {
            self.failed(
                what,
                format!("unusable upload Location `{}`", escape::text(loc)),
            )
        })
    }

    /// Sends the whole blob in the request that closes the upload.
    pub fn upload_whole(&self, up: Upload, blob: &BlobFile<'_>) -> Result<(), RegistryError> {
        let what = format!("uploading blob {}", blob.digest);
        let url = with_query(&up.location, "digest", &blob.digest.to_string());
        let resp = self.call(
            Method::PUT,
            url,
            vec![("Content-Type", "application/octet-stream".into())],
            Payload::File {
                file: blob.file,
                offset: 0,
                len: blob.size,
                progress: Some((blob.progress, blob.id)),
            },
            &what,
        );
        self.closed(resp, &up, &what)
    }

    /// Sends the blob in `PATCH` chunks of `chunk` bytes (at least the
    /// registry's minimum), then closes the upload with its digest.
    pub fn upload_chunked(
        &self,
        up: Upload,
        blob: &BlobFile<'_>,
        chunk: u64,
    ) -> Result<(), RegistryError> {
        let what = format!("uploading blob {} in chunks", blob.digest);
        let chunk = chunk.max(up.min_chunk.unwrap_or(1)).max(1);
        let mut location = up.location.clone();
        let mut offset = 0u64;
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let resp = self.call(
                Method::PATCH,
                location.clone(),
                vec![
                    ("Content-Type", "application/octet-stream".into()),
                    ("Content-Range", format!("{offset}-{}", offset + len - 1)),
                ],
                Payload::File {
                    file: blob.file,
                    offset,
                    len,
                    progress: Some((blob.progress, blob.id)),
                },
                &what,
            );
            let resp = match resp {
                Ok(r) if r.status().as_u16() == 202 => r,
                Ok(r) => {
                    let e = self.status_error(&what, r, None);
                    self.cancel(&Upload {
                        location,
                        min_chunk: None,
                    });
                    return Err(e);
                }
                Err(e) => {
                    self.cancel(&Upload {
                        location,
                        min_chunk: None,
                    });
                    return Err(e);
                }
            };
            if let Some(end) = resp
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(range_end)
            {
                if end + 1 != offset + len {
                    let e = self.failed(
                        &what,
                        format!(
                            "the registry holds {} bytes after a chunk ending at {}",
                            end + 1,
                            offset + len
                        ),
                    );
                    self.cancel(&Upload {
                        location,
                        min_chunk: None,
                    });
                    return Err(e);
                }
            }
            location = self.location(self.origin()?, &resp, &what)?;
            offset += len;
        }
        let last = Upload {
            location: location.clone(),
            min_chunk: None,
        };
        let url = with_query(&location, "digest", &blob.digest.to_string());
        let resp = self.call(Method::PUT, url, Vec::new(), Payload::None, &what);
        self.closed(resp, &last, &what)
    }

    /// Checks the answer to the request closing an upload (201), cancelling
    /// the upload when it failed.
    fn closed(
        &self,
        resp: Result<Response<Body>, RegistryError>,
        up: &Upload,
        what: &str,
    ) -> Result<(), RegistryError> {
        match resp {
            Ok(r) if r.status().as_u16() == 201 => Ok(()),
            Ok(r) => {
                let e = self.status_error(what, r, None);
                self.cancel(up);
                Err(e)
            }
            Err(e) => {
                self.cancel(up);
                Err(e)
            }
        }
    }

    /// Cancels an upload session (best effort: the registry purges stale
    /// uploads anyway).
    pub fn cancel(&self, up: &Upload) {
        let what = "cancelling an upload";
        if let Err(e) = self.call(
            Method::DELETE,
            up.location.clone(),
            Vec::new(),
            Payload::None,
            what,
        ) {
            tracing::debug!(error = %e, "cancelling an upload");
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns the
    /// digest the registry computed (`Docker-Content-Digest`), if it says.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<Digest>, RegistryError> {
        let what = format!("manifest {}", escape::text(reference));
        let url = self.repo_url(self.origin()?, &format!("manifests/{reference}"));
        let resp = self.call(
            Method::PUT,
            url,
            vec![("Content-Type", media_type.to_string())],
            Payload::Bytes(bytes),
            &what,
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(&what, resp, None));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()))
    }
}

/// An absolute URL for a `Location` relative to `base` (`scheme://host`).
/// Absolute locations are kept, except that a TLS registry may not send an
/// upload to plain HTTP.
pub(crate) fn resolve_location(base: &str, loc: &str) -> Option<String> {
    let loc = loc.trim();
    if loc.starts_with('/') && !loc.starts_with("//") {
        return Some(format!("{base}{loc}"));
    }
    if loc.starts_with("https://") || (loc.starts_with("http://") && base.starts_with("http://")) {
        return Some(loc.to_string());
    }
    None
}

/// `url` with `key=value` appended to its query.
pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", urlencode(value))
}

/// The last byte of a `Range: 0-END` header of an upload.
pub(crate) fn range_end(header: &str) -> Option<u64> {
    let (_, end) = header.trim().split_once('-')?;
    end.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_stay_on_the_registry_scheme() {
        assert_eq!(
            resolve_location("https://r:5000", "/v2/a/blobs/uploads/u?_state=x"),
            Some("https://r:5000/v2/a/blobs/uploads/u?_state=x".into())
        );
        assert_eq!(
            resolve_location("http://r", "http://r/v2/u").as_deref(),
            Some("http://r/v2/u")
        );
        assert_eq!(
            resolve_location("https://r", "https://s3.example/u").as_deref(),
            Some("https://s3.example/u")
        );
        assert_eq!(resolve_location("https://r", "http://r/v2/u"), None);
        assert_eq!(resolve_location("https://r", "//evil/u"), None);
        assert_eq!(resolve_location("https://r", "u"), None);
        assert_eq!(
            with_query("http://r/u?_state=a", "digest", "sha256:ab"),
            "http://r/u?_state=a&digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://r/u", "digest", "x"),
            "http://r/u?digest=x"
        );
        assert_eq!(range_end("0-1023"), Some(1023));
        assert_eq!(range_end("bytes=0-9"), Some(9));
        assert_eq!(range_end("junk"), None);
    }
}
