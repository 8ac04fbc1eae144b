//! Every miner metric of `docs/metrics.md`, declared once, in a registry owned by one miner
//! (not the process-global default) so several miners can run in one process.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Rejection reasons, pre-created at zero so dashboards show them before the first event.
pub const REJECTION_REASONS: [&str; 12] = [
    "missing_signature",
    "malformed",
    "body_hash_mismatch",
    "bad_signature",
    "wrong_receiver",
    "stale_timestamp",
    "replayed_nonce",
    "unknown_sender",
    "insufficient_stake",
    "body_too_large",
    "body_timeout",
    "overloaded",
];

/// Request outcomes (`outcome` label of `polylith_miner_requests_total`).
pub const OUTCOMES: [&str; 3] = ["ok", "rejected", "error"];

/// The miner's metrics.
#[derive(Clone)]
pub struct MinerMetrics {
    registry: Registry,
    /// `polylith_build_info{component="miner",version}`.
    pub build_info: IntGaugeVec,
    /// `polylith_miner_requests_total{task,outcome}`.
    pub requests: IntCounterVec,
    /// `polylith_miner_rejections_total{reason}`.
    pub rejections: IntCounterVec,
    /// `polylith_miner_compute_seconds{task}`.
    pub compute_seconds: HistogramVec,
    /// `polylith_miner_queue_depth`.
    pub queue_depth: IntGauge,
    /// `polylith_miner_cancelled_total{task}`.
    pub cancelled: IntCounterVec,
    /// `polylith_miner_backend_info{backend}`.
    pub backend_info: IntGaugeVec,
    /// `polylith_miner_tokens_served_total`.
    pub tokens_served: IntCounter,
    /// `polylith_miner_gemm_flop_total` (a float counter: FLOP counts overflow nothing here).
    pub gemm_flop: prometheus::Counter,
    /// `polylith_miner_commitments`.
    pub commitments: Gauge,
    /// `polylith_miner_registered`: 1 when the miner's hotkey is in the metagraph as a
    /// miner, 0 when it is missing or has another role (no validator will pay it).
    pub registered: IntGauge,
}

impl MinerMetrics {
    /// Creates and registers every metric; `backend` is the backend's name.
    pub fn new(backend: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("polylith_build_info", "Build identity (always 1)"),
            &["component", "version"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("polylith_miner_requests_total", "Task requests handled"),
            &["task", "outcome"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "polylith_miner_rejections_total",
                "Requests rejected before any work, by reason",
            ),
            &["reason"],
        )?;
        let compute_seconds = HistogramVec::new(
            HistogramOpts::new("polylith_miner_compute_seconds", "Compute time per request")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            &["task"],
        )?;
        let queue_depth = IntGauge::new(
            "polylith_miner_queue_depth",
            "Task requests holding a place: body being read, queued or computing",
        )?;
        let cancelled = IntCounterVec::new(
            Opts::new(
                "polylith_miner_cancelled_total",
                "Tasks stopped early because their client went away",
            ),
            &["task"],
        )?;
        let backend_info = IntGaugeVec::new(
            Opts::new(
                "polylith_miner_backend_info",
                "Compute backend in use (always 1)",
            ),
            &["backend"],
        )?;
        let tokens_served =
            IntCounter::new("polylith_miner_tokens_served_total", "LLM tokens returned")?;
        let gemm_flop = prometheus::Counter::new(
            "polylith_miner_gemm_flop_total",
            "2*n*k*m of every committed product",
        )?;
        let commitments = Gauge::new("polylith_miner_commitments", "Commitments held for opening")?;
        let registered = IntGauge::new(
            "polylith_miner_registered",
            "1 when this miner's hotkey is in the metagraph as a miner, else 0",
        )?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(compute_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(cancelled.clone()))?;
        registry.register(Box::new(backend_info.clone()))?;
        registry.register(Box::new(tokens_served.clone()))?;
        registry.register(Box::new(gemm_flop.clone()))?;
        registry.register(Box::new(commitments.clone()))?;
        registry.register(Box::new(registered.clone()))?;

        build_info
            .with_label_values(&["miner", env!("CARGO_PKG_VERSION")])
            .set(1);
        backend_info.with_label_values(&[backend]).set(1);
        for reason in REJECTION_REASONS {
            rejections.with_label_values(&[reason]);
        }
        for task in ["gemm", "llm"] {
            for outcome in OUTCOMES {
                requests.with_label_values(&[task, outcome]);
            }
            compute_seconds.with_label_values(&[task]);
            cancelled.with_label_values(&[task]);
        }
        Ok(Self {
            registry,
            build_info,
            requests,
            rejections,
            compute_seconds,
            queue_depth,
            cancelled,
            backend_info,
            tokens_served,
            gemm_flop,
            commitments,
            registered,
        })
    }

    /// Counts one rejection; unknown reasons are folded into `malformed` to keep labels bounded.
    pub fn reject(&self, reason: &str) {
        let reason = if REJECTION_REASONS.contains(&reason) {
            reason
        } else {
            "malformed"
        };
        self.rejections.with_label_values(&[reason]).inc();
    }

    /// Current value of `polylith_miner_rejections_total{reason}`.
    pub fn rejections_for(&self, reason: &str) -> u64 {
        self.rejections.with_label_values(&[reason]).get()
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

    /// The underlying registry (for adding process collectors or tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_miner_metric_is_exported() {
        let m = MinerMetrics::new("cpu").unwrap();
        m.tokens_served.inc();
        let text = m.render();
        for name in [
            "polylith_build_info",
            "polylith_miner_requests_total",
            "polylith_miner_rejections_total",
            "polylith_miner_compute_seconds",
            "polylith_miner_queue_depth",
            "polylith_miner_cancelled_total",
            "polylith_miner_backend_info",
            "polylith_miner_tokens_served_total",
            "polylith_miner_gemm_flop_total",
            "polylith_miner_commitments",
            "polylith_miner_registered",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("polylith_build_info{component=\"miner\""));
        assert!(text.contains("polylith_miner_rejections_total{reason=\"overloaded\"} 0"));
    }

    #[test]
    fn two_miners_in_one_process_do_not_collide() {
        let a = MinerMetrics::new("cpu").unwrap();
        let b = MinerMetrics::new("cpu").unwrap();
        a.reject("bad_signature");
        assert_eq!(a.rejections_for("bad_signature"), 1);
        assert_eq!(b.rejections_for("bad_signature"), 0);
    }
}
