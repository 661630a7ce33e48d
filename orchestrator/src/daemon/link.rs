//! One peer link's byte handling, apart from the loop: flushing (with the snapshot file
//! pumped in as the queue drains), reading and cutting frames, checking who sent them,
//! receiving a snapshot file in chunks, and the link's timeouts. Pure over a [`PeerConn`]
//! and its socket; the loop (peers.rs) decides what to do with the outcome.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

use prost::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::conn::{
    PeerConn, SnapIn, PEER_CONNECT_TIMEOUT, PEER_HANDSHAKE_TIMEOUT, PEER_IDLE_TIMEOUT,
    PEER_STALL_TIMEOUT,
};
use crate::config::node_id;
use crate::net::frame::{self, KIND_AGENT, KIND_RAFT, KIND_SNAP_CHUNK};
use crate::raft::snapfile::{self, SnapRef};
use crate::tls::link::Wire;
use crate::tls::Role;

/// Bytes of a snapshot file read per chunk frame.
const SNAP_CHUNK: usize = 256 << 10;
/// A link's queue is refilled from the snapshot file while it holds less than this.
const SNAP_QUEUE: usize = 1 << 20;

/// Writes what the link has queued (TLS records first, then plaintext through TLS), and
/// feeds the snapshot file being sent into the queue as it drains, so at most about
/// [`SNAP_QUEUE`] of it is in memory.
pub(super) fn flush_link(p: &mut PeerConn, cluster_id: &str) -> Result<(), String> {
    p.wire
        .flush(&mut p.stream)
        .map_err(|e| format!("write: {e}"))?;
    loop {
        if p.wbuf.pending() > 0 {
            p.wbuf
                .flush(&mut p.wire.writer(&mut p.stream))
                .map_err(|e| format!("write: {e}"))?;
        }
        let Some(out) = p.snap_out.as_mut() else {
            return Ok(());
        };
        if p.wbuf.pending() >= SNAP_QUEUE {
            return Ok(());
        }
        let n = SNAP_CHUNK.min(usize::try_from(out.left).unwrap_or(SNAP_CHUNK));
        let mut chunk = vec![0u8; n];
        out.file
            .read_exact(&mut chunk)
            .map_err(|e| format!("reading the snapshot file to send: {e}"))?;
        out.left -= n as u64;
        if out.left == 0 {
            p.snap_out = None;
        }
        p.wbuf
            .push(&frame::encode(cluster_id, KIND_SNAP_CHUNK, &chunk));
    }
}

/// A snapshot's announcement arrived: its file follows in chunks into a `.part` file.
fn start_snapshot_in(
    p: &mut PeerConn,
    m: Message,
    r: &SnapRef,
    dir: &Path,
) -> Result<Option<Message>, String> {
    if p.snap_in.is_some() {
        return Err("a snapshot announced before the previous one finished".into());
    }
    if r.size > snapfile::MAX_SNAPSHOT_FILE {
        return Err(format!("snapshot of {} bytes is over the limit", r.size));
    }
    let index = m.get_snapshot().get_metadata().index;
    let name = snapfile::file_name(index);
    let part = dir.join(format!("{name}{}", snapfile::PART_SUFFIX));
    crate::private_files::prepare_file(&part).map_err(|e| e.to_string())?;
    let file = std::fs::File::options()
        .write(true)
        .truncate(true)
        .open(&part)
        .map_err(|e| format!("{}: {e}", part.display()))?;
    p.snap_in = Some(Box::new(SnapIn {
        msg: m,
        file,
        part,
        name,
        size: r.size,
        left: r.size,
    }));
    if r.size == 0 {
        return finish_snapshot_in(p, dir).map(Some);
    }
    Ok(None)
}

/// A chunk of the snapshot file; the message once the file is complete.
fn snapshot_chunk(p: &mut PeerConn, body: &[u8], dir: &Path) -> Result<Option<Message>, String> {
    let Some(si) = p.snap_in.as_mut() else {
        return Err("snapshot data without a snapshot message".into());
    };
    if body.len() as u64 > si.left {
        return Err("more snapshot data than announced".into());
    }
    si.file
        .write_all(body)
        .map_err(|e| format!("{}: {e}", si.part.display()))?;
    si.left -= body.len() as u64;
    if si.left > 0 {
        return Ok(None);
    }
    finish_snapshot_in(p, dir).map(Some)
}

