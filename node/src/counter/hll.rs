//! [`Sketch`]: a HyperLogLog distinct-count sketch, the cell value of
//! distinct namespaces (unique viewers per bucket).
//!
//! Why HyperLogLog: it is a CRDT, as counter cells are. Merging two
//! sketches takes each register's maximum, which is commutative,
//! associative and idempotent, so replicas, hints, read repair and
//! anti-entropy may send the same sketch any number of times in any
//! order, and adding a member twice changes nothing (a retry is safe
//! without an op id). A union over a range (unique viewers over 7 days)
//! is the merge of the buckets' sketches, not a sum of their estimates.
//!
//! Members are hashed with XXH64 (seed [`MEMBER_SEED`]): the top
//! `precision` bits pick a register, the rank of the rest (leading zeros
//! plus one) is the register's candidate value.
//!
//! Two forms, the same sketch:
//!
//! - **Sparse**, while few registers are set: sorted entries of a finer
//!   index (25 bits) and its rank, 4 bytes each. A cold key costs a few
//!   bytes, and the finer index makes small counts nearly exact (linear
//!   counting over 2^25 slots).
//! - **Dense**, once the entries would pass an eighth of the dense size:
//!   one byte per register (16 KiB at precision 14).
//!
//! The estimate of a dense sketch is Ertl's improved raw estimator
//! ("New cardinality estimation algorithms for HyperLogLog sketches",
//! 2017): no bias tables, no switch to linear counting, and a relative
//! standard error of about 1.04 / sqrt(2^precision) (0.81% at 14)
//! across the range.
//!
//! Encoding (little-endian): `b'H'`, `precision: u8`, `form: u8` (0
//! sparse, 1 dense), then sparse: `count: u32` and `count` entries
//! `index25 << 6 | rank: u32`, strictly ascending by index; dense:
//! `2^precision` register bytes. [`Sketch::decode`] checks all of it, so a
//! damaged sketch is refused with a [`SketchError`], never merged.

use tally_client::token::xxh64;

/// The seed members are hashed with.
pub const MEMBER_SEED: u64 = 0x7461_6c6c_7968_6c6c; // "tallyhll"
/// Precision of distinct namespaces unless configured (16,384 registers).
pub const DEFAULT_PRECISION: u8 = 14;
/// Smallest and largest precision accepted.
pub const PRECISIONS: std::ops::RangeInclusive<u8> = 4..=18;
/// Index bits of sparse entries.
const SPARSE_BITS: u8 = 25;
const MAGIC: u8 = b'H';

/// Why bytes are not a sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    /// Not a sketch at all.
    #[error("not a distinct-count sketch (first byte {0:#04x})")]
    NotASketch(u8),
    /// A precision outside [`PRECISIONS`].
    #[error("precision {0} is outside 4..=18")]
    Precision(u8),
    /// The bytes do not have the length their header says.
    #[error("{form} sketch of precision {precision}: {got} bytes where {expected} were expected")]
    Length {
        /// `sparse` or `dense`.
        form: &'static str,
        /// Its precision.
        precision: u8,
        /// Bytes present.
        got: usize,
        /// Bytes the header implies.
        expected: usize,
    },
    /// An unknown form byte.
    #[error("unknown sketch form {0}")]
    Form(u8),
    /// A register or entry out of range, or entries out of order.
    #[error("corrupt sketch: {0}")]
    Corrupt(String),
}

/// A HyperLogLog sketch (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sketch {
    precision: u8,
    form: Form,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// `index25 << 6 | rank`, ascending by index, one per index.
    Sparse(Vec<u32>),
    /// One register per byte.
    Dense(Vec<u8>),
}

/// The register index (top `bits` bits) and rank of a hash.
fn index_and_rank(hash: u64, bits: u8) -> (u32, u8) {
    let index = (hash >> (64 - u32::from(bits))) as u32;
    let rest = hash << bits;
    let max_rank = 64 - bits + 1;
    let rank = (rest.leading_zeros() as u8 + 1).min(max_rank);
    (index, rank)
}

