//! [`CellBatch`]: cell states held in one buffer, as a `ReplicaWrite`
//! carries them.
//!
//! Why: a replica decodes a message of a few cells to thousands, and
//! with a `Vec` per key and per value the allocations (and their frees
//! after the merge) were a visible share of a replica's CPU per cell.
//! Here the keys and values sit back to back in one buffer and a cell is
//! three offsets: two allocations a message, however many cells.

use super::types::CellState;

/// Cell states (key, encoded shard set) in one buffer, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CellBatch {
    bytes: Vec<u8>,
    /// Per cell: where its key starts, where its value starts (the key's
    /// end), where its value ends.
    spans: Vec<(u32, u32, u32)>,
}

impl CellBatch {
    /// An empty batch with room for `cells` cells of `bytes` bytes.
    pub fn with_capacity(cells: usize, bytes: usize) -> CellBatch {
        CellBatch {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(cells),
        }
    }

    /// Appends a cell.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let middle = self.bytes.len();
        self.bytes.extend_from_slice(value);
        // A batch is at most a frame (well under 4 GiB).
        self.spans
            .push((start as u32, middle as u32, self.bytes.len() as u32));
    }

    /// How many cells.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds no cell.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The cells as (key, value), in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(start, middle, end)| {
            (
                &self.bytes[start as usize..middle as usize],
                &self.bytes[middle as usize..end as usize],
            )
        })
    }

    /// Bytes of keys and values.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The cells as owned states.
    pub fn to_cells(&self) -> Vec<CellState> {
        self.iter()
            .map(|(key, value)| CellState {
                key: key.to_vec(),
                value: value.to_vec(),
            })
            .collect()
    }
}

impl<'a> FromIterator<&'a CellState> for CellBatch {
    fn from_iter<I: IntoIterator<Item = &'a CellState>>(cells: I) -> CellBatch {
        let mut batch = CellBatch::default();
        for cell in cells {
            batch.push(&cell.key, &cell.value);
        }
        batch
    }
}

impl From<&[CellState]> for CellBatch {
    fn from(cells: &[CellState]) -> CellBatch {
        let bytes = cells.iter().map(|c| c.key.len() + c.value.len()).sum();
        let mut batch = CellBatch::with_capacity(cells.len(), bytes);
        for cell in cells {
            batch.push(&cell.key, &cell.value);
        }
        batch
    }
}

impl From<Vec<CellState>> for CellBatch {
    fn from(cells: Vec<CellState>) -> CellBatch {
        CellBatch::from(cells.as_slice())
    }
}

impl std::fmt::Debug for CellBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(key, value)| CellState {
                key: key.to_vec(),
                value: value.to_vec(),
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_batch_gives_back_the_cells_it_was_made_of(
            cells in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(key, value)| CellState { key, value }),
                0..30,
            )
        ) {
            let batch = CellBatch::from(cells.clone());
            prop_assert_eq!(batch.len(), cells.len());
            prop_assert_eq!(batch.is_empty(), cells.is_empty());
            prop_assert_eq!(batch.to_cells(), cells.clone());
            prop_assert_eq!(batch.clone(), cells.iter().collect::<CellBatch>());
            prop_assert_eq!(
                batch.payload_bytes(),
                cells.iter().map(|c| c.key.len() + c.value.len()).sum::<usize>()
            );
        }
    }
}
