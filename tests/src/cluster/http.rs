//! A small blocking HTTP/1.1 client for berthd's unix-socket API (and etcd's JSON gateway
//! in the bench): one request, one response, read by Content-Length, chunked encoding or
//! end of stream; plus a reader for streamed (chunked, line-per-event) watch responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What went wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{method} {target}: {source}")]
    Io {
        method: String,
        target: String,
        source: std::io::Error,
    },
    #[error("{method} {target}: malformed response: {what}")]
    Malformed {
        method: String,
        target: String,
        what: String,
    },
}

impl HttpError {
    fn io(method: &str, target: &str, source: std::io::Error) -> Self {
        HttpError::Io {
            method: method.to_string(),
            target: target.to_string(),
            source,
        }
    }

    fn malformed(method: &str, target: &str, what: String) -> Self {
        HttpError::Malformed {
            method: method.to_string(),
            target: target.to_string(),
            what,
        }
    }
}

/// A parsed response: status, headers (names lower-cased) and the raw body.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request on a fresh connection to the unix socket `socket` (`Connection: close`)
/// and reads the whole response; `timeout` bounds every read and write.
pub fn unix_request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let stream = UnixStream::connect(socket).map_err(|source| HttpError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let io = |source| HttpError::io(method, target, source);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let bytes = body.map(|b| b.to_string().into_bytes());
    let mut reader = BufReader::new(stream);
    write_request(reader.get_mut(), method, target, bytes.as_deref(), false).map_err(io)?;
    read_response(&mut reader, method, target)
}

/// Writes a request with an optional JSON body.
pub fn write_request<W: Write>(
    w: &mut W,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    } else if method != "GET" && method != "HEAD" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    let mut buf = head.into_bytes();
    if let Some(body) = body {
        buf.extend_from_slice(body);
    }
    w.write_all(&buf)?;
    w.flush()
}

/// Reads the status line and headers.
fn read_head<R: BufRead>(
    r: &mut R,
    method: &str,
    target: &str,
) -> Result<(u16, Vec<(String, String)>), HttpError> {
    let io = |source| HttpError::io(method, target, source);
    let bad = |what: String| HttpError::malformed(method, target, what);
    let mut line = String::new();
    if r.read_line(&mut line).map_err(io)? == 0 {
        return Err(bad("connection closed before a status line".into()));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("status line {line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("header line {l:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((status, headers))
}

/// Reads one whole response (Content-Length, chunked, or to end of stream).
pub fn read_response<R: BufRead>(
    r: &mut R,
    method: &str,
    target: &str,
) -> Result<Response, HttpError> {
    let (status, headers) = read_head(r, method, target)?;
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let io = |source| HttpError::io(method, target, source);
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        while let Some(chunk) = read_chunk(r, method, target)? {
            resp.body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| HttpError::Malformed {
            method: method.to_string(),
            target: target.to_string(),
            what: format!("content-length {len:?}"),
        })?;
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body).map_err(io)?;
    } else {
        r.read_to_end(&mut resp.body).map_err(io)?;
    }
    Ok(resp)
}

/// Reads one chunk of a chunked body; `None` at the last (empty) chunk.
fn read_chunk<R: BufRead>(
    r: &mut R,
    method: &str,
    target: &str,
) -> Result<Option<Vec<u8>>, HttpError> {
    let io = |source| HttpError::io(method, target, source);
    let bad = |what: String| HttpError::malformed(method, target, what);
    let mut line = String::new();
    if r.read_line(&mut line).map_err(io)? == 0 {
        return Err(bad("stream ended inside a chunked body".into()));
    }
    let size_text = line
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let size = usize::from_str_radix(&size_text, 16)
        .map_err(|_| bad(format!("chunk size line {line:?}")))?;
    let mut data = vec![0u8; size];
    r.read_exact(&mut data).map_err(io)?;
    let mut crlf = [0u8; 2];
    if size == 0 {
        // Trailer section: lines until an empty one.
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(io)? == 0 || line.trim().is_empty() {
                return Ok(None);
            }
        }
    }
    r.read_exact(&mut crlf).map_err(io)?;
    Ok(Some(data))
}

/// A streamed response read one line (one JSON event) at a time.
pub struct LineStream<S: Read> {
    reader: BufReader<S>,
    chunked: bool,
    pending: Vec<u8>,
    ended: bool,
    method: String,
    target: String,
    /// Status of the response that opened the stream.
    pub status: u16,
}

impl<S: Read + Write> LineStream<S> {
    /// Sends `method target` on `stream` and reads the response head.
    pub fn open(
        mut stream: S,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
    ) -> Result<LineStream<S>, HttpError> {
        write_request(&mut stream, method, target, body, false).map_err(|source| {
            HttpError::Io {
                method: method.to_string(),
                target: target.to_string(),
                source,
            }
        })?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader, method, target)?;
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        Ok(LineStream {
            reader,
            chunked,
            pending: Vec::new(),
            ended: false,
            method: method.to_string(),
            target: target.to_string(),
            status,
        })
    }
}

impl<S: Read> LineStream<S> {
    /// The next non-empty line of the body, or `None` when the stream ended. A read
    /// timeout on the underlying stream surfaces as an `Io` error of kind WouldBlock/TimedOut.
    pub fn next_line(&mut self) -> Result<Option<String>, HttpError> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(text));
            }
            if self.ended {
                if self.pending.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let text = String::from_utf8_lossy(&self.pending).trim().to_string();
                self.pending.clear();
                return Ok(Some(text));
            }
            if self.chunked {
                match read_chunk(&mut self.reader, &self.method, &self.target)? {
                    Some(data) => self.pending.extend_from_slice(&data),
                    None => self.ended = true,
                }
            } else {
                let mut buf = [0u8; 4096];
                let n = self.reader.read(&mut buf).map_err(|source| HttpError::Io {
                    method: self.method.clone(),
                    target: self.target.clone(),
                    source,
                })?;
                if n == 0 {
                    self.ended = true;
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// The underlying stream (to change its read timeout).
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}extra";
        let r = read_response(&mut Cursor::new(&raw[..]), "GET", "/").expect("parses");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["ok"], serde_json::json!(true));
    }

    #[test]
    fn reads_chunked_body() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n";
        let r = read_response(&mut Cursor::new(&raw[..]), "GET", "/").expect("parses");
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["a"], serde_json::json!(1));
    }

    #[test]
    fn rejects_a_non_http_status_line() {
        let raw = b"garbage\r\n\r\n";
        let e = read_response(&mut Cursor::new(&raw[..]), "GET", "/x").expect_err("malformed");
        assert!(e.to_string().contains("GET /x"), "{e}");
    }
}
