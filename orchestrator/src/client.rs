//! A small blocking HTTP/1.1 client for the berthd unix socket (used by berthctl).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {err} (is berthd running? see --endpoint)")]
    Connect { path: PathBuf, err: std::io::Error },
    #[error("talking to berthd: {0}")]
    Io(std::io::Error),
    #[error("malformed response from berthd: {0}")]
    Protocol(String),
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub struct Client {
    path: PathBuf,
}

struct Head {
    status: u16,
    chunked: bool,
    length: Option<usize>,
    used: usize,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let mut chunked = false;
    let mut length = None;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok();
        }
    }
    Ok(Some(Head {
        status: resp.code.unwrap_or(0),
        chunked,
        length,
        used,
    }))
}

/// Cuts complete chunks off the front of `buf`; Ok(true) at the last (empty) chunk.
fn take_chunks(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, ClientError> {
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(false);
        };
        let size_text = String::from_utf8_lossy(&buf[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
        if buf.len() < eol + 2 + size + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
        buf.drain(..eol + 2 + size + 2);
        if size == 0 {
            return Ok(true);
        }
    }
}

fn api_error(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ClientError::Api { status, message }
}

impl Client {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    fn send(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<UnixStream, ClientError> {
        let mut s = UnixStream::connect(&self.path).map_err(|err| ClientError::Connect {
            path: self.path.clone(),
            err,
        })?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: berthd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())?;
        Ok(s)
    }

    /// One request; the JSON (or text) body on success.
    pub fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut s = self.send(method, target, body)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let head = parse_head(&buf)?
            .ok_or_else(|| ClientError::Protocol("connection closed before the response".into()))?;
        let mut rest = buf[head.used..].to_vec();
        let body = if head.chunked {
            let mut out = Vec::new();
            take_chunks(&mut rest, &mut out)?;
            out
        } else {
            match head.length {
                Some(n) if n <= rest.len() => rest[..n].to_vec(),
                Some(n) => {
                    return Err(ClientError::Protocol(format!(
                        "body truncated: {} of {n} bytes",
                        rest.len()
                    )))
                }
                None => rest,
            }
        };
        if head.status >= 400 {
            return Err(api_error(head.status, &body));
        }
        Ok(body)
    }

    pub fn json(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let bytes = self.call(method, target, body)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams a chunked response, calling `on_line` for each complete line until it returns
    /// false or the stream ends.
    pub fn stream(
        &self,
        target: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let mut s = self.send("GET", target, None)?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 16 << 10];
        let head = loop {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "connection closed before the response".into(),
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
            if let Some(h) = parse_head(&buf)? {
                break h;
            }
        };
        buf.drain(..head.used);
        if head.status >= 400 || !head.chunked {
            let mut rest = buf;
            s.read_to_end(&mut rest)?;
            let body = head
                .length
                .map_or(&rest[..], |n| &rest[..n.min(rest.len())]);
            if head.status >= 400 {
                return Err(api_error(head.status, body));
            }
            return Err(ClientError::Protocol("expected a chunked stream".into()));
        }
        let mut text = Vec::new();
        loop {
            let done = take_chunks(&mut buf, &mut text)?;
            while let Some(pos) = text.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = text.drain(..=pos).collect();
                if !on_line(String::from_utf8_lossy(&line).trim_end()) {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(ClientError::Protocol("stream ended unexpectedly".into()));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_reassembled() {
        let mut buf = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec();
        let mut out = Vec::new();
        assert!(take_chunks(&mut buf, &mut out).expect("valid"));
        assert_eq!(out, b"abcde");
        let mut partial = b"5\r\nab".to_vec();
        let mut out = Vec::new();
        assert!(!take_chunks(&mut partial, &mut out).expect("valid"));
        assert!(out.is_empty());
        assert!(take_chunks(&mut b"zz\r\n".to_vec(), &mut Vec::new()).is_err());
    }
}
