//! Every validator metric of `docs/metrics.md`, declared once, in a registry owned by one
//! validator (not the process-global default) so several validators can run in one process.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `outcome` values of `polylith_validator_queries_total`.
pub const QUERY_OUTCOMES: [&str; 4] = ["verified", "failed", "timeout", "error"];
/// `outcome` values of `polylith_validator_peer_weights_received_total`.
pub const PEER_OUTCOMES: [&str; 5] = ["ok", "bad_signature", "unreachable", "stale", "too_large"];
/// Task labels.
pub const TASKS: [&str; 2] = ["gemm", "llm"];

/// The validator's metrics.
#[derive(Clone)]
pub struct ValidatorMetrics {
    registry: Registry,
    /// `polylith_build_info{component="validator",version}`.
    pub build_info: IntGaugeVec,
    /// `polylith_validator_rounds_total`.
    pub rounds: IntCounter,
    /// `polylith_validator_round_duration_seconds`.
    pub round_duration: Histogram,
    /// `polylith_validator_last_round_timestamp_seconds`.
    pub last_round_timestamp: Gauge,
    /// `polylith_validator_queries_total{miner_uid,task,outcome}`.
    pub queries: IntCounterVec,
    /// `polylith_validator_verification_failures_total{task,reason}`.
    pub verification_failures: IntCounterVec,
    /// `polylith_validator_query_latency_seconds{task}`.
    pub query_latency: HistogramVec,
    /// `polylith_validator_miner_throughput_flops{miner_uid}`.
    pub miner_throughput: GaugeVec,
    /// `polylith_validator_miner_tokens_per_second{miner_uid}`.
    pub miner_tokens_per_second: GaugeVec,
    /// `polylith_validator_llm_tokens_total{outcome}` (`verified` or `rejected`).
    pub llm_tokens: IntCounterVec,
    /// `polylith_validator_miner_score{miner_uid}`.
    pub miner_score: GaugeVec,
    /// `polylith_validator_miner_weight{miner_uid}`.
    pub miner_weight: GaugeVec,
    /// `polylith_validator_miner_reward_share{miner_uid}`.
    pub miner_reward_share: GaugeVec,
    /// `polylith_validator_dividend_share{validator_uid}`.
    pub dividend_share: GaugeVec,
    /// `polylith_validator_consensus_duration_seconds`.
    pub consensus_duration: Histogram,
    /// `polylith_validator_peer_weights_received_total{peer_uid,outcome}`.
    pub peer_weights_received: IntCounterVec,
    /// `polylith_validator_peers_with_weights`.
    pub peers_with_weights: IntGauge,
    /// `polylith_validator_reveals_total{outcome}`: revealed vectors (own and peers') checked
    /// for an epoch.
    pub reveals: IntCounterVec,
    /// `polylith_validator_equivocators`: validators excluded on equivocation evidence.
    pub equivocators: IntGauge,
    /// `polylith_validator_db_size_bytes`.
    pub db_size_bytes: Gauge,
    /// `polylith_validator_db_write_seconds`.
    pub db_write_seconds: Histogram,
    /// `polylith_validator_data_dir_free_bytes`.
    pub data_dir_free_bytes: Gauge,
    /// `polylith_validator_data_dir_size_bytes`.
    pub data_dir_size_bytes: Gauge,
    /// `polylith_validator_db_write_errors_total` (not yet in docs/metrics.md).
    pub db_write_errors: IntCounter,
    /// `polylith_validator_registered`: 1 when the validator's hotkey is in the metagraph
    /// as a validator, 0 when it is missing or has another role.
    pub registered: IntGauge,
}

