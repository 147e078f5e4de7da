//! The engine against a `BTreeMap` model: random puts, merges, deletes,
//! batches, gets and scans interleaved with flushes, compactions, reopens
//! and simulated power losses. With `sync` durability a power loss may not
//! lose anything the engine acknowledged, so the model survives it as is.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use tally_storage::{AddI64, Db, Durability, Options, SimFs, WriteBatch};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, i64),
    Merge(u8, i64),
    Delete(u8),
    Batch(Vec<(u8, Option<i64>)>),
    Get(u8),
    Scan(u8, u8),
    /// Sorted range bounds, taken in pairs, and how many entries to take.
    ScanRanges(Vec<u8>, usize),
    Flush,
    Compact,
    CompactPending,
    Reopen,
    PowerLoss(u64),
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k:03}").into_bytes()
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let k = 0u8..40;
    prop_oneof![
        10 => (k.clone(), any::<i64>()).prop_map(|(k, v)| Op::Put(k, v)),
        20 => (k.clone(), -1000i64..1000).prop_map(|(k, d)| Op::Merge(k, d)),
        4 => k.clone().prop_map(Op::Delete),
        4 => proptest::collection::vec((k.clone(), proptest::option::of(-5i64..5)), 1..20).prop_map(Op::Batch),
        10 => k.clone().prop_map(Op::Get),
        4 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        4 => (proptest::collection::vec(k, 1..5), 0usize..50).prop_map(|(bounds, take)| {
            let mut bounds: Vec<u8> = bounds.into_iter().flat_map(|b| [b, b.saturating_add(1 + b % 7)]).collect();
            bounds.sort_unstable();
            Op::ScanRanges(bounds, take)
        }),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        2 => Just(Op::CompactPending),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::PowerLoss),
    ]
}

fn small_options(background: bool) -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 4096,
        block_bytes: 256,
        target_file_bytes: 512,
        level1_bytes: 8192,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 3,
        l0_stop_trigger: 4,
        background_work: background,
        ..Options::default()
    }
}

fn open(fs: &SimFs, background: bool) -> Db {
    Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new("/db"),
        small_options(background),
        Arc::new(AddI64),
    )
    .expect("open")
}

fn value(v: Option<Vec<u8>>) -> Option<i64> {
    v.map(|b| AddI64::decode(&b).expect("8-byte value"))
}

fn run(ops: Vec<Op>, background: bool) {
    let fs = SimFs::new();
    let mut db = open(&fs, background);
    let mut model: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                db.put(&key(k), &AddI64::encode(v)).unwrap();
                model.insert(key(k), v);
            }
            Op::Merge(k, d) => {
                db.merge(&key(k), &AddI64::encode(d)).unwrap();
                let e = model.entry(key(k)).or_insert(0);
                *e = e.wrapping_add(d);
            }
            Op::Delete(k) => {
                db.delete(&key(k)).unwrap();
                model.remove(&key(k));
            }
            Op::Batch(items) => {
                let mut batch = WriteBatch::new();
                for (k, d) in items {
                    match d {
                        Some(d) => {
                            batch.merge(key(k), AddI64::encode(d));
                            let e = model.entry(key(k)).or_insert(0);
                            *e = e.wrapping_add(d);
                        }
                        None => {
                            batch.delete(key(k));
                            model.remove(&key(k));
                        }
                    }
                }
                db.write(batch).unwrap();
            }
            Op::Get(k) => {
                assert_eq!(
                    value(db.get(&key(k)).unwrap()),
                    model.get(&key(k)).copied(),
                    "get {k}"
                );
            }
            Op::Scan(a, b) => {
                let got: Vec<(Vec<u8>, i64)> = db
                    .scan(&key(a), Some(&key(b)), usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k, AddI64::decode(&v).unwrap()))
                    .collect();
                let want: Vec<(Vec<u8>, i64)> = model
                    .range(key(a)..key(b))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                assert_eq!(got, want, "scan {a}..{b}");
            }
            Op::ScanRanges(bounds, take) => {
                let keys: Vec<Vec<u8>> = bounds.iter().map(|&b| key(b)).collect();
                let ranges: Vec<(&[u8], Option<&[u8]>)> = keys
                    .chunks(2)
                    .map(|pair| (pair[0].as_slice(), Some(pair[1].as_slice())))
                    .collect();
                let mut got: Vec<(Vec<u8>, i64)> = Vec::new();
                db.scan_ranges_with(&ranges, |k, v| {
                    got.push((k.to_vec(), AddI64::decode(v).unwrap()));
                    got.len() < take
                })
                .unwrap();
                let want: Vec<(Vec<u8>, i64)> = keys
                    .chunks(2)
                    .flat_map(|pair| model.range(pair[0].clone()..pair[1].clone()))
                    .map(|(k, v)| (k.clone(), *v))
                    .take(take.max(1))
                    .collect();
                assert_eq!(got, want, "scan ranges {bounds:?}, taking {take}");
            }
            Op::Flush => db.flush().unwrap(),
            Op::Compact => db.compact().unwrap(),
            Op::CompactPending => db.compact_pending().unwrap(),
            Op::Reopen => {
                db.close().unwrap();
                db = open(&fs, background);
            }
            Op::PowerLoss(seed) => {
                fs.crash(seed);
                drop(db);
                db = open(&fs, background);
            }
        }
    }
    // Everything the model holds, in one scan, and once more after a reopen.
    let want: Vec<(Vec<u8>, i64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for _ in 0..2 {
        let got: Vec<(Vec<u8>, i64)> = db
            .scan(b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, AddI64::decode(&v).unwrap()))
            .collect();
        assert_eq!(got, want);
        db.close().unwrap();
        db = open(&fs, background);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        run(ops, false);
    }

    #[test]
    fn engine_matches_model_with_background_work(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        run(ops, true);
    }
}
