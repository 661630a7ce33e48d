//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and readers that verify
//! a blob's digest and size while it streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Errors of digest parsing and verification.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest `{0}`: expected `sha256:<64 hex>` or `sha512:<128 hex>`")]
    Invalid(String),
    #[error("unsupported digest algorithm `{alg}` in `{digest}`")]
    UnsupportedAlgorithm { alg: String, digest: String },
}

/// A digest algorithm Berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: algorithm plus lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            alg: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The first 12 hex characters, for tables.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Invalid(s.to_string()))?;
        let alg = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                return Err(DigestError::UnsupportedAlgorithm {
                    alg: other.to_string(),
                    digest: s.to_string(),
                })
            }
            _ => return Err(DigestError::Invalid(s.to_string())),
        };
        let valid = hex.len() == alg.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Digest {
            alg,
            hex: hex.to_string(),
        })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                alg: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                alg: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Marker carried inside the `io::Error` a [`HashingReader`] returns when the
/// stream goes past its byte limit.
#[derive(Debug, thiserror::Error)]
#[error("stream exceeds its limit of {limit} bytes")]
pub struct LimitExceeded {
    pub limit: u64,
}

/// Hashes and counts everything read through it, and fails once more than
/// `limit` bytes went by (the bound that stops blob size lies and
/// decompression bombs).
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, alg: Algorithm, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(alg),
            count: 0,
            limit,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn exceeded(&self) -> bool {
        self.count > self.limit
    }

    /// Reads whatever is left (still bounded) so the digest covers the whole
    /// stream, then returns the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded { limit: self.limit }));
        }
        // Ask for at most one byte past the limit so an overrun is seen
        // without buffering much beyond it.
        let room = (self.limit - self.count).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded { limit: self.limit }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `io::copy` with a 1 MiB buffer (std's generic copy uses 8 KiB, which
/// costs a syscall pair per 8 KiB of a multi-megabyte blob).
pub fn copy_big<R: Read, W: io::Write + ?Sized>(r: &mut R, w: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Errors of [`verify_stream`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("blob {digest}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    Size {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {expected}: digest mismatch: content hashes to {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("blob {digest}: reading: {source}")]
    Io { digest: Digest, source: io::Error },
}

/// Copies `reader` to `writer`, verifying that exactly `size` bytes (when
/// known) with digest `digest` went through.
pub fn verify_stream<R: Read, W: io::Write>(
    reader: R,
    writer: &mut W,
    digest: &Digest,
    size: Option<u64>,
) -> Result<u64, VerifyError> {
    let limit = size.unwrap_or(u64::MAX - 1);
    let mut hr = HashingReader::new(reader, digest.algorithm(), limit);
    match copy_big(&mut hr, writer) {
        Ok(_) => {}
        Err(_) if hr.exceeded() => {
            return Err(VerifyError::Size {
                digest: digest.clone(),
                expected: limit,
                actual: hr.count(),
            })
        }
        Err(source) => {
            return Err(VerifyError::Io {
                digest: digest.clone(),
                source,
            })
        }
    }
    let (actual, count) = hr.finish().map_err(|source| VerifyError::Io {
        digest: digest.clone(),
        source,
    })?;
    if let Some(expected) = size {
        if count != expected {
            return Err(VerifyError::Size {
                digest: digest.clone(),
                expected,
                actual: count,
            });
        }
    }
    if &actual != digest {
        return Err(VerifyError::Digest {
            expected: digest.clone(),
            actual,
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = HELLO.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), HELLO);
        assert_eq!(Digest::sha256_of(b"hello"), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in ["sha256:abc", "sha256", "sha256:ZZ", "", ":00"] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(DigestError::Invalid(_))),
                "{bad}"
            );
        }
        let upper = HELLO.to_uppercase().replace("SHA256", "sha256");
        assert!(upper.parse::<Digest>().is_err());
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
    }

    #[test]
    fn verify_stream_accepts_matching_blob() {
        let d: Digest = HELLO.parse().unwrap();
        let mut out = Vec::new();
        assert_eq!(
            verify_stream(&b"hello"[..], &mut out, &d, Some(5)).unwrap(),
            5
        );
        assert_eq!(out, b"hello");
    }

    #[test]
    fn verify_stream_names_digest_mismatch() {
        let d: Digest = HELLO.parse().unwrap();
        let err = verify_stream(&b"hellO"[..], &mut Vec::new(), &d, Some(5)).unwrap_err();
        assert!(matches!(err, VerifyError::Digest { .. }));
        assert!(err.to_string().contains(HELLO), "{err}");
    }

    #[test]
    fn verify_stream_stops_at_declared_size() {
        let d: Digest = HELLO.parse().unwrap();
        let err = verify_stream(&b"hello world"[..], &mut Vec::new(), &d, Some(5)).unwrap_err();
        assert!(matches!(err, VerifyError::Size { .. }), "{err}");
        let err = verify_stream(&b"hell"[..], &mut Vec::new(), &d, Some(5)).unwrap_err();
        assert!(matches!(err, VerifyError::Size { actual: 4, .. }), "{err}");
    }

    #[test]
    fn hashing_reader_enforces_limit() {
        let data = vec![0u8; 1000];
        let mut r = HashingReader::new(&data[..], Algorithm::Sha256, 999);
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(err.get_ref().unwrap().is::<LimitExceeded>());
        assert!(r.exceeded());
        let r = HashingReader::new(&data[..], Algorithm::Sha256, 1000);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 1000);
        assert_eq!(d, Digest::sha256_of(&data));
    }
}
