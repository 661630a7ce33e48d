//! The gossip key ring: SWIM datagrams are sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`) under the ring's primary key and opened with any key in the ring, so
//! keys rotate without downtime as with serf's keyring:
//!
//! 1. `install` the new key on every node (each now opens both, still seals with the old),
//! 2. `use` it on every node (each now seals with the new one and still opens the old),
//! 3. `remove` the old key everywhere.
//!
//! ```text
//! sealed datagram: "BE" | nonce (24 random bytes) | ciphertext | tag (16)
//!                   AAD = "berth-swim-v1" | cluster id
//! ```
//!
//! The cluster ID no longer travels in clear: it is bound into the tag instead. The text form
//! of a ring is one hex key per line, the primary first.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Prefix of a sealed datagram.
pub const SEALED_MAGIC: [u8; 2] = *b"BE";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to foca's payload.
pub const SEAL_OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;
/// Most keys a ring holds.
pub const MAX_KEYS: usize = 8;

/// A 256-bit gossip key.
pub type Key = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("gossip key {0:?} is not 64 hex digits (32 bytes)")]
    BadKey(String),
    #[error("the gossip key ring is empty")]
    Empty,
    #[error("gossip key {0} is not in the ring")]
    Unknown(String),
    #[error("gossip key {0} is the primary key; `use` another one before removing it")]
    RemovePrimary(String),
    #[error("the gossip key ring already holds {MAX_KEYS} keys")]
    Full,
    #[error("datagram of {len} bytes is not sealed for this cluster (short or wrong prefix)")]
    NotSealed { len: usize },
    #[error("datagram of {len} bytes does not open with any gossip key of this cluster (wrong key or cluster, or forged)")]
    Forged { len: usize },
}

/// The keys a node opens datagrams with; `keys[0]` seals.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

/// Parses a key from 64 hex digits.
pub fn parse_key(text: &str) -> Result<Key, KeyRingError> {
    let t = text.trim();
    let mut key = [0u8; 32];
    hex::decode_to_slice(t, &mut key).map_err(|_| KeyRingError::BadKey(shorten(t)))?;
    Ok(key)
}

fn shorten(t: &str) -> String {
    let mut s: String = t.chars().take(16).collect();
    if t.chars().count() > 16 {
        s.push('…');
    }
    s
}

/// A short public name for a key (never the key): the first 8 hex digits of its BLAKE-free
/// fingerprint, computed by sealing nothing under it (the tag of an empty message).
pub fn fingerprint(key: &Key) -> String {
    let cipher = XChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt(
            XNonce::from_slice(&[0u8; NONCE_LEN]),
            Payload {
                msg: b"",
                aad: b"berth-key-id",
            },
        )
        .unwrap_or_default();
    hex::encode(&tag[..4.min(tag.len())])
}

/// A new random key.
pub fn generate_key() -> Key {
    rand::random()
}

fn aad(cluster_id: &str) -> Vec<u8> {
    let mut a = b"berth-swim-v1".to_vec();
    a.extend_from_slice(cluster_id.as_bytes());
    a
}

impl KeyRing {
    /// A ring holding one new random key.
    pub fn generate() -> Self {
        Self {
            keys: vec![generate_key()],
        }
    }

