//! Minimal HTTP/1.1 for the API socket: request parsing with httparse over a bounded buffer,
//! responses, chunked streaming. Pure functions over bytes.

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest request body accepted.
pub const MAX_BODY: usize = 2 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path without the query.
    pub path: String,
    /// Percent-decoded query pairs.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client asked to close after this response (or spoke HTTP/1.0).
    pub close: bool,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request that cannot be served; answered with `status` and a JSON error, then the
/// connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

pub fn err(status: u16, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        message: message.into(),
    }
}

/// Tries to parse one request from the front of `buf`: `Ok(None)` if more bytes are needed,
/// else the request and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(err(431, format!("request head exceeds {MAX_HEAD} bytes")));
            }
            return Ok(None);
        }
        Err(e) => return Err(err(400, format!("malformed HTTP request: {e}"))),
    };
    // A head that arrived whole in one read is bounded too, not only a partial one.
    if head_len > MAX_HEAD {
        return Err(err(431, format!("request head exceeds {MAX_HEAD} bytes")));
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("");
    let version = req.version.unwrap_or(1);
    let mut content_length = 0usize;
    let mut close = version == 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            content_length = v
                .trim()
                .parse()
                .map_err(|_| err(400, format!("invalid Content-Length {v:?}")))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(err(
                411,
                "chunked request bodies are not supported; send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            if v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    if content_length > MAX_BODY {
        return Err(err(
            413,
            format!("body of {content_length} bytes exceeds the {MAX_BODY}-byte limit"),
        ));
    }
    if buf.len() < head_len + content_length {
        return Ok(None);
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path =
        percent_decode(raw_path).ok_or_else(|| err(400, format!("bad path {raw_path:?}")))?;
    let mut query = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).ok_or_else(|| err(400, format!("bad query {pair:?}")))?;
        let v = percent_decode(v).ok_or_else(|| err(400, format!("bad query {pair:?}")))?;
        query.push((k, v));
    }
    Ok(Some((
        Request {
            method,
            path,
            query,
            body: buf[head_len..head_len + content_length].to_vec(),
            close,
        },
        head_len + content_length,
    )))
}

/// Decodes `%XX` escapes and `+` (in queries it means space; we treat it as such everywhere
/// except it never appears in our paths). Invalid escapes or non-UTF-8 give None.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters and '/'.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A complete response.
pub fn response(status: u16, content_type: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value, close: bool) -> Vec<u8> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    response(status, "application/json", &body, close)
}

/// A JSON error response.
pub fn error(e: &HttpError, close: bool) -> Vec<u8> {
    json(e.status, &serde_json::json!({ "error": e.message }), close)
}

/// The head of a chunked streaming response.
pub fn stream_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec()
}

/// One chunk of a chunked response.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed request as the router sees it (for route tests).
#[cfg(test)]
pub(crate) fn test_request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &str,
) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        close: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_with_body_and_query() {
        let raw = b"PUT /v1/keys/a%2Fb?prefix=true&x=%20y HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyNEXT";
        let (r, used) = parse(raw).expect("valid").expect("complete");
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v1/keys/a/b");
        assert_eq!(r.query("prefix"), Some("true"));
        assert_eq!(r.query("x"), Some(" y"));
        assert_eq!(r.body, b"body");
        assert_eq!(&raw[used..], b"NEXT");
        assert!(!r.close);
    }

    #[test]
    fn incomplete_requests_wait_for_more() {
        assert_eq!(parse(b"GET /v1/health HTTP/1.1\r\n"), Ok(None));
        assert_eq!(
            parse(b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Ok(None)
        );
    }

    #[test]
    fn malformed_requests_get_4xx() {
        assert_eq!(
            parse(b"\x00\x01garbage\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            parse(b"PUT /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            parse(b"PUT /x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").map_err(|e| e.status),
            Err(413)
        );
        assert_eq!(
            parse(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").map_err(|e| e.status),
            Err(411)
        );
        let mut big = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; MAX_HEAD + 1]);
        assert_eq!(parse(&big).map_err(|e| e.status), Err(431));
        // a complete 20 KiB head (it arrived in one read) is refused as well
        let mut whole = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        whole.extend(vec![b'a'; 20 << 10]);
        whole.extend(b"\r\n\r\n");
        assert_eq!(parse(&whole).map_err(|e| e.status), Err(431));
        assert_eq!(
            parse(b"GET /%zz HTTP/1.1\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
    }

    #[test]
    fn percent_roundtrip() {
        for s in ["/a b/c", "/ü/%", "/plain"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
    }

    #[test]
    fn responses_are_well_formed() {
        let r = json(404, &serde_json::json!({"error": "x"}), true);
        let text = String::from_utf8(r).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("{\"error\":\"x\"}\n"));
        assert_eq!(chunk(b"abc"), b"3\r\nabc\r\n");
    }
}
