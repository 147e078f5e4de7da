//! Group commit: concurrent writers in `sync` mode share WAL writes and
//! fsyncs, and every one of them is acknowledged only once durable.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tally_storage::{AddI64, Db, Durability, Error, Options, SimFs, WriteBatch};

#[test]
fn concurrent_sync_writers_share_fsyncs() {
    let fs = SimFs::new();
    let opts = Options {
        durability: Durability::Sync,
        background_work: false,
        ..Options::default()
    };
    let db = Arc::new(
        Db::open_with_fs(
            Arc::new(fs.clone()),
            Path::new("/db"),
            opts,
            Arc::new(AddI64),
        )
        .unwrap(),
    );
    // A slow disk (1 ms per fsync) gives writers time to queue up.
    fs.set_sync_delay(Duration::from_millis(1));
    let threads = 16;
    let per_thread = 50;
    std::thread::scope(|s| {
        for t in 0..threads {
            let db = db.clone();
            s.spawn(move || {
                for _ in 0..per_thread {
                    db.merge(format!("k{t}").as_bytes(), &AddI64::encode(1))
                        .unwrap();
                }
            });
        }
    });
    let m = db.metrics();
    assert_eq!(m.batches, threads * per_thread);
    assert_eq!(
        m.wal_syncs, m.commit_groups,
        "sync mode fsyncs once per group"
    );
    assert!(
        m.commit_groups * 3 < m.batches,
        "expected groups to carry several batches: {} groups for {} batches",
        m.commit_groups,
        m.batches
    );
    // Every acknowledged increment survives a power loss.
    drop(db);
    fs.crash(3);
    let db = Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new("/db"),
        Options::default(),
        Arc::new(AddI64),
    )
    .unwrap();
    for t in 0..threads {
        let v = db
            .get(format!("k{t}").as_bytes())
            .unwrap()
            .and_then(|v| AddI64::decode(&v));
        assert_eq!(v, Some(per_thread as i64));
    }
}

fn open_sync(fs: &SimFs) -> Db {
    let opts = Options {
        durability: Durability::Sync,
        background_work: false,
        ..Options::default()
    };
    Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new("/db"),
        opts,
        Arc::new(AddI64),
    )
    .unwrap()
}

fn one(key: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.merge(key.as_bytes(), AddI64::encode(1));
    batch
}

#[test]
fn one_fsync_covers_every_unsynced_write_before_it() {
    let fs = SimFs::new();
    let db = open_sync(&fs);
    let points: Vec<_> = (0..3)
        .map(|_| db.write_unsynced(one("k")).unwrap())
        .collect();
    assert!(points[0] < points[1] && points[1] < points[2]);
    assert_eq!(db.metrics().wal_syncs, 0, "write_unsynced must not fsync");
    // Visible before it is durable.
    assert_eq!(
        db.get(b"k").unwrap().and_then(|v| AddI64::decode(&v)),
        Some(3)
    );
    db.wait_durable(points[2]).unwrap();
    assert_eq!(db.metrics().wal_syncs, 1);
    db.wait_durable(points[0]).unwrap();
    db.wait_durable(points[1]).unwrap();
    assert_eq!(db.metrics().wal_syncs, 1, "earlier points were covered");
    // A rotation fsyncs the old WAL: a point in it needs no further sync.
    let before_rotation = db.write_unsynced(one("k")).unwrap();
    db.flush().unwrap();
    let syncs = db.metrics().wal_syncs;
    db.wait_durable(before_rotation).unwrap();
    assert_eq!(db.metrics().wal_syncs, syncs);
    drop(db);
    fs.crash(7);
    let db = open_sync(&fs);
    assert_eq!(
        db.get(b"k").unwrap().and_then(|v| AddI64::decode(&v)),
        Some(4)
    );
}

#[test]
fn a_failed_pipelined_fsync_poisons_and_reports() {
    let fs = SimFs::new();
    let db = open_sync(&fs);
    let point = db.write_unsynced(one("k")).unwrap();
    fs.fail_syncs(true);
    assert!(matches!(
        db.wait_durable(point),
        Err(Error::Io { op: "fsync", .. })
    ));
    fs.fail_syncs(false);
    assert!(matches!(
        db.wait_durable(point),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        db.write_unsynced(one("k")),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn periodic_mode_waits_for_nothing() {
    let fs = SimFs::new();
    let opts = Options {
        durability: Durability::Periodic {
            interval: Duration::from_secs(3600),
        },
        background_work: false,
        ..Options::default()
    };
    let db = Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new("/db"),
        opts,
        Arc::new(AddI64),
    )
    .unwrap();
    let point = db.write_unsynced(one("k")).unwrap();
    db.wait_durable(point).unwrap();
    assert_eq!(db.metrics().wal_syncs, 0);
}
