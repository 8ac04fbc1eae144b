//! What a validator remembers between rounds (persisted) and what it shows (snapshots).

use crate::task::{Failure, QueryOutcome};
use polylith_protocol::task::TaskKind;
use polylith_protocol::weights::SignedWeights;
use polylith_scoring::yuma::YumaState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Verified throughputs remembered per miner for the median.
pub const RECENT_THROUGHPUTS: usize = 32;

/// Version of [`PersistedState`]'s layout.
pub const STATE_VERSION: u32 = 1;

/// Running counters of one miner (keyed by hotkey, so a uid reassigned to a new hotkey
/// starts from zero).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinerStats {
    /// Queries verified.
    pub verified: u64,
    /// Queries failed (any reason).
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Last verified GEMM throughputs, FLOP/s, oldest first.
    pub recent_flops: VecDeque<f64>,
    /// LLM completion tokens checked (every token of every completion received).
    #[serde(default)]
    pub tokens_checked: u64,
    /// LLM tokens that passed (all tokens of a verified completion; those before the first
    /// failing token otherwise).
    #[serde(default)]
    pub tokens_passed: u64,
    /// Last verified LLM rates, tokens/s over the whole exchange, oldest first.
    #[serde(default)]
    pub recent_tokens_per_s: VecDeque<f64>,
    /// Last verified LLM times to first token, seconds, oldest first.
    #[serde(default)]
    pub recent_ttft_s: VecDeque<f64>,
}

fn push_recent(q: &mut VecDeque<f64>, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite() && *v > 0.0) {
        q.push_back(v);
        while q.len() > RECENT_THROUGHPUTS {
            q.pop_front();
        }
    }
}

impl MinerStats {
    /// Counts one outcome.
    pub fn record(&mut self, o: &QueryOutcome) {
        self.tokens_checked = self
            .tokens_checked
            .saturating_add(u64::from(o.tokens_checked));
        self.tokens_passed = self
            .tokens_passed
            .saturating_add(u64::from(o.tokens_passed));
        match &o.failure {
            None => {
                self.verified = self.verified.saturating_add(1);
                // Each kind measures speed in its own unit.
                match o.task {
                    TaskKind::Gemm => push_recent(&mut self.recent_flops, o.throughput),
                    TaskKind::Llm => {
                        push_recent(&mut self.recent_tokens_per_s, o.throughput);
                        push_recent(&mut self.recent_ttft_s, o.latency_s);
                    }
                }
            }
            Some(f) => {
                self.failed = self.failed.saturating_add(1);
                let c = self
                    .failures
                    .entry(f.reason.as_str().to_string())
                    .or_default();
                *c = c.saturating_add(1);
                // Bounded again here: this copy outlives the round and is served by the
                // state API, whatever path built the failure.
                self.last_failure = Some(f.clone().bounded());
            }
        }
    }
}

/// Everything a restarted validator resumes from; written as one value per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Layout version.
    pub version: u32,
    /// Last completed round (0 before the first).
    pub round: u64,
    /// EMA score per miner hotkey (SS58).
    pub ema: BTreeMap<String, f64>,
    /// Counters per miner hotkey.
    pub miners: BTreeMap<String, MinerStats>,
    /// Yuma bonds and permits carried to the next epoch.
    pub yuma: Option<YumaState>,
    /// The weights last signed and published.
    pub weights: Option<SignedWeights>,
    /// Incentive (miners' reward share) per uid from the last epoch.
    pub incentive: Vec<f64>,
    /// Dividends (validators' share) per uid from the last epoch.
    pub dividends: Vec<f64>,
    /// Peers whose weights entered the last epoch.
    pub peers_used: Vec<u16>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            round: 0,
            ema: BTreeMap::new(),
            miners: BTreeMap::new(),
            yuma: None,
            weights: None,
            incentive: Vec::new(),
            dividends: Vec::new(),
            peers_used: Vec::new(),
        }
    }
}

/// The full result of one round, stored under its round number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number (1-based).
    pub round: u64,
    /// Unix ms when the round started.
    pub started_ms: u64,
    /// Unix ms when it finished.
    pub finished_ms: u64,
    /// Every query of the round.
    pub outcomes: Vec<QueryOutcome>,
    /// The weights signed this round.
    pub weights: Vec<(u16, u16)>,
    /// Incentive per uid.
    pub incentive: Vec<f64>,
    /// Dividends per uid.
    pub dividends: Vec<f64>,
    /// Peers whose weights were used.
    pub peers_used: Vec<u16>,
    /// Whether the round's state reached the disk.
    pub persisted: bool,
}

/// One miner as the validator sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerSnapshot {
    /// Uid.
    pub uid: u16,
    /// Hotkey, SS58.
    pub hotkey: String,
    /// Queries verified.
    pub verified: u64,
    /// Queries failed.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Median of recent verified throughputs, GFLOP/s.
    pub median_gflops: Option<f64>,
    /// LLM completion tokens checked.
    #[serde(default)]
    pub tokens_checked: u64,
    /// LLM tokens that passed verification.
    #[serde(default)]
    pub tokens_passed: u64,
    /// Median of recent verified LLM rates, tokens/s.
    #[serde(default)]
    pub median_tokens_per_s: Option<f64>,
    /// Median of recent verified LLM times to first token, seconds.
    #[serde(default)]
    pub median_ttft_s: Option<f64>,
    /// EMA score in [0, 1].
    pub ema: f64,
    /// This validator's published weight, u16.
    pub weight_u16: u16,
    /// Yuma incentive share in [0, 1].
    pub reward_share: f64,
}

/// The validator's state for `polylith local`, the state API and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorSnapshot {
    /// This validator's hotkey, SS58.
    pub hotkey: String,
    /// Its uid, if registered in the metagraph.
    pub uid: Option<u16>,
    /// Last completed round.
    pub round: u64,
    /// Miners of the current metagraph, by uid.
    pub miners: Vec<MinerSnapshot>,
    /// The weights last published.
    pub weights: Option<SignedWeights>,
    /// Incentive per uid from the last epoch.
    pub incentive: Vec<f64>,
    /// Dividend share per uid from the last epoch.
    pub dividends: Vec<f64>,
    /// Peers whose weights entered the last epoch.
    pub peers_used: Vec<u16>,
    /// Round state writes that failed since start.
    pub db_write_errors: u64,
}
