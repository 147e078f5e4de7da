//! [`OpWindow`]: the operation ids this node led lately, so that a retried
//! increment is counted once (DESIGN.md §11).
//!
//! An op id is 128 bits, made by the client and time-ordered: its top 48
//! bits are the milliseconds since the Unix epoch at which it was made
//! (`tally_client::new_op_id`, like a UUIDv7). An op id is *live* from
//! then until `span` later (10 minutes by default). The leader counts a
//! live op id at most once; an op id that is not live (older than the
//! span, or further ahead of the node's clock than the timestamp skew
//! allowed) is refused with `OpIdExpired`. So a retry either meets its id
//! here or is refused: it is never counted twice, however late it comes.
//! That is why the id carries its time: a window that forgot ids by
//! arrival time or by count could forget one a retry still carries.
//!
//! The window is bounded (`max_ids` live ids): a new op id beyond that is
//! refused with `Overloaded` and nothing is applied, never an eviction of
//! a live id.
//!
//! Durability is the counter store's: each new id is written in the same
//! write batch (one WAL record) as the shard updates it produced, under a
//! system key ([`op_key`]) that sorts after every cell, so a crash keeps
//! both or neither. The window is rebuilt from those keys when the store
//! opens, and the compaction filter drops them once they are no longer
//! live.

use std::collections::{HashSet, VecDeque};

use tally_storage::Db;

use crate::counter::op_id::{made_ms, OpWindowLimits};

/// A live op id's system key: `0xFF x 9 | id (16 bytes BE)`. Cell keys
/// have a namespace length of 1..=64 at byte 8, so none starts this way.
pub const OP_KEY_PREFIX: [u8; 9] = [0xFF; 9];
/// Length of an op id's system key.
pub const OP_KEY_BYTES: usize = OP_KEY_PREFIX.len() + 16;
/// What an op id's system key holds (a format version, for later).
pub const OP_VALUE: [u8; 1] = [1];