impl ValidatorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("polylith_build_info", "Build identity (always 1)"),
            &["component", "version"],
        )?;
        let rounds = IntCounter::new("polylith_validator_rounds_total", "Completed rounds")?;
        let registered = IntGauge::new(
            "polylith_validator_registered",
            "1 when this validator's hotkey is in the metagraph as a validator, else 0",
        )?;
        let round_duration = Histogram::with_opts(
            HistogramOpts::new(
                "polylith_validator_round_duration_seconds",
                "Wall time of a round",
            )
            .buckets(prometheus::exponential_buckets(0.05, 2.0, 14)?),
        )?;
        let last_round_timestamp = Gauge::new(
            "polylith_validator_last_round_timestamp_seconds",
            "Unix time the last round completed",
        )?;
        let queries = IntCounterVec::new(
            Opts::new("polylith_validator_queries_total", "Queries sent"),
            &["miner_uid", "task", "outcome"],
        )?;
        let verification_failures = IntCounterVec::new(
            Opts::new(
                "polylith_validator_verification_failures_total",
                "Failed verifications by reason",
            ),
            &["task", "reason"],
        )?;
        let query_latency = HistogramVec::new(
            HistogramOpts::new(
                "polylith_validator_query_latency_seconds",
                "Request to commitment / first result",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &["task"],
        )?;
        let miner_throughput = GaugeVec::new(
            Opts::new(
                "polylith_validator_miner_throughput_flops",
                "Last verified GEMM throughput, FLOP/s",
            ),
            &["miner_uid"],
        )?;
        let miner_tokens_per_second = GaugeVec::new(
            Opts::new(
                "polylith_validator_miner_tokens_per_second",
                "Last verified LLM completion rate (tokens over the whole exchange), tokens/s",
            ),
            &["miner_uid"],
        )?;
        let llm_tokens = IntCounterVec::new(
            Opts::new(
                "polylith_validator_llm_tokens_total",
                "LLM completion tokens checked, by verdict (rejected: at or after the first failing token)",
            ),
            &["outcome"],
        )?;
        let miner_score = GaugeVec::new(
            Opts::new("polylith_validator_miner_score", "EMA score"),
            &["miner_uid"],
        )?;
        let miner_weight = GaugeVec::new(
            Opts::new(
                "polylith_validator_miner_weight",
                "This validator's weight for the miner, 0..1 (u16/65535)",
            ),
            &["miner_uid"],
        )?;
        let miner_reward_share = GaugeVec::new(
            Opts::new(
                "polylith_validator_miner_reward_share",
                "Yuma incentive share, 0..1",
            ),
            &["miner_uid"],
        )?;
        let dividend_share = GaugeVec::new(
            Opts::new(
                "polylith_validator_dividend_share",
                "Yuma dividend share, 0..1",
            ),
            &["validator_uid"],
        )?;
        let consensus_duration = Histogram::with_opts(
            HistogramOpts::new(
                "polylith_validator_consensus_duration_seconds",
                "Yuma epoch compute time",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let peer_weights_received = IntCounterVec::new(
            Opts::new(
                "polylith_validator_peer_weights_received_total",
                "Peers' weight vectors fetched",
            ),
            &["peer_uid", "outcome"],
        )?;
        let reveals = IntCounterVec::new(
            Opts::new(
                "polylith_validator_reveals_total",
                "Revealed weight vectors checked for an epoch, by outcome (accepted or why not)",
            ),
            &["outcome"],
        )?;
        let equivocators = IntGauge::new(
            "polylith_validator_equivocators",
            "Validators excluded from consensus on evidence of two signed messages for one round",
        )?;
        let peers_with_weights = IntGauge::new(
            "polylith_validator_peers_with_weights",
            "Peers whose weights were used in the last epoch",
        )?;
        let db_size_bytes = Gauge::new("polylith_validator_db_size_bytes", "sled size on disk")?;
        let db_write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "polylith_validator_db_write_seconds",
                "sled write+flush latency",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let data_dir_free_bytes = Gauge::new(
            "polylith_validator_data_dir_free_bytes",
            "Free space on the data directory's filesystem",
        )?;
        let data_dir_size_bytes = Gauge::new(
            "polylith_validator_data_dir_size_bytes",
            "Total size of the data directory's filesystem",
        )?;
        let db_write_errors = IntCounter::new(
            "polylith_validator_db_write_errors_total",
            "Round state writes that failed (the validator kept serving)",
        )?;
        for c in [
            Box::new(build_info.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rounds.clone()),
            Box::new(round_duration.clone()),
            Box::new(last_round_timestamp.clone()),
            Box::new(queries.clone()),
            Box::new(verification_failures.clone()),
            Box::new(query_latency.clone()),
            Box::new(miner_throughput.clone()),
            Box::new(miner_tokens_per_second.clone()),
            Box::new(llm_tokens.clone()),
            Box::new(miner_score.clone()),
            Box::new(miner_weight.clone()),
            Box::new(miner_reward_share.clone()),
            Box::new(dividend_share.clone()),
            Box::new(consensus_duration.clone()),
            Box::new(peer_weights_received.clone()),
            Box::new(peers_with_weights.clone()),
            Box::new(reveals.clone()),
            Box::new(equivocators.clone()),
            Box::new(db_size_bytes.clone()),
            Box::new(db_write_seconds.clone()),
            Box::new(data_dir_free_bytes.clone()),
            Box::new(data_dir_size_bytes.clone()),
            Box::new(db_write_errors.clone()),
            Box::new(registered.clone()),
        ] {
            registry.register(c)?;
        }
        build_info
            .with_label_values(&["validator", env!("CARGO_PKG_VERSION")])
            .set(1);
        for task in TASKS {
            query_latency.with_label_values(&[task]);
        }
        for outcome in std::iter::once("accepted").chain(crate::weights::RevealError::LABELS) {
            reveals.with_label_values(&[outcome]);
        }
        for outcome in ["verified", "rejected"] {
            llm_tokens.with_label_values(&[outcome]);
        }
        Ok(Self {
            registry,
            build_info,
            rounds,
            round_duration,
            last_round_timestamp,
            queries,
            verification_failures,
            query_latency,
            miner_throughput,
            miner_tokens_per_second,
            llm_tokens,
            miner_score,
            miner_weight,
            miner_reward_share,
            dividend_share,
            consensus_duration,
            peer_weights_received,
            peers_with_weights,
            reveals,
            equivocators,
            db_size_bytes,
            db_write_seconds,
            data_dir_free_bytes,
            data_dir_size_bytes,
            db_write_errors,
            registered,
        })
    }

    /// The registry in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which registration prevents.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The underlying registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_validator_metric_is_exported() {
        let m = ValidatorMetrics::new().unwrap();
        // Vectors appear in the output only once a label set exists.
        m.queries
            .with_label_values(&["1", "gemm", "verified"])
            .inc();
        m.verification_failures
            .with_label_values(&["gemm", "wrong_row"])
            .inc();
        m.miner_throughput.with_label_values(&["1"]).set(1.0);
        m.miner_score.with_label_values(&["1"]).set(1.0);
        m.miner_tokens_per_second.with_label_values(&["1"]).set(1.0);
        m.miner_weight.with_label_values(&["1"]).set(1.0);
        m.miner_reward_share.with_label_values(&["1"]).set(1.0);
        m.dividend_share.with_label_values(&["0"]).set(1.0);
        m.peer_weights_received
            .with_label_values(&["2", "ok"])
            .inc();
        let text = m.render();
        for name in [
            "polylith_build_info",
            "polylith_validator_rounds_total",
            "polylith_validator_registered",
            "polylith_validator_round_duration_seconds",
            "polylith_validator_last_round_timestamp_seconds",
            "polylith_validator_queries_total",
            "polylith_validator_verification_failures_total",
            "polylith_validator_query_latency_seconds",
            "polylith_validator_miner_throughput_flops",
            "polylith_validator_miner_score",
            "polylith_validator_miner_weight",
            "polylith_validator_miner_reward_share",
            "polylith_validator_dividend_share",
            "polylith_validator_consensus_duration_seconds",
            "polylith_validator_peer_weights_received_total",
            "polylith_validator_peers_with_weights",
            "polylith_validator_reveals_total",
            "polylith_validator_equivocators",
            "polylith_validator_db_size_bytes",
            "polylith_validator_db_write_seconds",
            "polylith_validator_data_dir_free_bytes",
            "polylith_validator_data_dir_size_bytes",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("polylith_build_info{component=\"validator\""));
    }

    #[test]
    fn two_validators_in_one_process_do_not_collide() {
        let a = ValidatorMetrics::new().unwrap();
        let b = ValidatorMetrics::new().unwrap();
        a.rounds.inc();
        assert_eq!(a.rounds.get(), 1);
        assert_eq!(b.rounds.get(), 0);
    }
}