impl Sketch {
    /// An empty sketch of `precision` (clamped to [`PRECISIONS`]).
    pub fn new(precision: u8) -> Sketch {
        Sketch {
            precision: precision.clamp(*PRECISIONS.start(), *PRECISIONS.end()),
            form: Form::Sparse(Vec::new()),
        }
    }

    /// Its precision.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Whether it is still in the sparse form.
    pub fn is_sparse(&self) -> bool {
        matches!(self.form, Form::Sparse(_))
    }

    fn registers(&self) -> usize {
        1 << self.precision
    }

    /// Adds a member (its bytes).
    pub fn add(&mut self, member: &[u8]) {
        self.add_hash(xxh64(MEMBER_SEED, member));
    }

    /// Adds a member by its hash.
    pub fn add_hash(&mut self, hash: u64) {
        match &mut self.form {
            Form::Sparse(entries) => {
                let (index, rank) = index_and_rank(hash, SPARSE_BITS);
                let entry = index << 6 | u32::from(rank);
                match entries.binary_search_by_key(&index, |e| e >> 6) {
                    Ok(i) => {
                        if entries[i] & 63 < u32::from(rank) {
                            entries[i] = entry;
                        }
                    }
                    Err(i) => entries.insert(i, entry),
                }
                self.densify_if_large();
            }
            Form::Dense(registers) => {
                let (index, rank) = index_and_rank(hash, self.precision);
                let r = &mut registers[index as usize];
                *r = (*r).max(rank);
            }
        }
    }

    /// Turns sparse into dense once its entries would take more than an
    /// eighth of the dense bytes.
    fn densify_if_large(&mut self) {
        if let Form::Sparse(entries) = &self.form {
            if entries.len() * 4 > self.registers() / 8 {
                self.form = Form::Dense(self.dense_registers());
            }
        }
    }

    /// The registers at this sketch's precision, whatever its form.
    fn dense_registers(&self) -> Vec<u8> {
        match &self.form {
            Form::Dense(registers) => registers.clone(),
            Form::Sparse(entries) => {
                let mut registers = vec![0u8; self.registers()];
                for &e in entries {
                    let (index, rank) = coarse(e, self.precision);
                    if let Some(r) = registers.get_mut(index) {
                        *r = (*r).max(rank);
                    }
                }
                registers
            }
        }
    }

    /// The registers folded to a coarser `precision`: register `i` of
    /// `p - 1` is the larger of `2i` and `2i + 1`'s ranks as seen at `p - 1`.
    fn folded(&self, precision: u8) -> Vec<u8> {
        let mut registers = self.dense_registers();
        let mut p = self.precision;
        while p > precision {
            let next: Vec<u8> = registers
                .chunks(2)
                .map(|pair| {
                    // The low index bit moves into the rank: an odd
                    // index had a 1 there (rank 1), an even one a 0.
                    let even = if pair[0] == 0 { 0 } else { pair[0] + 1 };
                    let odd = if pair[1] == 0 { 0 } else { 1 };
                    even.max(odd)
                })
                .collect();
            registers = next;
            p -= 1;
        }
        registers
    }

    /// Merges `other` in (each register's maximum; two sparse sketches
    /// stay sparse while small). Sketches of different precisions merge
    /// at the coarser one.
    pub fn merge(&mut self, other: &Sketch) {
        if other.precision < self.precision {
            let registers = self.folded(other.precision);
            *self = Sketch {
                precision: other.precision,
                form: Form::Dense(registers),
            };
        }
        match (&mut self.form, &other.form) {
            (Form::Sparse(mine), Form::Sparse(theirs)) if self.precision == other.precision => {
                let mut merged = Vec::with_capacity(mine.len() + theirs.len());
                let (mut i, mut j) = (0, 0);
                while i < mine.len() || j < theirs.len() {
                    let a = mine.get(i).copied();
                    let b = theirs.get(j).copied();
                    match (a, b) {
                        (Some(x), Some(y)) if x >> 6 == y >> 6 => {
                            merged.push(x.max(y));
                            i += 1;
                            j += 1;
                        }
                        (Some(x), Some(y)) if x >> 6 < y >> 6 => {
                            merged.push(x);
                            i += 1;
                        }
                        (Some(_), Some(y)) | (None, Some(y)) => {
                            merged.push(y);
                            j += 1;
                        }
                        (Some(x), None) => {
                            merged.push(x);
                            i += 1;
                        }
                        (None, None) => break,
                    }
                }
                *mine = merged;
                self.densify_if_large();
            }
            _ => {
                let theirs = if other.precision == self.precision {
                    other.dense_registers()
                } else {
                    other.folded(self.precision)
                };
                let mut registers = self.dense_registers();
                for (r, t) in registers.iter_mut().zip(theirs) {
                    *r = (*r).max(t);
                }
                self.form = Form::Dense(registers);
            }
        }
    }

