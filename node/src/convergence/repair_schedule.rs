//! Scheduled anti-entropy: every range is repaired within
//! [`RepairConfig::interval`](crate::convergence::repair_config::RepairConfig::interval) without an operator asking, so replicas that
//! lost unsynced writes or missed a hint window do not stay different
//! until someone remembers `tally repair`.
//!
//! Who repairs what: a range is scheduled by its first live replica in
//! placement order (its primary, while the primary is up), so each range
//! has one scheduler and a dead primary's ranges are taken over by the
//! next replica. Views of liveness can differ for a moment; the range's
//! lease (`repair_ledger`) keeps two repairs of it from running at once,
//! and the history every replica keeps lets the second one see the range
//! was just repaired and skip it.
//!
//! When: a range is due `interval` after its last repair (a range never
//! repaired is due now). This node starts at most one range every
//! `interval / ranges it schedules`, the most overdue first, so a full
//! pass is spread over the interval instead of arriving at once, and a
//! range whose repair failed (a replica down) waits a while before it is
//! tried again instead of blocking the others. Each repair is throttled
//! to [`RepairConfig::bytes_per_s`](crate::convergence::repair_config::RepairConfig::bytes_per_s). The history is on disk, so a restart
//! resumes the schedule: ranges repaired just before it are not repeated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tally_client::admin::{RangeRepairView, RepairScheduleView};
use tally_consensus::{ClusterMap, HostId, TokenRange};

use crate::clock::Clock;
use crate::convergence::anti_entropy::{RangeOutcome, Repairer};
use crate::convergence::repair_ledger::RangeKey;

/// Longest sleep between looks at the map (ranges and liveness change).
const RECHECK: Duration = Duration::from_secs(5);

/// The replica that schedules `range`: its first live one.
pub fn scheduler_of(range: &TokenRange, is_up: impl Fn(HostId) -> bool) -> Option<HostId> {
    range.replicas.iter().copied().find(|&h| is_up(h))
}

/// When `range` is due, given its last repair.
pub fn due_ms(last: Option<i64>, interval: Duration) -> i64 {
    last.map_or(i64::MIN, |at| {
        at.saturating_add(interval.as_millis() as i64)
    })
}

/// The most overdue of `ranges` (by `last`), skipping those waiting out a
/// failure until `retry_at`.
pub fn most_overdue<'a>(
    ranges: &'a [TokenRange],
    last: impl Fn(RangeKey) -> Option<i64>,
    interval: Duration,
    retry_at: &HashMap<RangeKey, Instant>,
    now: Instant,
) -> Option<(&'a TokenRange, i64)> {
    ranges
        .iter()
        .filter(|r| retry_at.get(&(r.start, r.end)).is_none_or(|t| *t <= now))
        .map(|r| (r, due_ms(last((r.start, r.end)), interval)))
        .min_by_key(|(_, due)| *due)
}

fn mine(map: &ClusterMap, repairer: &Repairer) -> Vec<TokenRange> {
    let ctx = repairer.ctx();
    let me = ctx.self_id;
    map.ranges()
        .into_iter()
        .filter(|r| scheduler_of(r, |h| h == me || ctx.peers.is_up(h)) == Some(me))
        .collect()
}

/// Runs the schedule until the process ends (returns at once when the
/// interval is 0).
pub async fn schedule_forever(repairer: Arc<Repairer>) {
    let config = repairer.config().clone();
    if config.interval.is_zero() {
        tracing::info!("scheduled repair is off (repair.interval_s = 0)");
        return;
    }
    let ctx = repairer.ctx().clone();
    let mut retry_at: HashMap<RangeKey, Instant> = HashMap::new();
    // The first start waits a random part of one gap, so that nodes
    // started together do not start together.
    let mut next_start: Option<Instant> = None;
    loop {
        let map = ctx.map();
        let ranges = mine(&map, &repairer);
        if ranges.is_empty() {
            tokio::time::sleep(RECHECK.min(config.interval)).await;
            continue;
        }
        let gap = config.interval / ranges.len() as u32;
        let now = Instant::now();
        let next = *next_start
            .get_or_insert_with(|| now + gap.mul_f64(rand::rng().random_range(0.0..1.0)));
        if next > now {
            tokio::time::sleep((next - now).min(RECHECK)).await;
            continue;
        }
        let ledger = repairer.ledger();
        let Some((range, due)) =
            most_overdue(&ranges, |k| ledger.last(k), config.interval, &retry_at, now)
        else {
            tokio::time::sleep(RECHECK.min(gap)).await;
            continue;
        };
        let now_ms = ctx.clock.now_ms();
        if due > now_ms {
            let wait = Duration::from_millis((due - now_ms) as u64);
            tokio::time::sleep(wait.min(RECHECK)).await;
            continue;
        }
        next_start = Some(now + gap);
        let key = (range.start, range.end);
        let since = now_ms.saturating_sub(config.interval.as_millis() as i64);
        let started = Instant::now();
        match repairer
            .repair_leased(&map, range, Some(since), Some(config.bytes_per_s), false)
            .await
        {
            Ok(RangeOutcome::Repaired {
                differing, cells, ..
            }) => {
                retry_at.remove(&key);
                tracing::debug!(
                    start = range.start,
                    end = range.end,
                    differing,
                    cells,
                    ms = started.elapsed().as_millis() as u64,
                    "scheduled repair of a range done"
                );
                if cells > 0 {
                    tracing::info!(
                        start = range.start,
                        end = range.end,
                        cells,
                        "scheduled repair converged replicas that differed"
                    );
                }
            }
            Ok(RangeOutcome::RecentlyRepaired { .. }) => {
                retry_at.remove(&key);
            }
            Ok(RangeOutcome::Busy { holder }) => {
                tracing::debug!(start = range.start, end = range.end, holder, "range busy");
                retry_at.insert(key, Instant::now() + backoff(gap));
            }
            Err(e) => {
                tracing::warn!(start = range.start, end = range.end, error = %e, "scheduled repair of a range failed; retried later");
                retry_at.insert(key, Instant::now() + backoff(gap));
            }
        }
        retry_at.retain(|_, t| *t > Instant::now());
    }
}

