//! The `Top` query: the keys of a counter namespace with the largest sums
//! over a window, with exact counts.
//!
//! 1. Every node that is up sends its heavy-hitter summary of the window
//!    (`replica/trending.rs`: the increments it led, per bucket, merged).
//! 2. The summaries are merged; a key's bounds add up across nodes, and
//!    the merged floor (the sum of the nodes' floors) bounds every key
//!    held nowhere.
//! 3. Candidates: every held key whose upper bound reaches the `k`-th
//!    largest lower bound (at most [`MAX_CANDIDATES_PER_K`] per key asked).
//! 4. Each candidate's sum over the window is read like a range read, at
//!    the requested consistency, and the `k` largest are answered.
//!
//! The guarantee: a key whose positive deltas in the window sum above the
//! merged floor (`certain_above` in the answer) is held by the merged
//! summary, and so is a candidate unless the cap cut it; the counts
//! answered are exact reads, whatever the summaries said. A node that
//! does not answer, or restarted within the window, may leave out keys it
//! led (`nodes_missing` counts the first).

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tally_client::{Consistency, ErrorCode, Request, Resolution, Response, SummaryEntry, TopKey};

use super::Coordinator;
use crate::counter::heavy_hitters::{Bounds, HeavyHitters, Merger};
use crate::counter::limits::{refuse, RequestError};
use crate::counter::read_plan::{Read, ReadAnswer, ReadKind, ReadPlan};

/// Most keys one `Top` may ask.
pub const MAX_TOP_K: u32 = 1_000;
/// Candidates read exactly, at most, per key asked.
pub const MAX_CANDIDATES_PER_K: usize = 8;
/// Exact reads in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// A `Top` query's window.
#[derive(Debug, Clone)]
pub struct TopQuery {
    /// A counter namespace.
    pub namespace: String,
    /// Bucket width.
    pub resolution: Resolution,
    /// Buckets starting at or after this (ms).
    pub start_ms: i64,
    /// Buckets starting before this (ms).
    pub end_ms: i64,
    /// Keys asked.
    pub k: u32,
}

/// A `Top` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopAnswer {
    /// Largest sum first.
    pub keys: Vec<TopKey>,
    /// Every key whose positive deltas sum above this was a candidate.
    pub certain_above: u64,
    /// Nodes whose summaries were not read.
    pub nodes_missing: u32,
}

/// A summary as a node sends it.
pub fn summary_response(summary: &HeavyHitters) -> Response {
    Response::Summary {
        floor: summary.floor(),
        entries: summary
            .top(usize::MAX)
            .into_iter()
            .map(|(key, b)| SummaryEntry {
                key,
                count: b.count,
                error: b.error,
            })
            .collect(),
    }
}

/// A summary a node sent; `None` if its bounds are inconsistent.
fn summary_of(floor: u64, entries: Vec<SummaryEntry>) -> Option<HeavyHitters> {
    HeavyHitters::from_parts(
        entries
            .into_iter()
            .map(|e| {
                (
                    e.key,
                    Bounds {
                        count: e.count,
                        error: e.error,
                    },
                )
            })
            .collect(),
        floor,
    )
}

/// The keys worth an exact read: every key whose upper bound reaches the
/// `k`-th largest lower bound, largest upper bound first, at most `cap`.
fn candidates(merged: &HeavyHitters, k: usize, cap: usize) -> Vec<Vec<u8>> {
    let held = merged.top(usize::MAX);
    let mut lowers: Vec<u64> = held.iter().map(|(_, b)| b.lower()).collect();
    lowers.sort_unstable_by(|a, b| b.cmp(a));
    let bar = lowers.get(k.saturating_sub(1)).copied().unwrap_or(0);
    held.into_iter()
        .filter(|(_, b)| b.count >= bar)
        .take(cap.max(k))
        .map(|(key, _)| key)
        .collect()
}

