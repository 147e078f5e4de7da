//! Leveled compaction: choosing what to compact and merging it.
//!
//! Why leveled and not size-tiered: counter workloads rewrite the same hot
//! keys (a Zipf head of videos times a handful of buckets) and read them
//! back by point and short range. Leveling bounds a read to one table per
//! level and keeps space amplification near 1.1x, because every merge of a
//! hot key's operands collapses into one entry on its way down; tiering would
//! write less but keep many overlapping copies of the hot keys. With 2 cores
//! one compaction runs at a time.
//!
//! Choosing: L0 scores `tables / l0_compaction_trigger`; level `n >= 1`
//! scores `bytes / target(n)` with `target(1) = level1_bytes` and 10x per
//! level. The highest score >= 1 is compacted. From L0 every table is taken
//! (they overlap) plus the overlapping L1 tables; from a deeper level one
//! table, chosen round-robin by key, plus the overlapping tables of the next
//! level. A table with no overlap below is moved down without rewriting.
//!
//! Merging: cursors newest first through [`Merger`]. When no deeper
//! level holds keys in the compacted range (the output is the bottom there),
//! deletions are dropped and operand chains become plain values. The
//! compaction filter's `Remove` drops an entry at the bottom and turns it
//! into a deletion elsewhere, so nothing older resurfaces.

use std::sync::Arc;

use crate::block_cache::Fill;
use crate::cursor::{Cursor, LevelCursor, TableCursor};
use crate::entry::Kind;
use crate::error::Result;
use crate::merge::{CompactionFilter, FilterDecision, MergeOperator};
use crate::merger::Merger;
use crate::options::Options;
use crate::version::{LiveTable, Version, NUM_LEVELS};

/// A compaction to run.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Tables being compacted, as `(level, table)`, newest sources first.
    pub(crate) inputs: Vec<(usize, Arc<LiveTable>)>,
    pub(crate) output_level: usize,
    /// No level below `output_level` holds keys in the input range.
    pub(crate) bottommost: bool,
    /// Move the single input down without rewriting it.
    pub(crate) trivial_move: bool,
}

fn level_target(opts: &Options, level: usize) -> u64 {
    opts.level1_bytes
        .saturating_mul(10u64.saturating_pow(level.saturating_sub(1) as u32))
}

/// The compaction score of each level; >= 1 means it needs compacting.
pub(crate) fn scores(version: &Version, opts: &Options) -> Vec<f64> {
    (0..NUM_LEVELS - 1)
        .map(|level| {
            if level == 0 {
                version.levels[0].len() as f64 / opts.l0_compaction_trigger as f64
            } else {
                version.level_bytes(level) as f64 / level_target(opts, level) as f64
            }
        })
        .collect()
}

pub(crate) fn needs_compaction(version: &Version, opts: &Options) -> bool {
    scores(version, opts).iter().any(|&s| s >= 1.0)
}

fn key_range<'a>(tables: impl Iterator<Item = &'a Arc<LiveTable>>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut range: Option<(Vec<u8>, Vec<u8>)> = None;
    for t in tables {
        range = Some(match range {
            None => (t.meta.smallest.clone(), t.meta.largest.clone()),
            Some((lo, hi)) => (
                lo.min(t.meta.smallest.clone()),
                hi.max(t.meta.largest.clone()),
            ),
        });
    }
    range
}

fn is_bottommost(version: &Version, output_level: usize, lo: &[u8], hi: &[u8]) -> bool {
    (output_level + 1..NUM_LEVELS).all(|l| version.overlapping(l, lo, hi).is_empty())
}