/// The whole file is here: make it durable under its final name and point the message at it.
fn finish_snapshot_in(p: &mut PeerConn, dir: &Path) -> Result<Message, String> {
    let Some(si) = p.snap_in.take().map(|b| *b) else {
        return Err("no snapshot being received".into());
    };
    si.file
        .sync_all()
        .map_err(|e| format!("{}: {e}", si.part.display()))?;
    let path = dir.join(&si.name);
    std::fs::rename(&si.part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    snapfile::sync_dir(dir).map_err(|e| e.to_string())?;
    let mut m = si.msg;
    m.mut_snapshot().data = snapfile::encode_ref(&SnapRef {
        file: si.name,
        size: si.size,
    });
    Ok(m)
}

/// Reads what arrived, checks who sent it, and cuts it into Raft messages. Nothing reaches
/// raft-rs from a link whose peer is not verified, nor a message claiming another sender
/// than the one the link's certificate names.
pub(super) fn read_link(
    p: &mut PeerConn,
    cluster_id: &str,
    my_id: u64,
    dir: &Path,
    msgs: &mut Vec<Message>,
    agent: &mut Vec<(Option<u64>, Vec<u8>)>,
) -> Result<(), String> {
    let dec = &mut p.decoder;
    let handshaking = p.wire.is_handshaking();
    let got = p
        .wire
        .read(&mut p.stream, |chunk| {
            dec.push(chunk);
            true
        })
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData if handshaking => format!("TLS handshake refused: {e}"),
            io::ErrorKind::InvalidData => format!("TLS: {e}"),
            _ => format!("read: {e}"),
        })?;
    if got.got_bytes {
        p.last_read = Instant::now();
    }
    if !p.verified && matches!(p.wire, Wire::Tls(_)) && !p.wire.is_handshaking() {
        verify_peer(p, cluster_id)?;
    }
    if !p.wire.is_handshaking() {
        loop {
            match p.decoder.next_frame() {
                Ok(Some((KIND_RAFT, body))) => {
                    let m = Message::decode(body.as_slice())
                        .map_err(|e| format!("undecodable raft message: {e}"))?;
                    check_sender(p, &m, my_id)?;
                    p.verified = true;
                    let file = (m.get_msg_type() == MessageType::MsgSnapshot)
                        .then(|| snapfile::decode_ref(&m.get_snapshot().data))
                        .flatten();
                    match file {
                        Some(r) => msgs.extend(start_snapshot_in(p, m, &r, dir)?),
                        None => msgs.push(m),
                    }
                }
                Ok(Some((KIND_SNAP_CHUNK, body))) if p.verified => {
                    msgs.extend(snapshot_chunk(p, &body, dir)?);
                }
                // Only from a peer proven by its certificate (or, with --insecure, by a
                // Raft message first), with that identity for the agent to check the
                // frame's claimed sender against.
                Ok(Some((KIND_AGENT, body))) if p.verified || p.peer_id.is_some() => {
                    agent.push((p.peer_id, body));
                }
                Ok(Some((kind, _))) => return Err(format!("unexpected frame kind {kind}")),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    if got.eof {
        return Err(match p.decoder.finish() {
            Ok(()) if p.wire.is_handshaking() => "closed during the TLS handshake".to_string(),
            Ok(()) => "closed by peer".to_string(),
            Err(e) => e.to_string(),
        });
    }
    Ok(())
}

/// After the handshake: the certificate must be a node certificate of this cluster (and,
/// on links we opened, name the node we dialled; rustls checked that already).
fn verify_peer(p: &mut PeerConn, cluster_id: &str) -> Result<(), String> {
    let certs = p.wire.peer_certificates().unwrap_or_default();
    let who = crate::tls::identity(certs, cluster_id)
        .map_err(|e| format!("peer certificate refused: {e}"))?;
    if who.role != Role::Node {
        return Err(format!(
            "peer certificate refused: {} holds a client certificate, not a node certificate",
            who.name
        ));
    }
    let id = node_id(&who.name);
    if let Some(expected) = p.outbound {
        if id != expected {
            return Err(format!(
                "peer certificate names {}, not the node dialled",
                who.name
            ));
        }
    }
    p.peer_id = Some(id);
    p.verified = true;
    Ok(())
}

/// A message must come from the node the link's certificate names, and be for us.
fn check_sender(p: &PeerConn, m: &Message, my_id: u64) -> Result<(), String> {
    if let Some(id) = p.peer_id {
        if m.from != id {
            return Err(format!(
                "raft {:?} claims to be from {:016x}, but the link's certificate names {:016x}; refused",
                m.get_msg_type(),
                m.from,
                id
            ));
        }
    }
    if m.to != my_id {
        return Err(format!(
            "raft {:?} addressed to {:016x}, not to this node; refused",
            m.get_msg_type(),
            m.to
        ));
    }
    Ok(())
}

/// Why a link should be dropped now, if it should (pure over the link's times).
pub(super) fn link_timeout(p: &PeerConn, now: Instant) -> Option<&'static str> {
    let age = now.duration_since(p.since);
    if !p.connected && age > PEER_CONNECT_TIMEOUT {
        return Some("connect timed out");
    }
    if p.connected && !p.verified && age > PEER_HANDSHAKE_TIMEOUT {
        return Some("no TLS handshake or valid frame in time");
    }
    if p.outbound.is_none() && now.duration_since(p.last_read) > PEER_IDLE_TIMEOUT {
        return Some("idle: nothing received");
    }
    if p.wbuf.stalled_for(now) > PEER_STALL_TIMEOUT {
        return Some("peer not reading");
    }
    None
}