impl Coordinator {
    /// Answers a `Top` query at `consistency`.
    pub async fn top(
        self: &Arc<Self>,
        consistency: Consistency,
        query: TopQuery,
    ) -> Result<TopAnswer, RequestError> {
        if !(1..=MAX_TOP_K).contains(&query.k) {
            return Err(refuse(
                ErrorCode::InvalidRange,
                format!("k = {}; a top asks 1..={MAX_TOP_K} keys", query.k),
            ));
        }
        // The window's checks are a range read's (a counter namespace,
        // a kept resolution, a bounded range), for any key.
        let store = &self.ctx.store;
        ReadPlan::range(
            &store.namespaces_read(),
            store.limits(),
            &query.namespace,
            b"k",
            query.resolution,
            query.start_ms,
            query.end_ms,
        )?;
        // Only the buckets that keep summaries can name candidates; a
        // longer window would read every candidate's older cells for
        // nothing, and cost a reader more than it should.
        if let Some(width) = query.resolution.width_ms() {
            let keeps = store.trending().keeps(query.resolution) as i64;
            let from = query.resolution.bucket_start(query.start_ms);
            let buckets = (query.end_ms.saturating_sub(from) + width - 1) / width;
            if buckets > keeps {
                return Err(refuse(
                    ErrorCode::InvalidRange,
                    format!(
                        "a top at {} spans at most {keeps} buckets, those that keep summaries \
                         ([trending] {}_buckets); this one spans {buckets}",
                        query.resolution, query.resolution
                    ),
                ));
            }
        }
        let (merged, nodes_missing) = self.gather_summaries(&query).await;
        let certain_above = merged.floor();
        let cap = query.k as usize * MAX_CANDIDATES_PER_K;
        let reads = candidates(&merged, query.k as usize, cap)
            .into_iter()
            .map(|key| {
                let read = Read {
                    namespace: query.namespace.clone(),
                    key,
                    kind: ReadKind::Range {
                        resolution: query.resolution,
                        start_ms: query.start_ms,
                        end_ms: query.end_ms,
                    },
                };
                async move {
                    let key = read.key.clone();
                    (key, self.read(consistency, read).await)
                }
            });
        let mut exact: Vec<TopKey> = Vec::new();
        let mut answers = stream::iter(reads).buffer_unordered(READS_IN_FLIGHT);
        while let Some((key, answer)) = answers.next().await {
            let points = match answer? {
                ReadAnswer::Range(points) => points,
                _ => {
                    return Err(refuse(
                        ErrorCode::Internal,
                        "a range read answered otherwise",
                    ))
                }
            };
            let (sum, count) = points.iter().fold((0i128, 0u128), |(s, c), p| {
                (s + i128::from(p.sum), c + u128::from(p.count))
            });
            let (Ok(sum), Ok(count)) = (i64::try_from(sum), u64::try_from(count)) else {
                return Err(refuse(
                    ErrorCode::Overflow,
                    "a key's sum over the window is outside the i64 range",
                ));
            };
            if count > 0 {
                exact.push(TopKey { key, sum, count });
            }
        }
        exact.sort_by(|a, b| b.sum.cmp(&a.sum).then_with(|| a.key.cmp(&b.key)));
        exact.truncate(query.k as usize);
        Ok(TopAnswer {
            keys: exact,
            certain_above,
            nodes_missing,
        })
    }

    /// The merge of every live node's summary of the window, and how many
    /// nodes' summaries are missing.
    async fn gather_summaries(&self, query: &TopQuery) -> (HeavyHitters, u32) {
        let local = self.ctx.store.trending().summary(
            &query.namespace,
            query.resolution,
            query.start_ms,
            query.end_ms,
        );
        let map = self.ctx.metadata.map();
        let request = Request::TopSummary {
            namespace: query.namespace.clone(),
            resolution: query.resolution,
            start_ms: query.start_ms,
            end_ms: query.end_ms,
        };
        let others: Vec<_> = map
            .members()
            .map(|m| m.host_id)
            .filter(|&h| h != self.ctx.self_id)
            .collect();
        let timeout = self.config.read_timeout;
        let calls = others.iter().map(|&host| {
            let request = &request;
            async move {
                if !self.ctx.peers.is_up(host) {
                    return None;
                }
                match self.ctx.peers.call(host, request, timeout).await {
                    Ok(Response::Summary { floor, entries }) => summary_of(floor, entries),
                    _ => None,
                }
            }
        });
        let summaries = futures_util::future::join_all(calls).await;
        let capacity = local.capacity().saturating_mul(summaries.len() + 1);
        let mut merger = Merger::default();
        merger.add(&local);
        let mut missing = 0;
        for s in summaries {
            match s {
                Some(s) => merger.add(&s),
                None => missing += 1,
            }
        }
        (merger.finish(capacity), missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_keys_that_can_reach_the_kth() {
        let mut s = HeavyHitters::new(10);
        for (key, n) in [("a", 100), ("b", 90), ("c", 50), ("d", 49), ("e", 5)] {
            s.add(key.as_bytes(), n);
        }
        let mut other = HeavyHitters::new(2);
        // Evictions give "x" and "y" errors: their bounds overlap "c".
        for (key, n) in [("x", 10), ("y", 10), ("z", 45)] {
            other.add(key.as_bytes(), n);
        }
        s.merge(&other);
        let picked = candidates(&s, 3, 100);
        let names: Vec<&str> = picked
            .iter()
            .map(|k| std::str::from_utf8(k).unwrap_or("?"))
            .collect();
        assert_eq!(&names[..3], ["a", "b", "c"]);
        assert!(!names.contains(&"e"), "{names:?}: e cannot reach the third");
        assert!(names.contains(&"d") && names.contains(&"z"), "{names:?}");
        assert_eq!(candidates(&s, 3, 3).len(), 3, "the cap holds");
    }

    #[test]
    fn summaries_round_trip_and_bad_bounds_are_refused() {
        let mut s = HeavyHitters::new(3);
        for (key, n) in [("a", 5), ("b", 3), ("c", 2), ("d", 1)] {
            s.add(key.as_bytes(), n);
        }
        let Response::Summary { floor, entries } = summary_response(&s) else {
            panic!("not a summary");
        };
        let back = summary_of(floor, entries.clone()).unwrap();
        assert_eq!(back.top(10), s.top(10));
        let mut bad = entries;
        bad[0].error = bad[0].count + 1;
        assert!(summary_of(floor, bad).is_none());
    }
}
