//! A byte stream that is either plain TCP (`--insecure`) or TLS 1.3 over it, for a
//! non-blocking socket driven by the event loop. rustls is sans-IO: we move ciphertext
//! between the socket and the connection, and plaintext between the connection and the
//! caller, never blocking.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

/// Most plaintext rustls buffers before `write` says WouldBlock (bounded memory per link).
const TLS_PLAINTEXT_LIMIT: usize = 256 << 10;

/// TLS state of a link, or none.
pub enum Wire {
    Plain,
    Tls(Box<rustls::Connection>),
}

/// What a read produced.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// The peer closed its side.
    pub eof: bool,
    /// Bytes received from the socket (ciphertext included), for idle timers.
    pub got_bytes: bool,
}

impl Wire {
    /// The server side of a TLS link.
    pub fn server(cfg: &Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        let mut c = rustls::ServerConnection::new(cfg.clone())?;
        c.set_buffer_limit(Some(TLS_PLAINTEXT_LIMIT));
        Ok(Wire::Tls(Box::new(c.into())))
    }

    /// The client side of a TLS link to the node named `name`.
    pub fn client(cfg: &Arc<rustls::ClientConfig>, name: &str) -> Result<Self, rustls::Error> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| rustls::Error::General(format!("{name:?} is not a certificate name")))?;
        let mut c = rustls::ClientConnection::new(cfg.clone(), server_name)?;
        c.set_buffer_limit(Some(TLS_PLAINTEXT_LIMIT));
        Ok(Wire::Tls(Box::new(c.into())))
    }

    /// True until the TLS handshake is complete (never for plain links).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Wire::Plain => false,
            Wire::Tls(c) => c.is_handshaking(),
        }
    }

    /// The peer's verified certificate chain, once the handshake is done.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Wire::Plain => None,
            Wire::Tls(c) => c.peer_certificates(),
        }
    }

    /// Reads what the socket has until it would block, handing plaintext to `sink` (which
    /// returns false to stop early). TLS errors (a bad certificate, garbage instead of
    /// records) are `InvalidData` errors carrying rustls' reason.
    pub fn read(
        &mut self,
        sock: &mut (impl Read + Write),
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        let mut tmp = [0u8; 16 << 10];
        match self {
            Wire::Plain => loop {
                match sock.read(&mut tmp) {
                    Ok(0) => {
                        out.eof = true;
                        return Ok(out);
                    }
                    Ok(n) => {
                        out.got_bytes = true;
                        if !sink(&tmp[..n]) {
                            return Ok(out);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Wire::Tls(c) => {
                loop {
                    match c.read_tls(sock) {
                        Ok(0) => {
                            out.eof = true;
                            break;
                        }
                        Ok(_) => out.got_bytes = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    let state = c.process_new_packets().map_err(|e| {
                        // Tell the peer why (an alert), best effort.
                        let _ = c.write_tls(sock);
                        io::Error::new(io::ErrorKind::InvalidData, e)
                    })?;
                    if state.plaintext_bytes_to_read() > 0 && !drain(c, &mut tmp, &mut sink)? {
                        return Ok(out);
                    }
                }
                if !drain(c, &mut tmp, &mut sink)? {
                    return Ok(out);
                }
                // Handshake replies and key updates.
                self.flush(sock)?;
                Ok(out)
            }
        }
    }

    /// Writes pending TLS records to the socket. Ok(true) when nothing is left.
    pub fn flush(&mut self, sock: &mut impl Write) -> io::Result<bool> {
        let Wire::Tls(c) = self else {
            return Ok(true);
        };
        while c.wants_write() {
            match c.write_tls(sock) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// A writer for plaintext on this link (for [`crate::daemon`]'s write buffers): it
    /// never blocks; when the socket is full it says WouldBlock.
    pub fn writer<'a, S: Write>(&'a mut self, sock: &'a mut S) -> LinkWriter<'a, S> {
        LinkWriter { wire: self, sock }
    }
}

fn drain(
    c: &mut rustls::Connection,
    tmp: &mut [u8],
    sink: &mut impl FnMut(&[u8]) -> bool,
) -> io::Result<bool> {
    loop {
        match c.reader().read(tmp) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if !sink(&tmp[..n]) {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            // A clean close_notify followed by EOF; the caller sees eof from read_tls.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Plaintext writer over a [`Wire`] and its socket.
pub struct LinkWriter<'a, S: Write> {
    wire: &'a mut Wire,
    sock: &'a mut S,
}

impl<S: Write> Write for LinkWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.wire {
            Wire::Plain => self.sock.write(buf),
            Wire::Tls(_) => {
                // Records already made go out first, so memory stays bounded.
                if !self.wire.flush(self.sock)? {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                let Wire::Tls(c) = &mut *self.wire else {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                };
                let n = c.writer().write(buf)?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                // Push what we can now; the rest leaves on the next writable event.
                self.wire.flush(self.sock)?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.wire.flush(self.sock).map(|_| ())
    }
}