    /// The estimated number of distinct members added.
    pub fn estimate(&self) -> f64 {
        match &self.form {
            Form::Sparse(entries) => {
                // Linear counting over the 2^25 fine slots: exact but for
                // collisions, which are rare at these sizes.
                let slots = f64::from(1u32 << SPARSE_BITS);
                let empty = slots - entries.len() as f64;
                slots * (slots / empty).ln()
            }
            Form::Dense(registers) => ertl(registers, self.precision),
        }
    }

    /// The bytes of the sketch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MAGIC, self.precision];
        match &self.form {
            Form::Sparse(entries) => {
                out.reserve(5 + entries.len() * 4);
                out.push(0);
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for e in entries {
                    out.extend_from_slice(&e.to_le_bytes());
                }
            }
            Form::Dense(registers) => {
                out.push(1);
                out.extend_from_slice(registers);
            }
        }
        out
    }

    /// Reads a sketch, checking every byte of it.
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let [magic, precision, form, body @ ..] = bytes else {
            return Err(SketchError::Length {
                form: "any",
                precision: 0,
                got: bytes.len(),
                expected: 3,
            });
        };
        if *magic != MAGIC {
            return Err(SketchError::NotASketch(*magic));
        }
        let precision = *precision;
        if !PRECISIONS.contains(&precision) {
            return Err(SketchError::Precision(precision));
        }
        match form {
            0 => {
                let count = body
                    .get(..4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                    .unwrap_or(usize::MAX);
                let expected = count.saturating_mul(4).saturating_add(4);
                if body.len() != expected {
                    return Err(SketchError::Length {
                        form: "sparse",
                        precision,
                        got: bytes.len(),
                        expected: expected.saturating_add(3),
                    });
                }
                let mut entries = Vec::with_capacity(count);
                let max_rank = u32::from(64 - SPARSE_BITS + 1);
                for chunk in body[4..].chunks_exact(4) {
                    let e = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    let rank = e & 63;
                    if rank == 0 || rank > max_rank {
                        return Err(SketchError::Corrupt(format!("sparse rank {rank}")));
                    }
                    if e > ENTRY_MASK {
                        return Err(SketchError::Corrupt(format!(
                            "sparse index {} past 2^{SPARSE_BITS}",
                            e >> 6
                        )));
                    }
                    if entries
                        .last()
                        .is_some_and(|&last: &u32| last >> 6 >= e >> 6)
                    {
                        return Err(SketchError::Corrupt("sparse entries out of order".into()));
                    }
                    entries.push(e);
                }
                Ok(Sketch {
                    precision,
                    form: Form::Sparse(entries),
                })
            }
            1 => {
                let expected = 1usize << precision;
                if body.len() != expected {
                    return Err(SketchError::Length {
                        form: "dense",
                        precision,
                        got: bytes.len(),
                        expected: expected + 3,
                    });
                }
                let max_rank = 64 - precision + 1;
                if let Some(r) = body.iter().find(|&&r| r > max_rank) {
                    return Err(SketchError::Corrupt(format!(
                        "register {r} above {max_rank}"
                    )));
                }
                Ok(Sketch {
                    precision,
                    form: Form::Dense(body.to_vec()),
                })
            }
            f => Err(SketchError::Form(*f)),
        }
    }
}

