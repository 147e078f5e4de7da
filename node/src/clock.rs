//! Where a node's time comes from: [`Clock`], injected so that tests (and
//! the harness's clock nemesis, through [`OffsetClock`]) can move it;
//! [`SystemClock`] is the one place that reads the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

/// Where time comes from (injected, so tests can move it).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// The machine's clock shifted by an adjustable offset: the clock nemesis
/// of the fault-injection harness moves it (`AdjustClock`, only on nodes
/// started with `--test-hooks`).
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// Sets the offset from the machine's clock.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }
}
