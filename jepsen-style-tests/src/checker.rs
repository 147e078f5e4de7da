//! [`check`]: is a counter history possible under tally's promises?
//!
//! Three checks, for each key, with every delta positive:
//!
//! 1. **Read bounds.** A read that returned `v` lies between what was
//!    certainly counted when it started (the increments acknowledged `ok`
//!    before its invoke) and what could have been counted when it ended
//!    (the increments invoked before its completion and not known to have
//!    failed). Below: an acknowledged increment was lost or not yet
//!    visible to a QUORUM read. Above: something was counted twice or
//!    counted though it failed.
//! 2. **Convergence.** After the faults are healed and the hints drained,
//!    every replica holds the identical cell, and the final QUORUM read
//!    equals the acknowledged sum plus some part of the indeterminate
//!    increments (between the two sums).
//! 3. **Monotonic QUORUM reads.** Successive reads of a key by one client
//!    never go down.
//!
//! Any anomaly makes the history invalid. Without the final state (the
//! cluster could not be read back after healing) a history with no anomaly
//! is unknown, not valid.

use std::collections::{BTreeMap, HashMap};

use tally_client::ReplicaView;

use crate::history::{Op, OpKind, OpType};

/// The verdict's headline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    /// No anomaly, and the final state was checked.
    Valid,
    /// At least one anomaly.
    Invalid,
    /// No anomaly found, but the final state could not be checked.
    Unknown,
}

impl Validity {
    /// The harness's exit code: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }
}

/// One thing that should not have happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Anomaly {
    /// `read-below-acknowledged`, `read-above-possible`, `non-monotonic-read`,
    /// `replicas-differ`, `final-out-of-bounds`, `final-unreadable` or
    /// (exact mode) `not-acknowledged`.
    pub kind: String,
    /// The counter.
    pub key: String,
    /// What was seen and what was allowed.
    pub detail: String,
    /// The operations involved (op ids).
    pub ops: Vec<u64>,
}

/// The cluster as read back after healing.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// Each replica's copy of each key's total cell.
    pub replicas: BTreeMap<String, Vec<ReplicaView>>,
    /// The final QUORUM read of each key (`None`: it failed).
    pub reads: BTreeMap<String, Option<i64>>,
}

/// Counts of what the history holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Increments acknowledged.
    pub incr_ok: u64,
    /// Increments that certainly failed.
    pub incr_fail: u64,
    /// Increments with unknown outcome (including those never completed).
    pub incr_info: u64,
    /// Reads that returned a value.
    pub read_ok: u64,
    /// Reads that did not.
    pub read_failed: u64,
}

/// The checker's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// Valid, invalid or unknown.
    pub validity: Validity,
    /// Everything found wrong (the first 100 of each kind).
    pub anomalies: Vec<Anomaly>,
    /// Counts.
    pub stats: Stats,
}

/// One operation with both of its lines.
#[derive(Debug, Clone)]
struct Span {
    op_id: u64,
    process: u32,
    f: OpKind,
    key: String,
    /// Delta for increments.
    delta: i64,
    invoked_ns: u64,
    /// `None`: never completed (counts as info).
    completed: Option<(OpType, u64, Option<i64>)>,
}

