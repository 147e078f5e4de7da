//! [`ReadPlan`]: a validated read (total, range or stats) as the cell key
//! ranges that answer it, and the answer computed from the cells.
//!
//! Every read is answered the same way wherever its cells come from: the
//! coordinator validates the request once, turns it into key ranges
//! (one point for a total, one scan for a range, the few segments of
//! [`cover`] for stats), asks replicas for their cells in those ranges,
//! merges them by the CRDT rule and calls [`ReadPlan::answer`]. Retention is
//! applied here too, so an expired bucket that compaction has not dropped
//! yet is never shown.

use tally_client::{
    token, Count, DistinctPoint, ErrorCode, KeyRange, NamespaceKind, Point, Resolution, Token,
};

use crate::counter::cell_key::{self, CellKind};
use crate::counter::cell_merge::CellValue;
use crate::counter::hll::Sketch;
use crate::counter::limits::{lookup, refuse, RequestError, StoreLimits};
use crate::counter::namespace::{Namespace, Namespaces};
use crate::counter::shard_set::ShardSet;

/// A client's read of one key, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The key's namespace.
    pub namespace: String,
    /// The key.
    pub key: Vec<u8>,
    /// What is asked of it.
    pub kind: ReadKind,
}

/// What a [`Read`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// The all-time total.
    Total,
    /// The non-empty buckets in `[start_ms, end_ms)` at `resolution`.
    Range {
        /// The buckets' width.
        resolution: Resolution,
        /// Start, inclusive.
        start_ms: i64,
        /// End, exclusive.
        end_ms: i64,
    },
    /// Sum and count over `[start_ms, end_ms)`.
    Stats {
        /// Start, inclusive.
        start_ms: i64,
        /// End, exclusive.
        end_ms: i64,
    },
    /// Distinct members of the non-empty buckets in `[start_ms, end_ms)`
    /// at `resolution`, and of their union (a distinct namespace).
    Distinct {
        /// The buckets' width.
        resolution: Resolution,
        /// Start, inclusive.
        start_ms: i64,
        /// End, exclusive.
        end_ms: i64,
    },
}

/// The answer to a [`Read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// The all-time total.
    Total(Count),
    /// One point per non-empty bucket, in time order.
    Range(Vec<Point>),
    /// Sum and count over the range, and how many cells were read.
    Stats {
        /// Sum and count.
        total: Count,
        /// Cells read to answer.
        cells_read: u32,
    },
    /// One estimate per non-empty bucket, in time order, and the estimate
    /// of their union.
    Distinct {
        /// Per bucket.
        points: Vec<DistinctPoint>,
        /// Over the whole range.
        union: u64,
    },
}

/// What a plan answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The sum of every cell read, as a `Total`.
    Total,
    /// One point per cell, as a `Range`.
    Points,
    /// The sum of every cell read, as `Stats` with the cell count.
    Stats,
    /// One estimate per sketch, and the estimate of their merge.
    Distinct,
}

/// A validated read.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// The key's token: its replicas answer.
    pub token: Token,
    /// The cell key ranges to read.
    pub ranges: Vec<KeyRange>,
    namespace: Namespace,
    resolution: Resolution,
    answer: Answer,
}

const DAY_MS: i64 = 86_400_000;

/// The key range holding exactly one cell key.
pub fn point(cell: Vec<u8>) -> KeyRange {
    let mut end = cell.clone();
    end.push(0);
    KeyRange { start: cell, end }
}

/// Whether `range` holds exactly one key (built by [`point`]).
pub fn is_point(range: &KeyRange) -> bool {
    range.end.len() == range.start.len() + 1
        && range.end.last() == Some(&0)
        && range.end.starts_with(&range.start)
}

fn check_range(start_ms: i64, end_ms: i64) -> Result<(), RequestError> {
    if start_ms >= end_ms {
        return Err(refuse(
            ErrorCode::InvalidRange,
            format!("empty range [{start_ms}, {end_ms})"),
        ));
    }
    Ok(())
}

