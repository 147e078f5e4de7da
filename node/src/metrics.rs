//! [`RequestMetrics`]: what the fronts count as requests pass, for
//! `/metrics`: requests and their latency by kind, refusals by code, and
//! the outcome of every increment item. Everything else a scrape shows
//! (storage, hints, gossip, Raft, the op-id window) is read from its
//! owner when the scrape comes, so the hot path pays for these three
//! families only: a few atomic adds per request.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tally_client::{ErrorCode, ItemResult};

/// A request kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `increment`, `total`, `replica_write`, ...
    pub kind: &'static str,
}

/// A request kind and a wire error code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The request kind.
    pub kind: &'static str,
    /// The error code (`Unavailable`, `Overloaded`, ...).
    pub code: String,
}

/// An increment item's outcome and, unless `ok`, its code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `ok`, `failed` or `indeterminate`.
    pub result: &'static str,
    /// The code of a failed or indeterminate item (empty for `ok`).
    pub code: String,
}

fn histogram() -> Histogram {
    // 50 us to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The families the fronts record into.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<KindLabel, Counter>,
    latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    items: Family<ItemLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(histogram),
            errors: Family::default(),
            items: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// One request of `kind` answered in `took`; `error` if it was refused
    /// as a whole.
    pub fn request(&self, kind: &'static str, took: Duration, error: Option<ErrorCode>) {
        let label = KindLabel { kind };
        self.requests.get_or_create(&label).inc();
        self.latency
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind,
                    code: format!("{code:?}"),
                })
                .inc();
        }
    }

    /// The items of an answered increment batch (the `ok` ones, nearly
    /// all of them, with one add).
    pub fn items(&self, results: &[ItemResult]) {
        let ok = results
            .iter()
            .filter(|r| matches!(r, ItemResult::Ok))
            .count();
        if ok > 0 {
            self.items
                .get_or_create(&ItemLabels {
                    result: "ok",
                    code: String::new(),
                })
                .inc_by(ok as u64);
        }
        for r in results {
            let labels = match r {
                ItemResult::Ok => continue,
                ItemResult::Failed(code) => ItemLabels {
                    result: "failed",
                    code: format!("{code:?}"),
                },
                ItemResult::Indeterminate(code) => ItemLabels {
                    result: "indeterminate",
                    code: format!("{code:?}"),
                },
            };
            self.items.get_or_create(&labels).inc();
        }
    }

    /// Adds the families to `registry` (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Requests answered, by kind (client and internal)",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's decoding to its answer, by kind",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "request_errors",
            "Requests refused as a whole, by kind and error code",
            self.errors.clone(),
        );
        registry.register(
            "increment_items",
            "Increment items by outcome (ok, failed: not applied, indeterminate: maybe applied) and code",
            self.items.clone(),
        );
    }
}
