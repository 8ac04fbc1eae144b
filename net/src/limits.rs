//! The limits one listener enforces.

use std::time::Duration;

/// Timeouts and connection caps of one listener. [`Default`] suits a public daemon API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Longest time from waiting for a request to having its whole header (slow-header
    /// clients, and keep-alive connections that never send the next request).
    pub header_read_timeout: Duration,
    /// Longest time to receive a request body, counted from the first read of it.
    pub body_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed, unless a
    /// handler is still working on one of its requests (catches clients that stop reading).
    pub idle_timeout: Duration,
    /// Most connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections open at once from one IPv4 address or one IPv6 /64.
    pub max_connections_per_ip: usize,
    /// After shutdown, how long in-flight requests may take before their connections are cut.
    pub shutdown_grace: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 128,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ListenerLimits {
    /// Limits for a metrics listener: the same timeouts, at most `max_connections` in all and
    /// per address (a scraper needs a handful).
    pub fn for_metrics(&self, max_connections: usize) -> Self {
        Self {
            max_connections,
            max_connections_per_ip: self.max_connections_per_ip.min(max_connections),
            ..self.clone()
        }
    }
}