/// How long a range that could not be repaired waits: a few gaps, at
/// least a few seconds, at most ten minutes.
fn backoff(gap: Duration) -> Duration {
    (gap * 4).clamp(Duration::from_secs(5), Duration::from_secs(600))
}

/// This node's schedule, for `tally status --repairs`.
pub fn schedule_view(repairer: &Repairer) -> RepairScheduleView {
    let ctx = repairer.ctx();
    let config = repairer.config();
    let map = ctx.map();
    let me = ctx.self_id;
    let ledger = repairer.ledger();
    let ranges = map
        .ranges()
        .into_iter()
        .filter(|r| r.replicas.contains(&me))
        .map(|r| {
            let key = (r.start, r.end);
            let last = ledger.last(key);
            let scheduler = scheduler_of(&r, |h| h == me || ctx.peers.is_up(h));
            let next_due_ms = (scheduler == Some(me) && !config.interval.is_zero())
                .then(|| due_ms(last, config.interval).max(0));
            RangeRepairView {
                start_token: r.start,
                end_token: r.end,
                replicas: r.replicas.iter().map(|h| h.0).collect(),
                scheduled_by: scheduler.map(|h| h.0),
                last_repaired_ms: last,
                next_due_ms,
                repairing: ledger.holder(key),
            }
        })
        .collect();
    RepairScheduleView {
        host_id: me.0,
        interval_ms: config.interval.as_millis() as u64,
        bytes_per_s: config.bytes_per_s,
        now_ms: ctx.clock.now_ms(),
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64, replicas: &[u64]) -> TokenRange {
        TokenRange {
            start,
            end,
            replicas: replicas.iter().map(|&h| HostId(h)).collect(),
        }
    }

    #[test]
    fn the_first_live_replica_schedules_a_range() {
        let r = range(0, 10, &[2, 3, 1]);
        assert_eq!(scheduler_of(&r, |_| true), Some(HostId(2)));
        assert_eq!(scheduler_of(&r, |h| h != HostId(2)), Some(HostId(3)));
        assert_eq!(scheduler_of(&r, |_| false), None);
    }

    #[test]
    fn the_most_overdue_range_goes_first_and_failures_wait() {
        let ranges = vec![range(0, 10, &[1]), range(10, 20, &[1]), range(20, 30, &[1])];
        let interval = Duration::from_secs(100);
        let history: HashMap<RangeKey, i64> = [((0, 10), 5_000), ((10, 20), 1_000)].into();
        let last = |k: RangeKey| history.get(&k).copied();
        let now = Instant::now();
        let mut retry = HashMap::new();
        let (first, due) = most_overdue(&ranges, last, interval, &retry, now).unwrap();
        assert_eq!((first.start, due), (20, i64::MIN), "never repaired first");
        retry.insert((20, 30), now + Duration::from_secs(5));
        let (second, due) = most_overdue(&ranges, last, interval, &retry, now).unwrap();
        assert_eq!((second.start, due), (10, 101_000));
        let later = now + Duration::from_secs(6);
        assert_eq!(
            most_overdue(&ranges, last, interval, &retry, later)
                .unwrap()
                .0
                .start,
            20,
            "its wait is over"
        );
        assert!(most_overdue(&[], last, interval, &retry, now).is_none());
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(Duration::from_millis(10)), Duration::from_secs(5));
        assert_eq!(backoff(Duration::from_secs(60)), Duration::from_secs(240));
        assert_eq!(backoff(Duration::from_secs(3600)), Duration::from_secs(600));
    }
}
