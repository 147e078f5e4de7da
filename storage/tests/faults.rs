//! Faults other than damaged bytes: a missing table, a full disk, a failing
//! fsync, a slow disk that stalls writers, the wrong merge operator, a second
//! opener, and bad arguments. Each gets its typed error and loses nothing
//! that was acknowledged.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tally_storage::{
    AddI64, CompactionFilter, Db, Durability, Error, FilterDecision, MergeOperator, Options, SimFs,
};

const DIR: &str = "/db";

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 8192,
        background_work: false,
        ..Options::default()
    }
}

fn open_with(fs: &SimFs, opts: Options) -> tally_storage::Result<Db> {
    Db::open_with_fs(Arc::new(fs.clone()), Path::new(DIR), opts, Arc::new(AddI64))
}

fn count(db: &Db, key: &[u8]) -> Option<i64> {
    db.get(key).unwrap().map(|v| AddI64::decode(&v).unwrap())
}

#[test]
fn missing_table_is_refused_by_name() {
    let fs = SimFs::new();
    let db = open_with(&fs, options()).unwrap();
    db.merge(b"k", &AddI64::encode(1)).unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let table = fs
        .files(Path::new(DIR))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".sst"))
        .unwrap();
    fs.remove_file(&table).unwrap();
    match open_with(&fs, options()) {
        Err(Error::MissingFile { file }) => assert_eq!(file, table),
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[test]
fn full_disk_fails_writes_and_loses_nothing_acknowledged() {
    let fs = SimFs::new();
    let db = open_with(&fs, options()).unwrap();
    fs.set_capacity(fs.used_bytes() + 20_000);
    let mut acknowledged = 0;
    let err = loop {
        match db.merge(b"views", &AddI64::encode(1)) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 100_000, "the disk never filled up");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "got {err}");
    // The engine is poisoned: later writes fail, reads still answer.
    assert!(matches!(
        db.merge(b"views", &AddI64::encode(1)),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(count(&db, b"views"), Some(acknowledged));
    drop(db);
    fs.set_capacity(0);
    let db = open_with(&fs, options()).unwrap();
    assert_eq!(count(&db, b"views"), Some(acknowledged));
    db.merge(b"views", &AddI64::encode(1)).unwrap();
}

#[test]
fn failed_fsync_poisons_and_is_never_retried() {
    let fs = SimFs::new();
    let db = open_with(&fs, options()).unwrap();
    db.merge(b"k", &AddI64::encode(5)).unwrap();
    fs.fail_syncs(true);
    assert!(matches!(
        db.merge(b"k", &AddI64::encode(1)),
        Err(Error::Io { op: "fsync", .. })
    ));
    fs.fail_syncs(false);
    // The disk works again, but the engine stays poisoned until reopened.
    match db.merge(b"k", &AddI64::encode(1)) {
        Err(Error::Poisoned { reason }) => assert!(reason.contains("fsync"), "{reason}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(db.flush(), Err(Error::Poisoned { .. })));
    // A poisoned engine does not close cleanly (its caller must not record
    // a clean stop).
    assert!(matches!(db.close(), Err(Error::Poisoned { .. })));
    fs.crash(1);
    let db = open_with(&fs, options()).unwrap();
    assert_eq!(
        count(&db, b"k"),
        Some(5),
        "the acknowledged write must survive; the failed one may not count"
    );
}

#[test]
fn periodic_mode_background_fsync_failure_poisons() {
    let fs = SimFs::new();
    let opts = Options {
        durability: Durability::Periodic {
            interval: Duration::from_millis(5),
        },
        ..options()
    };
    let db = open_with(&fs, opts).unwrap();
    fs.fail_syncs(true);
    db.merge(b"k", &AddI64::encode(1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match db.merge(b"k", &AddI64::encode(1)) {
            Err(Error::Poisoned { .. }) => break,
            Ok(()) => assert!(std::time::Instant::now() < deadline, "never poisoned"),
            Err(e) => panic!("unexpected {e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn slow_flushes_stall_writers_for_a_bounded_time() {
    let fs = SimFs::new();
    let opts = Options {
        durability: Durability::Periodic {
            interval: Duration::from_secs(3600),
        },
        memtable_bytes: 4096,
        max_immutable_memtables: 1,
        write_stall_timeout: Duration::from_millis(50),
        background_work: true,
        ..Options::default()
    };
    let db = open_with(&fs, opts).unwrap();
    fs.set_sync_delay(Duration::from_millis(400));
    let value = vec![7u8; 100];
    let err = (0..10_000)
        .find_map(|i| db.put(format!("key{i:05}").as_bytes(), &value).err())
        .expect("writes never stalled");
    match err {
        Error::WriteStall { waited } => assert!(waited >= Duration::from_millis(50)),
        other => panic!("expected WriteStall, got {other}"),
    }
    assert!(db.metrics().write_stalls >= 1);
    // Back-pressure is not a failure: once the disk is fast, writes succeed.
    fs.set_sync_delay(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(900));
    db.put(b"after", &value).unwrap();
}

#[derive(Debug)]
struct OtherOperator;

impl MergeOperator for OtherOperator {
    fn name(&self) -> &str {
        "other"
    }
    fn merge(&self, _key: &[u8], _older: &[u8], newer: &[u8]) -> Vec<u8> {
        newer.to_vec()
    }
}

#[test]
fn wrong_merge_operator_and_second_opener_are_refused() {
    let fs = SimFs::new();
    let db = open_with(&fs, options()).unwrap();
    assert!(matches!(
        open_with(&fs, options()),
        Err(Error::Locked { .. })
    ));
    db.close().unwrap();
    let err = Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new(DIR),
        options(),
        Arc::new(OtherOperator),
    )
    .unwrap_err();
    assert!(matches!(err, Error::MergeOperatorMismatch { .. }), "{err}");
}

#[test]
fn bad_arguments_are_rejected_and_change_nothing() {
    let fs = SimFs::new();
    let db = open_with(&fs, options()).unwrap();
    assert!(matches!(db.put(b"", b"v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        db.put(&vec![b'k'; 17 << 10], b"v"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.put(b"k", &vec![0; 2 << 20]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.merge(b"k", b"not eight bytes"),
        Err(Error::InvalidArgument(_))
    ));
    let mut batch = tally_storage::WriteBatch::new();
    batch.merge(b"good", AddI64::encode(1));
    batch.merge(b"good", b"bad");
    assert!(matches!(db.write(batch), Err(Error::InvalidArgument(_))));
    assert_eq!(
        count(&db, b"good"),
        None,
        "a rejected batch applies nothing"
    );
    assert!(db.scan(b"", None, 10).unwrap().is_empty());
    let bad = Options {
        l0_stop_trigger: 1,
        ..options()
    };
    assert!(matches!(
        open_with(&SimFs::new(), bad),
        Err(Error::InvalidArgument(_))
    ));
}

/// Drops keys starting with `expired/`.
#[derive(Debug)]
struct DropExpired;

impl CompactionFilter for DropExpired {
    fn decide(&self, key: &[u8], _value: &[u8]) -> FilterDecision {
        if key.starts_with(b"expired/") {
            FilterDecision::Remove
        } else {
            FilterDecision::Keep
        }
    }
}

#[test]
fn compaction_filter_drops_entries_for_good() {
    let fs = SimFs::new();
    let opts = Options {
        compaction_filter: Some(Arc::new(DropExpired)),
        ..options()
    };
    let db = open_with(&fs, opts.clone()).unwrap();
    for i in 0..50 {
        db.merge(format!("expired/{i}").as_bytes(), &AddI64::encode(1))
            .unwrap();
        db.merge(format!("live/{i}").as_bytes(), &AddI64::encode(1))
            .unwrap();
    }
    db.flush().unwrap();
    assert_eq!(
        count(&db, b"expired/3"),
        Some(1),
        "flush alone does not filter"
    );
    db.compact().unwrap();
    assert_eq!(count(&db, b"expired/3"), None);
    assert_eq!(count(&db, b"live/3"), Some(1));
    db.close().unwrap();
    let db = open_with(&fs, opts).unwrap();
    assert_eq!(
        db.scan(b"expired/", Some(b"expired0"), usize::MAX)
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        db.scan(b"live/", Some(b"live0"), usize::MAX).unwrap().len(),
        50
    );
}

#[test]
fn hot_key_increments_cannot_grow_the_wal_without_bound() {
    let fs = SimFs::new();
    let opts = Options {
        max_wal_bytes: 16 << 10,
        memtable_bytes: 1 << 20,
        ..options()
    };
    let db = open_with(&fs, opts).unwrap();
    for _ in 0..5_000 {
        db.merge(b"hot", &AddI64::encode(1)).unwrap();
    }
    // One tiny memtable entry, but the WAL limit forced flushes.
    assert!(
        db.metrics().flushes >= 5,
        "flushes: {}",
        db.metrics().flushes
    );
    let wal_bytes: usize = fs
        .files(Path::new(DIR))
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .map(|p| fs.read_all(p).unwrap().len())
        .sum();
    // At most the active WAL and one per frozen memtable (2), each ~16 KiB.
    assert!(wal_bytes <= 3 * (17 << 10), "WAL holds {wal_bytes} bytes");
    assert_eq!(count(&db, b"hot"), Some(5_000));
}

/// A process out of file descriptors cannot start a new WAL: the writes
/// that needed one fail and write nothing, the engine is not poisoned, and
/// once descriptors are free again writes go on (once every write failed
/// until a restart).
#[test]
fn a_wal_that_cannot_be_created_fails_writes_without_poisoning() {
    let fs = SimFs::new();
    let opts = Options {
        max_wal_bytes: 1 << 10,
        ..options()
    };
    let db = open_with(&fs, opts.clone()).unwrap();
    let mut acknowledged = 0;
    fs.fail_creates(true);
    let mut refused = 0;
    for _ in 0..200 {
        match db.merge(b"k", &AddI64::encode(1)) {
            Ok(()) => acknowledged += 1,
            Err(e) => {
                assert!(e.nothing_written(), "{e}");
                assert!(matches!(e, Error::Io { op: "create", .. }), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no write needed a new WAL");
    fs.fail_creates(false);
    for _ in 0..200 {
        db.merge(b"k", &AddI64::encode(1)).unwrap();
        acknowledged += 1;
    }
    assert_eq!(count(&db, b"k"), Some(acknowledged));
    db.close().unwrap();
    let db = open_with(&fs, opts).unwrap();
    assert_eq!(count(&db, b"k"), Some(acknowledged));
}
