//! [`Trending`]: this node's heavy-hitter summaries of the increments it
//! leads, per counter namespace, resolution and bucket, for the `Top`
//! query ("what is trending").
//!
//! Only the leader of a write sees its deltas (the other replicas merge
//! states), so each node summarises what it led, and a query merges every
//! node's summaries of the window's buckets to pick candidates whose exact
//! counts it then reads (`coordinator/top.rs`). Summaries rank by the
//! positive deltas a key received (a view counter's views).
//!
//! Memory is bounded: a summary holds at most `capacity` keys, and a
//! namespace keeps the summaries of its newest `minute_buckets`,
//! `hour_buckets` and `day_buckets` buckets and of its total; an older
//! bucket's summary is dropped (a `Top` over it finds no candidates from
//! this node). Summaries live in memory only: a restarted node has none
//! for the increments it led before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tally_client::Resolution;

use crate::counter::cell_key::{self, CellKind};
use crate::counter::heavy_hitters::{HeavyHitters, Merger};

/// How much the summaries keep (the `[trending]` section of the node's
/// config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendingConfig {
    /// Keys per summary (0: keep no summaries; `Top` then finds nothing
    /// this node led).
    pub capacity: usize,
    /// Minute buckets kept per namespace.
    pub minute_buckets: usize,
    /// Hour buckets kept per namespace.
    pub hour_buckets: usize,
    /// Day buckets kept per namespace.
    pub day_buckets: usize,
}

impl Default for TrendingConfig {
    fn default() -> Self {
        TrendingConfig {
            capacity: 2048,
            minute_buckets: 120,
            hour_buckets: 48,
            day_buckets: 14,
        }
    }
}

impl TrendingConfig {
    /// Buckets kept at `res`.
    fn keeps(&self, res: Resolution) -> usize {
        match res {
            Resolution::Minute => self.minute_buckets,
            Resolution::Hour => self.hour_buckets,
            Resolution::Day => self.day_buckets,
            Resolution::Total => 1,
        }
    }
}

/// One bucket's summary, locked on its own: a query merging a window's
/// buckets holds one at a time, so writes to the others go on.
type Summary = Arc<Mutex<HeavyHitters>>;

/// One namespace's summaries: per resolution (by code), by bucket start.
type Buckets = [BTreeMap<i64, Summary>; 4];

/// The summaries of the increments this node led.
#[derive(Debug, Default)]
pub struct Trending {
    config: TrendingConfig,
    by_namespace: Mutex<HashMap<String, Buckets>>,
}

fn slot(res: Resolution) -> usize {
    usize::from(res.code().saturating_sub(1)).min(3)
}

impl Trending {
    /// Summaries kept as `config` says.
    pub fn new(config: TrendingConfig) -> Trending {
        Trending {
            config,
            by_namespace: Mutex::new(HashMap::new()),
        }
    }

    /// How many buckets of `res` keep a summary: the longest window a
    /// `Top` at `res` may ask.
    pub fn keeps(&self, res: Resolution) -> usize {
        self.config.keeps(res)
    }

