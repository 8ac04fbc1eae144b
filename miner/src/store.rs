//! Commitments held between `commit` and `open`: bounded by age, total bytes and count,
//! oldest evicted first, each openable only by the validator that created it.

use crate::backend::Committed;
use polylith_protocol::gemm::GemmSpec;
use polylith_protocol::keys::PublicKey;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One held commitment.
#[derive(Clone)]
pub struct StoredCommitment {
    /// The validator that asked for it; nobody else may open it.
    pub owner: PublicKey,
    /// The task it answers.
    pub spec: GemmSpec,
    /// The product and its tree.
    pub committed: Arc<dyn Committed>,
    /// Clock time when it was stored, Unix ms.
    pub created_ms: u64,
    /// Bytes charged against the store's budget.
    pub bytes: u64,
}

/// Limits of a [`CommitmentStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Age after which a commitment is gone, ms.
    pub ttl_ms: u64,
    /// Total bytes held.
    pub max_bytes: u64,
    /// Number of commitments held.
    pub max_count: usize,
}

/// The bounded commitment store.
pub struct CommitmentStore {
    limits: StoreLimits,
    map: HashMap<String, StoredCommitment>,
    order: VecDeque<String>,
    total_bytes: u64,
}

impl CommitmentStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            map: HashMap::new(),
            order: VecDeque::new(),
            total_bytes: 0,
        }
    }

    /// Drops commitments older than the TTL.
    pub fn purge_expired(&mut self, now_ms: u64) {
        while let Some(id) = self.order.front() {
            let expired = match self.map.get(id) {
                Some(c) => now_ms.saturating_sub(c.created_ms) >= self.limits.ttl_ms,
                None => true,
            };
            if !expired {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(id) = self.order.pop_front()
            && let Some(c) = self.map.remove(&id)
        {
            self.total_bytes = self.total_bytes.saturating_sub(c.bytes);
        }
    }

    /// Stores a commitment under `id`, evicting expired and then oldest entries to make room.
    /// A commitment larger than the whole byte budget is refused (returned back).
    pub fn insert(
        &mut self,
        id: String,
        entry: StoredCommitment,
        now_ms: u64,
    ) -> Result<(), StoredCommitment> {
        if entry.bytes > self.limits.max_bytes {
            return Err(entry);
        }
        self.purge_expired(now_ms);
        while !self.order.is_empty()
            && (self.map.len() >= self.limits.max_count
                || self.total_bytes + entry.bytes > self.limits.max_bytes)
        {
            self.pop_oldest();
        }
        self.total_bytes += entry.bytes;
        if let Some(old) = self.map.insert(id.clone(), entry) {
            // Ids are random 128-bit values; a collision only replaces the older entry.
            self.total_bytes = self.total_bytes.saturating_sub(old.bytes);
            self.order.retain(|x| x != &id);
        }
        self.order.push_back(id);
        Ok(())
    }

    /// The commitment `id` if it exists, has not expired and belongs to `owner`.
    pub fn get(&mut self, id: &str, owner: &PublicKey, now_ms: u64) -> Option<StoredCommitment> {
        self.purge_expired(now_ms);
        self.map.get(id).filter(|c| &c.owner == owner).cloned()
    }

    /// Number of commitments held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{HostCommitted, StageTimings};

    fn entry(owner: u8, created_ms: u64, bytes: u64) -> StoredCommitment {
        let c = HostCommitted::from_flat(2, 2, vec![1, 2, 3, 4], StageTimings::default()).unwrap();
        StoredCommitment {
            owner: PublicKey([owner; 32]),
            spec: GemmSpec {
                seed: 1,
                n: 2,
                k: 1,
                m: 2,
            },
            committed: Arc::new(c),
            created_ms,
            bytes,
        }
    }

    fn store(ttl_ms: u64, max_bytes: u64, max_count: usize) -> CommitmentStore {
        CommitmentStore::new(StoreLimits {
            ttl_ms,
            max_bytes,
            max_count,
        })
    }

    #[test]
    fn only_the_owner_can_open_a_commitment() {
        let mut s = store(1000, 1000, 10);
        s.insert("a".into(), entry(1, 0, 10), 0)
            .map_err(|_| ())
            .unwrap();
        assert!(s.get("a", &PublicKey([1; 32]), 5).is_some());
        assert!(s.get("a", &PublicKey([2; 32]), 5).is_none());
        assert!(s.get("b", &PublicKey([1; 32]), 5).is_none());
    }

    #[test]
    fn commitments_expire_after_the_ttl() {
        let mut s = store(100, 1000, 10);
        s.insert("a".into(), entry(1, 0, 10), 0)
            .map_err(|_| ())
            .unwrap();
        assert!(s.get("a", &PublicKey([1; 32]), 99).is_some());
        assert!(s.get("a", &PublicKey([1; 32]), 100).is_none());
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn oldest_are_evicted_when_count_or_bytes_run_out() {
        let mut s = store(1000, 100, 2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.insert(id.to_string(), entry(1, i as u64, 10), i as u64)
                .map_err(|_| ())
                .unwrap();
        }
        assert_eq!(s.len(), 2);
        assert!(s.get("a", &PublicKey([1; 32]), 3).is_none());
        s.insert("d".into(), entry(1, 4, 85), 4)
            .map_err(|_| ())
            .unwrap();
        // 10 (c) + 85 fits; 10 (b) + 10 (c) + 85 does not, so b went.
        assert!(s.get("b", &PublicKey([1; 32]), 4).is_none());
        assert!(s.get("c", &PublicKey([1; 32]), 4).is_some());
        assert_eq!(s.bytes(), 95);
    }

    #[test]
    fn a_commitment_larger_than_the_budget_is_refused() {
        let mut s = store(1000, 100, 2);
        assert!(s.insert("big".into(), entry(1, 0, 101), 0).is_err());
        assert!(s.is_empty());
    }
}