/// Picks the most urgent compaction; `pointers[level]` remembers where the
/// round-robin of each level stopped.
pub(crate) fn pick(version: &Version, opts: &Options, pointers: &mut [Vec<u8>]) -> Option<Plan> {
    let scores = scores(version, opts);
    let (level, _) = scores
        .iter()
        .enumerate()
        .filter(|(_, &s)| s >= 1.0)
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let output_level = level + 1;
    let chosen: Vec<Arc<LiveTable>> = if level == 0 {
        version.levels[0].clone()
    } else {
        let run = &version.levels[level];
        let next = run
            .iter()
            .find(|t| t.meta.smallest > pointers[level])
            .or_else(|| run.first())?;
        pointers[level] = next.meta.largest.clone();
        vec![next.clone()]
    };
    let (lo, hi) = key_range(chosen.iter())?;
    let below = version.overlapping(output_level, &lo, &hi);
    let trivial_move = level > 0 && below.is_empty();
    let (all_lo, all_hi) = key_range(chosen.iter().chain(below.iter()))?;
    let bottommost = is_bottommost(version, output_level, &all_lo, &all_hi);
    let mut inputs: Vec<(usize, Arc<LiveTable>)> = chosen.into_iter().map(|t| (level, t)).collect();
    inputs.extend(below.into_iter().map(|t| (output_level, t)));
    Some(Plan {
        inputs,
        output_level,
        bottommost,
        trivial_move,
    })
}

/// A plan that merges every table into one sorted run at the deepest
/// non-empty level (at least 1): a full, manual compaction.
pub(crate) fn full(version: &Version) -> Option<Plan> {
    let inputs: Vec<(usize, Arc<LiveTable>)> =
        version.all_tables().map(|(l, t)| (l, t.clone())).collect();
    let deepest = inputs.iter().map(|(l, _)| *l).max()?;
    Some(Plan {
        inputs,
        output_level: deepest.max(1),
        bottommost: true,
        trivial_move: false,
    })
}

/// Input cursors newest first: each L0 table alone, then each deeper
/// level's tables concatenated.
fn input_cursors(plan: &Plan) -> Result<Vec<Box<dyn Cursor>>> {
    let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
    for level in 0..NUM_LEVELS {
        let mut tables: Vec<Arc<LiveTable>> = plan
            .inputs
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, t)| t.clone())
            .collect();
        if level == 0 {
            tables.sort_by_key(|t| std::cmp::Reverse(t.meta.number));
            for t in tables {
                cursors.push(Box::new(TableCursor::new(
                    t.table.clone(),
                    &[],
                    None,
                    Fill::No,
                )?));
            }
        } else if !tables.is_empty() {
            tables.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
            cursors.push(Box::new(LevelCursor::new(tables, &[], None, Fill::No)?));
        }
    }
    Ok(cursors)
}

/// Where compaction output goes.
pub(crate) trait OutputSink {
    /// Adds one entry to the current output table, cutting a new table when
    /// the current one reaches the target size.
    fn add(&mut self, key: &[u8], kind: Kind, value: &[u8]) -> Result<()>;
}

/// Runs the merge of a plan into `sink`.
pub(crate) fn merge_into(
    plan: &Plan,
    op: Arc<dyn MergeOperator>,
    filter: Option<&dyn CompactionFilter>,
    sink: &mut dyn OutputSink,
) -> Result<()> {
    let mut merger = Merger::new(input_cursors(plan)?, op);
    merger.visit(|key, mut kind, value| {
        if kind != Kind::Delete
            && filter.is_some_and(|f| f.decide(key, value) == FilterDecision::Remove)
        {
            kind = Kind::Delete;
        }
        if plan.bottommost {
            match kind {
                Kind::Delete => return Ok(true),
                Kind::Merge => kind = Kind::Put,
                Kind::Put => {}
            }
        }
        let value = if kind == Kind::Delete { &[][..] } else { value };
        sink.add(key, kind, value)?;
        Ok(true)
    })
}

/// Bytes read by a plan.
pub(crate) fn input_bytes(plan: &Plan) -> u64 {
    plan.inputs.iter().map(|(_, t)| t.meta.size).sum()
}

/// Names an input for logs.
pub(crate) fn describe(plan: &Plan) -> String {
    let files: Vec<String> = plan
        .inputs
        .iter()
        .map(|(l, t)| {
            format!(
                "L{l}:{}",
                t.table
                    .path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("?")
            )
        })
        .collect();
    format!("{} -> L{}", files.join(","), plan.output_level)
}