    /// Counts the positive `delta` of each counter cell a write raised.
    pub fn record<'a>(&self, cells: impl IntoIterator<Item = (&'a [u8], i128)>) {
        if self.config.capacity == 0 {
            return;
        }
        let mut by_namespace = self.by_namespace.lock();
        for (cell, delta) in cells {
            let Some(p) = cell_key::parts(cell) else {
                continue;
            };
            if p.kind != CellKind::Counter || delta <= 0 {
                continue;
            }
            let delta = u64::try_from(delta).unwrap_or(u64::MAX);
            let buckets = match by_namespace.get_mut(p.namespace) {
                Some(b) => b,
                None => by_namespace.entry(p.namespace.to_owned()).or_default(),
            };
            let keep = self.config.keeps(p.resolution);
            let by_start = &mut buckets[slot(p.resolution)];
            if !by_start.contains_key(&p.bucket_start_ms) {
                let oldest = by_start.first_key_value().map(|(s, _)| *s);
                if by_start.len() >= keep && oldest.is_some_and(|o| p.bucket_start_ms < o) {
                    // Older than every bucket kept: not worth a summary.
                    continue;
                }
                by_start.insert(
                    p.bucket_start_ms,
                    Arc::new(Mutex::new(HeavyHitters::new(self.config.capacity))),
                );
                while by_start.len() > keep {
                    by_start.pop_first();
                }
            }
            if let Some(summary) = by_start.get(&p.bucket_start_ms) {
                summary.lock().add(p.key, delta);
            }
        }
    }

    /// The merge of `namespace`'s summaries at `res` of the buckets
    /// starting in `[start_ms, end_ms)`.
    pub fn summary(
        &self,
        namespace: &str,
        res: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> HeavyHitters {
        let window: Vec<Summary> = {
            let by_namespace = self.by_namespace.lock();
            let from = res.bucket_start(start_ms);
            by_namespace.get(namespace).map_or(Vec::new(), |buckets| {
                buckets[slot(res)]
                    .range(from..end_ms.max(from))
                    .map(|(_, s)| s.clone())
                    .collect()
            })
        };
        let mut merger = Merger::default();
        for summary in &window {
            merger.add(&summary.lock());
        }
        merger.finish(self.config.capacity.max(1))
    }

    /// Summaries held and their bytes, about (for the metrics).
    pub fn footprint(&self) -> (usize, usize) {
        let by_namespace = self.by_namespace.lock();
        by_namespace
            .values()
            .flat_map(|b| b.iter().flat_map(|m| m.values()))
            .fold((0, 0), |(n, bytes), s| (n + 1, bytes + s.lock().bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(ns: &str, key: &str, res: Resolution, at: i64) -> Vec<u8> {
        cell_key::encode(
            CellKind::Counter,
            ns,
            key.as_bytes(),
            res,
            res.bucket_start(at),
        )
    }

    const MIN: i64 = 60_000;

    #[test]
    fn a_window_merges_its_buckets_and_old_buckets_go() {
        let t = Trending::new(TrendingConfig {
            capacity: 8,
            minute_buckets: 3,
            ..TrendingConfig::default()
        });
        for m in 0..5 {
            let a = cell("events", "a", Resolution::Minute, m * MIN);
            let b = cell("events", "b", Resolution::Minute, m * MIN);
            t.record([(a.as_slice(), 10), (b.as_slice(), m as i128)]);
        }
        // Minutes 2, 3, 4 are kept; 0 and 1 are gone.
        let s = t.summary("events", Resolution::Minute, 0, 5 * MIN);
        assert_eq!(s.get(b"a").map(|b| b.count), Some(30));
        assert_eq!(s.get(b"b").map(|b| b.count), Some(2 + 3 + 4));
        let s = t.summary("events", Resolution::Minute, 3 * MIN, 4 * MIN);
        assert_eq!(s.get(b"b").map(|b| b.count), Some(3));
        // A write to a bucket older than all kept is not summarised.
        let old = cell("events", "c", Resolution::Minute, 0);
        t.record([(old.as_slice(), 5)]);
        assert_eq!(t.summary("events", Resolution::Minute, 0, MIN).len(), 0);
        assert_eq!(t.footprint().0, 3);
    }

    #[test]
    fn only_positive_counter_deltas_count() {
        let t = Trending::new(TrendingConfig::default());
        let counter = cell("events", "a", Resolution::Hour, 0);
        let distinct = cell_key::encode(CellKind::Distinct, "viewers", b"a", Resolution::Hour, 0);
        t.record([
            (counter.as_slice(), -5),
            (counter.as_slice(), 0),
            (distinct.as_slice(), 5),
            (b"not a cell".as_slice(), 5),
        ]);
        assert!(t.summary("events", Resolution::Hour, 0, 1).is_empty());
        assert!(t.summary("viewers", Resolution::Hour, 0, 1).is_empty());
    }
}
