//! The `polylith_listener_*` metrics, registered in the daemon's own registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::Arc;

/// The listener metrics of one daemon; one label set per listener via [`Self::listener`].
#[derive(Clone)]
pub struct ListenerMetrics {
    vecs: Option<Vecs>,
}

#[derive(Clone)]
struct Vecs {
    open: IntGaugeVec,
    refused: IntCounterVec,
    timeouts: IntCounterVec,
    accept_errors: IntCounterVec,
}

impl ListenerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let open = IntGaugeVec::new(
            Opts::new(
                "polylith_listener_open_connections",
                "Connections open on the listener",
            ),
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "polylith_listener_refused_connections_total",
                "Connections closed at accept because a connection cap was reached",
            ),
            &["listener", "reason"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "polylith_listener_timeouts_total",
                "Connections cut by a read or idle timeout",
            ),
            &["listener", "kind"],
        )?;
        let accept_errors = IntCounterVec::new(
            Opts::new(
                "polylith_listener_accept_errors_total",
                "Failed accepts (for example out of file descriptors)",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        Ok(Self {
            vecs: Some(Vecs {
                open,
                refused,
                timeouts,
                accept_errors,
            }),
        })
    }

    /// [`Self::register`], or (with a warning) metrics that count nothing: a daemon serves
    /// even when its listener metrics cannot be registered (say, a second `serve` call).
    pub fn register_or_warn(registry: &Registry) -> Self {
        Self::register(registry).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listener metrics not registered; serving without them");
            Self { vecs: None }
        })
    }

    /// The counters of the listener called `name` (`api`, `metrics`).
    pub fn listener(&self, name: &str) -> ListenerObserver {
        ListenerObserver {
            counters: self.vecs.as_ref().map(|v| {
                Arc::new(Counters {
                    open: v.open.with_label_values(&[name]),
                    refused_total: v.refused.with_label_values(&[name, "max_connections"]),
                    refused_per_ip: v
                        .refused
                        .with_label_values(&[name, "max_connections_per_ip"]),
                    header_timeouts: v.timeouts.with_label_values(&[name, "header"]),
                    body_timeouts: v.timeouts.with_label_values(&[name, "body"]),
                    idle_timeouts: v.timeouts.with_label_values(&[name, "idle"]),
                    accept_errors: v.accept_errors.with_label_values(&[name]),
                })
            }),
        }
    }
}

struct Counters {
    open: IntGauge,
    refused_total: IntCounter,
    refused_per_ip: IntCounter,
    header_timeouts: IntCounter,
    body_timeouts: IntCounter,
    idle_timeouts: IntCounter,
    accept_errors: IntCounter,
}

/// What one listener counts; [`Default`] counts nothing (a listener without metrics).
#[derive(Clone, Default)]
pub struct ListenerObserver {
    counters: Option<Arc<Counters>>,
}

/// Which counter an event goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Opened,
    Closed,
    RefusedTotal,
    RefusedPerIp,
    HeaderTimeout,
    BodyTimeout,
    IdleTimeout,
    AcceptError,
}

impl ListenerObserver {
    pub(crate) fn record(&self, event: Event) {
        let Some(c) = &self.counters else { return };
        match event {
            Event::Opened => c.open.inc(),
            Event::Closed => c.open.dec(),
            Event::RefusedTotal => c.refused_total.inc(),
            Event::RefusedPerIp => c.refused_per_ip.inc(),
            Event::HeaderTimeout => c.header_timeouts.inc(),
            Event::BodyTimeout => c.body_timeouts.inc(),
            Event::IdleTimeout => c.idle_timeouts.inc(),
            Event::AcceptError => c.accept_errors.inc(),
        }
    }

    /// Connections open now (0 without metrics).
    pub fn open_connections(&self) -> i64 {
        self.counters.as_ref().map_or(0, |c| c.open.get())
    }

    /// Connections refused so far by the total cap and by the per-address cap.
    pub fn refused(&self) -> (u64, u64) {
        self.counters
            .as_ref()
            .map_or((0, 0), |c| (c.refused_total.get(), c.refused_per_ip.get()))
    }

    /// Connections cut so far by the header, body and idle timeouts.
    pub fn timeouts(&self) -> (u64, u64, u64) {
        self.counters.as_ref().map_or((0, 0, 0), |c| {
            (
                c.header_timeouts.get(),
                c.body_timeouts.get(),
                c.idle_timeouts.get(),
            )
        })
    }
}