impl ReadPlan {
    /// The plan of `read`, checked against the namespaces and limits.
    pub fn of(
        namespaces: &Namespaces,
        limits: &StoreLimits,
        read: &Read,
        now_ms: i64,
    ) -> Result<ReadPlan, RequestError> {
        let (ns, key) = (read.namespace.as_str(), read.key.as_slice());
        match read.kind {
            ReadKind::Total => ReadPlan::total(namespaces, limits, ns, key, now_ms),
            ReadKind::Range {
                resolution,
                start_ms,
                end_ms,
            } => ReadPlan::range(namespaces, limits, ns, key, resolution, start_ms, end_ms),
            ReadKind::Stats { start_ms, end_ms } => {
                ReadPlan::stats(namespaces, limits, ns, key, start_ms, end_ms)
            }
            ReadKind::Distinct {
                resolution,
                start_ms,
                end_ms,
            } => {
                let mut plan = ReadPlan::buckets(
                    namespaces,
                    limits,
                    (ns, key),
                    CellKind::Distinct,
                    resolution,
                    (start_ms, end_ms),
                )?;
                plan.answer = Answer::Distinct;
                Ok(plan)
            }
        }
    }

    /// The all-time total of a key: its `total` cell, or the sum of its
    /// buckets if the namespace keeps no total.
    pub fn total(
        namespaces: &Namespaces,
        limits: &StoreLimits,
        namespace: &str,
        key: &[u8],
        now_ms: i64,
    ) -> Result<ReadPlan, RequestError> {
        let ns = lookup_kind(namespaces, namespace, CellKind::Counter)?.clone();
        limits.check_key(key)?;
        if !ns.keeps(Resolution::Total) {
            let mut plan = ReadPlan::stats(
                namespaces,
                limits,
                namespace,
                key,
                0,
                now_ms.saturating_add(DAY_MS),
            )?;
            plan.answer = Answer::Total;
            return Ok(plan);
        }
        Ok(ReadPlan {
            token: token(namespace, key),
            ranges: vec![point(cell_key::encode(
                CellKind::Counter,
                namespace,
                key,
                Resolution::Total,
                0,
            ))],
            namespace: ns,
            resolution: Resolution::Total,
            answer: Answer::Total,
        })
    }

