//! The leader's view of lease deadlines. Time is passed in (milliseconds on any monotonic
//! scale), so expiry is tested without a clock. Only the leader acts on it; every node keeps it
//! up to date from the applied log so a new leader can take over (it restarts every TTL, as etcd
//! does, because followers' clocks do not see keep-alives in real time).

use std::collections::BTreeMap;

/// How long the leader waits before proposing a revoke again for the same lease.
pub const REVOKE_RETRY_MS: u64 = 1_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseClock {
    /// lease id -> (deadline, ttl)
    deadlines: BTreeMap<u64, (u64, u64)>,
    /// lease id -> when its revoke was last proposed
    revoking: BTreeMap<u64, u64>,
}

impl LeaseClock {
    /// A lease was granted or kept alive at `now`.
    pub fn touch(&mut self, id: u64, ttl_ms: u64, now: u64) {
        self.deadlines
            .insert(id, (now.saturating_add(ttl_ms), ttl_ms));
        self.revoking.remove(&id);
    }

    /// A lease was revoked.
    pub fn remove(&mut self, id: u64) {
        self.deadlines.remove(&id);
        self.revoking.remove(&id);
    }

    /// Forget everything and track exactly `leases` (id, ttl) from `now` (after a snapshot).
    pub fn reset(&mut self, leases: impl Iterator<Item = (u64, u64)>, now: u64) {
        self.deadlines.clear();
        self.revoking.clear();
        for (id, ttl) in leases {
            self.touch(id, ttl, now);
        }
    }

    /// Restart every lease's TTL from `now` (on becoming leader).
    pub fn restart_all(&mut self, now: u64) {
        for (deadline, ttl) in self.deadlines.values_mut() {
            *deadline = now.saturating_add(*ttl);
        }
        self.revoking.clear();
    }

    /// Leases whose deadline passed and whose revoke should be proposed now; marks them so the
    /// same lease is proposed again only after [`REVOKE_RETRY_MS`].
    pub fn take_expired(&mut self, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for (id, (deadline, _)) in &self.deadlines {
            if *deadline > now {
                continue;
            }
            match self.revoking.get(id) {
                Some(at) if now < at.saturating_add(REVOKE_RETRY_MS) => {}
                _ => out.push(*id),
            }
        }
        for id in &out {
            self.revoking.insert(*id, now);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expires_only_after_ttl_without_keepalive() {
        let mut c = LeaseClock::default();
        c.touch(1, 1000, 0);
        assert!(c.take_expired(999).is_empty());
        c.touch(1, 1000, 900); // keep-alive
        assert!(c.take_expired(1500).is_empty());
        assert_eq!(c.take_expired(1900), vec![1]);
        // not proposed twice within the retry window, then again after it
        assert!(c.take_expired(2000).is_empty());
        assert_eq!(c.take_expired(1900 + REVOKE_RETRY_MS), vec![1]);
        c.remove(1);
        assert!(c.take_expired(10_000).is_empty());
    }

    #[test]
    fn new_leader_restarts_every_ttl() {
        let mut c = LeaseClock::default();
        c.touch(1, 1000, 0);
        c.touch(2, 5000, 0);
        c.restart_all(4000);
        assert!(c.take_expired(4999).is_empty());
        assert_eq!(c.take_expired(5000), vec![1]);
        c.remove(1); // the revoke was applied
        assert_eq!(c.take_expired(9000), vec![2]);
    }
}