    pub fn new(keys: Vec<Key>) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyRingError::Full);
        }
        Ok(Self { keys })
    }

    /// Parses the text form (one hex key per line, primary first; blank lines and `#`
    /// comments ignored).
    pub fn from_text(text: &str) -> Result<Self, KeyRingError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_key)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    pub fn to_text(&self) -> String {
        self.keys.iter().map(|k| hex::encode(k) + "\n").collect()
    }

    /// Fingerprints of the keys, primary first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint).collect()
    }

    /// Adds a key that opens datagrams (not yet used to seal).
    pub fn install(&mut self, key: Key) -> Result<(), KeyRingError> {
        if self.keys.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyRingError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Makes an installed key the primary (sealing) key.
    pub fn use_key(&mut self, key: &Key) -> Result<(), KeyRingError> {
        let pos = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| KeyRingError::Unknown(fingerprint(key)))?;
        let k = self.keys.remove(pos);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, key: &Key) -> Result<(), KeyRingError> {
        if self.keys.first() == Some(key) {
            return Err(KeyRingError::RemovePrimary(fingerprint(key)));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        if self.keys.len() == before {
            return Err(KeyRingError::Unknown(fingerprint(key)));
        }
        Ok(())
    }

    /// Seals `payload` under the primary key with a random nonce.
    pub fn seal(&self, cluster_id: &str, payload: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = XChaCha20Poly1305::new((&self.keys[0]).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: payload,
                    aad: &aad(cluster_id),
                },
            )
            // XChaCha20-Poly1305 fails only for messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + payload.len());
        out.extend_from_slice(&SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed datagram with any key of the ring.
    pub fn open(&self, cluster_id: &str, datagram: &[u8]) -> Result<Vec<u8>, KeyRingError> {
        if datagram.len() < SEAL_OVERHEAD || datagram[..2] != SEALED_MAGIC {
            return Err(KeyRingError::NotSealed {
                len: datagram.len(),
            });
        }
        let nonce = XNonce::from_slice(&datagram[2..2 + NONCE_LEN]);
        let aad = aad(cluster_id);
        for key in &self.keys {
            let cipher = XChaCha20Poly1305::new(key.into());
            if let Ok(plain) = cipher.decrypt(
                nonce,
                Payload {
                    msg: &datagram[2 + NONCE_LEN..],
                    aad: &aad,
                },
            ) {
                return Ok(plain);
            }
        }
        Err(KeyRingError::Forged {
            len: datagram.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_datagrams_open_only_with_a_key_of_the_ring_and_the_same_cluster() {
        let ring = KeyRing::generate();
        let d = ring.seal("c1", b"hello");
        assert_eq!(d.len(), 5 + SEAL_OVERHEAD);
        assert!(!d.windows(5).any(|w| w == b"hello"), "payload is encrypted");
        // (a long ID: a two-byte one turns up in random ciphertext now and then)
        let id = b"cluster-id-never-in-clear";
        let d2 = ring.seal("cluster-id-never-in-clear", b"hello");
        assert!(
            !d2.windows(id.len()).any(|w| w == id),
            "cluster id not in clear"
        );
        assert_eq!(ring.open("c1", &d).expect("opens"), b"hello");
        assert!(matches!(
            ring.open("c2", &d),
            Err(KeyRingError::Forged { .. })
        ));
        let other = KeyRing::generate();
        assert!(matches!(
            other.open("c1", &d),
            Err(KeyRingError::Forged { .. })
        ));
        let mut flipped = d.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            ring.open("c1", &flipped),
            Err(KeyRingError::Forged { .. })
        ));
        assert!(matches!(
            ring.open("c1", b"BS\x02c1xx"),
            Err(KeyRingError::NotSealed { .. })
        ));
    }

    #[test]
    fn rotation_install_use_remove_never_leaves_two_nodes_unable_to_talk() {
        let old = generate_key();
        let new = generate_key();
        let mut a = KeyRing::new(vec![old]).expect("ring");
        let mut b = a.clone();
        let talk = |x: &KeyRing, y: &KeyRing| {
            y.open("c", &x.seal("c", b"ping")).is_ok() && x.open("c", &y.seal("c", b"pong")).is_ok()
        };
        a.install(new).expect("install");
        assert!(talk(&a, &b), "after install on a");
        b.install(new).expect("install");
        a.use_key(&new).expect("use");
        assert!(talk(&a, &b), "after use on a");
        b.use_key(&new).expect("use");
        assert!(talk(&a, &b), "after use on both");
        assert!(matches!(
            a.remove(&new),
            Err(KeyRingError::RemovePrimary(_))
        ));
        a.remove(&old).expect("remove");
        assert!(talk(&a, &b), "after remove on a");
        b.remove(&old).expect("remove");
        assert!(talk(&a, &b), "after remove on both");
        // a node still on the old key alone is cut off
        let stale = KeyRing::new(vec![old]).expect("ring");
        assert!(!talk(&a, &stale));
    }

    #[test]
    fn text_form_roundtrips_and_bad_keys_are_named() {
        let mut r = KeyRing::generate();
        r.install(generate_key()).expect("install");
        let text = r.to_text();
        assert_eq!(
            KeyRing::from_text(&format!("# ring\n\n{text}")).expect("parses"),
            r
        );
        let e = KeyRing::from_text("nothex").expect_err("bad");
        assert!(e.to_string().contains("nothex"), "{e}");
        assert_eq!(KeyRing::from_text("\n"), Err(KeyRingError::Empty));
        assert_ne!(fingerprint(&r.keys[0]), fingerprint(&r.keys[1]));
        assert!(
            !format!("{r:?}").contains(&hex::encode(r.keys[0])),
            "Debug shows no key"
        );
    }
}
