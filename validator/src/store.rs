//! The validator's sled database: one state value plus one record per round.
//!
//! sled has reports of corruption after abrupt stops, so each round is written as a single
//! atomic batch (state, round record, pruning) followed by a flush: after a crash the
//! database holds either the previous round or the new one, never a mix. The state value
//! alone is what a restart resumes from.

use crate::ValidatorError;
use crate::state::{PersistedState, RoundRecord, STATE_VERSION};
use polylith_protocol::weights::{Evidence, Reveal, WeightsMessage};
use std::path::{Path, PathBuf};

const STATE_KEY: &[u8] = b"state";
const ROUND_PREFIX: &[u8] = b"round/";
/// This validator's signed weights message of each round (what `GET /v1/weights` serves).
const MESSAGE_PREFIX: &[u8] = b"message/";
/// This validator's own unrevealed weights, salt and proofs of each round (never served
/// before the reveal).
const COMMIT_PREFIX: &[u8] = b"commit/";
/// Equivocation evidence, one per offending hotkey.
const EVIDENCE_PREFIX: &[u8] = b"evidence/";

/// The weights exchange data written in the same batch as a round's state.
#[derive(Debug, Clone)]
pub struct RoundWeights {
    /// The message signed for the round; published only after the batch is flushed.
    pub message: WeightsMessage,
    /// The opening of the round's commitment, kept until it is revealed.
    pub commit: Reveal,
    /// Evidence found this round.
    pub evidence: Vec<Evidence>,
}

/// A failed write or read after start-up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O error, full disk, corruption).
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// A value could not be encoded or decoded.
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// Handle to the database (cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

fn round_key(round: u64) -> Vec<u8> {
    prefixed(ROUND_PREFIX, round)
}

fn prefixed(prefix: &[u8], round: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    // Big-endian so keys sort by round.
    k.extend_from_slice(&round.to_be_bytes());
    k
}

