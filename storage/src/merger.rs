//! [`Merger`]: one ordered walk over several cursors given newest first
//! (memtables, L0 tables, deeper levels), shared by range scans and
//! compaction.
//!
//! For each key it takes the entries of every cursor that has it, newest
//! first, stops at the first complete entry (a value or a deletion) and
//! merges the operands above it. When only one cursor holds a key, which is
//! the common case, the visitor gets that cursor's borrowed entry and
//! nothing is copied. Cursors are few, so the smallest key is found by a
//! linear pass.

use std::sync::Arc;

use crate::cursor::Cursor;
use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::merge::MergeOperator;

/// Merges cursors given newest first.
pub(crate) struct Merger {
    cursors: Vec<Box<dyn Cursor>>,
    op: Arc<dyn MergeOperator>,
}

impl Merger {
    pub(crate) fn new(cursors: Vec<Box<dyn Cursor>>, op: Arc<dyn MergeOperator>) -> Merger {
        Merger { cursors, op }
    }

    /// Sends every cursor forward to `start`, bounded at `end` (see
    /// [`Cursor::seek`]).
    pub(crate) fn seek(&mut self, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        self.cursors.iter_mut().try_for_each(|c| c.seek(start, end))
    }

    /// Calls `visit(key, kind, value)` for each key in order with its entry
    /// merged across cursors (still `Merge` if no cursor held a complete
    /// entry). `visit` returns `Ok(false)` to stop.
    pub(crate) fn visit(
        &mut self,
        mut visit: impl FnMut(&[u8], Kind, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        loop {
            let mut min: Option<(usize, &[u8])> = None;
            let mut duplicated = false;
            for (i, cursor) in self.cursors.iter().enumerate() {
                let Some((key, _, _)) = cursor.current() else {
                    continue;
                };
                match min {
                    Some((_, best)) if key > best => {}
                    Some((_, best)) if key == best => duplicated = true,
                    _ => {
                        min = Some((i, key));
                        duplicated = false;
                    }
                }
            }
            let Some((newest, _)) = min else {
                return Ok(());
            };
            if !duplicated {
                let keep_going = match self.cursors[newest].current() {
                    Some((key, kind, value)) => visit(key, kind, value)?,
                    None => return Ok(()),
                };
                self.cursors[newest].advance()?;
                if !keep_going {
                    return Ok(());
                }
                continue;
            }
            let (key, merged) = self.merge_duplicates(newest)?;
            if !visit(&key, merged.kind, &merged.value)? {
                return Ok(());
            }
        }
    }

    /// Takes the entries of every cursor positioned at the newest cursor's
    /// key, advances them all, and merges.
    fn merge_duplicates(&mut self, newest: usize) -> Result<(Vec<u8>, Entry)> {
        let key = match self.cursors[newest].current() {
            Some((key, _, _)) => key.to_vec(),
            None => return Ok((Vec::new(), Entry::delete())),
        };
        let mut newest_first: Vec<Entry> = Vec::new();
        let mut complete = false;
        for cursor in &mut self.cursors {
            let Some((k, kind, value)) = cursor.current() else {
                continue;
            };
            if k != key.as_slice() {
                continue;
            }
            if !complete {
                let entry = Entry {
                    kind,
                    value: value.to_vec(),
                };
                complete = entry.is_complete();
                newest_first.push(entry);
            }
            cursor.advance()?;
        }
        let mut oldest_first = newest_first.into_iter().rev();
        let mut acc = oldest_first.next().unwrap_or_else(Entry::delete);
        for newer in oldest_first {
            acc.absorb(&key, newer, &*self.op);
        }
        Ok((key, acc))
    }
}
