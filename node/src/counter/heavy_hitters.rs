//! [`HeavyHitters`]: a bounded summary of the keys with the largest
//! counts (Metwally et al.'s space-saving), for "what is trending": each
//! node keeps one per namespace and bucket for the increments it leads,
//! and a query merges the nodes' summaries to pick candidates whose exact
//! counts it then reads.
//!
//! A summary holds at most `capacity` keys, each with an upper bound on
//! its count (`count`) and how much of that may be overestimate
//! (`error`): the key's true count lies in `[count - error, count]`. A
//! key not held has a true count of at most [`HeavyHitters::floor`],
//! which is never above a held key's count. Adding a key not held when
//! full evicts the smallest and takes its count as error, so every key
//! whose count exceeds `total / capacity` is held.
//!
//! Merging two summaries adds the bounds key by key, a key missing from
//! one taking that one's floor, then keeps the `capacity` largest. So a
//! merged summary's bounds stay bounds, and a key whose true count across
//! the nodes exceeds the sum of their floors is held: that is the
//! guarantee a query states.

use std::collections::HashMap;
use std::sync::Arc;

/// One key's bounds in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Upper bound of the key's count.
    pub count: u64,
    /// How much of `count` may be overestimate.
    pub error: u64,
}

impl Bounds {
    /// The least the key can have counted.
    pub fn lower(&self) -> u64 {
        self.count - self.error.min(self.count)
    }
}

/// A space-saving summary (see the module docs).
///
/// The held keys form a min-heap by count, each key's heap slot kept in
/// a map, so that counting a held key, and evicting the smallest for a
/// new one, take O(log capacity): the leader's write path counts every
/// cell it raises, and a skewed stream's tail is mostly keys not held.
#[derive(Debug, Clone)]
pub struct HeavyHitters {
    capacity: usize,
    /// Each held key's slot in `heap`.
    slots: HashMap<Arc<[u8]>, usize>,
    /// The held keys, smallest count first.
    heap: Vec<(Bounds, Arc<[u8]>)>,
    /// The most a key not held can have counted; never above a held
    /// key's count.
    absent: u64,
}

