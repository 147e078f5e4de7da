//! Damage at every offset: a flipped bit or a truncation anywhere in a WAL
//! or an SSTable is detected (a typed `Corruption` error), or, for the last
//! WAL record only, treated as a torn write. Never a wrong value, never a
//! panic, and a refused open changes nothing on disk.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_storage::{AddI64, Db, Durability, Error, Options, SimFs, WriteBatch};

const DIR: &str = "/db";

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        memtable_bytes: 1 << 20,
        block_bytes: 256,
        background_work: false,
        ..Options::default()
    }
}

fn open(fs: &SimFs) -> tally_storage::Result<Db> {
    Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new(DIR),
        options(),
        Arc::new(AddI64),
    )
}

type Model = BTreeMap<Vec<u8>, i64>;

/// Batch `i` of the history, applied to the model too.
fn batch(i: usize, model: &mut Model) -> WriteBatch {
    let mut b = WriteBatch::new();
    let counter = format!("counter{}", i % 5).into_bytes();
    b.merge(counter.clone(), AddI64::encode(i as i64 + 1));
    *model.entry(counter).or_insert(0) += i as i64 + 1;
    let plain = format!("plain{i:04}").into_bytes();
    b.put(plain.clone(), AddI64::encode(i as i64 * 7));
    model.insert(plain, i as i64 * 7);
    b
}

fn contents(db: &Db) -> tally_storage::Result<Model> {
    Ok(db
        .scan(b"", None, usize::MAX)?
        .into_iter()
        .map(|(k, v)| (k, AddI64::decode(&v).unwrap()))
        .collect())
}

fn only_file(fs: &SimFs, suffix: &str) -> PathBuf {
    let files: Vec<PathBuf> = fs
        .files(Path::new(DIR))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "expected one {suffix} file, found {files:?}"
    );
    files[0].clone()
}

/// An engine whose data is all in one WAL: the disk as a crash left it
/// (every write synced, no clean close) and as a clean close left it, plus
/// the model after each prefix of the history and the WAL's length after
/// each batch.
struct WalFixture {
    crashed: SimFs,
    closed: SimFs,
    wal: PathBuf,
    prefixes: Vec<Model>,
    ends: Vec<usize>,
}

fn wal_fixture(batches: usize) -> WalFixture {
    let fs = SimFs::new();
    let db = open(&fs).unwrap();
    let wal = only_file(&fs, ".log");
    let mut model = Model::new();
    let mut prefixes = vec![model.clone()];
    let mut ends = vec![fs.read_all(&wal).unwrap().len()];
    for i in 0..batches {
        db.write(batch(i, &mut model)).unwrap();
        prefixes.push(model.clone());
        ends.push(fs.read_all(&wal).unwrap().len());
    }
    let crashed = fs.deep_copy();
    db.close().unwrap();
    WalFixture {
        crashed,
        closed: fs,
        wal,
        prefixes,
        ends,
    }
}

#[test]
fn wal_bit_flip_at_every_offset_is_detected_or_a_torn_tail() {
    let batches = 10;
    let WalFixture {
        crashed,
        wal,
        prefixes,
        ends,
        ..
    } = wal_fixture(batches);
    let last_record_start = ends[batches - 1];
    for offset in 0..ends[batches] {
        let damaged = crashed.deep_copy();
        damaged
            .corrupt_byte(&wal, offset, 1 << (offset % 8))
            .unwrap();
        match open(&damaged) {
            Err(Error::Corruption { file, .. }) => {
                assert!(
                    offset < last_record_start,
                    "offset {offset}: the last record is a torn tail"
                );
                assert_eq!(file, wal);
                assert!(
                    damaged.exists_file(&wal),
                    "a refused open must not remove the WAL"
                );
            }
            Err(e) => panic!("offset {offset}: unexpected error {e}"),
            Ok(db) => {
                assert!(
                    offset >= last_record_start,
                    "offset {offset}: damage before the tail went unnoticed"
                );
                assert_eq!(
                    contents(&db).unwrap(),
                    prefixes[batches - 1],
                    "offset {offset}"
                );
            }
        }
    }
}

/// After a clean close no record is a torn write: damage to any of them is
/// corruption, named with file and offset (once the last one was dropped
/// silently). Damage to the close record itself loses nothing. An operator
/// may salvage the records before the damage.
#[test]
fn after_a_clean_close_a_damaged_last_record_is_corruption_unless_salvaged() {
    let batches = 10;
    let WalFixture {
        closed,
        wal,
        prefixes,
        ends,
        ..
    } = wal_fixture(batches);
    let len = closed.read_all(&wal).unwrap().len();
    assert!(
        len > ends[batches],
        "a clean close ends the WAL with a record"
    );
    for offset in 0..len {
        let damaged = closed.deep_copy();
        damaged
            .corrupt_byte(&wal, offset, 1 << (offset % 8))
            .unwrap();
        match open(&damaged) {
            Err(Error::Corruption {
                file, offset: at, ..
            }) => {
                assert!(
                    offset < ends[batches],
                    "offset {offset}: the close record holds no data"
                );
                assert_eq!(file, wal);
                assert!(at as usize <= offset, "offset {offset}: named {at}");
                let first_bad = ends.iter().filter(|&&end| end <= offset).count() - 1;
                let salvaged = Db::open_with_fs(
                    Arc::new(damaged.deep_copy()),
                    Path::new(DIR),
                    Options {
                        salvage_wal_tail: true,
                        ..options()
                    },
                    Arc::new(AddI64),
                )
                .unwrap();
                assert_eq!(
                    contents(&salvaged).unwrap(),
                    prefixes[first_bad],
                    "offset {offset}: salvage keeps the records before the damage"
                );
            }
            Err(e) => panic!("offset {offset}: unexpected error {e}"),
            Ok(db) => {
                assert!(
                    offset >= ends[batches],
                    "offset {offset}: damage after a clean close went unnoticed"
                );
                assert_eq!(contents(&db).unwrap(), prefixes[batches]);
            }
        }
    }
}

