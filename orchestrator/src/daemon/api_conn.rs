//! The API's connections (the half that owns sockets): accepting clients on the unix socket
//! and, with `--api-listen`, on TCP with mutual TLS; reading requests under limits and
//! deadlines; writing answers and watch streams; closing. Requests are handed to
//! [`Daemon::execute`] (api.rs), which answers now or later through [`Daemon::respond`].

use std::io;

use mio::{Interest, Token};
use serde_json::{json, Value};

use super::conn::{
    api_cap, api_eviction_key, api_timeout, ApiConn, ApiState, ApiStream, ApiTimeout, Conn,
    WriteBuf, API_RBUF_MAX, API_RESERVE, API_WBUF_MAX, REMOTE_API_MAX, REMOTE_API_UNVERIFIED_MAX,
};
use super::Daemon;
use crate::api::http::{self, err, HttpError, Request};
use crate::api::routes::{route, Route};
use crate::tls::link::Wire;
use crate::tls::Role;

impl Daemon {
    pub(super) fn accept_api(&mut self) {
        if self.accept_paused(super::API_LISTEN) {
            return;
        }
        loop {
            match self.api_listener.accept() {
                Ok((stream, _)) => {
                    if !local_client_allowed(&stream) || !self.make_room_for_api_client() {
                        continue;
                    }
                    self.admit_api(ApiStream::Unix(stream), Wire::Plain);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.accept_failed(super::API_LISTEN, "API socket", &e);
                    break;
                }
            }
        }
    }

