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

/// One key's bounds in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Upper bound of the key's count.
    pub count: u64,
    /// How much of `count` may be overestimate.
    pub error: u64,
}

/// A space-saving summary (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeavyHitters {
    capacity: usize,
    keys: HashMap<Vec<u8>, Bounds>,
    /// The most a key not held can have counted; never above a held
    /// key's count.
    absent: u64,
}

impl HeavyHitters {
    /// An empty summary keeping at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> HeavyHitters {
        HeavyHitters {
            capacity: capacity.max(1),
            keys: HashMap::new(),
            absent: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The most a key not held can have counted (0 until a key was
    /// evicted or a merge cut or missed one).
    pub fn floor(&self) -> u64 {
        self.absent
    }

    /// A held key's bounds.
    pub fn get(&self, key: &[u8]) -> Option<Bounds> {
        self.keys.get(key).copied()
    }

    /// Counts `delta` more for `key`.
    pub fn add(&mut self, key: &[u8], delta: u64) {
        if let Some(b) = self.keys.get_mut(key) {
            b.count = b.count.saturating_add(delta);
            return;
        }
        if self.keys.len() < self.capacity {
            // Counted at most `absent` before, unseen.
            let base = self.absent;
            self.keys.insert(
                key.to_vec(),
                Bounds {
                    count: base.saturating_add(delta),
                    error: base,
                },
            );
            return;
        }
        let Some((smallest, floor)) = self
            .keys
            .iter()
            .min_by(|a, b| a.1.count.cmp(&b.1.count).then_with(|| a.0.cmp(b.0)))
            .map(|(k, b)| (k.clone(), b.count))
        else {
            return;
        };
        self.keys.remove(&smallest);
        self.absent = self.absent.max(floor);
        self.keys.insert(
            key.to_vec(),
            Bounds {
                count: floor.saturating_add(delta),
                error: floor,
            },
        );
    }

    /// Merges `other` in (see the module docs).
    pub fn merge(&mut self, other: &HeavyHitters) {
        let (mine, theirs) = (self.floor(), other.floor());
        let mut merged: HashMap<Vec<u8>, Bounds> = HashMap::new();
        for (key, b) in &self.keys {
            let o = other.get(key).unwrap_or(Bounds {
                count: theirs,
                error: theirs,
            });
            merged.insert(
                key.clone(),
                Bounds {
                    count: b.count.saturating_add(o.count),
                    error: b.error.saturating_add(o.error),
                },
            );
        }
        for (key, o) in &other.keys {
            merged.entry(key.clone()).or_insert(Bounds {
                count: o.count.saturating_add(mine),
                error: o.error.saturating_add(mine),
            });
        }
        let mut all: Vec<(Vec<u8>, Bounds)> = merged.into_iter().collect();
        all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let dropped = all.get(self.capacity).map_or(0, |(_, b)| b.count);
        all.truncate(self.capacity);
        // Not held now: keys held nowhere (at most both floors) and the
        // ones cut (at most the largest cut).
        self.absent = mine.saturating_add(theirs).max(dropped);
        self.keys = all.into_iter().collect();
    }

    /// The held keys, largest upper bound first.
    pub fn top(&self, n: usize) -> Vec<(Vec<u8>, Bounds)> {
        let mut all: Vec<(Vec<u8>, Bounds)> =
            self.keys.iter().map(|(k, b)| (k.clone(), *b)).collect();
        all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

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
        fn bounds_hold_on_one_node(s in stream(), capacity in 1usize..20) {
            let truth = exact(&s);
            let summary = summary(&s, capacity);
            prop_assert!(summary.len() <= capacity);
            prop_assert_eq!(sound(&summary, &truth), Ok(()));
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
