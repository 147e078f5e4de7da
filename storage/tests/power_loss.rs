//! Power loss under concurrent load, on the simulated disk: writers commit
//! atomic batches until `SimFs::crash` cuts the power mid-flight (every
//! unsynced byte and name is lost, torn tails included), then the engine is
//! reopened. In `sync` mode every acknowledged batch must survive; in both
//! modes what survives of each writer is a prefix of its batches, with a
//! matching counter. The same holds for pipelined writers, which write
//! with `Db::write_unsynced` and acknowledge after `Db::wait_durable`.
//! `TALLY_POWER_LOSS_SEEDS` sets the number of seeds.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tally_storage::{AddI64, Db, Durability, Options, SimFs, WriteBatch};

const WRITERS: usize = 3;

fn options(durability: Durability) -> Options {
    Options {
        durability,
        memtable_bytes: 16 << 10,
        target_file_bytes: 16 << 10,
        level1_bytes: 64 << 10,
        l0_compaction_trigger: 2,
        l0_slowdown_trigger: 6,
        l0_stop_trigger: 10,
        ..Options::default()
    }
}

fn open(fs: &SimFs, durability: Durability) -> Db {
    Db::open_with_fs(
        Arc::new(fs.clone()),
        Path::new("/db"),
        options(durability),
        Arc::new(AddI64),
    )
    .unwrap()
}

/// How the writers acknowledge.
#[derive(Clone, Copy, PartialEq)]
enum Ack {
    /// After `Db::write` returns.
    OnWrite,
    /// Pipelined: batch `i` is acknowledged after `Db::wait_durable` on its
    /// point, which the writer calls only after writing batch `i + 1`.
    OnWaitDurable,
}

/// Runs writers until the crash; returns the highest acknowledged batch per writer.
fn load_then_crash(fs: &SimFs, durability: Durability, seed: u64) -> Vec<i64> {
    load_then_crash_acking(fs, durability, seed, Ack::OnWrite)
}

fn load_then_crash_acking(fs: &SimFs, durability: Durability, seed: u64, ack: Ack) -> Vec<i64> {
    let db = Arc::new(open(fs, durability));
    let acked: Arc<Vec<AtomicI64>> = Arc::new((0..WRITERS).map(|_| AtomicI64::new(-1)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, acked) = (db.clone(), acked.clone());
            std::thread::spawn(move || {
                let counter = format!("counter/{w}");
                let start = db
                    .get(counter.as_bytes())
                    .unwrap()
                    .map_or(0, |v| AddI64::decode(&v).unwrap());
                acked[w].store(start - 1, Ordering::SeqCst);
                let mut previous = None;
                for i in start.. {
                    let mut batch = WriteBatch::new();
                    batch.put(format!("t{w}/{i:08}"), vec![b'v'; 64]);
                    batch.merge(counter.clone(), AddI64::encode(1));
                    match ack {
                        Ack::OnWrite => {
                            if db.write(batch).is_err() {
                                return; // the power is out
                            }
                            acked[w].store(i, Ordering::SeqCst);
                        }
                        Ack::OnWaitDurable => {
                            let Ok(point) = db.write_unsynced(batch) else {
                                return;
                            };
                            if let Some(point) = previous.replace(point) {
                                if db.wait_durable(point).is_err() {
                                    return;
                                }
                                acked[w].store(i - 1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20 + seed % 80));
    fs.crash(seed);
    for w in writers {
        w.join().unwrap();
    }
    acked.iter().map(|a| a.load(Ordering::SeqCst)).collect()
}

fn check(fs: &SimFs, acked: &[i64], must_keep_acked: bool, seed: u64) {
    let db = open(fs, Durability::Sync);
    for (w, &max_acked) in acked.iter().enumerate() {
        let counter = db
            .get(format!("counter/{w}").as_bytes())
            .unwrap()
            .map_or(0, |v| AddI64::decode(&v).unwrap());
        let keys = db
            .scan(
                format!("t{w}/").as_bytes(),
                Some(format!("t{w}0").as_bytes()),
                usize::MAX,
            )
            .unwrap();
        assert_eq!(
            keys.len() as i64,
            counter,
            "seed {seed} writer {w}: keys and counter disagree"
        );
        for (i, (k, _)) in keys.iter().enumerate() {
            assert_eq!(
                *k,
                format!("t{w}/{i:08}").into_bytes(),
                "seed {seed} writer {w}: not a prefix"
            );
        }
        if must_keep_acked {
            assert!(
                counter > max_acked,
                "seed {seed} writer {w}: acked {max_acked}, kept {counter}"
            );
        }
    }
    db.close().unwrap();
}

fn seeds() -> u64 {
    std::env::var("TALLY_POWER_LOSS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

#[test]
fn sync_mode_loses_no_acknowledged_write_at_power_loss() {
    for seed in 0..seeds() {
        let fs = SimFs::new();
        // Two power losses in a row: the second hits a recovered engine.
        for round in 0..2 {
            let acked = load_then_crash(&fs, Durability::Sync, seed * 2 + round);
            check(&fs, &acked, true, seed);
        }
    }
}

#[test]
fn pipelined_sync_loses_nothing_waited_for_at_power_loss() {
    for seed in 0..seeds() {
        let fs = SimFs::new();
        for round in 0..2 {
            let acked =
                load_then_crash_acking(&fs, Durability::Sync, seed * 2 + round, Ack::OnWaitDurable);
            check(&fs, &acked, true, seed);
        }
    }
}

#[test]
fn periodic_mode_keeps_a_consistent_prefix_at_power_loss() {
    for seed in 0..seeds() {
        let fs = SimFs::new();
        let durability = Durability::Periodic {
            interval: Duration::from_millis(5),
        };
        let acked = load_then_crash(&fs, durability, seed);
        check(&fs, &acked, false, seed);
    }
}
