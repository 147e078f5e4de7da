//! Group commit: concurrent writers in `sync` mode share WAL writes and
//! fsyncs, and every one of them is acknowledged only once durable.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tally_storage::{AddI64, Db, Durability, Options, SimFs};

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