    /// The non-empty buckets of a key in `[start_ms, end_ms)` at `resolution`.
    pub fn range(
        namespaces: &Namespaces,
        limits: &StoreLimits,
        namespace: &str,
        key: &[u8],
        resolution: Resolution,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<ReadPlan, RequestError> {
        ReadPlan::buckets(
            namespaces,
            limits,
            (namespace, key),
            CellKind::Counter,
            resolution,
            (start_ms, end_ms),
        )
    }

    /// The cells of a key's buckets in `[start_ms, end_ms)` at
    /// `resolution`, in a namespace of cells of `kind`, as points.
    fn buckets(
        namespaces: &Namespaces,
        limits: &StoreLimits,
        (namespace, key): (&str, &[u8]),
        kind: CellKind,
        resolution: Resolution,
        (start_ms, end_ms): (i64, i64),
    ) -> Result<ReadPlan, RequestError> {
        let ns = lookup_kind(namespaces, namespace, kind)?.clone();
        limits.check_key(key)?;
        if !ns.keeps(resolution) {
            return Err(refuse(
                ErrorCode::ResolutionNotKept,
                format!("namespace {namespace} does not keep {resolution}"),
            ));
        }
        check_range(start_ms, end_ms)?;
        // A bucket of a distinct namespace may hold a dense sketch: the
        // read's replies must fit a frame.
        let max_buckets = match ns.kind {
            NamespaceKind::Counter => limits.max_range_buckets,
            NamespaceKind::Distinct { precision } => limits
                .max_range_buckets
                .min(max_distinct_buckets(precision)),
        };
        let range = match resolution.width_ms() {
            None => point(cell_key::encode(kind, namespace, key, Resolution::Total, 0)),
            Some(width) => {
                let from = resolution.bucket_start(start_ms);
                if (end_ms - from) / width > max_buckets {
                    return Err(refuse(
                        ErrorCode::InvalidRange,
                        format!(
                            "range spans more than {max_buckets} {resolution} buckets{}",
                            if max_buckets < limits.max_range_buckets {
                                " (a distinct read's buckets may each hold a dense sketch; \
                                 read a coarser resolution)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                let (start, end) =
                    cell_key::bucket_range(kind, namespace, key, resolution, from, end_ms);
                KeyRange { start, end }
            }
        };
        Ok(ReadPlan {
            token: token(namespace, key),
            ranges: vec![range],
            namespace: ns,
            resolution,
            answer: Answer::Points,
        })
    }

    /// Sum and count over `[start_ms, end_ms)` (widened to whole buckets of
    /// the finest kept resolution), from the fewest cells: whole days
    /// inside, hours at the edges, minutes at the very edges.
    pub fn stats(
        namespaces: &Namespaces,
        limits: &StoreLimits,
        namespace: &str,
        key: &[u8],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<ReadPlan, RequestError> {
        let ns = lookup_kind(namespaces, namespace, CellKind::Counter)?.clone();
        limits.check_key(key)?;
        check_range(start_ms, end_ms)?;
        let kept: Vec<Resolution> = ns
            .resolutions
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| r.width_ms().is_some())
            .collect();
        if kept.is_empty() {
            return Err(refuse(
                ErrorCode::ResolutionNotKept,
                format!("namespace {namespace} keeps no time buckets"),
            ));
        }
        let ranges = cover(&kept, start_ms, end_ms)
            .into_iter()
            .map(|(res, from, to)| {
                let (start, end) =
                    cell_key::bucket_range(CellKind::Counter, namespace, key, res, from, to);
                KeyRange { start, end }
            })
            .collect();
        Ok(ReadPlan {
            token: token(namespace, key),
            ranges,
            namespace: ns,
            resolution: kept[0],
            answer: Answer::Stats,
        })
    }

    /// The answer from the (merged) cells of the plan's ranges, given in
    /// key order.
    pub fn answer<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a [u8], &'a CellValue)>,
        now_ms: i64,
    ) -> Result<ReadAnswer, RequestError> {
        match self.answer {
            Answer::Distinct => Ok(self.distinct(cells, now_ms)),
            Answer::Points => self.points(cells, now_ms),
            Answer::Total | Answer::Stats => self.sums(cells),
        }
    }

    /// The counter cells of the plan's ranges: shard sets (its ranges
    /// hold no other kind).
    fn counters<'a>(
        cells: impl IntoIterator<Item = (&'a [u8], &'a CellValue)>,
    ) -> impl Iterator<Item = (&'a [u8], &'a ShardSet)> {
        cells.into_iter().filter_map(|(key, value)| match value {
            CellValue::Counter(set) => Some((key, set)),
            CellValue::Distinct(_) => None,
        })
    }

    /// One point per unexpired bucket.
    fn points<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a [u8], &'a CellValue)>,
        now_ms: i64,
    ) -> Result<ReadAnswer, RequestError> {
        let mut points = Vec::new();
        for (key, set) in Self::counters(cells) {
            let bucket = cell_key::bucket_of(key).unwrap_or(0);
            if self.namespace.expired(self.resolution, bucket, now_ms) {
                continue;
            }
            let Some((sum, count)) = narrowed(set.sum(), set.count()) else {
                return Err(overflow(bucket));
            };
            points.push(Point {
                bucket_start_ms: bucket,
                sum,
                count,
            });
        }
        Ok(ReadAnswer::Range(points))
    }

    /// The sum of every cell, as a total or as stats with the cells read.
    fn sums<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a [u8], &'a CellValue)>,
    ) -> Result<ReadAnswer, RequestError> {
        let (mut sum, mut count) = (0i128, 0u128);
        let mut read = 0u32;
        for (_, set) in Self::counters(cells) {
            read += 1;
            sum += set.sum();
            count += set.count();
        }
        let total = match narrowed(sum, count) {
            Some((sum, count)) => Count { sum, count },
            None => return Err(overflow(i64::MIN)),
        };
        Ok(if self.answer == Answer::Total {
            ReadAnswer::Total(total)
        } else {
            ReadAnswer::Stats {
                total,
                cells_read: read,
            }
        })
    }

    /// The estimate of each unexpired bucket's sketch, and of their merge.
    fn distinct<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a [u8], &'a CellValue)>,
        now_ms: i64,
    ) -> ReadAnswer {
        let mut union: Option<Sketch> = None;
        let mut points = Vec::new();
        for (key, value) in cells {
            let CellValue::Distinct(sketch) = value else {
                continue;
            };
            let bucket = cell_key::bucket_of(key).unwrap_or(0);
            if self.namespace.expired(self.resolution, bucket, now_ms) {
                continue;
            }
            points.push(DistinctPoint {
                bucket_start_ms: bucket,
                estimate: sketch.estimate().round() as u64,
            });
            match &mut union {
                Some(u) => u.merge(sketch),
                None => union = Some(sketch.clone()),
            }
        }
        ReadAnswer::Distinct {
            points,
            union: union.map_or(0, |u| u.estimate().round() as u64),
        }
    }
}

/// Bytes of sketches one distinct read may gather from a replica: its
/// answer must fit a frame (16 MiB) with room to spare.
pub const MAX_DISTINCT_READ_BYTES: i64 = 12 << 20;

/// The most buckets a distinct read at `precision` may span: as many
/// dense sketches as fit [`MAX_DISTINCT_READ_BYTES`] (767 at precision 14:
/// a month of days, a month of hours, not a day of minutes).
pub fn max_distinct_buckets(precision: u8) -> i64 {
    MAX_DISTINCT_READ_BYTES / ((1i64 << precision.min(18)) + 3)
}

/// The namespace `name` if its cells are of `kind`, or the refusal
/// (`UnknownNamespace`, `WrongKind`).
fn lookup_kind<'n>(
    namespaces: &'n Namespaces,
    name: &str,
    kind: CellKind,
) -> Result<&'n Namespace, RequestError> {
    let ns = lookup(namespaces, name)?;
    match (CellKind::of(ns.kind), kind) {
        (CellKind::Counter, CellKind::Distinct) => Err(refuse(
            ErrorCode::WrongKind,
            format!("namespace {name} counts increments; distinct reads ask a distinct namespace"),
        )),
        (CellKind::Distinct, CellKind::Counter) => Err(refuse(
            ErrorCode::WrongKind,
            format!("namespace {name} counts distinct members; read it with a distinct read"),
        )),
        _ => Ok(ns),
    }
}

