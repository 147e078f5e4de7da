//! The block cache: a block users read is read from its file once, a
//! compaction's reads leave nothing behind, and a cache of zero bytes
//! reads every time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tally_storage::{AddI64, Db, Options};

fn opts(block_cache_bytes: usize) -> Options {
    Options {
        background_work: false,
        block_cache_bytes,
        ..Options::default()
    }
}

/// 2,000 keys in one table of many blocks.
fn filled(dir: &std::path::Path, cache: usize) -> Db {
    let db = Db::open(dir, opts(cache), Arc::new(AddI64)).unwrap();
    for i in 0..2000u32 {
        db.merge(
            format!("key{i:05}").as_bytes(),
            &AddI64::encode(i64::from(i)),
        )
        .unwrap();
    }
    db.flush().unwrap();
    db
}

fn sum_of_scan(db: &Db) -> i64 {
    db.scan(b"key00100", Some(b"key00200"), usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, v)| AddI64::decode(v).unwrap())
        .sum()
}

#[test]
fn blocks_read_by_users_are_read_from_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 1 << 20);
    let want: i64 = (100..200).sum();
    assert_eq!(sum_of_scan(&db), want);
    let first = db.metrics();
    assert!(first.block_cache_misses > 0);
    assert_eq!(sum_of_scan(&db), want);
    assert_eq!(
        db.get(b"key00150").unwrap(),
        Some(AddI64::encode(150).to_vec())
    );
    let again = db.metrics();
    assert_eq!(
        again.block_cache_misses, first.block_cache_misses,
        "the scan again and a point read inside it found every block cached"
    );
    assert!(again.block_cache_hits > first.block_cache_hits);
}

#[test]
fn compaction_reads_do_not_fill_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 1 << 20);
    db.merge(b"key00000", &AddI64::encode(1)).unwrap();
    db.compact().unwrap();
    let m = db.metrics();
    assert!(
        m.compaction_read_bytes > 0 && m.block_cache_misses > 0,
        "the compaction read blocks"
    );
    assert_eq!(m.block_cache_adds, 0, "and kept none");
    assert_eq!(sum_of_scan(&db), (100..200).sum::<i64>());
    assert!(
        db.metrics().block_cache_adds > 0,
        "a user's scan keeps its blocks"
    );
}

#[test]
fn without_a_cache_every_read_goes_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(dir.path(), 0);
    sum_of_scan(&db);
    let first = db.metrics().block_cache_misses;
    sum_of_scan(&db);
    let m = db.metrics();
    assert_eq!(m.block_cache_misses, 2 * first);
    assert_eq!(m.block_cache_hits, 0);
}