    /// Accepts remote API clients (`--api-listen`): TLS with a client certificate from
    /// the cluster CA, within their own caps.
    pub(super) fn accept_remote_api(&mut self) {
        if self.accept_paused(super::REMOTE_API_LISTEN) {
            return;
        }
        loop {
            let Some(listener) = self.remote_api.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, from)) => {
                    let Some(cfg) = self.security.as_ref().map(|s| s.peer.server.clone()) else {
                        return;
                    };
                    if !self.make_room_for_remote_client(from) {
                        continue;
                    }
                    match Wire::server(&cfg) {
                        Ok(wire) => {
                            let _ = stream.set_nodelay(true);
                            self.admit_api(ApiStream::Tcp(stream), wire);
                        }
                        Err(e) => tracing::warn!(%from, "cannot start TLS for an API client: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.accept_failed(super::REMOTE_API_LISTEN, "remote API port", &e);
                    break;
                }
            }
        }
    }

    fn admit_api(&mut self, mut stream: ApiStream, wire: Wire) {
        let token = self.alloc_token();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("cannot register API client: {e}");
            return;
        }
        let now = std::time::Instant::now();
        let verified = matches!(wire, Wire::Plain);
        self.conns.insert(
            token,
            Conn::Api(ApiConn {
                stream,
                wire,
                verified,
                read_only: false,
                opened: now,
                last_active: now,
                request_started: None,
                rbuf: Vec::new(),
                wbuf: WriteBuf::default(),
                state: ApiState::Idle,
                close_after_write: false,
                eof: false,
                close_current: false,
            }),
        );
    }

    /// Room for one more remote client: under [`REMOTE_API_MAX`], and if too many are still
    /// in their handshake, the oldest of those is closed.
    fn make_room_for_remote_client(&mut self, from: std::net::SocketAddr) -> bool {
        let mut all = 0;
        let mut unverified: Vec<(std::time::Instant, Token)> = Vec::new();
        for (t, c) in &self.conns {
            if let Conn::Api(a) = c {
                if matches!(a.stream, ApiStream::Tcp(_)) {
                    all += 1;
                    if !a.verified {
                        unverified.push((a.opened, *t));
                    }
                }
            }
        }
        if all >= REMOTE_API_MAX {
            self.warn_limited(format_args!(
                "refusing a remote API client from {from}: {REMOTE_API_MAX} connected"
            ));
            return false;
        }
        if unverified.len() >= REMOTE_API_UNVERIFIED_MAX {
            if let Some((_, t)) = unverified.into_iter().min() {
                self.close_api(t);
            }
        }
        true
    }

    pub(super) fn on_api(&mut self, token: Token, readable: bool, _writable: bool) {
        let cluster_id = self.cfg.cluster_id.clone();
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        if readable {
            let rbuf = &mut c.rbuf;
            let watching = matches!(
                c.state,
                ApiState::Watching { .. } | ApiState::Following { .. }
            );
            let mut overflow = false;
            match c.wire.read(&mut c.stream, |chunk| {
                if watching {
                    return true; // a watcher has nothing more to say; discard
                }
                if rbuf.len() + chunk.len() > API_RBUF_MAX {
                    overflow = true;
                    return false;
                }
                rbuf.extend_from_slice(chunk);
                true
            }) {
                Ok(got) => {
                    c.eof |= got.eof;
                    if got.got_bytes {
                        let now = std::time::Instant::now();
                        c.last_active = now;
                        if !c.rbuf.is_empty() && c.request_started.is_none() {
                            c.request_started = Some(now);
                        }
                    }
                }
                Err(e) => {
                    if !c.verified {
                        self.warn_limited(format_args!("refused a remote API client: TLS: {e}"));
                    }
                    self.close_api(token);
                    return;
                }
            }
            if !c.verified && !c.wire.is_handshaking() {
                match client_identity(c, &cluster_id) {
                    Ok(read_only) => {
                        c.verified = true;
                        c.read_only = read_only;
                    }
                    Err(why) => {
                        self.warn_limited(format_args!("refused a remote API client: {why}"));
                        self.close_api(token);
                        return;
                    }
                }
            }
            if overflow {
                self.metrics.api_errors += 1;
                let e = err(413, "request too large");
                self.write_api(token, &http::error(&e, true));
                if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                    c.close_after_write = true;
                    c.rbuf.clear();
                }
            }
        }
        self.process_requests(token);
        self.flush_api(token);
    }

    /// Parses and serves requests while the connection is idle.
    pub(super) fn process_requests(&mut self, token: Token) {
        loop {
            let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
                return;
            };
            if c.state != ApiState::Idle || c.close_after_write {
                return;
            }
            match http::parse(&c.rbuf) {
                Ok(None) => return,
                Ok(Some((req, used))) => {
                    c.rbuf.drain(..used);
                    // A pipelined next request starts its own clock now.
                    c.request_started = (!c.rbuf.is_empty()).then(std::time::Instant::now);
                    c.close_current = req.close;
                    self.metrics.api_requests += 1;
                    self.serve(token, &req);
                }
                Err(e) => {
                    c.rbuf.clear();
                    c.close_after_write = true;
                    self.metrics.api_errors += 1;
                    tracing::debug!("malformed API request: {e}");
                    self.write_api(token, &http::error(&e, true));
                    return;
                }
            }
        }
    }

    /// Room for one more API client: true when under the cap, or after closing the client
    /// that has been idle longest (so a pile of idle connections cannot lock berthctl out).
    pub(super) fn make_room_for_api_client(&mut self) -> bool {
        let cap = api_cap();
        let mut clients = 0;
        let mut victim: Option<((u8, std::time::Instant), Token)> = None;
        for (t, c) in &self.conns {
            if let Conn::Api(a) = c {
                if !matches!(a.stream, ApiStream::Unix(_)) {
                    continue;
                }
                clients += 1;
                if let Some(key) = api_eviction_key(a) {
                    if victim.is_none_or(|(k, _)| key < k) {
                        victim = Some((key, *t));
                    }
                }
            }
        }
        if clients < cap {
            return true;
        }
        match victim {
            Some((_, t)) => {
                tracing::debug!("API client cap {cap} reached: closing the idlest client");
                self.close_api(t);
                true
            }
            None => {
                self.warn_limited(format_args!(
                    "refusing an API client: {cap} connected, none idle"
                ));
                false
            }
        }
    }

    /// Watch streams may use all but [`API_RESERVE`] of the API slots.
    pub(super) fn watch_slots_left(&self) -> bool {
        let watchers = self
            .conns
            .values()
            .filter(|c| matches!(c, Conn::Api(a) if matches!(a.state, ApiState::Watching { .. } | ApiState::Following { .. })))
            .count();
        watchers + API_RESERVE < api_cap()
    }

    /// Closes API clients that overstayed (see [`api_timeout`]); slow requests get a 408.
    pub(super) fn reap_api_clients(&mut self, now: std::time::Instant) {
        let due: Vec<(Token, ApiTimeout)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| match c {
                Conn::Api(a) => api_timeout(a, now).map(|why| (*t, why)),
                _ => None,
            })
            .collect();
        for (token, why) in due {
            match why {
                ApiTimeout::Answer(status, message) => {
                    self.metrics.api_errors += 1;
                    tracing::debug!("API client timed out: {message}");
                    self.write_api(token, &http::error(&err(status, message), true));
                    if let Some(Conn::Api(c)) = self.conns.get_mut(&token) {
                        c.close_after_write = true;
                        c.rbuf.clear();
                        c.request_started = None;
                    }
                    self.flush_api(token);
                }
                ApiTimeout::Close(reason) => {
                    tracing::debug!("closing an API client: {reason}");
                    self.close_api(token);
                }
            }
        }
    }

    pub(super) fn flush_api(&mut self, token: Token) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        let flushed = c.wire.flush(&mut c.stream).and_then(|tls_done| {
            let plain_done = c.wbuf.flush(&mut c.wire.writer(&mut c.stream))?;
            Ok(tls_done && plain_done && c.wire.flush(&mut c.stream)?)
        });
        let done = match flushed {
            Ok(done) => done,
            Err(_) => {
                self.close_api(token);
                return;
            }
        };
        if done {
            c.last_active = std::time::Instant::now();
        }
        let idle = c.state == ApiState::Idle;
        let finished = done && (c.close_after_write || (c.eof && idle && c.rbuf.is_empty()));
        if finished
            || (c.eof
                && matches!(
                    c.state,
                    ApiState::Watching { .. } | ApiState::Following { .. }
                ))
        {
            self.close_api(token);
        }
    }

    pub(super) fn close_api(&mut self, token: Token) {
        if let Some(Conn::Api(mut c)) = self.conns.remove(&token) {
            // A TLS client learns the answer is complete from close_notify (best effort).
            if let Wire::Tls(tls) = &mut c.wire {
                tls.send_close_notify();
                let _ = c.wire.flush(&mut c.stream);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    pub(super) fn write_api(&mut self, token: Token, data: &[u8]) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        if c.wbuf.pending() + data.len() > API_WBUF_MAX {
            tracing::warn!(
                "API client too slow (backlog over {API_WBUF_MAX} bytes); disconnecting"
            );
            self.close_api(token);
            return;
        }
        c.wbuf.push(data);
    }

    /// Sends a complete JSON response and returns the connection to idle.
    pub(super) fn respond(&mut self, token: Token, status: u16, body: &Value) {
        let Some(Conn::Api(c)) = self.conns.get_mut(&token) else {
            return;
        };
        let close = c.close_current;
        c.state = ApiState::Idle;
        if close {
            c.close_after_write = true;
        }
        if status >= 400 {
            self.metrics.api_errors += 1;
        }
        self.write_api(token, &http::json(status, body, close));
        self.flush_api(token);
    }

    /// Answers a request that waited for a proposal, then serves any pipelined requests.
    pub(super) fn respond_later(&mut self, token: Token, status: u16, body: &Value) {
        self.respond(token, status, body);
        self.process_requests(token);
        self.flush_api(token);
    }

    pub(super) fn respond_err(&mut self, token: Token, e: &HttpError) {
        self.respond(token, e.status, &json!({ "error": e.message }));
    }

    pub(super) fn serve(&mut self, token: Token, req: &Request) {
        let r = match route(req) {
            Ok(r) => r,
            Err(e) => return self.respond_err(token, &e),
        };
        let read_only = matches!(self.conns.get(&token), Some(Conn::Api(c)) if c.read_only);
        if read_only && req.method != "GET" {
            let e = err(403, "this client certificate is read-only");
            return self.respond_err(token, &e);
        }
        if matches!(r, Route::Watch { .. }) && !self.watch_slots_left() {
            let e = err(503, "too many watch streams on this node; retry later");
            return self.respond_err(token, &e);
        }
        match self.execute(token, r) {
            Ok(Some((status, body))) => self.respond(token, status, &body),
            Ok(None) => {}
            Err(e) => self.respond_err(token, &e),
        }
    }

    pub(super) fn write_raw(&mut self, token: Token, status: u16, content_type: &str, body: &[u8]) {
        let close = match self.conns.get_mut(&token) {
            Some(Conn::Api(c)) => {
                if c.close_current {
                    c.close_after_write = true;
                }
                c.close_current
            }
            _ => return,
        };
        self.write_api(token, &http::response(status, content_type, body, close));
        self.flush_api(token);
    }
}

/// Only root (or berthd's own user) may use the unix socket, whatever its mode says.
fn local_client_allowed(stream: &mio::net::UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 || cred.uid() == me => true,
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                "refusing an API client that is not root"
            );
            false
        }
        Err(e) => {
            tracing::warn!("refusing an API client whose credentials cannot be read: {e}");
            false
        }
    }
}

/// A remote client's certificate: of this cluster, client (read-only or not) or node role.
/// Ok(true) for read-only.
fn client_identity(c: &ApiConn, cluster_id: &str) -> Result<bool, String> {
    let certs = c.wire.peer_certificates().unwrap_or_default();
    let who = crate::tls::identity(certs, cluster_id).map_err(|e| e.to_string())?;
    tracing::debug!(client = %who.name, role = ?who.role, "remote API client authenticated");
    Ok(who.role == Role::ReadOnly)
}