#[test]
fn wal_truncated_at_every_length_recovers_the_complete_records() {
    let batches = 10;
    let WalFixture {
        crashed,
        wal,
        prefixes,
        ends,
        ..
    } = wal_fixture(batches);
    for len in 0..=ends[batches] {
        let damaged = crashed.deep_copy();
        damaged.truncate(&wal, len).unwrap();
        let db = open(&damaged).unwrap_or_else(|e| panic!("length {len}: {e}"));
        let complete = ends.iter().filter(|&&end| end <= len).count() - 1;
        assert_eq!(contents(&db).unwrap(), prefixes[complete], "length {len}");
    }
}

/// A closed engine whose data is all in one SSTable.
fn table_fixture() -> (SimFs, PathBuf, Model) {
    let fs = SimFs::new();
    let db = open(&fs).unwrap();
    let mut model = Model::new();
    for i in 0..60 {
        db.write(batch(i, &mut model)).unwrap();
    }
    db.flush().unwrap();
    db.close().unwrap();
    let table = only_file(&fs, ".sst");
    (fs, table, model)
}

#[test]
fn table_bit_flip_at_every_offset_is_detected() {
    let (fs, table, model) = table_fixture();
    let size = fs.read_all(&table).unwrap().len();
    assert!(
        size > 1000,
        "fixture table is too small to span several blocks"
    );
    let mut detected_at_open = 0;
    let mut detected_at_read = 0;
    for offset in 0..size {
        let damaged = fs.deep_copy();
        damaged
            .corrupt_byte(&table, offset, 1 << (offset % 8))
            .unwrap();
        let db = match open(&damaged) {
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, table);
                assert!(damaged.exists_file(&table));
                detected_at_open += 1;
                continue;
            }
            Err(e) => panic!("offset {offset}: unexpected error {e}"),
            Ok(db) => db,
        };
        // Whatever is read must be right; damage must surface as Corruption.
        let mut saw_corruption = false;
        match contents(&db) {
            Ok(got) => assert_eq!(got, model, "offset {offset}: scan returned a wrong value"),
            Err(Error::Corruption { .. }) => saw_corruption = true,
            Err(e) => panic!("offset {offset}: unexpected error {e}"),
        }
        for (key, value) in &model {
            match db.get(key) {
                Ok(got) => assert_eq!(
                    got.and_then(|v| AddI64::decode(&v)),
                    Some(*value),
                    "offset {offset}"
                ),
                Err(Error::Corruption { .. }) => saw_corruption = true,
                Err(e) => panic!("offset {offset}: unexpected error {e}"),
            }
        }
        assert!(
            saw_corruption,
            "offset {offset}: a flipped bit went unnoticed"
        );
        detected_at_read += 1;
    }
    assert!(detected_at_open > 0 && detected_at_read > 0);
}

#[test]
fn table_truncated_at_every_length_is_refused() {
    let (fs, table, _) = table_fixture();
    let size = fs.read_all(&table).unwrap().len();
    for len in 0..size {
        let damaged = fs.deep_copy();
        damaged.truncate(&table, len).unwrap();
        match open(&damaged) {
            Err(Error::Corruption { file, .. }) => assert_eq!(file, table, "length {len}"),
            Err(e) => panic!("length {len}: unexpected error {e}"),
            Ok(_) => panic!("length {len}: a truncated table was accepted"),
        }
    }
}

#[test]
fn damaged_manifest_is_refused() {
    let (fs, _, _) = table_fixture();
    let manifest = fs
        .files(Path::new(DIR))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("MANIFEST-"))
        .unwrap();
    // The manifest holds the snapshot written at open and the flush's edit:
    // damage to the snapshot, with a valid record after it, is corruption.
    let damaged = fs.deep_copy();
    damaged.corrupt_byte(&manifest, 10, 0x40).unwrap();
    match open(&damaged) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (manifest.clone(), 0))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // CURRENT pointing nowhere is refused too.
    let damaged = fs.deep_copy();
    damaged
        .truncate(&Path::new(DIR).join("CURRENT"), 3)
        .unwrap();
    assert!(matches!(open(&damaged), Err(Error::Corruption { .. })));
}
