//! [`RetentionFilter`]: the compaction filter of the counter store. It
//! drops buckets past their namespace's retention (reads skip them before
//! compaction gets there) and the records of op ids no longer live.

use std::sync::Arc;

use parking_lot::RwLock;
use tally_storage::{CompactionFilter, FilterDecision};

use crate::clock::Clock;
use crate::counter::cell_key;
use crate::counter::namespace::Namespaces;
use crate::counter::op_id::{self, OpWindowLimits};
use crate::replica::op_window;

/// Drops buckets past their namespace's retention during compaction.
#[derive(Debug)]
pub(crate) struct RetentionFilter {
    /// The namespaces, as the store holds them (changes apply at once).
    pub(crate) namespaces: Arc<RwLock<Namespaces>>,
    /// Time, for what is past retention.
    pub(crate) clock: Arc<dyn Clock>,
    /// When an op id's records stop being needed.
    pub(crate) op_window: OpWindowLimits,
}

impl CompactionFilter for RetentionFilter {
    fn decide(&self, key: &[u8], _value: &[u8]) -> FilterDecision {
        let op =
            op_window::op_of_key(key).or_else(|| op_window::led_op_of_key(key).map(|(_, id)| id));
        if let Some(id) = op {
            // An op id is refused once it is not live, so its records (the
            // leader's, and the ones replicas keep for it) can go.
            let now_ms = self.clock.now_ms();
            return if op_id::made_ms(id).saturating_add(self.op_window.span.as_millis() as i64)
                < now_ms
            {
                FilterDecision::Remove
            } else {
                FilterDecision::Keep
            };
        }
        let Some(cell) = cell_key::decode(key) else {
            return FilterDecision::Keep;
        };
        let namespaces = self.namespaces.read();
        match namespaces.get(&cell.namespace) {
            Some(ns) if ns.expired(cell.resolution, cell.bucket_start_ms, self.clock.now_ms()) => {
                FilterDecision::Remove
            }
            _ => FilterDecision::Keep,
        }
    }
}