/// The system key recording that `id` was applied.
pub fn op_key(id: u128) -> [u8; OP_KEY_BYTES] {
    let mut key = [0xFF; OP_KEY_BYTES];
    key[OP_KEY_PREFIX.len()..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The op id of a system key written by [`op_key`].
pub fn op_of_key(key: &[u8]) -> Option<u128> {
    let id = key.strip_prefix(&OP_KEY_PREFIX[..])?;
    Some(u128::from_be_bytes(id.try_into().ok()?))
}

/// Byte 9 of a led-op record's key ([`led_op_key`]); an op id's own key
/// has the top byte of a millisecond time there, 0 for millennia.
const LED_OP_MARK: u8 = 0xFE;
/// Length of a led-op record's key.
pub const LED_OP_KEY_BYTES: usize = OP_KEY_PREFIX.len() + 1 + 8 + 16;
/// What a led-op record holds: an empty shard set, so that every path a
/// cell state takes (replication, hints, merges) carries it unchanged.
pub const LED_OP_VALUE: [u8; 2] = [0, 0];

/// The system key under which a replica records that host `leader`
/// applied op id `id`: `0xFF x 9 | 0xFE | leader (8 bytes BE) | id (16
/// bytes BE)`. The leader sends these records with the states the op
/// raised, so that a leader whose own record was lost (a power loss in
/// `periodic` mode) can learn it back ([`led_op_prefix`]).
pub fn led_op_key(leader: u64, id: u128) -> [u8; LED_OP_KEY_BYTES] {
    let mut key = [0xFF; LED_OP_KEY_BYTES];
    let at = OP_KEY_PREFIX.len();
    key[at] = LED_OP_MARK;
    key[at + 1..at + 9].copy_from_slice(&leader.to_be_bytes());
    key[at + 9..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The prefix of every led-op record of host `leader`.
pub fn led_op_prefix(leader: u64) -> Vec<u8> {
    led_op_key(leader, 0)[..OP_KEY_PREFIX.len() + 9].to_vec()
}

/// The leader and op id of a led-op record's key.
pub fn led_op_of_key(key: &[u8]) -> Option<(u64, u128)> {
    let rest = key.strip_prefix(&OP_KEY_PREFIX[..])?;
    let (&mark, rest) = rest.split_first()?;
    if mark != LED_OP_MARK || rest.len() != 24 {
        return None;
    }
    let leader = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let id = u128::from_be_bytes(rest[8..].try_into().ok()?);
    Some((leader, id))
}

/// The op ids applied here that are still live.
#[derive(Debug)]
pub struct OpWindow {
    limits: OpWindowLimits,
    ids: HashSet<u128>,
    /// The ids in the order they were added, for expiry. Nearly in time
    /// order (clients' clocks differ a little), so expiry from the front
    /// may keep an id slightly past its span: harmless, as liveness is
    /// checked from the id itself before the window is asked.
    arrivals: VecDeque<u128>,
}

/// The window holds `max_ids` live ids already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull;

impl OpWindow {
    /// The window of the op ids recorded in `db` that are live at
    /// `now_ms` (the store opening).
    pub fn load(db: &Db, limits: OpWindowLimits, now_ms: i64) -> tally_storage::Result<OpWindow> {
        let mut window = OpWindow::new(limits);
        let mut ids = Vec::new();
        db.scan_with(&OP_KEY_PREFIX, None, |k, _| {
            if let Some(id) = op_of_key(k) {
                if limits.is_live(id, now_ms, i64::MAX) {
                    ids.push(id);
                }
            }
            true
        })?;
        // In time order, so that they expire from the front.
        ids.sort_unstable_by_key(|&id| made_ms(id));
        for id in ids {
            // Past the bound too (it may have been lowered): forgetting a live
            // id could count its retry twice; new ids wait for room instead.
            window.restore(id);
        }
        Ok(window)
    }

    /// An empty window.
    pub fn new(limits: OpWindowLimits) -> OpWindow {
        OpWindow {
            limits,
            ids: HashSet::new(),
            arrivals: VecDeque::new(),
        }
    }

    /// The limits it keeps.
    pub fn limits(&self) -> OpWindowLimits {
        self.limits
    }

    /// Live ids held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` was applied here.
    pub fn contains(&self, id: u128) -> bool {
        self.ids.contains(&id)
    }

    /// Room for `n` more ids (after [`OpWindow::expire`]).
    pub fn has_room(&self, n: usize) -> bool {
        self.ids.len().saturating_add(n) <= self.limits.max_ids
    }

    /// Records `id` as applied.
    pub fn insert(&mut self, id: u128) -> Result<(), WindowFull> {
        if self.ids.contains(&id) {
            return Ok(());
        }
        if !self.has_room(1) {
            return Err(WindowFull);
        }
        self.ids.insert(id);
        self.arrivals.push_back(id);
        Ok(())
    }

    /// Records `id` as applied, past the bound if need be (ids read back
    /// from disk at open: none may be forgotten while live).
    pub fn restore(&mut self, id: u128) {
        if self.ids.insert(id) {
            self.arrivals.push_back(id);
        }
    }

    /// Forgets the ids that are no longer live at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let span = self.limits.span.as_millis() as i64;
        while let Some(&front) = self.arrivals.front() {
            if made_ms(front).saturating_add(span) >= now_ms {
                break;
            }
            self.arrivals.pop_front();
            self.ids.remove(&front);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn id_made_at(ms: i64, random: u128) -> u128 {
        ((ms as u128) << 80) | (random & ((1 << 80) - 1))
    }

    #[test]
    fn an_op_id_is_live_from_its_making_for_the_span() {
        let limits = OpWindowLimits {
            span: Duration::from_secs(600),
            max_ids: 10,
        };
        let id = id_made_at(1_000_000, 7);
        assert_eq!(made_ms(id), 1_000_000);
        assert!(limits.is_live(id, 1_000_000, 0));
        assert!(limits.is_live(id, 1_600_000, 0));
        assert!(!limits.is_live(id, 1_600_001, 0));
        // Ahead of the node's clock: live within the skew allowed.
        assert!(limits.is_live(id, 999_000, 1_000));
        assert!(!limits.is_live(id, 998_999, 1_000));
        // A random (not time-ordered) id is nowhere near now.
        assert!(!limits.is_live(u128::MAX, 1_700_000_000_000, 300_000));
    }

    #[test]
    fn a_full_window_refuses_new_ids_and_keeps_the_live_ones() {
        let mut w = OpWindow::new(OpWindowLimits {
            span: Duration::from_millis(100),
            max_ids: 2,
        });
        w.insert(id_made_at(10, 1)).unwrap();
        w.insert(id_made_at(20, 2)).unwrap();
        assert_eq!(w.insert(id_made_at(30, 3)), Err(WindowFull));
        // Inserting a held id again is not a new id.
        assert_eq!(w.insert(id_made_at(20, 2)), Ok(()));
        w.expire(110);
        assert!(w.contains(id_made_at(10, 1)), "live until 110 inclusive");
        w.expire(111);
        assert!(!w.contains(id_made_at(10, 1)));
        assert!(w.contains(id_made_at(20, 2)));
        w.insert(id_made_at(30, 3)).unwrap();
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn op_keys_round_trip_and_never_look_like_cells() {
        let id = id_made_at(1_700_000_000_000, 0xABCDEF);
        let key = op_key(id);
        assert_eq!(op_of_key(&key), Some(id));
        assert_eq!(op_of_key(&key[..OP_KEY_BYTES - 1]), None);
        assert_eq!(crate::counter::cell_key::decode(&key), None);
        assert!(!crate::counter::cell_key::is_valid(&key));
        assert_eq!(crate::counter::cell_key::token_of(&key), None);
    }

    proptest! {
        /// Against a model that remembers every id forever: the window
        /// holds exactly the inserted ids that are still live (given ids
        /// inserted in time order), and never more than its bound.
        #[test]
        fn the_window_holds_the_live_inserted_ids(
            steps in proptest::collection::vec((0i64..50, any::<u16>(), any::<bool>()), 1..200),
        ) {
            let limits = OpWindowLimits { span: Duration::from_millis(200), max_ids: 64 };
            let mut w = OpWindow::new(limits);
            let mut inserted: Vec<u128> = Vec::new();
            let mut now = 0i64;
            for (advance, random, insert) in steps {
                now += advance;
                w.expire(now);
                let id = id_made_at(now, u128::from(random));
                if insert {
                    match w.insert(id) {
                        Ok(()) => inserted.push(id),
                        Err(WindowFull) => prop_assert_eq!(w.len(), limits.max_ids),
                    }
                }
                prop_assert!(w.len() <= limits.max_ids);
                for &old in &inserted {
                    let live = made_ms(old) + 200 >= now;
                    prop_assert_eq!(w.contains(old), live, "id made at {} at {}", made_ms(old), now);
                }
            }
        }
    }

    #[test]
    fn led_op_keys_round_trip_and_never_pass_for_cells_or_own_records() {
        let id = (1_800_000_000_000u128 << 80) | 12345;
        let key = led_op_key(7, id);
        assert_eq!(led_op_of_key(&key), Some((7, id)));
        assert!(key.starts_with(&led_op_prefix(7)));
        assert!(!key.starts_with(&led_op_prefix(8)));
        assert!(crate::counter::cell_key::is_system(&key));
        assert!(!crate::counter::cell_key::is_valid(&key));
        assert_eq!(op_of_key(&key), None);
        assert_eq!(led_op_of_key(&op_key(id)), None);
        assert_eq!(led_op_of_key(&key[..key.len() - 1]), None);
    }
}