impl HeavyHitters {
    /// An empty summary keeping at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> HeavyHitters {
        HeavyHitters {
            capacity: capacity.max(1),
            slots: HashMap::new(),
            heap: Vec::new(),
            absent: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The most keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most a key not held can have counted (0 until a key was
    /// evicted or a merge cut or missed one).
    pub fn floor(&self) -> u64 {
        self.absent
    }

    /// A held key's bounds.
    pub fn get(&self, key: &[u8]) -> Option<Bounds> {
        self.slots.get(key).map(|&i| self.heap[i].0)
    }

    /// Bytes held, about: what the memory bound counts.
    pub fn bytes(&self) -> usize {
        self.heap.iter().map(|(_, k)| k.len() + 64).sum()
    }

    /// Counts `delta` more for `key`.
    pub fn add(&mut self, key: &[u8], delta: u64) {
        if let Some(&i) = self.slots.get(key) {
            let b = &mut self.heap[i].0;
            b.count = b.count.saturating_add(delta);
            self.sift_down(i);
            return;
        }
        if self.heap.len() < self.capacity {
            // Counted at most `absent` before, unseen.
            let base = self.absent;
            let key: Arc<[u8]> = Arc::from(key);
            self.slots.insert(key.clone(), self.heap.len());
            self.heap.push((
                Bounds {
                    count: base.saturating_add(delta),
                    error: base,
                },
                key,
            ));
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the smallest makes room, and its count is the most the
        // newcomer can have counted before.
        let floor = self.heap[0].0.count;
        let key: Arc<[u8]> = Arc::from(key);
        let (_, old) = std::mem::replace(
            &mut self.heap[0],
            (
                Bounds {
                    count: floor.saturating_add(delta),
                    error: floor,
                },
                key.clone(),
            ),
        );
        self.slots.remove(&old);
        self.slots.insert(key, 0);
        self.absent = self.absent.max(floor);
        self.sift_down(0);
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        for at in [i, j] {
            if let Some(slot) = self.slots.get_mut(&self.heap[at].1) {
                *slot = at;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0.count <= self.heap[i].0.count {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            for c in [l, r] {
                if c < self.heap.len() && self.heap[c].0.count < self.heap[smallest].0.count {
                    smallest = c;
                }
            }
            if smallest == i {
                return;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }

    /// Merges `other` in (see the module docs).
    pub fn merge(&mut self, other: &HeavyHitters) {
        let mut merger = Merger::default();
        merger.add(self);
        merger.add(other);
        *self = merger.finish(self.capacity);
    }

    /// Holds exactly `entries` (at most `capacity`), with floor `absent`.
    fn rebuild(&mut self, mut entries: Vec<(Bounds, Arc<[u8]>)>, absent: u64) {
        entries.truncate(self.capacity);
        // Largest first is a valid max-heap; reversed, a valid min-heap.
        entries.sort_by(|a, b| a.0.count.cmp(&b.0.count).then_with(|| a.1.cmp(&b.1)));
        self.slots = entries
            .iter()
            .enumerate()
            .map(|(i, (_, k))| (k.clone(), i))
            .collect();
        self.heap = entries;
        self.absent = absent;
    }

    /// The held keys, largest upper bound first.
    pub fn top(&self, n: usize) -> Vec<(Vec<u8>, Bounds)> {
        let mut all: Vec<(Vec<u8>, Bounds)> =
            self.heap.iter().map(|(b, k)| (k.to_vec(), *b)).collect();
        all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// The `n` largest held keys as a summary of its own, whose floor also
    /// bounds the keys cut: what a node sends a query.
    pub fn truncated(&self, n: usize) -> HeavyHitters {
        let top = self.top(n.max(1));
        let cut = if self.len() > top.len() {
            top.last().map_or(0, |(_, b)| b.count)
        } else {
            0
        };
        let mut s = HeavyHitters::new(top.len().max(1));
        let entries = top
            .into_iter()
            .map(|(k, b)| (b, Arc::from(k.as_slice())))
            .collect();
        s.rebuild(entries, self.absent.max(cut));
        s
    }

    /// A summary from its parts (decoded from the wire): `None` if a key
    /// repeats or a bound is inconsistent (an error above its count, a
    /// count below the floor).
    pub fn from_parts(entries: Vec<(Vec<u8>, Bounds)>, floor: u64) -> Option<HeavyHitters> {
        let mut s = HeavyHitters::new(entries.len().max(1));
        let mut seen = std::collections::HashSet::new();
        let mut held = Vec::with_capacity(entries.len());
        for (k, b) in entries {
            if b.error > b.count || b.count < floor || !seen.insert(k.clone()) {
                return None;
            }
            held.push((b, Arc::from(k.as_slice())));
        }
        s.rebuild(held, floor);
        Some(s)
    }
}

/// The merge of any number of summaries in one pass (a query merges a
/// window's buckets, then the nodes'): a key's bounds are the sum, over
/// the summaries, of its bounds where held and of the floor where not.
#[derive(Debug, Default)]
pub struct Merger {
    /// The sum of every summary's floor.
    floors: u64,
    /// Per key held anywhere: the sums, over the summaries holding it, of
    /// its count, its error and their floors.
    held: HashMap<Arc<[u8]>, (u64, u64, u64)>,
}

impl Merger {
    /// Adds a summary.
    pub fn add(&mut self, s: &HeavyHitters) {
        self.floors = self.floors.saturating_add(s.absent);
        for (b, key) in &s.heap {
            let e = self.held.entry(key.clone()).or_default();
            e.0 = e.0.saturating_add(b.count);
            e.1 = e.1.saturating_add(b.error);
            e.2 = e.2.saturating_add(s.absent);
        }
    }

    /// The merged summary, of at most `capacity` keys.
    pub fn finish(self, capacity: usize) -> HeavyHitters {
        let floors = self.floors;
        let mut all: Vec<(Bounds, Arc<[u8]>)> = self
            .held
            .into_iter()
            .map(|(key, (count, error, held_floors))| {
                // Where not held, a summary adds its floor to both bounds.
                let elsewhere = floors.saturating_sub(held_floors);
                let b = Bounds {
                    count: count.saturating_add(elsewhere),
                    error: error.saturating_add(elsewhere),
                };
                (b, key)
            })
            .collect();
        all.sort_by(|a, b| b.0.count.cmp(&a.0.count).then_with(|| a.1.cmp(&b.1)));
        let mut merged = HeavyHitters::new(capacity);
        let dropped = all.get(merged.capacity).map_or(0, |(b, _)| b.count);
        all.truncate(merged.capacity);
        // Not held now: keys held nowhere (at most every floor) and the
        // ones cut (at most the largest cut).
        merged.rebuild(all, floors.max(dropped));
        merged
    }
}

impl PartialEq for HeavyHitters {
    fn eq(&self, other: &HeavyHitters) -> bool {
        self.capacity == other.capacity
            && self.absent == other.absent
            && self.top(usize::MAX) == other.top(usize::MAX)
    }
}

impl Eq for HeavyHitters {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(stream: &[(u8, u64)]) -> HashMap<Vec<u8>, u64> {
        let mut counts = HashMap::new();
        for (k, d) in stream {
            *counts.entry(vec![*k]).or_insert(0) += d;
        }
        counts
    }

    fn summary(stream: &[(u8, u64)], capacity: usize) -> HeavyHitters {
        let mut s = HeavyHitters::new(capacity);
        for (k, d) in stream {
            s.add(&[*k], *d);
        }
        s
    }

    fn stream() -> impl Strategy<Value = Vec<(u8, u64)>> {
        proptest::collection::vec((0u8..60, 1u64..20), 0..400)
    }

    /// Every held key's true count is within its bounds, and every key
    /// not held counted at most the floor.
    fn sound(s: &HeavyHitters, truth: &HashMap<Vec<u8>, u64>) -> Result<(), String> {
        for (key, t) in truth {
            match s.get(key) {
                Some(b) if b.count - b.error <= *t && *t <= b.count => {}
                Some(b) => return Err(format!("{key:?}: true {t}, bounds {b:?}")),
                None if *t <= s.floor() => {}
                None => return Err(format!("{key:?}: true {t} above the floor {}", s.floor())),
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn a_truncated_summary_keeps_its_bounds(s in stream(), capacity in 1usize..20, n in 1usize..10) {
            let truth = exact(&s);
            let t = summary(&s, capacity).truncated(n);
            prop_assert!(t.len() <= n);
            prop_assert_eq!(sound(&t, &truth), Ok(()));
            let parts = t.top(usize::MAX);
            prop_assert_eq!(HeavyHitters::from_parts(parts, t.floor()), Some(t));
        }

        #[test]
        fn bounds_hold_on_one_node(s in stream(), capacity in 1usize..20) {
            let truth = exact(&s);
            let summary = summary(&s, capacity);
            prop_assert!(summary.len() <= capacity);
            prop_assert_eq!(sound(&summary, &truth), Ok(()));
        }

        #[test]
        fn merging_many_at_once_keeps_the_bounds(a in stream(), b in stream(), c in stream(), capacity in 1usize..20) {
            let mut merger = Merger::default();
            for s in [&a, &b, &c] {
                merger.add(&summary(s, capacity));
            }
            let merged = merger.finish(capacity * 2);
            let all: Vec<(u8, u64)> = a.iter().chain(&b).chain(&c).copied().collect();
            prop_assert!(merged.len() <= capacity * 2);
            prop_assert_eq!(sound(&merged, &exact(&all)), Ok(()));
        }

        #[test]
        fn bounds_hold_after_merging_nodes(a in stream(), b in stream(), c in stream(), capacity in 1usize..20) {
            let mut merged = summary(&a, capacity);
            merged.merge(&summary(&b, capacity));
            merged.merge(&summary(&c, capacity));
            let all: Vec<(u8, u64)> = a.iter().chain(&b).chain(&c).copied().collect();
            prop_assert!(merged.len() <= capacity);
            prop_assert_eq!(sound(&merged, &exact(&all)), Ok(()));
        }
    }

    #[test]
    fn a_zipf_stream_keeps_its_heaviest_keys() {
        // Three nodes' streams of a skewed key set; the top 10 by exact
        // count are all among the merged summary's top 40 candidates.
        let mut rng_state = 7u64;
        let mut next = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let mut nodes = [
            HeavyHitters::new(100),
            HeavyHitters::new(100),
            HeavyHitters::new(100),
        ];
        let mut truth: HashMap<Vec<u8>, u64> = HashMap::new();
        for _ in 0..60_000 {
            // Roughly 1/rank over 5,000 keys.
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let key = (5_000f64.powf(u) as u32).to_le_bytes().to_vec();
            let node = (next() % 3) as usize;
            nodes[node].add(&key, 1);
            *truth.entry(key).or_insert(0) += 1;
        }
        let mut merged = nodes[0].clone();
        merged.merge(&nodes[1]);
        merged.merge(&nodes[2]);
        let candidates: Vec<Vec<u8>> = merged.top(40).into_iter().map(|(k, _)| k).collect();
        let mut exact: Vec<(Vec<u8>, u64)> = truth.into_iter().collect();
        exact.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (key, count) in exact.iter().take(10) {
            assert!(
                candidates.contains(key),
                "{key:?} ({count}) missing from the candidates"
            );
        }
    }
}