impl Store {
    /// Opens (creating) the database in `path`; errors name the path.
    pub fn open(path: &Path) -> Result<Self, ValidatorError> {
        // sled's flusher thread keeps the file lock for a moment after the last handle of a
        // store in this process is dropped, so a reopen in the same process (tests, a
        // restarted validator task) retries a lock conflict briefly instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => {
                    return Ok(Self {
                        db,
                        path: path.to_path_buf(),
                    });
                }
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other
                        && e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(ValidatorError::DbOpen {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, or `None` for a fresh database.
    pub fn load(&self) -> Result<Option<PersistedState>, ValidatorError> {
        let err = |message: String| ValidatorError::DbState {
            path: self.path.clone(),
            message,
        };
        let Some(bytes) = self.db.get(STATE_KEY).map_err(|e| err(e.to_string()))? else {
            return Ok(None);
        };
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("state value: {e}")))?;
        if state.version != STATE_VERSION {
            return Err(err(format!(
                "state version {} is not supported (expected {STATE_VERSION})",
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Writes the round's state and record atomically, drops records older than
    /// `keep` rounds, and flushes to disk.
    pub fn commit_round(
        &self,
        state: &PersistedState,
        record: &RoundRecord,
        keep: u64,
    ) -> Result<(), StoreError> {
        self.commit_round_with(state, record, None, keep)
    }

    /// [`Store::commit_round`] plus the round's weights message, commitment opening and new
    /// evidence, all in the same atomic batch and flushed before returning: a message is
    /// published only after this returns, so a restart always finds what was served.
    pub fn commit_round_with(
        &self,
        state: &PersistedState,
        record: &RoundRecord,
        weights: Option<&RoundWeights>,
        keep: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(STATE_KEY, serde_json::to_vec(state)?);
        batch.insert(round_key(record.round), serde_json::to_vec(record)?);
        if let Some(w) = weights {
            batch.insert(
                prefixed(MESSAGE_PREFIX, w.message.round),
                serde_json::to_vec(&w.message)?,
            );
            batch.insert(
                prefixed(COMMIT_PREFIX, w.message.round),
                serde_json::to_vec(&w.commit)?,
            );
            for e in &w.evidence {
                let mut key = EVIDENCE_PREFIX.to_vec();
                key.extend_from_slice(e.first.validator.as_bytes());
                batch.insert(key, serde_json::to_vec(e)?);
            }
        }
        if let Some(oldest_kept) = record.round.checked_sub(keep) {
            for prefix in [ROUND_PREFIX, MESSAGE_PREFIX, COMMIT_PREFIX] {
                for key in self
                    .db
                    .range(prefixed(prefix, 0)..=prefixed(prefix, oldest_kept))
                    .keys()
                {
                    batch.remove(key?);
                }
            }
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// This validator's weights message of `round`, if kept.
    pub fn message(&self, round: u64) -> Result<Option<WeightsMessage>, StoreError> {
        match self.db.get(prefixed(MESSAGE_PREFIX, round))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The newest weights message written (what a restarted validator serves).
    pub fn latest_message(&self) -> Result<Option<WeightsMessage>, StoreError> {
        match self.db.scan_prefix(MESSAGE_PREFIX).values().next_back() {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes?)?)),
            None => Ok(None),
        }
    }

    /// The opening of this validator's commitment of `round`, if kept.
    pub fn commit(&self, round: u64) -> Result<Option<Reveal>, StoreError> {
        match self.db.get(prefixed(COMMIT_PREFIX, round))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every piece of equivocation evidence held.
    pub fn evidence(&self) -> Result<Vec<Evidence>, StoreError> {
        let mut out = Vec::new();
        for v in self.db.scan_prefix(EVIDENCE_PREFIX).values() {
            out.push(serde_json::from_slice(&v?)?);
        }
        Ok(out)
    }

    /// The stored record of `round`, if kept.
    pub fn round_record(&self, round: u64) -> Result<Option<RoundRecord>, StoreError> {
        match self.db.get(round_key(round))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Round numbers with a stored record, ascending.
    pub fn rounds(&self) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for key in self.db.scan_prefix(ROUND_PREFIX).keys() {
            let key = key?;
            if let Some(b) = key.get(ROUND_PREFIX.len()..)
                && let Ok(arr) = <[u8; 8]>::try_from(b)
            {
                out.push(u64::from_be_bytes(arr));
            }
        }
        Ok(out)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// (free, total) bytes of the filesystem holding `path`.
pub fn filesystem_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u64) -> RoundRecord {
        RoundRecord {
            round,
            started_ms: 1,
            finished_ms: 2,
            outcomes: Vec::new(),
            weights: vec![(1, 65_535)],
            incentive: vec![0.0, 1.0],
            dividends: vec![1.0, 0.0],
            peers_used: Vec::new(),
            persisted: true,
        }
    }

    #[test]
    fn rounds_are_pruned_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut state = PersistedState::default();
        for r in 1..=5 {
            state.round = r;
            state.ema.insert("m".into(), r as f64 / 10.0);
            store.commit_round(&state, &record(r), 3).unwrap();
        }
        assert_eq!(store.rounds().unwrap(), vec![3, 4, 5]);
        assert_eq!(store.round_record(5).unwrap(), Some(record(5)));
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.load().unwrap(), Some(state));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// Every finite float of the state comes back bit for bit after a reopen (serde_json
        /// parses the shortest representation exactly only with `float_roundtrip`).
        #[test]
        fn floats_round_trip_bit_for_bit_across_a_restart(
            bits in proptest::collection::vec(proptest::prelude::any::<u64>(), 200)
        ) {
            let floats: Vec<f64> = bits
                .into_iter()
                .map(f64::from_bits)
                .filter(|f| f.is_finite())
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let mut state = PersistedState::default();
            for (i, f) in floats.iter().enumerate() {
                state.ema.insert(format!("m{i}"), *f);
            }
            state.incentive = floats.clone();
            state.round = 1;
            {
                let store = Store::open(dir.path()).unwrap();
                store.commit_round(&state, &record(1), 3).unwrap();
            }
            let back = Store::open(dir.path()).unwrap().load().unwrap().unwrap();
            let bits_of = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits_of(&back.incentive), bits_of(&floats));
            for (i, f) in floats.iter().enumerate() {
                proptest::prop_assert_eq!(back.ema[&format!("m{i}")].to_bits(), f.to_bits());
            }
        }
    }

    #[test]
    fn unreadable_state_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.db.insert(STATE_KEY, b"not json".as_slice()).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[test]
    fn a_locked_database_is_a_clear_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(e, ValidatorError::DbOpen { .. }), "{e}");
        assert!(e.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn filesystem_space_reports_nonzero_total() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = filesystem_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total);
    }
}
