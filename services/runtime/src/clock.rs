//! Time as the time-based parts of a node read it (TTLs, expiries, rate
//! windows): the system clock in a deployment, a clock that tests move by
//! hand, so that an expiry is tested by moving time instead of waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Microseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_micros(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        crate::ids::now_micros()
    }
}

/// A clock that stands still until moved.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// Starts at the given time.
    pub fn at(micros: i64) -> Self {
        Self { now: AtomicI64::new(micros) }
    }

    /// Starts at the system time, so that stored times look ordinary.
    pub fn starting_now() -> Self {
        Self::at(crate::ids::now_micros())
    }

    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(i64::try_from(by.as_micros()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}
