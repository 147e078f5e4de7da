//! [`LogLimit`]: one line per interval for an error that repeats, so that
//! a failing disk or a flood of bad connections cannot fill the log (a
//! full disk once wrote a WARN per failed write, 1,637 lines in 25 s).
//! The line that gets through says how many it stands for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Lets one event through per interval and counts the rest.
#[derive(Debug)]
pub struct LogLimit {
    interval_ms: u64,
    /// When the last event got through (ms since the process's first use
    /// of a limit, plus one; 0: never).
    last_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogLimit {
    /// One event per `interval`.
    pub const fn every(interval: Duration) -> LogLimit {
        LogLimit {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` the events held
    /// back since the last one that was; `None` when it should not.
    pub fn allow(&self) -> Option<u64> {
        let now_ms = START.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_gets_through_and_counts_the_rest() {
        let limit = LogLimit::every(Duration::from_millis(200));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.allow(), Some(1000));
        assert_eq!(limit.allow(), None);
    }
}
