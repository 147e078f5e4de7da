//! [`PhiAccrual`]: the phi-accrual failure detector (Hayashibara et al.,
//! 2004), as Cassandra and Akka use it.
//!
//! Instead of a yes/no timeout it outputs a suspicion level
//! `phi = -log10(P(a heartbeat arrives later than now))`, from the mean and
//! spread of recent inter-arrival times. `phi = 8` means the chance that the
//! peer is alive and merely late is 1e-8. The distribution is normal (Akka),
//! with a floor on the standard deviation so that a perfectly regular
//! history does not make a few milliseconds of jitter look fatal, and an
//! acceptable pause added to the mean, so GC-like stalls are tolerated.

use std::collections::VecDeque;
use std::time::Duration;

/// Failure detector state for one peer.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    intervals_ms: VecDeque<f64>,
    max_samples: usize,
    min_std_dev_ms: f64,
    acceptable_pause_ms: f64,
    last_arrival: Option<Duration>,
    /// Intervals observed (not counting the two seeded ones).
    observed: usize,
}

impl PhiAccrual {
    /// A detector expecting heartbeats about every `expected_interval`.
    pub fn new(
        expected_interval: Duration,
        min_std_dev: Duration,
        acceptable_pause: Duration,
    ) -> PhiAccrual {
        let mut intervals_ms = VecDeque::with_capacity(64);
        // Seed the history so that the first real intervals are judged
        // against the configured rhythm, not against nothing.
        let expected = expected_interval.as_secs_f64() * 1000.0;
        intervals_ms.push_back(expected);
        intervals_ms.push_back(expected);
        PhiAccrual {
            intervals_ms,
            max_samples: 200,
            min_std_dev_ms: min_std_dev.as_secs_f64() * 1000.0,
            acceptable_pause_ms: acceptable_pause.as_secs_f64() * 1000.0,
            last_arrival: None,
            observed: 0,
        }
    }

    /// Records a heartbeat arrival at `now` (a monotonic time).
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last_arrival {
            let interval = now.saturating_sub(last).as_secs_f64() * 1000.0;
            if self.intervals_ms.len() >= self.max_samples {
                self.intervals_ms.pop_front();
            }
            self.intervals_ms.push_back(interval);
            self.observed += 1;
        }
        self.last_arrival = Some(now);
    }

    /// Inter-arrival intervals observed so far.
    pub fn observed(&self) -> usize {
        self.observed
    }

    /// Forgets the time of the last arrival (after a restart of the peer),
    /// keeping the learned rhythm.
    pub fn reset_arrival(&mut self, now: Duration) {
        self.last_arrival = Some(now);
    }

    /// When the last heartbeat arrived (`None`: never).
    pub fn last_arrival(&self) -> Option<Duration> {
        self.last_arrival
    }

    /// The suspicion level at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last_arrival else {
            return 0.0;
        };
        let elapsed = now.saturating_sub(last).as_secs_f64() * 1000.0;
        let n = self.intervals_ms.len() as f64;
        let mean = self.intervals_ms.iter().sum::<f64>() / n;
        let variance = self
            .intervals_ms
            .iter()
            .map(|x| (x - mean).powi(2))
            .sum::<f64>()
            / n;
        let std_dev = variance.sqrt().max(self.min_std_dev_ms);
        let y = (elapsed - (mean + self.acceptable_pause_ms)) / std_dev;
        // Logistic approximation of the normal tail (Bowling et al. 2009),
        // as in Akka: P(X > elapsed) ~ e / (1 + e), e = exp(-y(1.5976 + 0.070566 y^2)).
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if elapsed > mean + self.acceptable_pause_ms {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        -(p_later.max(1e-300)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn phi_grows_with_silence_and_falls_with_heartbeats() {
        let mut d = PhiAccrual::new(ms(1000), ms(200), ms(0));
        for i in 0..20 {
            d.heartbeat(ms(i * 1000));
        }
        let last = ms(19_000);
        assert!(
            d.phi(last + ms(500)) < 1.0,
            "on time: {}",
            d.phi(last + ms(500))
        );
        assert!(d.phi(last + ms(1500)) < d.phi(last + ms(2500)));
        assert!(
            d.phi(last + ms(3000)) > 8.0,
            "two missed beats: {}",
            d.phi(last + ms(3000))
        );
        d.heartbeat(last + ms(3100));
        assert!(d.phi(last + ms(3200)) < 1.0);
    }

    #[test]
    fn an_acceptable_pause_delays_conviction() {
        let mut strict = PhiAccrual::new(ms(1000), ms(100), ms(0));
        let mut lenient = PhiAccrual::new(ms(1000), ms(100), ms(2000));
        for i in 0..10 {
            strict.heartbeat(ms(i * 1000));
            lenient.heartbeat(ms(i * 1000));
        }
        let t = ms(9000 + 3000);
        assert!(strict.phi(t) > 8.0);
        assert!(lenient.phi(t) < 8.0);
    }
}