fn spans(ops: &[Op]) -> Vec<Span> {
    let mut by_id: HashMap<u64, Span> = HashMap::new();
    let mut order = Vec::new();
    for op in ops {
        match op.ty {
            OpType::Invoke => {
                order.push(op.op_id);
                by_id.insert(
                    op.op_id,
                    Span {
                        op_id: op.op_id,
                        process: op.process,
                        f: op.f,
                        key: op.key.clone(),
                        delta: op.value.unwrap_or(0),
                        invoked_ns: op.time_ns,
                        completed: None,
                    },
                );
            }
            ty => {
                if let Some(span) = by_id.get_mut(&op.op_id) {
                    span.completed = Some((ty, op.time_ns, op.value));
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

/// Sums of deltas as a step function of time: `at(t)` is the sum of the
/// deltas whose time is strictly before `t`.
struct StepSum {
    times: Vec<u64>,
    prefix: Vec<i64>,
}

impl StepSum {
    fn new(mut points: Vec<(u64, i64)>) -> StepSum {
        points.sort_unstable();
        let mut prefix = Vec::with_capacity(points.len() + 1);
        prefix.push(0i64);
        for (_, d) in &points {
            prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(*d));
        }
        StepSum {
            times: points.into_iter().map(|(t, _)| t).collect(),
            prefix,
        }
    }

    fn before(&self, t: u64) -> i64 {
        self.prefix[self.times.partition_point(|&x| x < t)]
    }
}

const MAX_PER_KIND: usize = 100;

/// Checks a history, and the final state if it could be read.
///
/// `exact`: every increment must end acknowledged (the producer workload,
/// whose producers resend until settled); one that did not is a
/// `not-acknowledged` anomaly, so the final read must equal the sum of
/// all increments exactly.
pub fn check(ops: &[Op], final_state: Option<&FinalState>, exact: bool) -> Verdict {
    let spans = spans(ops);
    let mut stats = Stats::default();
    let mut anomalies = Vec::new();
    let mut per_kind: HashMap<&'static str, usize> = HashMap::new();
    let mut report = |kind: &'static str, key: &str, detail: String, ops: Vec<u64>| {
        let n = per_kind.entry(kind).or_insert(0);
        *n += 1;
        if *n <= MAX_PER_KIND {
            anomalies.push(Anomaly {
                kind: kind.to_owned(),
                key: key.to_owned(),
                detail,
                ops,
            });
        }
    };

    let mut keys: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in &spans {
        keys.entry(s.key.as_str()).or_default().push(s);
        if exact && s.f == OpKind::Incr && !matches!(s.completed, Some((OpType::Ok, _, _))) {
            report(
                "not-acknowledged",
                &s.key,
                format!("an increment of {} never settled as acknowledged", s.delta),
                vec![s.op_id],
            );
        }
        match (s.f, s.completed.map(|c| c.0)) {
            (OpKind::Incr, Some(OpType::Ok)) => stats.incr_ok += 1,
            (OpKind::Incr, Some(OpType::Fail)) => stats.incr_fail += 1,
            (OpKind::Incr, _) => stats.incr_info += 1,
            (OpKind::Read, Some(OpType::Ok)) => stats.read_ok += 1,
            (OpKind::Read, _) => stats.read_failed += 1,
        }
    }

    for (key, spans) in &keys {
        let incrs: Vec<&&Span> = spans.iter().filter(|s| s.f == OpKind::Incr).collect();
        // Certainly counted: acknowledged, by completion time.
        let acked = StepSum::new(
            incrs
                .iter()
                .filter_map(|s| match s.completed {
                    Some((OpType::Ok, t, _)) => Some((t, s.delta)),
                    _ => None,
                })
                .collect(),
        );
        // Possibly counted: not known to have failed, by invoke time.
        let possible = StepSum::new(
            incrs
                .iter()
                .filter(|s| !matches!(s.completed, Some((OpType::Fail, _, _))))
                .map(|s| (s.invoked_ns, s.delta))
                .collect(),
        );
        let mut last_read: HashMap<u32, (i64, u64)> = HashMap::new();
        let mut reads: Vec<&&Span> = spans.iter().filter(|s| s.f == OpKind::Read).collect();
        reads.sort_by_key(|s| s.completed.map_or(u64::MAX, |c| c.1));
        for read in reads {
            let Some((OpType::Ok, done_ns, Some(value))) = read.completed else {
                continue;
            };
            let low = acked.before(read.invoked_ns);
            let high = possible.before(done_ns);
            if value < low {
                report(
                    "read-below-acknowledged",
                    key,
                    format!("read {value}, but {low} was acknowledged before the read began"),
                    vec![read.op_id],
                );
            }
            if value > high {
                report(
                    "read-above-possible",
                    key,
                    format!("read {value}, but at most {high} could have been counted by its end"),
                    vec![read.op_id],
                );
            }
            if let Some(&(previous, previous_op)) = last_read.get(&read.process) {
                if value < previous {
                    report(
                        "non-monotonic-read",
                        key,
                        format!("client {} read {previous}, then {value}", read.process),
                        vec![previous_op, read.op_id],
                    );
                }
            }
            last_read.insert(read.process, (value, read.op_id));
        }
    }

    let Some(fin) = final_state else {
        let validity = if anomalies.is_empty() {
            Validity::Unknown
        } else {
            Validity::Invalid
        };
        return Verdict {
            validity,
            anomalies,
            stats,
        };
    };
    for (key, spans) in &keys {
        let acked: i64 = spans
            .iter()
            .filter(|s| s.f == OpKind::Incr && matches!(s.completed, Some((OpType::Ok, _, _))))
            .map(|s| s.delta)
            .sum();
        let maybe: i64 = spans
            .iter()
            .filter(|s| {
                s.f == OpKind::Incr
                    && !matches!(s.completed, Some((OpType::Ok | OpType::Fail, _, _)))
            })
            .map(|s| s.delta)
            .sum();
        if let Some(views) = fin.replicas.get(*key) {
            let unreachable: Vec<u64> = views
                .iter()
                .filter(|v| v.error.is_some())
                .map(|v| v.host_id)
                .collect();
            let differ = views.windows(2).any(|w| w[0].shards != w[1].shards);
            if !unreachable.is_empty() || differ {
                let sums: Vec<String> = views
                    .iter()
                    .map(|v| match &v.error {
                        Some(e) => format!("host {}: unreachable ({e})", v.host_id),
                        None => format!(
                            "host {}: {}",
                            v.host_id,
                            v.shards.iter().map(|s| s.sum).sum::<i64>()
                        ),
                    })
                    .collect();
                report(
                    "replicas-differ",
                    key,
                    format!("after healing: {}", sums.join(", ")),
                    Vec::new(),
                );
            }
        }
        match fin.reads.get(*key) {
            Some(Some(value)) if *value < acked || *value > acked + maybe => report(
                "final-out-of-bounds",
                key,
                format!("final read {value}; acknowledged {acked}, indeterminate {maybe}"),
                Vec::new(),
            ),
            Some(Some(_)) => {}
            _ => report(
                "final-unreadable",
                key,
                "the final QUORUM read failed".into(),
                Vec::new(),
            ),
        }
    }
    Verdict {
        validity: if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        anomalies,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use tally_client::ShardView;

    fn incr(h: &History, p: u32, delta: i64, ty: OpType) -> u64 {
        let id = h.invoke(p, OpKind::Incr, "k", Some(delta));
        h.complete(p, id, ty, OpKind::Incr, "k", Some(delta), None);
        id
    }

    fn read(h: &History, p: u32, value: i64) -> u64 {
        let id = h.invoke(p, OpKind::Read, "k", None);
        h.complete(p, id, OpType::Ok, OpKind::Read, "k", Some(value), None);
        id
    }

    fn view(host_id: u64, sum: i64) -> ReplicaView {
        ReplicaView {
            host_id,
            address: String::new(),
            error: None,
            shards: vec![ShardView {
                id: 1,
                clock: 1,
                sum,
                count: 1,
            }],
            value: Vec::new(),
        }
    }

    fn fin(value: i64, sums: &[i64]) -> FinalState {
        FinalState {
            replicas: [(
                "k".to_owned(),
                sums.iter()
                    .enumerate()
                    .map(|(i, s)| view(i as u64 + 1, *s))
                    .collect(),
            )]
            .into(),
            reads: [("k".to_owned(), Some(value))].into(),
        }
    }

    fn kinds(v: &Verdict) -> Vec<&str> {
        v.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn exact_mode_requires_every_increment_acknowledged() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        incr(&h, 0, 3, OpType::Info);
        let v = check(&h.ops(), Some(&fin(2, &[2, 2, 2])), true);
        assert_eq!(kinds(&v), vec!["not-acknowledged"]);
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        incr(&h, 1, 3, OpType::Ok);
        assert_eq!(
            check(&h.ops(), Some(&fin(5, &[5, 5, 5])), true).validity,
            Validity::Valid
        );
        assert_eq!(
            kinds(&check(&h.ops(), Some(&fin(4, &[4, 4, 4])), true)),
            vec!["final-out-of-bounds"]
        );
    }

    #[test]
    fn a_correct_history_is_valid() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        read(&h, 1, 2);
        incr(&h, 0, 3, OpType::Info);
        read(&h, 1, 5);
        incr(&h, 0, 7, OpType::Fail);
        let v = check(&h.ops(), Some(&fin(5, &[5, 5, 5])), false);
        assert_eq!(v.validity, Validity::Valid, "{:?}", v.anomalies);
        assert_eq!(
            (v.stats.incr_ok, v.stats.incr_info, v.stats.incr_fail),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_lost_acknowledged_increment_is_caught() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        read(&h, 1, 0);
        let v = check(&h.ops(), Some(&fin(0, &[0, 0, 0])), false);
        assert_eq!(v.validity, Validity::Invalid);
        assert_eq!(
            kinds(&v),
            vec!["read-below-acknowledged", "final-out-of-bounds"]
        );
    }

    #[test]
    fn counting_twice_or_counting_a_failure_is_caught() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        incr(&h, 0, 4, OpType::Fail);
        read(&h, 1, 4);
        let v = check(&h.ops(), None, false);
        assert_eq!(v.validity, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["read-above-possible"]);
    }

    #[test]
    fn a_read_going_down_is_caught_per_client() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Info);
        read(&h, 1, 2);
        read(&h, 2, 0);
        let v = check(&h.ops(), None, false);
        assert_eq!(v.validity, Validity::Unknown, "other clients may see less");
        read(&h, 1, 0);
        let v = check(&h.ops(), None, false);
        assert_eq!(kinds(&v), vec!["non-monotonic-read"]);
    }

    #[test]
    fn diverged_replicas_and_an_unread_final_are_caught() {
        let h = History::new();
        incr(&h, 0, 2, OpType::Ok);
        let v = check(&h.ops(), Some(&fin(2, &[2, 2, 0])), false);
        assert_eq!(kinds(&v), vec!["replicas-differ"]);
        let mut f = fin(2, &[2, 2, 2]);
        f.reads.insert("k".into(), None);
        assert_eq!(
            kinds(&check(&h.ops(), Some(&f), false)),
            vec!["final-unreadable"]
        );
    }
}