/// A widened sum and count back in the wire's range, if they fit.
fn narrowed(sum: i128, count: u128) -> Option<(i64, u64)> {
    Some((i64::try_from(sum).ok()?, u64::try_from(count).ok()?))
}

/// The answer to a read whose sum does not fit the wire's `i64`: an error,
/// never a wrapped number. `bucket` names the bucket (`i64::MIN`: the total
/// over the range).
fn overflow(bucket: i64) -> RequestError {
    let what = if bucket == i64::MIN {
        "the sum over the range".to_owned()
    } else {
        format!("the bucket at {bucket} ms")
    };
    refuse(
        ErrorCode::Overflow,
        format!("{what} is outside the i64 range the protocol carries"),
    )
}

fn floor_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w
}

fn ceil_to(t: i64, w: i64) -> i64 {
    floor_to(t.saturating_add(w - 1), w)
}

/// Covers `[start, end)`, widened to the finest resolution's buckets, with
/// the coarsest buckets that fit: `(resolution, from, to)` segments, each a
/// run of whole buckets. `kept` is finest first.
pub fn cover(kept: &[Resolution], start: i64, end: i64) -> Vec<(Resolution, i64, i64)> {
    fn go(kept: &[Resolution], s: i64, e: i64, out: &mut Vec<(Resolution, i64, i64)>) {
        let Some((&coarsest, finer)) = kept.split_last() else {
            return;
        };
        let w = coarsest.width_ms().unwrap_or(1);
        if finer.is_empty() {
            if s < e {
                out.push((coarsest, s, e));
            }
            return;
        }
        let (a, b) = (ceil_to(s, w), floor_to(e, w));
        if a >= b {
            go(finer, s, e, out);
            return;
        }
        go(finer, s, a, out);
        out.push((coarsest, a, b));
        go(finer, b, e, out);
    }
    let finest = kept[0].width_ms().unwrap_or(1);
    let mut out = Vec::new();
    go(
        kept,
        floor_to(start, finest),
        ceil_to(end, finest),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn a_distinct_read_answers_each_day_and_their_union_and_skips_expired_days() {
        let namespaces =
            Namespaces::with([Namespace::parse("viewers", "distinct, day:7d, total").unwrap()]);
        let limits = StoreLimits::default();
        let now = 100 * DAY + HOUR;
        let read = Read {
            namespace: "viewers".into(),
            key: b"v".to_vec(),
            kind: ReadKind::Distinct {
                resolution: Resolution::Day,
                start_ms: 90 * DAY,
                end_ms: now,
            },
        };
        let plan = ReadPlan::of(&namespaces, &limits, &read, now).unwrap();
        let day = |d: i64, members: std::ops::Range<u32>| {
            let mut s = Sketch::new(14);
            members.for_each(|m| s.add(&m.to_le_bytes()));
            let key = cell_key::encode(
                CellKind::Distinct,
                "viewers",
                b"v",
                Resolution::Day,
                d * DAY,
            );
            (key, CellValue::Distinct(s))
        };
        // Day 91 is past the 7-day retention; days 98 and 99 overlap.
        let cells = [day(91, 0..500), day(98, 0..300), day(99, 200..600)];
        let answer = plan
            .answer(cells.iter().map(|(k, v)| (k.as_slice(), v)), now)
            .unwrap();
        let ReadAnswer::Distinct { points, union } = answer else {
            panic!("not a distinct answer");
        };
        let starts: Vec<i64> = points.iter().map(|p| p.bucket_start_ms / DAY).collect();
        assert_eq!(starts, [98, 99]);
        assert_eq!(
            points.iter().map(|p| p.estimate).collect::<Vec<_>>(),
            [300, 400]
        );
        // Members 0..600 once each, not 300 + 400: the union's sketch
        // (600 members turn it dense, hence not exactly 600).
        let mut all = Sketch::new(14);
        (0..600u32).for_each(|m| all.add(&m.to_le_bytes()));
        assert_eq!(union, all.estimate().round() as u64);
        assert!(union.abs_diff(600) <= 6, "{union}");

        // A read that could gather more dense sketches than a frame holds
        // is refused: a day of minutes, not a month of hours.
        assert_eq!(max_distinct_buckets(14), 767);
        let mut long = read.clone();
        long.kind = ReadKind::Distinct {
            resolution: Resolution::Day,
            start_ms: 0,
            end_ms: 800 * DAY,
        };
        assert_eq!(
            ReadPlan::of(&namespaces, &limits, &long, now)
                .unwrap_err()
                .code,
            ErrorCode::InvalidRange
        );

        // The kinds refuse each other.
        let mut wrong = read.clone();
        wrong.namespace = "events".into();
        assert_eq!(
            ReadPlan::of(&namespaces, &limits, &wrong, now)
                .unwrap_err()
                .code,
            ErrorCode::WrongKind
        );
        wrong = read;
        wrong.kind = ReadKind::Total;
        assert_eq!(
            ReadPlan::of(&namespaces, &limits, &wrong, now)
                .unwrap_err()
                .code,
            ErrorCode::WrongKind
        );
    }

    #[test]
    fn cover_uses_days_inside_hours_and_minutes_at_the_edges() {
        let kept = [Resolution::Minute, Resolution::Hour, Resolution::Day];
        let start = 10 * DAY + 5 * HOUR + 7 * MIN;
        let end = 40 * DAY + 3 * HOUR + 2 * MIN;
        let plan = cover(&kept, start, end);
        // Contiguous, ordered, exactly the widened range.
        assert_eq!(plan.first().map(|p| p.1), Some(start));
        assert_eq!(plan.last().map(|p| p.2), Some(end));
        for pair in plan.windows(2) {
            assert_eq!(pair[0].2, pair[1].1);
        }
        let cells: i64 = plan
            .iter()
            .map(|(r, a, b)| (b - a) / r.width_ms().unwrap())
            .sum();
        // 53 minutes + 18 hours + 29 days + 3 hours + 2 minutes.
        assert_eq!(cells, 53 + 18 + 29 + 3 + 2);
    }

    #[test]
    fn cover_of_thirty_days_reads_about_a_hundred_cells_at_most() {
        let kept = [Resolution::Minute, Resolution::Hour, Resolution::Day];
        let start = 3 * DAY + 59 * MIN + 13 * HOUR;
        let end = start + 30 * DAY;
        let cells: i64 = cover(&kept, start, end)
            .iter()
            .map(|(r, a, b)| (b - a) / r.width_ms().unwrap())
            .sum();
        assert!(cells <= 29 + 2 * 23 + 2 * 59, "{cells} cells");
    }

    #[test]
    fn a_point_range_holds_one_key() {
        let p = point(b"abc".to_vec());
        assert!(is_point(&p));
        let only: &[u8] = b"abc";
        assert!(p.start.as_slice() <= only && only < p.end.as_slice());
        let next: &[u8] = b"abc\0";
        assert!(next >= p.end.as_slice(), "the next key is outside");
        assert!(!is_point(&KeyRange {
            start: b"abc".to_vec(),
            end: b"abd".to_vec()
        }));
    }

    #[test]
    fn bad_reads_are_refused_with_typed_errors() {
        let ns = Namespaces::with([]);
        let limits = StoreLimits::default();
        let code = |r: Result<ReadPlan, RequestError>| r.unwrap_err().code;
        assert_eq!(
            code(ReadPlan::total(&ns, &limits, "nope", b"k", 0)),
            ErrorCode::UnknownNamespace
        );
        assert_eq!(
            code(ReadPlan::total(&ns, &limits, "events", b"", 0)),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            code(ReadPlan::range(
                &ns,
                &limits,
                "events",
                b"k",
                Resolution::Minute,
                10,
                10
            )),
            ErrorCode::InvalidRange
        );
        assert_eq!(
            code(ReadPlan::range(
                &ns,
                &limits,
                "events",
                b"k",
                Resolution::Minute,
                0,
                400 * DAY
            )),
            ErrorCode::InvalidRange
        );
    }
}
