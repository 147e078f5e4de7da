//! [`Breaker`]: a per-node circuit breaker.
//!
//! After `threshold` consecutive failures the breaker opens and the client
//! sends that node nothing for `cooldown`; then one request may probe it
//! (half-open): success closes the breaker, failure opens it again. This
//! keeps a dead node from costing every request a connect timeout.

use std::time::{Duration, Instant};

/// Circuit breaker state for one node.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    /// Whether a request may go to the node now.
    pub(crate) fn allows(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                // Half-open: let this one probe; a failure reopens at once.
                self.open_until = None;
                self.consecutive_failures = self.threshold.saturating_sub(1);
                true
            }
            None => true,
        }
    }

    pub(crate) fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
    }

    pub(crate) fn record_failure(&mut self, now: Instant) {
        self.consecutive_failures += 1;
        if self.consecutive_failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(1));
        for _ in 0..2 {
            b.record_failure(t0);
        }
        assert!(b.allows(t0));
        b.record_failure(t0);
        assert!(!b.allows(t0 + Duration::from_millis(500)));
        assert!(b.allows(t0 + Duration::from_secs(2)), "half-open probe");
        b.record_failure(t0 + Duration::from_secs(2));
        assert!(
            !b.allows(t0 + Duration::from_millis(2100)),
            "a failed probe reopens"
        );
        assert!(b.allows(t0 + Duration::from_secs(4)));
        b.record_success();
        assert!(b.allows(t0 + Duration::from_secs(4)));
    }
}
