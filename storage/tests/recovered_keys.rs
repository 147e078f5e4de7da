//! `Db::take_recovered_keys`: the keys replayed from the WAL at open, and
//! only those (a flushed write is not "recovered").

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tally_storage::{AddI64, Db, Options};

fn opts() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}

#[test]
fn the_keys_replayed_from_the_wal_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts(), Arc::new(AddI64)).unwrap();
    db.merge(b"flushed", &AddI64::encode(1)).unwrap();
    db.flush().unwrap();
    for key in [&b"b"[..], b"a", b"b", b"c"] {
        db.merge(key, &AddI64::encode(1)).unwrap();
    }
    assert!(
        db.take_recovered_keys().is_empty(),
        "a new engine recovered nothing"
    );
    db.close().unwrap();

    let db = Db::open(dir.path(), opts(), Arc::new(AddI64)).unwrap();
    assert_eq!(
        db.take_recovered_keys(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        "sorted, each once, without the flushed key"
    );
    assert!(db.take_recovered_keys().is_empty(), "taken once");
    assert_eq!(
        db.get(b"b").unwrap().and_then(|v| AddI64::decode(&v)),
        Some(2)
    );
    db.close().unwrap();

    // Recovery wrote the replayed WAL into a table: nothing is replayed twice.
    let db = Db::open(dir.path(), opts(), Arc::new(AddI64)).unwrap();
    assert!(db.take_recovered_keys().is_empty());
}