/// A sparse entry's register index and rank at `precision`.
fn coarse(entry: u32, precision: u8) -> (usize, u8) {
    let (index25, rank25) = (entry >> 6, (entry & 63) as u8);
    let drop = SPARSE_BITS - precision;
    let index = (index25 >> drop) as usize;
    let below = index25 & ((1 << drop) - 1);
    // The bits between the two precisions count toward the rank at the
    // coarser one.
    let rank = if below != 0 {
        (below.leading_zeros() - (32 - u32::from(drop))) as u8 + 1
    } else {
        rank25 + drop
    };
    (index, rank)
}

/// A sketch's precision and form, from a header whose length checks out
/// (the body is not read).
fn header(bytes: &[u8]) -> Option<(u8, u8)> {
    let [MAGIC, precision, form, body @ ..] = bytes else {
        return None;
    };
    if !PRECISIONS.contains(precision) {
        return None;
    }
    let fits = match form {
        0 => body
            .get(..4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .is_some_and(|n| body.len() == n.saturating_mul(4).saturating_add(4)),
        1 => body.len() == 1 << precision,
        _ => false,
    };
    fits.then_some((*precision, *form))
}

/// Merges the encoded sketch `newer` into the encoded sketch `older`: in
/// `older`'s buffer when it is dense (the hot key's case: one member
/// added is one register raised, not 16 KiB copied), else through
/// decoding. Returns `false`, changing nothing, when either is not a
/// sketch. The storage engine calls it for every add.
pub fn merge_encoded_into(older: &mut Vec<u8>, newer: &[u8]) -> bool {
    let (Some((p, old_form)), Some((q, new_form))) = (header(older), header(newer)) else {
        return false;
    };
    if p == q && old_form == 1 {
        let registers = &mut older[3..];
        if new_form == 0 {
            for chunk in newer[7..].chunks_exact(4) {
                let e = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                let (index, rank) = coarse(e & ENTRY_MASK, p);
                if let Some(r) = registers.get_mut(index) {
                    *r = (*r).max(rank.min(64 - p + 1));
                }
            }
        } else {
            for (r, t) in registers.iter_mut().zip(&newer[3..]) {
                *r = (*r).max(*t);
            }
        }
        return true;
    }
    match (Sketch::decode(older), Sketch::decode(newer)) {
        (Ok(mut a), Ok(b)) => {
            a.merge(&b);
            *older = a.encode();
            true
        }
        _ => false,
    }
}

/// Whether `bytes` is a well-formed sketch.
pub fn is_valid(bytes: &[u8]) -> bool {
    match header(bytes) {
        Some((_, 1)) => Sketch::decode(bytes).is_ok(),
        Some((_, _)) => sparse_entries_valid(&bytes[7..]),
        None => false,
    }
}

/// Whether sparse entries are in range and strictly ascending (no
/// allocation: replicas check every sketch they are sent).
fn sparse_entries_valid(body: &[u8]) -> bool {
    let max_rank = u32::from(64 - SPARSE_BITS + 1);
    let mut last: Option<u32> = None;
    for chunk in body.chunks_exact(4) {
        let e = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let rank = e & 63;
        if rank == 0 || rank > max_rank || e > ENTRY_MASK || last.is_some_and(|l| l >> 6 >= e >> 6)
        {
            return false;
        }
        last = Some(e);
    }
    true
}

/// The bits a sparse entry may use: a 25-bit index and a 6-bit rank.
const ENTRY_MASK: u32 = (1 << (SPARSE_BITS + 6)) - 1;

/// Ertl's improved raw estimate over dense registers.
fn ertl(registers: &[u8], precision: u8) -> f64 {
    let q = 64 - i32::from(precision);
    let m = registers.len() as f64;
    let mut counts = vec![0u32; (q + 2) as usize];
    for &r in registers {
        counts[usize::from(r).min((q + 1) as usize)] += 1;
    }
    let mut z = m * tau(1.0 - f64::from(counts[(q + 1) as usize]) / m);
    for k in (1..=q as usize).rev() {
        z = 0.5 * (z + f64::from(counts[k]));
    }
    z += m * sigma(f64::from(counts[0]) / m);
    m * m / (2.0 * std::f64::consts::LN_2 * z)
}

fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sketch_of(members: &[u64], precision: u8) -> Sketch {
        let mut s = Sketch::new(precision);
        for m in members {
            s.add(&m.to_le_bytes());
        }
        s
    }

    fn members() -> impl Strategy<Value = Vec<u64>> {
        prop_oneof![
            proptest::collection::vec(any::<u64>(), 0..40),
            proptest::collection::vec(0u64..5_000, 0..3_000),
        ]
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(a in members(), b in members(), c in members()) {
            let (a, b, c) = (sketch_of(&a, 10), sketch_of(&b, 10), sketch_of(&c, 10));
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(ab.dense_registers(), ba.dense_registers());
            let mut ab_c = ab.clone();
            ab_c.merge(&c);
            let mut bc = b.clone();
            bc.merge(&c);
            let mut a_bc = a.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(ab_c.dense_registers(), a_bc.dense_registers());
            let mut aa = a.clone();
            aa.merge(&a);
            prop_assert_eq!(aa.dense_registers(), a.dense_registers());
        }

        #[test]
        fn the_merge_of_sketches_is_the_sketch_of_the_union(a in members(), b in members()) {
            let mut merged = sketch_of(&a, 12);
            merged.merge(&sketch_of(&b, 12));
            let union: Vec<u64> = a.iter().chain(&b).copied().collect();
            let direct = sketch_of(&union, 12);
            prop_assert_eq!(merged.dense_registers(), direct.dense_registers());
            prop_assert!((merged.estimate() - direct.estimate()).abs() < 1e-6 * direct.estimate().max(1.0));
        }

        #[test]
        fn adding_a_member_again_changes_nothing(a in members()) {
            let once = sketch_of(&a, 14);
            let mut twice = once.clone();
            for m in &a {
                twice.add(&m.to_le_bytes());
            }
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn sketches_round_trip(a in members(), precision in 4u8..=16) {
            let s = sketch_of(&a, precision);
            prop_assert_eq!(Sketch::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn damaged_bytes_are_refused_or_read_as_a_valid_sketch(a in members(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let bytes = sketch_of(&a, 8).encode();
            let mut flipped = bytes.clone();
            let i = at.index(flipped.len());
            flipped[i] = byte;
            // Never a panic; a flipped register may still be a sketch.
            if let Ok(s) = Sketch::decode(&flipped) {
                prop_assert_eq!(Sketch::decode(&s.encode()), Ok(s));
            }
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(Sketch::decode(short).is_err());
        }

        #[test]
        fn merging_encoded_sketches_is_merging_sketches(a in members(), b in members(), pa in 8u8..=11, pb in 8u8..=11) {
            let (x, y) = (sketch_of(&a, pa), sketch_of(&b, pb));
            let mut expected = x.clone();
            expected.merge(&y);
            let mut bytes = x.encode();
            prop_assert!(merge_encoded_into(&mut bytes, &y.encode()));
            prop_assert!(is_valid(&bytes));
            let got = Sketch::decode(&bytes).unwrap();
            prop_assert_eq!(got.precision(), expected.precision());
            prop_assert_eq!(got.dense_registers(), expected.dense_registers());
            prop_assert_eq!(got.estimate(), expected.estimate());
        }

        #[test]
        fn damaged_sketches_never_merge_nor_panic(a in members(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let good = sketch_of(&a, 10).encode();
            let mut damaged = good.clone();
            let i = at.index(damaged.len());
            damaged[i] = byte;
            prop_assert_eq!(is_valid(&damaged), Sketch::decode(&damaged).is_ok());
            let mut older = good.clone();
            if !merge_encoded_into(&mut older, &damaged) {
                prop_assert_eq!(older, good);
            }
        }

        #[test]
        fn a_fine_sketch_folded_is_the_coarse_sketch(a in members()) {
            let fine = sketch_of(&a, 12);
            let coarse = sketch_of(&a, 9);
            prop_assert_eq!(fine.folded(9), coarse.dense_registers());
            let mut mixed = fine.clone();
            mixed.merge(&coarse);
            prop_assert_eq!(mixed.precision(), 9);
            prop_assert_eq!(mixed.dense_registers(), coarse.dense_registers());
        }
    }

    /// Relative errors at log-spaced cardinalities from 1 to `max`, over
    /// `trials` streams of distinct members.
    fn errors(trials: u64, max: u64, precision: u8) -> Vec<(u64, f64)> {
        let mut errors = Vec::new();
        for trial in 0..trials {
            let mut s = Sketch::new(precision);
            let mut next = 1u64;
            for n in 1..=max {
                s.add(&(trial << 40 | n).to_le_bytes());
                if n == next {
                    errors.push((n, (s.estimate() - n as f64).abs() / n as f64));
                    next = (next + 1).max((next as f64 * 1.25) as u64);
                }
            }
        }
        errors
    }

    fn quantiles(mut errors: Vec<f64>) -> (f64, f64, f64) {
        errors.sort_by(f64::total_cmp);
        let at = |q: f64| errors[((errors.len() - 1) as f64 * q) as usize];
        (at(0.5), at(0.99), at(1.0))
    }

    #[test]
    fn estimates_are_within_a_percent_at_the_median_and_2_5_at_the_99th() {
        let mut all = errors(24, 200_000, DEFAULT_PRECISION);
        all.extend(errors(2, 10_000_000, DEFAULT_PRECISION));
        let count = all.len();
        let dense: Vec<f64> = all
            .iter()
            .filter(|(n, _)| *n > 1_000)
            .map(|(_, e)| *e)
            .collect();
        let (median, p99, max) = quantiles(all.into_iter().map(|(_, e)| e).collect());
        assert!(median <= 0.01, "median relative error {median}");
        assert!(p99 <= 0.025, "99th percentile relative error {p99}");
        let (dense_median, dense_p99, _) = quantiles(dense);
        assert!(
            dense_median <= 0.01 && dense_p99 <= 0.025,
            "above 1,000 members: {dense_median} {dense_p99}"
        );
        eprintln!(
            "{count} estimates from 1 to 10,000,000 members: median error {:.3}%, p99 {:.3}%, max {:.3}%; above 1,000 members: median {:.3}%, p99 {:.3}%",
            median * 100.0,
            p99 * 100.0,
            max * 100.0,
            dense_median * 100.0,
            dense_p99 * 100.0
        );
    }

    #[test]
    fn corrupt_sketches_are_refused_with_a_reason() {
        assert_eq!(
            Sketch::decode(b"X\x0e\x00"),
            Err(SketchError::NotASketch(b'X'))
        );
        assert_eq!(
            Sketch::decode(b"H\x03\x00\x00\x00\x00\x00"),
            Err(SketchError::Precision(3))
        );
        assert_eq!(Sketch::decode(b"H\x0e\x07"), Err(SketchError::Form(7)));
        assert!(matches!(
            Sketch::decode(b"H\x0e"),
            Err(SketchError::Length { .. })
        ));
        let mut dense = vec![b'H', 4, 1];
        dense.extend([0u8; 16]);
        assert!(Sketch::decode(&dense).is_ok());
        dense[5] = 62;
        assert!(matches!(
            Sketch::decode(&dense),
            Err(SketchError::Corrupt(_))
        ));
        let out_of_order = [b'H', 14, 0, 2, 0, 0, 0, 0x41, 0, 0, 0, 0x01, 0, 0, 0];
        assert!(matches!(
            Sketch::decode(&out_of_order),
            Err(SketchError::Corrupt(_))
        ));
    }

    #[test]
    fn a_cold_key_costs_bytes_and_a_hot_one_turns_dense() {
        let cold = sketch_of(&[1, 2, 3], DEFAULT_PRECISION);
        assert!(cold.is_sparse());
        assert_eq!(cold.encode().len(), 7 + 3 * 4);
        assert_eq!(cold.estimate().round(), 3.0);
        let hot = sketch_of(&(0..100_000).collect::<Vec<_>>(), DEFAULT_PRECISION);
        assert!(!hot.is_sparse());
        assert_eq!(hot.encode().len(), 3 + (1 << 14));
        assert_eq!(Sketch::new(0).precision(), 4);
        assert_eq!(Sketch::new(99).precision(), 18);
    }
}
