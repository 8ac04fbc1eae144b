//! The miner's clock, injectable so tests can expire commitments without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of Unix time in milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Unix milliseconds from the system clock (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// The system clock shifted by an adjustable offset: tests move it forward to expire state.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// A clock equal to the system clock, shareable.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.offset_ms.fetch_add(ms as i64, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> u64 {
        let off = self.offset_ms.load(Ordering::SeqCst);
        unix_ms().saturating_add_signed(off)
    }
}
