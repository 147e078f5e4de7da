//! [`MergingIter`]: one ordered stream of resolved entries from several
//! sorted sources (memtables, tables, levels), ordered newest first.
//!
//! For each key it takes the entries of every source that has it, newest
//! first, stops at the first complete entry (a value or a deletion) and
//! merges the operands above it. Sources are few (memtables + L0 tables +
//! levels), so the smallest key is found by a linear pass.

use std::sync::Arc;

use crate::entry::Entry;
use crate::error::Result;
use crate::merge::MergeOperator;
use crate::table::TableIter;
use crate::version::LiveTable;

/// A sorted stream of `(key, entry)`.
pub(crate) type EntryStream = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + Send>;

/// Concatenates the tables of one sorted level over `[start, end)`.
pub(crate) fn level_stream(
    tables: Vec<Arc<LiveTable>>,
    start: &[u8],
    end: Option<&[u8]>,
) -> EntryStream {
    let start = start.to_vec();
    let end = end.map(<[u8]>::to_vec);
    Box::new(
        tables
            .into_iter()
            .flat_map(move |t| TableIter::new(t.table.clone(), &start, end.as_deref())),
    )
}

/// Merges sources given newest first.
#[derive(Debug)]
pub(crate) struct MergingIter {
    sources: Vec<Source>,
    op: Arc<dyn MergeOperator>,
}

struct Source {
    stream: EntryStream,
    head: Option<(Vec<u8>, Entry)>,
    exhausted: bool,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("head", &self.head)
            .field("exhausted", &self.exhausted)
            .finish()
    }
}

impl MergingIter {
    pub(crate) fn new(streams: Vec<EntryStream>, op: Arc<dyn MergeOperator>) -> MergingIter {
        let sources = streams
            .into_iter()
            .map(|stream| Source {
                stream,
                head: None,
                exhausted: false,
            })
            .collect();
        MergingIter { sources, op }
    }

    fn fill_heads(&mut self) -> Result<()> {
        for source in &mut self.sources {
            if source.head.is_none() && !source.exhausted {
                match source.stream.next() {
                    Some(Ok(item)) => source.head = Some(item),
                    Some(Err(e)) => {
                        source.exhausted = true;
                        return Err(e);
                    }
                    None => source.exhausted = true,
                }
            }
        }
        Ok(())
    }
}

impl Iterator for MergingIter {
    /// A key and its entry merged across sources (still a `Merge` if no
    /// source held a complete entry for it).
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill_heads() {
            return Some(Err(e));
        }
        let min_key = self
            .sources
            .iter()
            .filter_map(|s| s.head.as_ref().map(|(k, _)| k))
            .min()?
            .clone();
        let mut newest_first = Vec::new();
        let mut complete = false;
        for source in &mut self.sources {
            if source.head.as_ref().is_some_and(|(k, _)| *k == min_key) {
                let (_, entry) = source.head.take()?;
                if !complete {
                    complete = entry.is_complete();
                    newest_first.push(entry);
                }
            }
        }
        let mut oldest_first = newest_first.into_iter().rev();
        let mut acc = oldest_first.next()?;
        for newer in oldest_first {
            acc.absorb(&min_key, newer, &*self.op);
        }
        Some(Ok((min_key, acc)))
    }
}
