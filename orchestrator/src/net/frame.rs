//! Peer frames on the TCP link:
//!
//! ```text
//! +----------------+--------+-----------+-------------------+------------------+
//! | len: u32 (BE)  | kind u8| cid_len u8| cluster id bytes  | body             |
//! +----------------+--------+-----------+-------------------+------------------+
//!   len counts everything after itself; at most MAX_FRAME
//! ```
//!
//! A frame of another cluster, an unknown kind or a length beyond the limit is an error: the
//! connection is dropped (the peer reconnects; Raft resends).

/// Largest frame accepted (a registry snapshot must fit).
pub const MAX_FRAME: usize = 64 << 20;

/// A Raft message (prost-encoded `eraftpb::Message`).
pub const KIND_RAFT: u8 = 1;
/// A piece of the snapshot file announced by the preceding `MsgSnapshot` (raw bytes).
pub const KIND_SNAP_CHUNK: u8 = 2;
/// An agent-to-agent message (JSON `daemon::remote::AgentFrame`: remote journals).
pub const KIND_AGENT: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {len} exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame too short ({len} bytes) for its header")]
    Short { len: usize },
    #[error("frame of unknown kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("frame from cluster {got:?}, this node is in cluster {expected:?}")]
    WrongCluster { got: String, expected: String },
    #[error("connection closed in the middle of a frame ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
}

/// Builds one frame.
pub fn encode(cluster_id: &str, kind: u8, body: &[u8]) -> Vec<u8> {
    let len = 2 + cluster_id.len() + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    out.push(cluster_id.len() as u8);
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Accumulates bytes from a stream and cuts frames out of them.
#[derive(Debug)]
pub struct Decoder {
    cluster_id: String,
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new(cluster_id: &str) -> Self {
        Self {
            cluster_id: cluster_id.to_string(),
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet cut into frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame's (kind, body), if any.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        if len < 2 {
            return Err(FrameError::Short { len });
        }
        // Check the header as soon as it is here, before buffering a large body.
        let cid_len = if avail.len() >= 6 {
            usize::from(avail[5])
        } else {
            return Ok(None);
        };
        if 2 + cid_len > len {
            return Err(FrameError::Short { len });
        }
        if avail.len() >= 6 + cid_len {
            let cid = &avail[6..6 + cid_len];
            if cid != self.cluster_id.as_bytes() {
                return Err(FrameError::WrongCluster {
                    got: String::from_utf8_lossy(cid).into_owned(),
                    expected: self.cluster_id.clone(),
                });
            }
            let kind = avail[4];
            if kind != KIND_RAFT && kind != KIND_SNAP_CHUNK && kind != KIND_AGENT {
                return Err(FrameError::UnknownKind { kind });
            }
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let kind = avail[4];
        let body = avail[6 + cid_len..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some((kind, body)))
    }

    /// Call at end of stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(());
        }
        let want = if avail.len() >= 4 {
            4 + u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize
        } else {
            4
        };
        Err(FrameError::Truncated {
            have: avail.len(),
            want,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_across_arbitrary_splits() {
        let mut stream = encode("c1", KIND_RAFT, b"hello");
        stream.extend(encode("c1", KIND_RAFT, b""));
        stream.extend(encode("c1", KIND_RAFT, &[7u8; 3000]));
        for split in [1, 3, 7, 100, stream.len()] {
            let mut d = Decoder::new("c1");
            let mut got = Vec::new();
            for chunk in stream.chunks(split) {
                d.push(chunk);
                while let Some(f) = d.next_frame().expect("valid") {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0], (KIND_RAFT, b"hello".to_vec()));
            assert_eq!(got[1].1.len(), 0);
            assert_eq!(got[2].1, vec![7u8; 3000]);
            assert!(d.finish().is_ok());
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut d = Decoder::new("c1");
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));

        let mut d = Decoder::new("c1");
        d.push(&encode("c2", KIND_RAFT, b"x"));
        assert_eq!(
            d.next_frame(),
            Err(FrameError::WrongCluster {
                got: "c2".into(),
                expected: "c1".into()
            })
        );

        let mut d = Decoder::new("c1");
        d.push(&encode("c1", 99, b"x"));
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind { kind: 99 }));

        // a huge declared body from another cluster is refused before it is buffered
        let mut d = Decoder::new("c1");
        let mut head = ((MAX_FRAME - 1) as u32).to_be_bytes().to_vec();
        head.extend([KIND_RAFT, 2]);
        head.extend(b"zz");
        d.push(&head);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::WrongCluster { .. })
        ));

        let mut d = Decoder::new("c1");
        let f = encode("c1", KIND_RAFT, b"abcdef");
        d.push(&f[..f.len() - 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));

        let mut d = Decoder::new("c1");
        d.push(&[0, 0, 0, 1, 1]);
        assert!(matches!(d.next_frame(), Err(FrameError::Short { .. })));
    }
}
